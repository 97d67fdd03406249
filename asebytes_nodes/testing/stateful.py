"""A stateful model test: random write operations on a store and on a plain list must agree.

Test matrix
-----------
* operations (hypothesis rules): ``extend``, ``append``, ``db[i] = atoms`` (negative indices
  too), slice assignment, ``update`` of ``info`` and ``calc`` values, and where the backend's
  ``supports_*`` flags allow, ``insert``, ``del db[i]`` and ``drop``; plus writes that must be
  refused (an object in ``info``, forces with the wrong row count) on every write path;
* frames and values: :func:`~asebytes_nodes.testing.properties.atoms_frames` and
  :func:`~asebytes_nodes.testing.properties.values` (random dtypes, shapes with zero-length
  axes, 0-d arrays, nested values, constraints, varying atom counts);
* after every step the store, read through a fresh handle, equals the list exactly. A write the
  backend refuses must raise :class:`~asebytes_nodes.errors.InvalidDataError` naming the frame or
  row and a key, and leave the store's files unchanged (the list is left unchanged too).

How to use
----------
Subclass :class:`StatefulContract` with the same ``make_store`` fixture as
:class:`~asebytes_nodes.testing.properties.PropertyContract`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ..backends._columns import copy_row
from ..errors import InvalidDataError, SerializationError
from ..io import ASEIO
from ..rows import atoms_to_dict
from ..validation import validate_row
from .contract import StoreFactory
from .properties import (
    _NAMES,
    assert_rows_equal,
    atoms_frames,
    check_refusal,
    read_rows,
    storable,
    store_digest,
    values,
)

__all__ = ["StatefulContract", "WriteModel"]

FRAMES = atoms_frames(3)


def _bad_frame(kind: str) -> Atoms:
    """A frame every backend must refuse before writing."""
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = molecule("H2O")
    if kind == "object":
        atoms.info["bad"] = object()
    else:
        atoms.calc = SinglePointCalculator(atoms)
        atoms.calc.results["forces"] = np.zeros((2, 3))
    return atoms


class WriteModel(RuleBasedStateMachine):
    """The store under test and the list of rows it must equal."""

    def __init__(self, store: StoreFactory, refuses_storable_values: bool, exact: bool = True) -> None:
        super().__init__()
        self.exact = exact  # False: the format keeps floats as float32 (compared rounded to it)
        store.seed([])
        self.store = store
        self.db = ASEIO(store.open())
        self.backend = self.db.backend
        self.refuses = refuses_storable_values
        self.model: list[dict[str, Any]] = []

    def teardown(self) -> None:
        self.db.close()

    def _write(self, op: Callable[[], None], change: Callable[[], None], keys: set[str], rows: int,
               must_refuse: bool = False, frames: list[Atoms] | None = None) -> None:
        """Run ``op`` on the store; on success apply ``change`` to the list, on refusal check that
        the error names the frame and a key and that no file changed."""
        before = store_digest(self.backend.location)
        try:
            op()
        except (InvalidDataError, SerializationError) as exc:
            if not (self.refuses or must_refuse or (frames is not None and not storable(frames))):
                raise
            check_refusal(exc, keys, len(self.model) + rows)
            assert store_digest(self.backend.location) == before, f"a refused write changed the files: {exc}"
            return
        assert not must_refuse, "an invalid write was accepted"
        change()

    @staticmethod
    def _row(atoms: Atoms) -> dict[str, Any]:
        return copy_row(atoms_to_dict(atoms))

    @rule(frames=st.lists(FRAMES, min_size=1, max_size=3))
    def extend(self, frames: list[Atoms]) -> None:
        rows = [self._row(a) for a in frames]
        self._write(lambda: self.db.extend(frames), lambda: self.model.extend(rows),
                    set().union(*rows), len(rows), frames=frames)

    @rule(frame=FRAMES)
    def append(self, frame: Atoms) -> None:
        row = self._row(frame)
        self._write(lambda: self.db.append(frame), lambda: self.model.append(row), set(row), 1,
                    frames=[frame])

    @precondition(lambda self: self.model)
    @rule(data=st.data(), frame=FRAMES)
    def set_one(self, data: Any, frame: Atoms) -> None:
        n = len(self.model)
        i = data.draw(st.integers(-n, n - 1))
        row = self._row(frame)

        def change() -> None:
            self.model[i] = row

        self._write(lambda: self.db.__setitem__(i, frame), change, set(row), 1, frames=[frame])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def set_slice(self, data: Any) -> None:
        n = len(self.model)
        start, stop = data.draw(st.integers(0, n)), data.draw(st.integers(0, n))
        picked = list(range(n))[start:stop]
        frames = data.draw(st.lists(FRAMES, min_size=len(picked), max_size=len(picked)))
        rows = [self._row(a) for a in frames]

        def change() -> None:
            for i, row in zip(picked, rows, strict=True):
                self.model[i] = row

        self._write(lambda: self.db.__setitem__(slice(start, stop), frames), change,
                    set().union(*rows), max(len(rows), 1), frames=frames)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), info=st.dictionaries(_NAMES, values(), max_size=2), energy=st.none() | st.floats())
    def update(self, data: Any, info: dict[str, Any], energy: float | None) -> None:
        i = data.draw(st.integers(0, len(self.model) - 1))
        calc = {} if energy is None else {"energy": energy}
        new = {**{"info." + k: v for k, v in info.items()}, **{"calc." + k: v for k, v in calc.items()}}
        new = copy_row(new)

        def change() -> None:
            self.model[i] = {**self.model[i], **new}

        try:
            validate_row(new)
        except InvalidDataError:
            invalid = True
        else:
            invalid = False
        self._write(lambda: self.db.update(i, info=info, calc=calc), change, set(new), i + 1,
                    must_refuse=invalid)

    @precondition(lambda self: self.backend.supports_insert)
    @rule(data=st.data(), frame=FRAMES)
    def insert(self, data: Any, frame: Atoms) -> None:
        n = len(self.model)
        i = data.draw(st.integers(-n - 1, n + 1))
        row = self._row(frame)
        self._write(lambda: self.db.insert(i, frame), lambda: self.model.insert(i, row), set(row), 1,
                    frames=[frame])

    @precondition(lambda self: self.backend.supports_delete and self.model)
    @rule(data=st.data())
    def delete(self, data: Any) -> None:
        n = len(self.model)
        i = data.draw(st.integers(-n, n - 1))
        del self.db[i]
        del self.model[i]

    @precondition(lambda self: self.backend.supports_drop_keys and self.model)
    @rule(data=st.data())
    def drop(self, data: Any) -> None:
        # every read frame has numbers, positions, cell and pbc (zeros when absent)
        droppable = sorted({k for row in self.model for k in row} - {"arrays.numbers", "arrays.positions",
                                                                      "cell", "pbc"})
        if not droppable:
            return
        key = data.draw(st.sampled_from(droppable))
        rows = data.draw(st.none() | st.lists(st.integers(0, len(self.model) - 1), min_size=1, unique=True))
        self.db.drop(key, rows)
        for i in range(len(self.model)) if rows is None else rows:
            self.model[i].pop(key, None)

    @rule(
        kind=st.sampled_from(["object", "forces"]),
        path=st.sampled_from(["extend", "set", "insert", "update"]),
    )
    def refused(self, kind: str, path: str) -> None:
        bad = _bad_frame(kind)
        key = "info.bad" if kind == "object" else "calc.forces"
        if path == "extend":
            op: Callable[[], None] = lambda: self.db.extend([bad])  # noqa: E731
        elif path == "set" and self.model:
            op = lambda: self.db.__setitem__(0, bad)  # noqa: E731
        elif path == "insert" and self.backend.supports_insert:
            op = lambda: self.db.insert(0, bad)  # noqa: E731
        elif path == "update" and self.model:
            value = {"bad": object()} if kind == "object" else {"forces": np.zeros((99, 3))}
            op = lambda: self.db.update(0, **{"info" if kind == "object" else "calc": value})  # noqa: E731
        else:
            return
        self._write(op, lambda: None, {key}, 1, must_refuse=True)

    @invariant()
    def store_equals_list(self) -> None:
        assert len(self.db) == len(self.model)
        if self.model or self.backend.location is None or store_digest(self.backend.location) is not None:
            assert_rows_equal(self.model, read_rows(self.store), "store vs list", float32=not self.exact)


class StatefulContract:
    """Random write operations against a plain list (needs the ``make_store`` fixture)."""

    refuses_storable_values: ClassVar[bool] = True

    def run_model(self, make_store: Callable[[], StoreFactory], examples: int, steps: int) -> None:
        refuses, exact = self.refuses_storable_values, getattr(self, "holds_exact_float64", True)
        run_state_machine_as_test(
            lambda: WriteModel(make_store(), refuses, exact),  # type: ignore[arg-type]  # any factory (its docs)
            settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                              suppress_health_check=list(HealthCheck)),
        )

    def test_random_writes_match_a_list(self, make_store: Callable[[], StoreFactory]) -> None:
        self.run_model(make_store, 6, 6)

    @pytest.mark.slow
    def test_random_writes_match_a_list_long(self, make_store: Callable[[], StoreFactory]) -> None:
        self.run_model(make_store, 200, 25)
