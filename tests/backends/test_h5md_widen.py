"""H5MD: a write whose values do not fit a typed column retypes it, so the store ends the same
however the writes were split (``append`` after ``append``, ``db[i] =``, ``update`` against one
``extend`` of the final frames): same values and types, same layout, no stale element left
for znh5md or MDAnalysis, ``check() == []``; a kill during such a write leaves the old or the
new store. Also: column reads keep a big-endian dtype as row reads do.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

h5py = pytest.importorskip("h5py")

from faultkit import copy_store, run_in_child  # noqa: E402

from asebytes_nodes import ASEIO, ColumnTypeError  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, assert_values_equal  # noqa: E402


def _frame(where: str, name: str, value: Any, formula: str = "H2O") -> Atoms:
    """A molecule carrying ``value`` as ``<where>.<name>`` (where: arrays, calc or info)."""
    atoms = molecule(formula)
    if where == "arrays":
        atoms.arrays[name] = value
    elif where == "info":
        atoms.info[name] = value
    else:
        atoms.calc = SinglePointCalculator(atoms, **{name: value})
    return atoms


# (namespace, name, first value, value of another type): each pair a single extend stores encoded
CASES: dict[str, tuple[str, str, Any, Any]] = {
    "energy float, then np.float64": ("calc", "energy", -1.5, np.float64(-2.5)),
    "energy int, then float": ("calc", "energy", -1, -2.5),
    "stress (6,), then (3, 3)": ("calc", "stress", np.arange(6.0), np.eye(3)),
    "magmom float, then np.float32": ("calc", "magmom", 0.5, np.float32(1.5)),
    "info float, then str": ("info", "x", 1.5, "text"),
    "info float, then None": ("info", "x", 1.5, None),
    "info int 0, then 2**64 - 1": ("info", "x", 0, 2**64 - 1),
    "a per-atom array float64, then float32": (
        "arrays",
        "q",
        np.arange(3.0),
        np.arange(3.0).astype(np.float32) + 1,
    ),
}


def _layout(path: Path) -> dict[str, Any]:
    """What a store holds beyond its values: every column's kind, dtype, shape, type and count,
    the elements other programs read (particles/, observables/), and how many encoded and
    presence datasets back them (their ids depend on the order columns were made)."""
    with h5py.File(path, "r") as f:
        table = ASEIO(path, readonly=True).backend._plan.table
        columns = {
            key: ({k: v for k, v in spec.items() if k not in ("id", "path", "flags")}, spec["path"])
            for key, spec in table["columns"].items()
        }
        for key, (fields, where) in columns.items():
            columns[key] = (fields, "encoded" if fields["kind"] == "object" else where)
        elements: list[str] = []
        for root in ("particles", "observables"):
            if root in f:
                f[root].visititems(lambda name, obj, r=root: elements.append(f"{r}/{name}"))
        private = f["parameters/asebytes_nodes/atoms"]
        backing = {name: len(private[name]) if name in private else 0 for name in ("encoded", "present")}
        stray = [name for name in private if name.endswith(".replaced")]
    return {"columns": columns, "elements": sorted(elements), "backing": backing, "stray": stray}


def _assert_same_store(split: Path, single: Path, frames: list[Atoms]) -> None:
    """Both stores, reopened from disk, hold exactly ``frames`` with one layout and pass check()."""
    for path in (split, single):
        with ASEIO(path, readonly=True) as db:
            assert db.backend.check() == [], path
            assert len(db) == len(frames)
            for i, (want, got) in enumerate(zip(frames, db, strict=True)):
                assert_atoms_equal(want, got, f"{path.name} row {i}")
    with ASEIO(split, readonly=True) as a, ASEIO(single, readonly=True) as b:
        assert a.backend.schema() == b.backend.schema()
        for key in b.backend.keys():
            assert_values_equal(b[key].to_list(), a[key].to_list(), f"column {key}")
    assert _layout(split) == _layout(single)


def _apply(db: ASEIO, how: str, first: list[Atoms], later: Atoms, update: dict[str, Any]) -> list[Atoms]:
    """Write ``first`` then ``later`` split as ``how``; the frames the store then holds."""
    db.extend(first)
    if how == "append":
        db.append(later)
        return [*first, later]
    if how == "setitem":
        db[1] = later
    else:
        db.update(1, **update)
    return [first[0], later, *first[2:]]


@pytest.mark.parametrize("how", ["append", "setitem", "update"])
@pytest.mark.parametrize("case", list(CASES))
def test_split_writes_end_as_one_extend(tmp_path: Path, case: str, how: str) -> None:
    where, name, old, new = CASES[case]
    first = [_frame(where, name, old), _frame(where, name, old), molecule("CH4")]
    later = _frame(where, name, new)
    final = _apply(ASEIO(tmp_path / "split.h5"), how, first, later, {where: {name: new}})
    ASEIO(tmp_path / "single.h5").extend(final)
    _assert_same_store(tmp_path / "split.h5", tmp_path / "single.h5", final)


def test_retyped_column_of_frames_lacking_it_and_of_another_atom_count(tmp_path: Path) -> None:
    """Presence flags and padding survive: frames without the key, then one of more atoms."""
    frames = [
        _frame("calc", "energy", -1.0),
        molecule("H2O"),
        _frame("arrays", "q", np.arange(12.0), "C6H6"),
        _frame("calc", "energy", np.float64(-3.0), "CH4"),
        _frame("arrays", "q", np.arange(4.0).astype(np.float32), "NH3"),
    ]
    db = ASEIO(tmp_path / "split.h5")
    for atoms in frames:
        db.append(atoms)
    ASEIO(tmp_path / "single.h5").extend(frames)
    _assert_same_store(tmp_path / "split.h5", tmp_path / "single.h5", frames)
    with h5py.File(tmp_path / "split.h5", "r") as f:  # no stale typed element for other programs
        assert "observables/atoms/energy" not in f and "particles/atoms/q" not in f


@pytest.mark.parametrize("how", ["append", "setitem", "update", "one extend"])
def test_particle_elements_of_two_dtypes_are_refused(tmp_path: Path, how: str) -> None:
    """float32 positions among float64 ones moved every frame's positions out of particles/ (znh5md
    then read zeros): H5MD keeps its particle elements typed and refuses the mix, naming both."""
    old = [_frame("arrays", "positions", molecule("H2O").positions) for _ in range(2)]
    new = _frame("arrays", "positions", molecule("H2O").positions.astype(np.float32))
    path = tmp_path / "s.h5"
    db = ASEIO(path)
    if how != "one extend":
        db.extend(old)
    before = path.read_bytes() if path.exists() else None
    refused = r"(frame|row) \d: column 'arrays.positions' .*float32.*other programs read"
    with pytest.raises(ColumnTypeError, match=refused):
        if how == "one extend":
            db.extend([*old, new])
        else:
            _apply(db, how, [], new, {"arrays": {"positions": new.positions.astype(np.float32)}})
    assert (path.read_bytes() if path.exists() else None) == before


def test_replacing_the_only_odd_value_types_the_column_again(tmp_path: Path) -> None:
    """``db[i] =`` over the frame that made a column typed one way: the column one extend of the
    final frames makes (a typed np.float64 energy), not an encoded one."""
    db = ASEIO(tmp_path / "split.h5")
    db.extend([_frame("calc", "energy", -1.0)])
    final = [_frame("calc", "energy", np.float64(-2.0))]
    db[0] = final[0]
    ASEIO(tmp_path / "single.h5").extend(final)
    _assert_same_store(tmp_path / "split.h5", tmp_path / "single.h5", final)
    assert _layout(tmp_path / "split.h5")["columns"]["calc.energy"][0]["type"] == "n<f8"


def _seed(path: Path) -> list[Atoms]:
    frames = [_frame("calc", "energy", float(-i)) for i in range(40)]
    ASEIO(path).extend(frames)
    return frames


_LATER = [_frame("calc", "energy", np.float64(-100.0), "CH4")]


def _retyping_append(path: str, kill_at: int) -> None:
    """Child: append a frame that retypes ``calc.energy``, SIGKILLed at the journal's
    ``kill_at``-th write (0: between its final fsync and its deletion, the commit point)."""
    from asebytes_nodes.backends import _hdf5_journal

    real, calls = _hdf5_journal._UndoFile.write, [0]

    def dying(self: Any, data: Any) -> int:
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, data)

    def commit_then_die(self: Any) -> None:
        os.fdatasync(self.fd)
        os.kill(os.getpid(), signal.SIGKILL)

    _hdf5_journal._UndoFile.write = dying  # type: ignore[method-assign]
    if kill_at == 0:
        _hdf5_journal._UndoFile.commit = commit_then_die  # type: ignore[method-assign]
    ASEIO(path).extend(_LATER)
    os.kill(os.getpid(), signal.SIGKILL)


def _journal_writes(path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    from asebytes_nodes.backends import _hdf5_journal

    real, calls = _hdf5_journal._UndoFile.write, [0]

    def counting(self: Any, data: Any) -> int:
        calls[0] += 1
        return real(self, data)

    with monkeypatch.context() as patch:
        patch.setattr(_hdf5_journal._UndoFile, "write", counting)
        ASEIO(path).extend(_LATER)
    return calls[0]


def test_kill_during_a_retyping_write_leaves_the_old_or_the_new_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "seed.h5"
    before = _seed(seed)
    after = [*before, *_LATER]
    total = _journal_writes(copy_store(seed, tmp_path / "count.h5"), monkeypatch)
    assert total > 1
    for k in sorted({0, 1, total // 2, total}):
        path = copy_store(seed, tmp_path / f"k{k}.h5")
        assert run_in_child(_retyping_append, (str(path), k)) == -signal.SIGKILL
        with ASEIO(path, readonly=True) as db:  # the first open rolls an interrupted write back
            got = list(db)
            assert db.backend.check() == [], k
        assert not Path(f"{path}-journal").exists()
        expected = before if len(got) == len(before) else after
        for want, row in zip(expected, got, strict=True):
            assert_atoms_equal(want, row, f"killed at {k}")
        with ASEIO(path) as db:  # the store takes the write afterwards
            db.extend([molecule("H2")] if len(got) == len(after) else _LATER)
            assert db.backend.check() == []


@pytest.mark.parametrize(
    "read",
    [
        lambda db: db["info.v"].to_list()[0],
        lambda db: db["info.v"][0],
        lambda db: next(db["info.v"].chunked(1))[0],
    ],
    ids=["to_list", "index", "chunked"],
)
def test_column_reads_keep_big_endian_arrays(tmp_path: Path, read: Callable[[ASEIO], Any]) -> None:
    frames = [molecule("H2"), molecule("H2")]
    for atoms in frames:
        atoms.info["v"] = np.arange(3, dtype=">i4")
    db = ASEIO(tmp_path / "b.h5")
    db.extend(frames)
    assert_values_equal(db[0].info["v"], read(db))
    assert read(db).dtype == np.dtype(">i4")


def test_column_reads_of_several_calls_keep_big_endian_arrays(tmp_path: Path) -> None:
    """A column of more rows than one backend call reads (16,384) is joined keeping the dtype."""
    frames = [Atoms("H") for _ in range(16_385)]
    for atoms in frames:
        atoms.info["v"] = np.arange(3, dtype=">i4")
    db = ASEIO(tmp_path / "b.h5")
    db.extend(frames)
    values = db["info.v"].to_list()
    assert values[0].dtype == values[-1].dtype == np.dtype(">i4")
