"""The backend contract: one suite of tests that every backend inherits.

Test matrix
-----------
* frame kinds: every entry of :data:`~asebytes_nodes.testing.frames.FRAME_KINDS`
  (ethanol with calculator and rich info, no calculator, every calculator result,
  NaN/inf and dotted keys, per-atom arrays, periodic with variable atom counts,
  constraints, empty and single-atom frames, keys present on some frames only);
* index kinds: int, negative int, slice, list, numpy array, boolean mask, views of views;
* column kinds: one key, several keys, scalar, per-atom stacked and ragged, missing values;
* writes (skipped by capability flag, never by backend name): extend, append, set,
  update, insert, delete, drop keys, read-only handles, refused bad input, and a
  model test of random operations against a plain list;
* data capabilities (:class:`DataCapabilities`): a format that cannot hold variable atom
  counts, exact float64 or arbitrary keys says so, and the tests needing them are skipped.

How to use
----------
Subclass :class:`ReadableContract` (read-only backends) or :class:`WritableContract`
and provide a ``store`` fixture returning a :class:`StoreFactory`: ``seed(frames)``
writes frames (with the backend's own writer or a native tool) and ``open(readonly)``
opens a fresh handle on the same store. Every comparison goes through a fresh handle.
A backend with a restricted format sets the capability flags it lacks and overrides
:meth:`ReadableContract.frames` to give frames its format holds for the kinds it can, at
least those of :data:`REQUIRED_KINDS` (the tests fail, not skip, without them).
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from ..backends._base import READ_ONLY_MESSAGE, ColumnInfo, ReadableBackend
from ..errors import (
    InvalidDataError,
    MissingValueError,
    RaggedColumnError,
    ReadOnlyError,
    RowIndexError,
    SerializationError,
    UnknownKeyError,
    UnsupportedOperationError,
)
from ..io import ASEIO
from ..rows import atoms_to_dict
from .capabilities import KIND_NEEDS, REQUIRED_KINDS, DataCapabilities
from .frames import FRAME_KINDS, assert_atoms_equal, assert_values_equal, make_frames

__all__ = [
    "KIND_NEEDS", "REQUIRED_KINDS", "DataCapabilities", "ReadableContract", "StoreFactory", "WritableContract"
]


class StoreFactory(ABC):
    """Makes and reopens one store for a test."""

    @abstractmethod
    def seed(self, frames: list[Atoms]) -> None:
        """Write ``frames`` into a new store."""

    @abstractmethod
    def open(self, readonly: bool = False) -> ReadableBackend:
        """A fresh handle on the store."""


class ReadableContract(DataCapabilities):
    """Contract tests for every backend; subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> StoreFactory:  # pragma: no cover - always overridden
        raise NotImplementedError("provide a `store` fixture returning a StoreFactory")

    def frames(self, kind: str) -> list[Atoms] | None:
        """Frames of ``kind`` that the format holds, or None where it cannot hold that kind."""
        if all(getattr(self, f"holds_{need}") for need in KIND_NEEDS[kind]):
            return make_frames(kind)
        return None

    def frames_of(self, kind: str) -> list[Atoms]:
        """:meth:`frames`, skipping the test where the format cannot hold them; failing it for the
        :data:`REQUIRED_KINDS` (a suite skipping those would pass green having checked next to nothing)."""
        frames = self.frames(kind)
        if frames is None and kind in REQUIRED_KINDS:
            lacking = [f"holds_{n} = False" for n in KIND_NEEDS[kind] if not getattr(self, f"holds_{n}")]
            pytest.fail(
                f"{type(self).__name__}: {', '.join(lacking) or 'frames()'} leaves no {kind!r} frames, which "
                f"most contract tests need: override frames(kind) to return frames the format holds for "
                + "; ".join(f"{k!r} ({what})" for k, what in REQUIRED_KINDS.items()),
                pytrace=False,
            )
        if frames is None:
            pytest.skip(f"the format cannot hold {kind!r} frames (capability)")
        return frames

    def reopen(self, store: StoreFactory, frames: list[Atoms]) -> ASEIO:
        store.seed(frames)
        return ASEIO(store.open(readonly=True))

    @pytest.mark.parametrize("kind", sorted(FRAME_KINDS))
    def test_round_trip(self, store: StoreFactory, kind: str) -> None:
        frames = self.frames_of(kind)
        db = self.reopen(store, frames)
        assert len(db) == len(frames)
        for i, (expected, got) in enumerate(zip(frames, db, strict=True)):
            assert_atoms_equal(expected, got, f"{kind}[{i}]")
        for i in range(len(frames)):
            assert_atoms_equal(frames[i], db[i], f"{kind}[{i}] by index")

    def test_loaded_calculator_behaves_like_ase(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        atoms = self.reopen(store, frames)[1]
        assert atoms.get_potential_energy() == frames[1].get_potential_energy()
        if "forces" in frames[1].calc.results:
            np.testing.assert_array_equal(atoms.get_forces(), frames[1].get_forces())
        atoms.positions += 0.1  # ASE: results of a changed configuration are gone
        with pytest.raises(Exception, match="not available|PropertyNotImplemented"):
            atoms.get_potential_energy()

    def test_negative_and_out_of_range(self, store: StoreFactory) -> None:
        frames = self.frames_of("periodic_variable_n")
        db = self.reopen(store, frames)
        assert_atoms_equal(frames[-1], db[-1])
        assert_atoms_equal(frames[0], db[-len(frames)])
        for bad in (len(frames), -len(frames) - 1, 10**9):
            with pytest.raises(IndexError, match=str(bad)):
                db[bad]
        with pytest.raises(IndexError):
            db[[0, len(frames)]]
        with pytest.raises(TypeError):
            db[1.5]

    @pytest.mark.parametrize(
        "index",
        [slice(1, 4), slice(None, None, -2), [3, 0, 3], np.array([4, 1]), np.array([-1, 0])],
        ids=["slice", "reverse-step", "list-repeat", "numpy", "numpy-negative"],
    )
    def test_row_views(self, store: StoreFactory, index: Any) -> None:
        frames = self.frames_of("periodic_variable_n")
        db = self.reopen(store, frames)
        expected = [frames[i] for i in np.arange(len(frames))[index]]
        view = db[index]
        assert len(view) == len(expected)
        for a, b in zip(expected, view, strict=True):
            assert_atoms_equal(a, b)

    def test_views_of_views_and_masks(self, store: StoreFactory) -> None:
        frames = self.frames_of("periodic_variable_n")
        db = self.reopen(store, frames)
        view = db[1:][::2][[1, 0]]  # rows 3, 1
        assert list(view.indices) == [3, 1]
        assert_atoms_equal(frames[3], view[0])
        assert_atoms_equal(frames[1], view[-1])
        mask = np.array([True, False, True, False, False])
        assert list(db[mask].indices) == [0, 2]
        energies = db[1:4]["calc.energy"][::-1].to_list()
        assert energies == [frames[i].get_potential_energy() for i in (3, 2, 1)]

    def test_chunked(self, store: StoreFactory) -> None:
        frames = self.frames_of("periodic_variable_n")
        db = self.reopen(store, frames)
        chunks = list(db.chunked(2))
        assert [len(c) for c in chunks] == [2, 2, 1]
        for a, b in zip(frames, [x for c in chunks for x in c], strict=True):
            assert_atoms_equal(a, b)
        with pytest.raises(ValueError, match="at least 1"):
            next(db.chunked(0))

    def test_scalar_column(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.reopen(store, frames)
        expected = np.array([a.get_potential_energy() for a in frames])
        column = db["calc.energy"]
        got = column.to_numpy()
        assert isinstance(got, np.ndarray) and got.shape == (len(frames),)
        np.testing.assert_array_equal(got, expected)
        assert column.to_list() == expected.tolist()
        assert column.to_dict() == {"calc.energy": expected.tolist()}
        assert column[-1] == expected[-1]
        assert list(column) == expected.tolist()
        self.require("any_keys")
        assert db["info.index"].to_list() == [0, 1, 2, 3]
        assert all(type(v) is int for v in db["info.index"].to_list())

    def test_scalar_columns_as_arrays(self, store: StoreFactory) -> None:
        """``to_numpy`` of a scalar column is ``np.asarray`` of its values (the dtype numpy gives
        them), in any row order with repeats, however the backend reads it."""
        self.require("any_keys")
        frames = self.frames_of("ethanol")
        for i, atoms in enumerate(frames):
            atoms.info.update(count=i, flag=bool(i % 2), weight=np.float32(i / 3), small=np.int16(-i))
        db = self.reopen(store, frames)
        order = [3, 0, 3, 1]
        for key in ("calc.energy", "info.count", "info.flag", "info.weight", "info.small"):
            for column in (db[key], db[order][key]):
                expected = np.asarray(column.to_list())
                got = column.to_numpy()
                assert got.dtype == expected.dtype, (key, got.dtype, expected.dtype)
                np.testing.assert_array_equal(got, expected)

    def test_several_columns(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.reopen(store, frames)
        view = db[["calc.energy", "arrays.positions"]]
        arrays = view.to_numpy()
        assert arrays["arrays.positions"].shape == (len(frames), len(frames[0]), 3)
        np.testing.assert_array_equal(arrays["arrays.positions"][2], frames[2].positions)
        first = view[0]
        assert set(first) == {"calc.energy", "arrays.positions"}
        assert first["calc.energy"] == frames[0].get_potential_energy()
        assert len(view.to_list()) == len(frames)

    def test_ragged_column(self, store: StoreFactory) -> None:
        self.require("variable_atoms")
        frames = self.frames_of("periodic_variable_n")
        db = self.reopen(store, frames)
        with pytest.raises(RaggedColumnError, match="to_ragged"):
            db["arrays.positions"].to_numpy()
        ragged = db["arrays.positions"].to_ragged()
        counts = [len(a) for a in frames]
        assert ragged.offsets.tolist() == list(np.concatenate([[0], np.cumsum(counts)]))
        for i, atoms in enumerate(frames):
            np.testing.assert_array_equal(ragged.frame(i), atoms.positions)
        per_frame = db["calc.forces"].to_list()
        np.testing.assert_array_equal(per_frame[4], frames[4].get_forces())

    def test_missing_values(self, store: StoreFactory) -> None:
        frames = self.frames_of("keys_on_some_frames")
        db = self.reopen(store, frames)
        energies = db["calc.energy"].to_list()
        assert energies[1] is None and energies[3] is None
        assert energies[0] == frames[0].get_potential_energy()
        with pytest.raises(MissingValueError, match=r"rows 1, 3"):
            db["calc.energy"].to_numpy()
        np.testing.assert_array_equal(db[[0, 2]]["calc.forces"].to_ragged().values[:9],
                                      frames[0].get_forces())
        assert "calc.energy" in db.columns and "arrays.momenta" in db.columns

    def test_unknown_key(self, store: StoreFactory) -> None:
        db = self.reopen(store, self.frames_of("ethanol"))
        with pytest.raises(KeyError, match=r"'calc.nope'.*calc\.energy"):
            db["calc.nope"]
        with pytest.raises(UnknownKeyError):
            db[["calc.energy", "info.nope"]]

    def test_columns_and_schema(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.reopen(store, frames)
        expected = sorted(atoms_to_dict(frames[0]))
        assert db.columns == expected
        schema = db.schema
        assert set(schema) == set(expected)
        assert schema["arrays.positions"].dtype == "float64"
        assert schema["arrays.positions"].shape == (-1, 3) and schema["arrays.positions"].per_atom
        assert schema["cell"].shape == (3, 3) and not schema["cell"].per_atom
        if "calc.forces" in schema:
            assert schema["calc.forces"].shape == (-1, 3) and schema["calc.forces"].per_atom
        if "calc.stress" in schema:
            assert schema["calc.stress"].shape == (6,) and not schema["calc.stress"].per_atom

    def test_key_counts_format_and_check(self, store: StoreFactory) -> None:
        frames = self.frames("keys_on_some_frames") or self.frames_of("ethanol")
        db = self.reopen(store, frames)
        expected: dict[str, int] = {}
        for atoms in frames:
            for key in atoms_to_dict(atoms):
                expected[key] = expected.get(key, 0) + 1
        assert db.backend.key_counts() == dict(sorted(expected.items()))
        assert isinstance(db.backend.format_info(), dict)
        assert db.backend.check() == []

    def test_returned_frames_are_independent(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.reopen(store, frames)
        first = db[0]
        first.positions += 1.0
        first.numbers[:] = 1
        for value in [*first.calc.results.values(), *first.info.values(), *first.arrays.values()]:
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                value[...] = 0
            elif isinstance(value, dict):
                value.clear()
        assert_atoms_equal(frames[0], db[0])
        twice = db[[2, 2]].to_list()
        twice[0].positions[:] = 0
        assert_atoms_equal(frames[2], twice[1])
        column = db["arrays.positions"].to_numpy()
        column[:] = 0
        np.testing.assert_array_equal(db[0].positions, frames[0].positions)

    def test_pickle(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.reopen(store, frames)
        for obj in (db, db[1:3], db["calc.energy"]):
            clone = pickle.loads(pickle.dumps(obj))
            assert len(clone) == len(obj)
        clone = pickle.loads(pickle.dumps(db))
        assert_atoms_equal(frames[2], clone[2])
        assert_atoms_equal(frames[1], pickle.loads(pickle.dumps(db[1:3]))[0])
        assert pickle.loads(pickle.dumps(db["calc.energy"])).to_list() == db["calc.energy"].to_list()

    def test_context_manager(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        store.seed(frames)
        with ASEIO(store.open(readonly=True)) as db:
            assert len(db) == len(frames)


class WritableContract(ReadableContract):
    """Contract tests for writable backends (each skips when a capability flag is off)."""

    def fresh(self, store: StoreFactory, frames: list[Atoms] | None = None) -> ASEIO:
        store.seed(frames or [])
        return ASEIO(store.open())

    def test_schema_follows_the_key_model(self, store: StoreFactory) -> None:
        """Per-atom is ASE's word (``arrays.*`` and the results ``ase.outputs`` gives an atom axis),
        never a guess from shapes: a (3,) dipole of a 3-atom frame is one vector per frame."""
        self.require("any_keys")
        frames = []
        for k in range(2):
            atoms = molecule("H2O")
            rng = np.random.default_rng(k)
            atoms.calc = SinglePointCalculator(
                atoms, energy=-1.5 - k, forces=rng.normal(size=(3, 3)), stress=rng.normal(size=6),
                dipole=rng.normal(size=3), energies=rng.normal(size=3), stresses=rng.normal(size=(3, 6)),
                magmoms=rng.normal(size=3), charges=rng.normal(size=3),
                born_effective_charges=rng.normal(size=(3, 3, 3)),
            )
            atoms.info.update(vec=rng.normal(size=3), count=k, label=f"w{k}", items=[1, 2])
            frames.append(atoms)
        schema = self.reopen(store, frames).schema
        atom, frame = {"per_atom": True}, {"per_atom": False}
        expected = {
            "calc.dipole": ColumnInfo("float64", (3,), **frame),
            "calc.stress": ColumnInfo("float64", (6,), **frame),
            "calc.energy": ColumnInfo("float", (), **frame),
            "calc.forces": ColumnInfo("float64", (-1, 3), **atom),
            "calc.energies": ColumnInfo("float64", (-1,), **atom),
            "calc.stresses": ColumnInfo("float64", (-1, 6), **atom),
            "calc.magmoms": ColumnInfo("float64", (-1,), **atom),
            "calc.charges": ColumnInfo("float64", (-1,), **atom),
            "calc.born_effective_charges": ColumnInfo("float64", (-1, 3, 3), **atom),
            "info.vec": ColumnInfo("float64", (3,), **frame),
            "info.count": ColumnInfo("int", (), **frame),
            "info.label": ColumnInfo("str", (), **frame),
            "info.items": ColumnInfo("list", (), **frame),
            "arrays.numbers": ColumnInfo("int64", (-1,), **atom),
        }
        assert {key: schema[key] for key in expected} == expected

    def test_extend_append_and_reopen(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol") + self.frames_of("periodic_variable_n")
        db = self.fresh(store)
        db.extend(frames[:3])
        db.append(frames[3])
        db.extend(iter(frames[4:]))
        db.extend([])
        db.close()
        again = ASEIO(store.open(readonly=True))
        assert len(again) == len(frames)
        for a, b in zip(frames, again, strict=True):
            assert_atoms_equal(a, b)

    def test_setitem(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.fresh(store, frames)
        replacement = self.frames_of("periodic_variable_n")
        db[1] = replacement[4]
        db[-1] = replacement[0]
        db[[0, 2]] = [replacement[1], replacement[2]]
        expected = [replacement[1], replacement[4], replacement[2], replacement[0]]
        for a, b in zip(expected, ASEIO(store.open(readonly=True)), strict=True):
            assert_atoms_equal(a, b)
        with pytest.raises(IndexError):
            db[10] = replacement[0]
        with pytest.raises(InvalidDataError, match="2 frames to 1 rows"):
            db[0:1] = replacement[:2]

    def test_update(self, store: StoreFactory) -> None:
        self.require("any_keys")
        frames = self.frames_of("ethanol")
        db = self.fresh(store, frames)
        forces = np.full((9, 3), 0.5)
        db.update(2, calc={"energy": -1.25, "forces": forces}, info={"tag": "new"},
                  arrays={"charges_custom": np.arange(9.0)})
        db.update(-1, pbc=[True, True, False], cell=np.eye(3) * 5)
        got = ASEIO(store.open(readonly=True))[2]
        assert got.get_potential_energy() == -1.25
        np.testing.assert_array_equal(got.get_forces(), forces)
        assert got.info["tag"] == "new" and got.info["smiles"] == "CCO"
        np.testing.assert_array_equal(got.arrays["charges_custom"], np.arange(9.0))
        np.testing.assert_array_equal(got.get_stress(voigt=True), frames[2].get_stress(voigt=True))
        last = ASEIO(store.open(readonly=True))[3]
        assert last.pbc.tolist() == [True, True, False]
        assert "calc.energy" in db.columns

    def test_update_refuses_bad_values(self, store: StoreFactory) -> None:
        self.require("any_keys")
        frames = self.frames_of("ethanol")
        db = self.fresh(store, frames)
        with pytest.raises(InvalidDataError, match=r"row 1.*'calc.forces'.*4 rows.*9 atoms"):
            db.update(1, calc={"forces": np.zeros((4, 3))})
        with pytest.raises(InvalidDataError, match="'arrays.positions'"):
            db.update(1, arrays={"positions": np.zeros((9, 2))})
        with pytest.raises(SerializationError, match="'info.obj'"):
            db.update(1, info={"obj": object()})
        with pytest.raises(KeyError, match="'energy'"):
            db.update(1, energy=1.0)
        with pytest.raises(IndexError):
            db.update(9, info={"a": 1})
        for a, b in zip(frames, ASEIO(store.open(readonly=True)), strict=True):
            assert_atoms_equal(a, b)

    @pytest.mark.parametrize(
        ("bad", "error", "match"),
        [
            ("not atoms", InvalidDataError, r"frame 2: expected ase.Atoms, got str"),
            ("object info", SerializationError, r"frame 2: key 'info.obj'.*object"),
            ("short forces", InvalidDataError, r"frame 2: 'calc.forces' has 2 rows.*9 atoms"),
            ("object array", SerializationError, r"frame 2: key 'info.arr'.*dtype object"),
            ("huge int", SerializationError, r"frame 2: key 'info.big'.*64 bits"),
        ],
    )
    def test_extend_refuses_bad_input_whole(
        self, store: StoreFactory, bad: str, error: type, match: str
    ) -> None:
        self.require("any_keys")
        frames = self.frames_of("ethanol")
        db = self.fresh(store, frames[:1])
        culprit: Any = molecule("CH3CH2OH")
        if bad == "not atoms":
            culprit = "not atoms"
        elif bad == "object info":
            culprit.info["obj"] = object()
        elif bad == "short forces":
            culprit = make_frames("ethanol")[0]
            culprit.calc.results["forces"] = np.zeros((2, 3))
        elif bad == "object array":
            culprit.info["arr"] = np.array([{}, 1], dtype=object)
        else:
            culprit.info["big"] = 2**70
        with pytest.raises(error, match=match):
            db.extend([frames[1], frames[2], culprit, frames[3]])
        again = ASEIO(store.open(readonly=True))
        assert len(again) == 1
        assert_atoms_equal(frames[0], again[0])

    def test_readonly_handle(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        store.seed(frames)
        db = ASEIO(store.open(readonly=True))
        attempts = [
            lambda: db.extend(frames),
            lambda: db.append(frames[0]),
            lambda: db.__setitem__(0, frames[1]),
            lambda: db.update(0, info={"a": 1}),
            lambda: db.insert(0, frames[0]),
            lambda: db.__delitem__(0),
            lambda: db.drop("info.smiles"),
        ]
        for attempt in attempts:
            with pytest.raises(ReadOnlyError) as info:
                attempt()
            assert str(info.value) == READ_ONLY_MESSAGE
        assert len(db) == len(frames)

    def test_insert(self, store: StoreFactory) -> None:
        frames = self.frames_of("periodic_variable_n")
        db = self.fresh(store, frames[:3])
        if not db.backend.supports_insert:
            with pytest.raises(UnsupportedOperationError, match="insert"):
                db.insert(0, frames[3])
            return
        db.insert(1, frames[3])
        db.insert(-1, frames[4])
        db.insert(100, frames[0])
        expected = [frames[i] for i in (0, 3, 1, 4, 2, 0)]
        for a, b in zip(expected, ASEIO(store.open(readonly=True)), strict=True):
            assert_atoms_equal(a, b)

    def test_delete(self, store: StoreFactory) -> None:
        frames = self.frames_of("periodic_variable_n")
        db = self.fresh(store, frames)
        if not db.backend.supports_delete:
            with pytest.raises(UnsupportedOperationError, match="delete"):
                del db[0]
            return
        stale = (db[3:], db["calc.energy"][3:], db[["calc.energy", "arrays.positions"]][3:])
        del db[1]
        del db[[0, -1]]
        for view in stale:  # made before the rows were deleted: past the end now, never None
            with pytest.raises(RowIndexError, match="out of range"):
                view.to_list()
        expected = [frames[2], frames[3]]
        again = ASEIO(store.open(readonly=True))
        assert len(again) == 2
        for a, b in zip(expected, again, strict=True):
            assert_atoms_equal(a, b)
        with pytest.raises(IndexError):
            del db[5]

    def test_drop_keys(self, store: StoreFactory) -> None:
        frames = self.frames_of("ethanol")
        db = self.fresh(store, frames)
        if not db.backend.supports_drop_keys:
            with pytest.raises(UnsupportedOperationError):
                db.drop("info.smiles")
            return
        self.require("any_keys")
        db.drop("info.smiles", [0, 1])
        db.drop(["calc.stress"])
        again = ASEIO(store.open(readonly=True))
        assert again["info.smiles"].to_list() == [None, None, "CCO", "CCO"]
        assert "calc.stress" not in again.columns
        with pytest.raises(UnsupportedOperationError, match="cannot be dropped"):
            db.drop("arrays.positions")

    def test_model_against_list(self, store: StoreFactory) -> None:
        """Random operations applied to the store and to a plain list of rows must agree."""
        self.require("any_keys", "variable_atoms", "exact_float64")
        rng = np.random.default_rng(7)
        pool = make_frames("periodic_variable_n") + make_frames("ethanol") + make_frames("no_calculator")
        db = self.fresh(store)
        model: list[dict[str, Any]] = []
        caps = db.backend
        for step in range(60):
            op = str(rng.choice(["extend", "set", "update", "insert", "delete"]))
            pick = [pool[int(j)] for j in rng.integers(0, len(pool), rng.integers(1, 4))]
            if op == "extend" or not model:
                db.extend(pick)
                model.extend(_rows(pick))
            elif op == "set":
                i = int(rng.integers(-len(model), len(model)))
                db[i] = pick[0]
                model[i] = _rows(pick[:1])[0]
            elif op == "update":
                i = int(rng.integers(0, len(model)))
                db.update(i, info={"step": step})
                model[i] = {**model[i], "info.step": step}
            elif op == "insert" and caps.supports_insert:
                i = int(rng.integers(0, len(model) + 1))
                db.insert(i, pick[0])
                model.insert(i, _rows(pick[:1])[0])
            elif op == "delete" and caps.supports_delete:
                i = int(rng.integers(0, len(model)))
                del db[i]
                del model[i]
            assert len(db) == len(model), f"step {step} ({op})"
        again = ASEIO(store.open(readonly=True))
        assert len(again) == len(model)
        for i, (expected, got) in enumerate(zip(model, again, strict=True)):
            assert_values_equal(_sorted(expected), _sorted(atoms_to_dict(got)), f"row {i}")
        for key in ("calc.energy", "info.step", "info.index", "calc.stress"):  # column paths too
            if key in again.columns:
                column = again[key].to_list()
                for i, row in enumerate(model):
                    assert_values_equal(row.get(key), column[i], f"{key} row {i}")


def _rows(frames: list[Atoms]) -> list[dict[str, Any]]:
    return [{k: v.copy() if isinstance(v, np.ndarray) else v for k, v in atoms_to_dict(a).items()}
            for a in frames]


def _sorted(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in sorted(row)}
