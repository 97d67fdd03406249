"""The batch contract: ``to_batch``, ``batches`` and ``atoms=`` on every backend (issue 15).

Test matrix
-----------
* data: fixed atom count (:meth:`BatchContract.fixed_frames`), variable atom counts
  (:meth:`ragged_frames`), keys on some frames only (:meth:`sparse_frames`), per-atom arrays of
  several dtypes (:meth:`typed_frames`); a backend that
  cannot hold a kind returns None from its hook and those tests skip (capability, not name);
* indices: any order, repeats, a single row, the empty list, row views and column views;
* keys: ``None`` (every numeric key all rows share), explicit numeric, non-numeric (lists),
  missing with and without ``fill`` (one value, or a mapping);
* ``atoms=``: indices, negative indices, slices, out of range on ragged frames, column reads;
* epochs: ``batches`` covers every row once, shuffled reproducibly, with and without ``drop_last``.

Every expectation is computed from the frames written (through
:func:`~asebytes_nodes.rows.atoms_to_dict`), never from the store, and compared with exact
dtypes and values.

How to use: subclass :class:`BatchContract` with the ``store`` fixture of the backend's contract
tests (a :class:`~asebytes_nodes.testing.contract.StoreFactory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from ase import Atoms

from ..backends._keys import is_per_atom
from ..io import ASEIO
from ..rows import atoms_to_dict
from .contract import StoreFactory
from .frames import assert_values_equal, make_frames

__all__ = ["BatchContract", "expected_batch"]


def expected_batch(
    frames: list[Atoms], order: list[int], keys: Sequence[str], atoms: Any = None
) -> dict[str, Any]:
    """The batch of ``frames[order]`` computed from the frames themselves (frame by frame)."""
    rows = [atoms_to_dict(frames[i]) for i in order]
    picks = [np.arange(len(r["arrays.numbers"]))[atoms if atoms is not None else slice(None)] for r in rows]
    out: dict[str, Any] = {"n_atoms": np.array([len(p) for p in picks], dtype=np.int64)}
    for key in keys:
        values = [r[key] for r in rows]
        if is_per_atom(key):
            out[key] = np.concatenate([np.asarray(v)[p] for v, p in zip(values, picks, strict=True)])
        else:
            out[key] = np.stack([np.asarray(v) for v in values])
    return out


def numeric_shared_keys(frames: list[Atoms], order: list[int]) -> list[str]:
    """The keys ``to_batch()`` gives by default: every row carries them, with a number or a
    numeric array in each."""
    rows = [atoms_to_dict(frames[i]) for i in order]
    common = set(rows[0]).intersection(*rows[1:])
    numeric = (bool, int, float, np.bool_, np.number)

    def is_number(value: Any) -> bool:
        return (isinstance(value, np.ndarray) and value.dtype.kind in "biufc") or isinstance(value, numeric)

    return sorted(k for k in common if all(is_number(row[k]) for row in rows))


def assert_batch_equal(expected: dict[str, Any], got: dict[str, Any]) -> None:
    assert list(got) == list(expected), f"keys {list(got)} != {list(expected)}"
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert_values_equal(value, got[key], key)
            strides = got[key].strides  # ones that split an item are refused by torch.from_numpy
            assert all(s >= 0 and s % got[key].itemsize == 0 for s in strides), f"{key}: strides {strides}"
        else:
            assert_values_equal(list(value), got[key], key)


class BatchContract:
    """Batch tests for one backend; subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> StoreFactory:  # pragma: no cover - always overridden
        raise NotImplementedError("provide a `store` fixture returning a StoreFactory")

    def fixed_frames(self) -> list[Atoms]:
        """Frames of one atom count, each with a calculator (override for restricted formats)."""
        return make_frames("ethanol")

    def ragged_frames(self) -> list[Atoms] | None:
        """Frames of different atom counts, or None when the backend cannot hold them."""
        return make_frames("periodic_variable_n")

    def sparse_frames(self) -> list[Atoms] | None:
        """Frames carrying different keys, or None when the backend cannot hold them."""
        return make_frames("keys_on_some_frames")

    def typed_frames(self) -> list[Atoms] | None:
        """A frame with per-atom arrays of several dtypes (float32, int, bool, str), or None."""
        return make_frames("per_atom_arrays")

    def open(self, store: StoreFactory, frames: list[Atoms] | None) -> ASEIO:
        if frames is None:
            pytest.skip("the backend cannot hold these frames")
        store.seed(frames)
        return ASEIO(store.open(readonly=True))

    @pytest.mark.parametrize(
        "order", [[0, 1, 2, 3], [3, 0, 3, 1], [2]], ids=["all", "shuffled-repeats", "one"]
    )
    def test_fixed_every_numeric_key(self, store: StoreFactory, order: list[int]) -> None:
        frames = self.fixed_frames()
        db = self.open(store, frames)
        order = [i % len(frames) for i in order]
        keys = numeric_shared_keys(frames, order)
        assert "arrays.positions" in keys
        assert_batch_equal(expected_batch(frames, order, keys), db[order].to_batch())

    def test_ragged_any_order(self, store: StoreFactory) -> None:
        frames = self.ragged_frames()
        db = self.open(store, frames)
        assert frames is not None  # open() skips the test otherwise
        order = [4, 0, 2, 2, 1]
        keys = numeric_shared_keys(frames, order)
        got = db[order].to_batch()
        assert_batch_equal(expected_batch(frames, order, keys), got)
        assert got["n_atoms"].tolist() == [len(frames[i]) for i in order]
        offsets = np.concatenate([[0], np.cumsum(got["n_atoms"])])
        for j, i in enumerate(order):
            np.testing.assert_array_equal(
                got["arrays.positions"][offsets[j] : offsets[j + 1]], frames[i].positions
            )
        for i in range(len(frames)):  # a lone row, as the last batch of an epoch may be
            assert_batch_equal(expected_batch(frames, [i], keys), db[[i]].to_batch(keys))

    def test_stored_dtypes_kept(self, store: StoreFactory) -> None:
        frames = self.typed_frames()
        db = self.open(store, frames)
        assert frames is not None  # open() skips the test otherwise
        order = [0, 0]
        got = db[order].to_batch()
        assert_batch_equal(expected_batch(frames, order, numeric_shared_keys(frames, order)), got)
        assert got["arrays.custom_f32"].dtype == np.float32 and got["arrays.flags"].dtype == bool
        labels = db[order].to_batch(["arrays.labels"], atoms=[1, 0])["arrays.labels"]
        assert isinstance(labels, list) and len(labels) == 2
        assert_values_equal(frames[0].arrays["labels"][[1, 0]], labels[1])

    def test_explicit_keys_and_column_view(self, store: StoreFactory) -> None:
        frames = self.fixed_frames()
        db = self.open(store, frames)
        rows = [atoms_to_dict(a) for a in frames]
        numeric = [k for k in ("calc.energy", "arrays.positions", "cell") if k in rows[0]]
        order = [1, 3, 1]
        expected = expected_batch(frames, order, numeric)
        assert_batch_equal(expected, db[order].to_batch(numeric))
        assert_batch_equal(expected, db[order][numeric].to_batch())
        assert_batch_equal(expected, db[:][numeric][order].to_batch())
        text = [k for k in rows[0] if isinstance(rows[0][k], (str, dict, list))]
        if text:
            got = db[order].to_batch(text)
            for key in text:
                assert_values_equal([rows[i][key] for i in order], got[key], key)

    def test_missing_keys_with_and_without_fill(self, store: StoreFactory) -> None:
        frames = self.sparse_frames()
        db = self.open(store, frames)
        assert frames is not None  # open() skips the test otherwise
        rows = [atoms_to_dict(a) for a in frames]
        key = next(k for k in ("calc.energy", "calc.forces") if k in rows[0])
        lacking = [i for i, r in enumerate(rows) if key not in r]
        assert lacking, "the sparse frames must leave the key out of some rows"
        with pytest.raises(KeyError, match=rf"{key}.*rows {', '.join(map(str, lacking))}"):
            db[:].to_batch([key])
        for fill in (-7.0, {key: -7.0}):
            got = db[:].to_batch([key], fill=fill)
            for i, r in enumerate(rows):
                value = (
                    got[key][i]
                    if not is_per_atom(key)
                    else got[key][sum(len(a) for a in frames[:i]) :][: len(frames[i])]
                )
                if key in r:
                    assert_values_equal(np.asarray(r[key]), np.asarray(value), f"row {i}")
                else:
                    assert (np.asarray(value) == -7.0).all()
            assert got[key].dtype == np.asarray(rows[0][key]).dtype
        stored = np.asarray(next(r[key] for r in rows if key in r))
        tail = stored.shape[1:] if is_per_atom(key) else stored.shape
        for lone_fill in (-7, {key: -7}):  # no row of the batch carries it: the stored form all the same
            got = db[lacking].to_batch([key], fill=lone_fill)[key]
            assert got.dtype == stored.dtype and got.shape[1:] == tail
            assert len(got) == (sum(len(frames[i]) for i in lacking) if is_per_atom(key) else len(lacking))
        with pytest.raises(KeyError, match=r"'calc\.enrgy'.*available keys: .*arrays\.positions"):
            db[lacking].to_batch(["calc.enrgy"])  # in no row of the store: a typo, named with the keys
        present = [i for i, r in enumerate(rows) if key in r]
        assert_batch_equal(expected_batch(frames, present, [key]), db[present].to_batch([key]))
        shared = numeric_shared_keys(frames, list(range(len(frames))))
        assert list(db[:].to_batch()) == ["n_atoms", *shared]

    def test_keys_none_takes_numbers_of_mixed_types(self, store: StoreFactory) -> None:
        """An energy given as a numpy float in one frame and a Python float in the next (EMT's
        and a SinglePointCalculator's) is a number every row carries: ``keys=None`` takes it."""
        from ase.calculators.singlepoint import SinglePointCalculator

        frames = self.fixed_frames()[:2]
        for atoms, energy in zip(frames, (np.float64(-1.5), -2.5), strict=True):
            atoms.calc = SinglePointCalculator(atoms, energy=energy)
        db = self.open(store, frames)
        if "calc.energy" not in db.keys(0):
            pytest.skip("the backend does not keep the energy")
        order = [1, 0, 1]
        got = db[order].to_batch()
        assert list(got) == ["n_atoms", *numeric_shared_keys(frames, order)]
        assert got["calc.energy"].dtype == np.float64
        assert got["calc.energy"].tolist() == [db[i].get_potential_energy() for i in order]  # as rows read
        np.testing.assert_allclose(got["calc.energy"], [-2.5, -1.5, -2.5], rtol=1e-7)  # float32 files

    def test_numpy_scalars_keep_their_dtype(self, store: StoreFactory) -> None:
        """Per-frame numpy numbers (ASE's extxyz reader gives ``np.float64`` energies) come back
        in their own dtype, in rows that mix them with Python numbers too."""
        from ase.calculators.singlepoint import SinglePointCalculator

        frames = self.typed_frames()
        if frames is None:
            pytest.skip("the backend cannot hold these frames")
        frames = [frames[0].copy() for _ in range(4)]
        for i, atoms in enumerate(frames):
            atoms.calc = SinglePointCalculator(atoms, energy=np.float64(i - 1.25))
            atoms.info.update(
                half=np.float32(i / 4), small=np.int16(-i), flag=np.bool_(i % 2), wave=np.complex128(i + 1j)
            )
        frames[3].info["small"] = -3  # a Python int among numpy ones: the stored types are kept
        db = self.open(store, frames)
        for order in ([3, 0, 2, 2], [1]):
            keys = numeric_shared_keys(frames, order)
            assert {"calc.energy", "info.half", "info.wave"} <= set(keys)
            assert_batch_equal(expected_batch(frames, order, keys), db[order].to_batch())

    def test_empty_index_list(self, store: StoreFactory) -> None:
        frames = self.fixed_frames()
        db = self.open(store, frames)
        empty = db[[]].to_batch()
        assert (
            list(empty) == ["n_atoms"] and empty["n_atoms"].dtype == np.int64 and len(empty["n_atoms"]) == 0
        )
        rows = [atoms_to_dict(a) for a in frames]
        keys = [k for k in ("calc.energy", "arrays.positions") if k in rows[0]]
        got = db[[]].to_batch(keys)
        for key in keys:
            stored = np.asarray(rows[0][key])
            shape = (0, *stored.shape[1:]) if is_per_atom(key) else (0, *stored.shape)
            assert got[key].shape == shape and got[key].dtype == stored.dtype, key
        assert list(db[[]].batches(4)) == []

    def test_atoms_selection_fixed(self, store: StoreFactory) -> None:
        frames = self.fixed_frames()
        db = self.open(store, frames)
        order = [2, 0, 2]
        keys = ["arrays.positions", "arrays.numbers", "cell"]
        for atoms in ([0, 2, -1], slice(1, None, 3), [4, 4]):
            expected = expected_batch(frames, order, keys, atoms)
            assert_batch_equal(expected, db[order].to_batch(keys, atoms=atoms))
        # no per-atom key asked: the counts still say how many atoms were selected
        assert_batch_equal(
            expected_batch(frames, order, ["cell"], [0, -1]), db[order].to_batch(["cell"], atoms=[0, -1])
        )
        stacked = db[order]["arrays.positions"].to_numpy(atoms=[0, -1])
        assert stacked.shape == (3, 2, 3)
        for j, i in enumerate(order):
            np.testing.assert_array_equal(stacked[j], frames[i].positions[[0, -1]])
        both = db[order][["arrays.positions", "cell"]].to_numpy(atoms=[1])
        np.testing.assert_array_equal(both["cell"], np.stack([frames[i].cell.array for i in order]))
        ragged = db[order]["arrays.positions"].to_ragged(atoms=slice(0, 2))
        np.testing.assert_array_equal(ragged.frame(1), frames[0].positions[:2])
        listed = db[order]["arrays.positions"].to_list(atoms=[0, -1])  # lists select as batches do
        for got, i in zip(listed, order, strict=True):
            np.testing.assert_array_equal(got, frames[i].positions[[0, -1]])
        rows = db[order][["arrays.numbers", "cell"]].to_list(atoms=slice(1, None, 3))
        for got, i in zip(rows, order, strict=True):
            np.testing.assert_array_equal(got["arrays.numbers"], frames[i].numbers[1::3])
            np.testing.assert_array_equal(got["cell"], frames[i].cell.array)  # per frame: whole
        columns = db[order][["arrays.numbers", "cell"]].to_dict(atoms=[1])
        assert [v.tolist() for v in columns["arrays.numbers"]] == [[frames[i].numbers[1]] for i in order]
        chunks = list(db[order][["arrays.numbers", "cell"]].chunked(2, atoms=slice(1, None, 3)))
        assert [len(c) for c in chunks] == [2, 1]
        for got, want in zip(chunks[0] + chunks[1], rows, strict=True):  # chunks select as lists do
            np.testing.assert_array_equal(got["arrays.numbers"], want["arrays.numbers"])
            np.testing.assert_array_equal(got["cell"], want["cell"])
        with pytest.raises(IndexError, match=f"atom index {len(frames[0])} .*{len(frames[0])} atoms"):
            db[order].to_batch(["arrays.positions"], atoms=[0, len(frames[0])])
        with pytest.raises(TypeError, match="boolean mask"):
            db[order].to_batch(atoms=np.ones(len(frames[0]), dtype=bool))

    def test_atoms_selection_ragged(self, store: StoreFactory) -> None:
        frames = self.ragged_frames()
        db = self.open(store, frames)
        assert frames is not None  # open() skips the test otherwise
        counts = [len(a) for a in frames]
        order = [3, 1, 4]
        for atoms in ([0], [-1, 0], slice(0, 2)):
            expected = expected_batch(frames, order, ["arrays.positions", "calc.forces"], atoms)
            assert_batch_equal(expected, db[order].to_batch(["arrays.positions", "calc.forces"], atoms=atoms))
            assert_batch_equal(
                expected_batch(frames, order, ["cell"], atoms), db[order].to_batch(["cell"], atoms=atoms)
            )
        small = [i for i in range(len(frames)) if counts[i] < max(counts)]
        with pytest.raises(
            IndexError, match=rf"atom index {max(counts) - 1} .*rows {small[0]}.*{min(counts)} to"
        ):
            db[:].to_batch(["arrays.positions"], atoms=[max(counts) - 1])
        with pytest.raises(ValueError, match="to_ragged"):
            db[:]["arrays.positions"].to_numpy(atoms=slice(0, 2))
        listed = db[order]["calc.forces"].to_list(atoms=[-1, 0])
        for got, i in zip(listed, order, strict=True):
            np.testing.assert_array_equal(got, frames[i].get_forces()[[-1, 0]])
        with pytest.raises(
            IndexError, match=rf"atom index {max(counts) - 1} .*rows {small[0]}.*{min(counts)} to"
        ):
            db[:]["arrays.positions"].to_list(atoms=[max(counts) - 1])
        chunked = [v for c in db[order]["calc.forces"].chunked(2, atoms=[-1, 0]) for v in c]
        for got, i in zip(chunked, order, strict=True):
            np.testing.assert_array_equal(got, frames[i].get_forces()[[-1, 0]])
        late = db[[counts.index(max(counts)), small[-1]]]["arrays.positions"].chunked(
            1, atoms=[max(counts) - 1]
        )
        with pytest.raises(IndexError, match=rf"atom index {max(counts) - 1} .*rows {small[-1]}\b"):
            list(late)  # the second chunk names its store row
        with pytest.raises(TypeError, match="boolean mask"):
            db[:]["arrays.positions"].chunked(2, atoms=np.ones(2, bool))  # refused at the call

    def test_batches_cover_every_frame_once(self, store: StoreFactory) -> None:
        frames = self.ragged_frames() or self.fixed_frames()
        db = self.open(store, frames)
        n = len(frames)
        plain = list(db.batches(2, keys=["calc.energy"]))
        assert [len(b["n_atoms"]) for b in plain] == [2] * (n // 2) + [1] * (n % 2)
        energies = np.concatenate([b["calc.energy"] for b in plain])
        assert_values_equal(np.array([a.get_potential_energy() for a in frames]), energies)
        first = [b["calc.energy"] for b in db.batches(2, keys="calc.energy", shuffle=True, seed=3)]
        again = [b["calc.energy"] for b in db.batches(2, keys="calc.energy", shuffle=True, seed=3)]
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert sorted(np.concatenate(first).tolist()) == sorted(energies.tolist())
        dropped = list(db.batches(2, shuffle=True, seed=1, drop_last=True))
        assert [len(b["n_atoms"]) for b in dropped] == [2] * (n // 2)
        assert sum(len(b["n_atoms"]) for b in db[1:].batches(n)) == n - 1
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match="batch_size"):
                next(db.batches(bad))  # type: ignore[arg-type]
