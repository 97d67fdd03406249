"""Property tests of the write contract: random frames round-trip exactly or are refused whole.

Test matrix
-----------
* frames (:func:`atoms_frames`): 0-4 atoms, counts varying across frames; random cell and pbc;
  per-atom custom arrays of random dtypes and tails (zero-length axes included); calculator
  results (``float`` or ``np.float64`` energies, forces of two dtypes, stress, custom results of
  any value kind); ``info`` values of every storable kind (:func:`values`): Python ``int`` (the
  whole 64-bit range), ``float`` (NaN, inf), ``bool``, ``complex``, ``str`` with NUL bytes,
  ``bytes``, ``None``, numpy scalars of random dtypes, arrays of random dtypes and shapes with
  zero-length axes (``(0,)``, ``(2, 0)``, ``(0, 3)``) and 0-d arrays, nested lists, tuples and
  dicts; constraints (``FixAtoms``, ``FixCartesian``, ``FixBondLengths``);
* property: ``extend`` of one or more batches, each followed by a read through a fresh handle,
  gives back exactly what was written (types, dtypes, shapes, NaN), or the ``extend`` is refused
  with :class:`~asebytes_nodes.errors.InvalidDataError` / :class:`~asebytes_nodes.errors.SerializationError`
  naming the frame and a key, and the store is unchanged: the same frames, the same bytes on
  disk, and no file where there was none.

How to use
----------
Subclass :class:`PropertyContract` and provide a ``make_store`` fixture: a callable returning a
new, empty :class:`~asebytes_nodes.testing.contract.StoreFactory` on each call (each hypothesis
example needs its own store). A backend that stores every storable value (no column types)
sets ``refuses_storable_values = False``, so a refusal is a failure there. A backend that keeps
floats narrower than float64 sets ``holds_exact_float64 = False``
(:class:`~asebytes_nodes.testing.contract.DataCapabilities`): floats then compare at float32
precision, types, dtypes and shapes still exactly.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixBondLengths, FixCartesian
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..errors import InvalidDataError, SerializationError
from ..io import ASEIO
from ..rows import atoms_to_dict, rows_from_atoms
from .contract import DataCapabilities, StoreFactory
from .frames import assert_values_equal

__all__ = [
    "PropertyContract",
    "atoms_frames",
    "read_rows",
    "store_digest",
    "values",
]

# dtypes of stored arrays and numpy scalars: every kind the validation allows, both byte orders
DTYPES = [
    np.dtype(d)
    for d in "? i1 u1 <i2 <i4 <i8 <u8 <f2 <f4 <f8 >f8 >i4 <c8 <c16 <U3 |S3".split()
]
# text with NUL characters, and now and then a lone surrogate (not UTF-8: must be refused)
_TEXT = st.text(st.characters(codec="utf-8") | st.just("\x00") | st.just("\udc80"), max_size=6)
_NAMES = st.text("abxy._/ 0\x00", min_size=1, max_size=4)


def _array(dtype: np.dtype[Any], shape: Any) -> st.SearchStrategy[np.ndarray]:
    if dtype.kind == "f":  # every float, NaN and inf included
        width = 8 * min(dtype.itemsize, 8)  # 16, 32 or 64
        return hnp.arrays(dtype, shape, elements=st.floats(width=width))  # type: ignore[arg-type]
    return hnp.arrays(dtype, shape)


_SHAPES = st.sampled_from([(), (0,), (2, 0), (0, 3), (1,), (3,), (2, 2)]) | hnp.array_shapes(
    min_dims=0, max_dims=3, min_side=0, max_side=3
)
ARRAYS = st.tuples(st.sampled_from(DTYPES), _SHAPES).flatmap(lambda a: _array(*a))
NUMPY_SCALARS = st.sampled_from([d for d in DTYPES if d.kind in "biufc"]).flatmap(
    lambda d: _array(d, ()).map(lambda a: a[()])
)
SCALARS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.booleans(),
    st.complex_numbers(),
    _TEXT,
    st.binary(max_size=4),
    st.none(),
    NUMPY_SCALARS,
)


def values() -> st.SearchStrategy[Any]:
    """Any value ``atoms.info`` may hold: scalars, numpy values, nested lists/tuples/dicts."""
    leaves = SCALARS | ARRAYS
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(_TEXT | st.integers(-5, 5), inner, max_size=3),
        ),
        max_leaves=5,
    )


@st.composite
def _per_atom(draw: Any, n: int) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    tail = draw(st.sampled_from([(), (0,), (3,), (2, 0), (1, 2)]))
    return draw(_array(dtype, (n, *tail)))


@st.composite
def atoms_frames(draw: Any, max_atoms: int = 4, n_atoms: int | None = None) -> Atoms:
    """One random frame (see the module docstring); ``n_atoms`` fixes its atom count."""
    n = draw(st.integers(0, max_atoms)) if n_atoms is None else n_atoms
    finite = st.floats(-100, 100, allow_nan=False)
    atoms = Atoms(
        numbers=draw(hnp.arrays(np.int64, n, elements=st.integers(1, 100))),
        positions=draw(hnp.arrays(np.float64, (n, 3), elements=finite)),
        cell=draw(st.none() | hnp.arrays(np.float64, (3, 3), elements=finite)),
        pbc=draw(hnp.arrays(bool, 3)),
    )
    names = st.sampled_from(["x", "y.z", "w/v", "momenta", "tags"])
    for name in draw(st.lists(names, unique=True, max_size=2)):
        if name == "momenta":
            atoms.arrays[name] = draw(hnp.arrays(np.float64, (n, 3), elements=finite))
        elif name == "tags":
            atoms.arrays[name] = draw(hnp.arrays(np.int64, n))
        else:
            atoms.arrays[name] = draw(_per_atom(n))
    results: dict[str, Any] = {}
    if draw(st.booleans()):
        energy = draw(st.floats())
        results["energy"] = draw(st.sampled_from([float, np.float64]))(energy)
    if draw(st.booleans()):
        results["forces"] = draw(hnp.arrays(draw(st.sampled_from(["<f8", "<f4"])), (n, 3), elements=finite))
    if draw(st.booleans()):
        results["stress"] = draw(hnp.arrays(np.float64, 6, elements=finite))
    results.update(draw(st.dictionaries(st.sampled_from(["extra", "score", "e.x"]), values(), max_size=2)))
    if results:
        atoms.calc = SinglePointCalculator(atoms)
        atoms.calc.results.update(results)
    atoms.info.update(draw(st.dictionaries(_NAMES, values(), max_size=4)))
    if n and draw(st.booleans()):
        index = st.integers(0, n - 1)
        fixed = draw(st.lists(index, min_size=1, max_size=n, unique=True))
        constraints: list[Any] = [FixAtoms(indices=fixed)]
        if draw(st.booleans()):
            mask = draw(st.lists(st.booleans(), min_size=3, max_size=3))
            constraints.append(FixCartesian(draw(index), mask=mask))
        if n > 1 and draw(st.booleans()):
            pair = draw(st.lists(index, min_size=2, max_size=2, unique=True))
            constraints.append(FixBondLengths([pair]))
        atoms.set_constraint(constraints)
    return atoms


def read_rows(store: StoreFactory) -> list[dict[str, Any]]:
    """Every frame of the store as a flat row, through a fresh read-only handle."""
    with ASEIO(store.open(readonly=True)) as db:
        return [atoms_to_dict(atoms) for atoms in db]


def assert_rows_equal(
    expected: list[dict[str, Any]], got: list[dict[str, Any]], where: str, *, float32: bool = False
) -> None:
    """Exact equality of rows (key order within a row is not part of the contract); with
    ``float32``, float values are compared rounded to float32 (types and dtypes still exactly)."""
    assert len(got) == len(expected), f"{where}: {len(got)} frames, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        a, b = ({k: row[k] for k in sorted(row)} for row in (a, b))
        if float32:
            a, b = _as_float32(a), _as_float32(b)
        assert_values_equal(a, b, f"{where} row {i}")


def _as_float32(value: Any) -> Any:
    """``value`` with every float rounded to float32, keeping its type and dtype."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float32).astype(value.dtype)
    if isinstance(value, (float, np.floating)):
        return type(value)(np.float32(value))
    if isinstance(value, dict):
        return {k: _as_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_as_float32(v) for v in value)
    return value


def store_digest(location: str | None) -> dict[str, str] | None:
    """SHA-256 of every file of a store (lock files aside); None where nothing exists."""
    if location is None or "://" in location or not os.path.exists(location):
        return None
    root = Path(location)
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if "lock" not in p.name
    }


def check_refusal(exc: BaseException, keys: set[str], rows: int) -> None:
    """A refusal names a frame (or row) of the call and one of that frame's keys, or a key it
    lacks, or says what is wrong with the frame as a whole (its atoms)."""
    text = str(exc)
    found = re.search(r"\b(?:frame|row) (\d+)", text)
    assert found, f"the error does not name the frame: {text}"
    assert int(found.group(1)) < rows, f"the error names frame {found.group(1)} of {rows}: {text}"
    named = any(repr(k) in text for k in keys) or re.search(r"lacks '[a-z]+\.", text) or "atoms" in text
    assert named, f"the error names none of the frame's keys: {text}"


def storable(frames: list[Atoms]) -> bool:
    """Do the frames pass the checks every backend shares (before any backend sees them)?"""
    try:
        rows_from_atoms(frames, show_progress=False)
    except InvalidDataError:
        return False
    return True


def _keys(atoms: Any) -> set[str]:
    return set(atoms_to_dict(atoms)) if isinstance(atoms, Atoms) else set()


def _h(energy: Any = None, n: int = 1, **info: Any) -> Atoms:
    atoms = Atoms("H" * n)
    atoms.info.update(info)
    if energy is not None:
        atoms.calc = SinglePointCalculator(atoms)
        atoms.calc.results["energy"] = energy
    return atoms


# the minimal cases of issues 19 and 20, as batches of extends
KNOWN_CASES: dict[str, Callable[[], list[list[Atoms]]]] = {
    "empty (0, 3) info": lambda: [[_h(e=np.zeros((0, 3))), _h(e=np.zeros((0, 3)))]],
    "empty (2, 0) and (0,) info": lambda: [[_h(e=np.zeros((2, 0)), f=np.zeros(0, np.int32))]],
    "empty tail per-atom": lambda: [
        [_arrays(Atoms("H2"), x=np.zeros((2, 0))), _arrays(Atoms("H"), x=np.zeros((1, 0)))]
    ],
    "0-d arrays": lambda: [[_h(x=np.array(220, np.uint8), y=np.array(1.5))], [_h(x=np.array(3, np.uint8))]],
    "float then np.float64": lambda: [[_h(1.5, x=1)], [_h(np.float64(2.5), x=np.int64(2))]],
    "float and np.float64 in one extend": lambda: [[_h(1.5), _h(np.float64(2.5))]],
    "str into a float32 column": lambda: [[_h(x=np.float32(1))], [_h(x="7")]],
    "None into a float column": lambda: [[_h(x=1.0)], [_h(x=None)]],
    "misfits in an int column": lambda: [[_h(x=1)], [_h(x="")], [_h(x=[2.0])], [_h(x=None)]],
    "NUL string first": lambda: [[_h(s="a\x00b")], [_h(s="ab")]],
    "NUL string later": lambda: [[_h(s="ab")], [_h(s="a\x00b")]],
    "NUL and slash in keys": lambda: [[_h(**cast(dict[str, Any], {"a\x00b": 1, "/": 2.0, "..": "x"}))]],
    "lone surrogate": lambda: [[_h(s="a")], [_h(s="a\udc80")], [_h(**{"\udc80": 1})]],
}


#: Capabilities a known case needs beyond a store of floats (see ``DataCapabilities``).
KNOWN_CASE_NEEDS: dict[str, tuple[str, ...]] = {
    "float and np.float64 in one extend": ("any_keys",),  # a Python float and np.float64 side by side
}


def _arrays(atoms: Atoms, **arrays: np.ndarray) -> Atoms:
    atoms.arrays.update(arrays)
    return atoms


class PropertyContract(DataCapabilities):
    """Random batches of frames through ``extend``: exact round trip, or refused and unchanged."""

    refuses_storable_values: ClassVar[bool] = True
    max_atoms: ClassVar[int] = 4

    @pytest.fixture
    def make_store(self) -> Callable[[], StoreFactory]:  # pragma: no cover - always overridden
        raise NotImplementedError("provide a `make_store` fixture returning new StoreFactory objects")

    def check_extends(self, make_store: Callable[[], StoreFactory], batches: list[list[Atoms]]) -> None:
        store = make_store()
        store.seed([])
        expected: list[dict[str, Any]] = []
        for b, batch in enumerate(batches):
            db = ASEIO(store.open())
            location = db.backend.location
            before = store_digest(location)
            rows = [atoms_to_dict(a) for a in batch]
            try:
                db.extend(batch)
            except (InvalidDataError, SerializationError) as exc:
                db.close()
                if not self.refuses_storable_values and storable(batch):
                    raise
                bad = re.search(r"\bframe (\d+)", str(exc))
                check_refusal(exc, _keys(batch[int(bad.group(1))]) if bad else set(), len(batch))
                assert store_digest(location) == before, f"batch {b}: a refused extend changed the files"
                if before is None and location is not None:
                    assert not os.path.exists(location), f"batch {b}: a refused extend left {location}"
                    continue
            else:
                db.close()
                expected.extend(rows)
            assert_rows_equal(
                expected, read_rows(store), f"after batch {b}", float32=not self.holds_exact_float64
            )

    @pytest.mark.parametrize("case", sorted(KNOWN_CASES))
    def test_known_cases(self, make_store: Callable[[], StoreFactory], case: str) -> None:
        self.require(*KNOWN_CASE_NEEDS.get(case, ()))
        self.check_extends(make_store, KNOWN_CASES[case]())

    @pytest.mark.parametrize("path", ["set", "slice", "update", "insert"])
    def test_a_refused_replacement_writes_nothing(
        self, make_store: Callable[[], StoreFactory], path: str
    ) -> None:
        """Issue 20: ``db[0] = b`` with a new atom count and a value of another type."""
        store = make_store()
        try:
            store.seed([_h(n=2, a=1), _h(n=1, a=2)])
        except InvalidDataError:
            pytest.skip("the store cannot hold an int in info (capability)")
        db = ASEIO(store.open())
        expected = read_rows(store)
        before = store_digest(db.backend.location)
        new = _h(n=3, a="x")
        try:
            if path == "set":
                db[0] = new
            elif path == "slice":
                db[0:2] = [_h(n=2, a=3), new]
            elif path == "update":
                db.update(1, info={"a": "x"})
            elif db.backend.supports_insert:
                db.insert(1, new)
            else:
                return
        except (InvalidDataError, SerializationError) as exc:
            if not self.refuses_storable_values:
                raise
            check_refusal(exc, {"info.a"}, 3)
            assert store_digest(db.backend.location) == before
            assert_rows_equal(expected, read_rows(store), "after the refused write")
            return
        if path == "set":
            expected[0] = atoms_to_dict(new)
        elif path == "slice":
            expected[:2] = [atoms_to_dict(_h(n=2, a=3)), atoms_to_dict(new)]
        elif path == "update":
            expected[1]["info.a"] = "x"
        else:
            expected.insert(1, atoms_to_dict(new))
        assert_rows_equal(expected, read_rows(store), "after the write")

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batches=st.data())
    def test_extend_round_trips_or_refuses(
        self, make_store: Callable[[], StoreFactory], batches: Any
    ) -> None:
        frames = atoms_frames(self.max_atoms)
        self.check_extends(make_store, batches.draw(st.lists(st.lists(frames, min_size=1, max_size=3),
                                                             min_size=1, max_size=3)))

    @pytest.mark.slow
    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batches=st.data())
    def test_extend_round_trips_or_refuses_long(
        self, make_store: Callable[[], StoreFactory], batches: Any
    ) -> None:
        frames = atoms_frames(self.max_atoms)
        self.check_extends(make_store, batches.draw(st.lists(st.lists(frames, min_size=1, max_size=4),
                                                             min_size=1, max_size=4)))
