"""H5MD random and batched reads: chunk-filled mirrors, the vectorised read_batch, chunk shapes."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import ASEIO
from asebytes_nodes.backends.h5md import _backend as held_row_module
from asebytes_nodes.batch import read_batch_default
from asebytes_nodes.testing.frames import FRAME_KINDS, assert_values_equal, make_frames

KEYS = ["arrays.positions", "arrays.numbers", "calc.energy", "calc.forces", "cell"]


def _frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        k = int(rng.integers(1, 40))
        atoms = Atoms(
            numbers=rng.integers(1, 30, k), positions=rng.random((k, 3)), cell=np.eye(3) * 5, pbc=True
        )
        atoms.calc = SinglePointCalculator(atoms, energy=float(i), forces=rng.random((k, 3)))
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("cache_bytes", [0, 64 << 20])
def test_batches_match_the_row_path(tmp_path, cache_bytes):
    """The vectorised read_batch gives what assembling read_rows gives: same keys, dtypes,
    values, for shuffled rows with repeats and an atom selection; with and without mirrors."""
    path = tmp_path / "x.h5"
    ASEIO(path).extend(_frames(300))
    db = ASEIO(path, readonly=True, cache_bytes=cache_bytes)
    backend = db.backend
    rng = np.random.default_rng(1)
    for idx in (rng.permutation(300)[:32], np.array([5, 5, 299, 0, 5])):
        for keys, atoms in ((KEYS, None), (None, None), (KEYS, np.array([0, -1]))):
            fast = backend.read_batch(idx, keys, fill={}, atoms=atoms)
            slow = read_batch_default(backend, idx, keys, fill={}, atoms=atoms)
            assert list(fast) == list(slow)
            for key in slow:
                assert fast[key].dtype == slow[key].dtype, key
                np.testing.assert_array_equal(fast[key], slow[key])
    assert (backend._shared.mirror_bytes > 0) == bool(cache_bytes)


@pytest.mark.parametrize("cache_bytes", [0, 64 << 20])
def test_mirrors_follow_a_write(tmp_path, cache_bytes):
    """A reader's decoded copies and chunk index are dropped when the file changes: it reads what
    was written (cache_bytes=0: single rows from chunks decoded alone, the index opened by a batch)."""
    path = tmp_path / "x.h5"
    writer = ASEIO(path)
    writer.extend(_frames(50))
    reader = ASEIO(path, readonly=True, cache_bytes=cache_bytes)
    reader[list(range(50))].to_batch(["arrays.positions"])
    assert reader[7].get_potential_energy() == 7.0
    np.testing.assert_array_equal(reader[7].positions, _frames(50)[7].positions)
    assert reader[[7]].to_batch(["calc.energy"])["calc.energy"].tolist() == [7.0]
    replaced = _frames(1, seed=3)[0]
    replaced.calc.results["energy"] = -1.0
    writer[7] = replaced
    assert reader[7].get_potential_energy() == -1.0
    np.testing.assert_array_equal(reader[7].positions, replaced.positions)
    assert reader[[7, 8]].to_batch(["calc.energy"])["calc.energy"].tolist() == [-1.0, 8.0]


def test_new_per_atom_datasets_have_small_chunks(tmp_path):
    """Per-atom datasets are chunked at about 4 KiB (one frame at least), per-frame ones at 32 KiB."""
    path = tmp_path / "x.h5"
    ASEIO(path).extend(_frames(20))
    with h5py.File(path, "r") as f:
        position = f["particles/atoms/position/value"]
        assert position.chunks[0] * int(np.prod(position.chunks[1:])) * 8 <= 4096
        assert position.chunks[1:] == position.shape[1:]
        assert f["observables/atoms/energy/value"].chunks == (4096,)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 16, 64 << 20])
def test_batches_of_wide_frames_match_the_row_path(tmp_path, cache_bytes):
    """Per-atom chunks of one frame (wide frames) and of several, decoded without a mirror, with
    one for some datasets only (the budget goes to those with the most frames per chunk) and
    with mirrors for all: every batch is the rows as written, float64 exact."""
    frames = _frames(40) + [Atoms("H150", positions=np.random.default_rng(1).random((150, 3)))] * 3
    for i, atoms in enumerate(frames[-3:]):
        atoms = frames[-3 + i] = atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=-float(i), forces=np.full((150, 3), i / 7))
    path = tmp_path / "x.h5"
    ASEIO(path).extend(frames)
    with ASEIO(path, readonly=True, cache_bytes=cache_bytes) as db:
        for idx in (np.array([42, 3, 40, 3, 17]), np.arange(len(db))[::-1], np.array([41])):
            got = db[idx].to_batch(KEYS)
            for key in KEYS:
                expected = read_batch_default(db.backend, idx, [key])[key]
                assert got[key].dtype == expected.dtype and got[key].tobytes() == expected.tobytes(), key


def test_attributes_read_as_h5py_reads_them(tmp_path):
    from asebytes_nodes.backends._hdf5_journal import read_attribute
    from asebytes_nodes.backends.h5md._plan import as_text

    with h5py.File(tmp_path / "a.h5", "w") as f:
        g = f.create_group("g")
        g.attrs["text"] = "héllo"
        g.attrs["fixed"] = np.bytes_(b"abc")
        g.attrs["number"] = np.uint32(7)
        g.attrs["array"] = np.array([1, 1])
        g.attrs["empty"] = h5py.Empty("f8")
        assert as_text(read_attribute(g, "text")) == "héllo"
        assert as_text(read_attribute(g, "fixed")) == "abc"
        number = read_attribute(g, "number")
        assert number == 7 and number.dtype == np.uint32
        assert read_attribute(g, "array").tolist() == [1, 1]
        assert read_attribute(g, "empty") == g.attrs["empty"]
        assert read_attribute(g, "absent") is None


@pytest.mark.parametrize("kind", list(FRAME_KINDS))
def test_a_row_the_mirrors_hold_reads_as_the_general_path_reads_it(tmp_path, kind: str) -> None:
    """A single row whose chunks the mirrors hold is taken from them at once (held_row); the
    row equals the one read without mirrors (cache_bytes=0: every column by the general path):
    the same keys in the same order, types, dtypes and values, for every kind of frame and for
    key subsets. Its arrays are its own: changing one changes no later read."""
    frames = make_frames(kind)
    path = tmp_path / "s.h5"
    with ASEIO(path) as db:
        db.extend(frames)
    with ASEIO(path, readonly=True, cache_bytes=0) as plain_db:
        expected = [plain_db.backend.read_rows([i]) for i in range(len(frames))]
        subsets = [
            plain_db.backend.read_rows([i], ["calc.energy", "arrays.positions"]) for i in range(len(frames))
        ]
    with ASEIO(path, readonly=True) as db:
        backend = db.backend
        backend.read_rows(np.arange(len(frames)))  # every chunk read in: the mirrors hold each row
        calls = []
        original = held_row_module.held_row

        def spy(*args: Any) -> Any:
            values, rest = original(*args)
            calls.append((set(values), {c.key for c in rest}))
            return values, rest

        held_row_module.held_row = spy
        try:
            for i in range(len(frames)):
                assert_values_equal(expected[i], backend.read_rows([i]), f"row {i}")
                assert_values_equal(subsets[i], backend.read_rows([i], ["calc.energy", "arrays.positions"]))
        finally:
            held_row_module.held_row = original
        assert len(calls) == 2 * len(frames)
        assert all("arrays.positions" in got for got, _ in calls)  # taken from the mirrors
        for value in backend.read_rows([0])[0].values():
            if isinstance(value, np.ndarray) and value.size and value.dtype.kind in "fi":
                value[...] = 7
        assert_values_equal(expected[0], backend.read_rows([0]), "row 0 read again")


@pytest.mark.parametrize("kind", list(FRAME_KINDS))
def test_a_row_decoded_from_its_chunk_alone_reads_as_the_general_path_reads_it(tmp_path, kind: str) -> None:
    """Without mirrors (cache_bytes=0: datasets larger than the cache), a single row's chunks are
    decoded one by one (``Grid.lone``) once a batch has opened the chunk index; before that the
    general path reads them. Both give the same row: keys and their order, types, dtypes, values,
    for every kind of frame and for key subsets; and its arrays are its own."""
    from asebytes_nodes.backends.h5md._direct import Grid

    base = make_frames(kind)
    frames = base * -(-400 // len(base))  # enough chunks of every dataset for a batch to open the index
    path = tmp_path / "s.h5"
    with ASEIO(path) as db:
        db.extend(frames)
    n, subset = len(frames), ["calc.energy", "arrays.positions"]
    lone = Grid.lone
    decoded: list[int] = []

    def spy(self: Grid, k: int) -> np.ndarray | None:
        block = lone(self, k)
        decoded.append(block is not None)
        return block

    Grid.lone = spy  # type: ignore[method-assign]
    try:
        with ASEIO(path, readonly=True, cache_bytes=0) as plain_db:  # no batch: the index stays closed
            expected = [plain_db.backend.read_rows([i]) for i in range(n)]
            subsets = [plain_db.backend.read_rows([i], subset) for i in range(n)]
        assert not any(decoded)
        with ASEIO(path, readonly=True, cache_bytes=0) as db:
            backend = db.backend
            backend.read_rows(np.arange(n))  # a batch of every chunk opens the index
            for i in np.random.default_rng(0).permutation(n).tolist():
                assert_values_equal(expected[i], backend.read_rows([i]), f"row {i}")
                assert_values_equal(subsets[i], backend.read_rows([i], subset), f"row {i}")
            # one-atom frames fill a chunk with 170 of them: too few chunks to open the index
            assert sum(decoded) >= n or kind == "empty_and_single"  # positions at least, every row
            for value in backend.read_rows([0])[0].values():
                if isinstance(value, np.ndarray) and value.size and value.dtype.kind in "fi":
                    value[...] = 7
            assert_values_equal(expected[0], backend.read_rows([0]), "row 0 read again")
    finally:
        Grid.lone = lone  # type: ignore[method-assign]


def test_a_single_row_of_per_frame_keys_reads_no_atom_counts(tmp_path) -> None:
    """Rows of per-frame keys only, read one at a time (mirrors held or not), never read the
    atom counts (every frame's, a whole dataset); a per-atom key then does."""
    path = tmp_path / "s.h5"
    with ASEIO(path) as db:
        db.extend(_frames(30))
    with ASEIO(path, readonly=True) as db:
        backend = db.backend
        for i in (3, 3, 17):  # the second read of row 3 finds its chunk held
            assert backend.read_rows([i], ["calc.energy", "cell"])[0]["calc.energy"] == float(i)
        assert backend._plan._counts is None
        assert len(backend.read_rows([3], ["arrays.positions"])[0]["arrays.positions"]) > 0
        assert backend._plan._counts is not None


def _position_mirror(db: ASEIO) -> Any:
    return db.backend._shared.mirrors["particles/atoms/position/value"]


def test_single_rows_read_small_chunks_ahead(tmp_path) -> None:
    """Random single rows read a mirrored dataset's small chunks one at a time until the misses
    reach a third of the chunks not read yet, then the rest at once: the positions' copy is
    whole long before the rows read have touched every chunk. Every row reads as written."""
    frames = _frames(200)
    path = tmp_path / "a.h5"
    ASEIO(path).extend(frames)
    with h5py.File(path, "r") as f:
        step = f["particles/atoms/position/value"].chunks[0]
    n_chunks = -(-len(frames) // step)
    assert n_chunks >= 40  # small chunks: 1-40 atoms a frame, about 4 KiB a chunk
    order = np.random.default_rng(2).permutation(len(frames))
    touched: set[int] = set()
    whole_after = None
    with ASEIO(path, readonly=True) as db:
        for i in order.tolist():
            atoms = db[i]
            touched.add(i // step)
            np.testing.assert_array_equal(atoms.positions, frames[i].positions)
            np.testing.assert_array_equal(atoms.numbers, frames[i].numbers)
            np.testing.assert_array_equal(atoms.get_forces(), frames[i].get_forces())
            assert atoms.get_potential_energy() == frames[i].get_potential_energy()
            if whole_after is None and _position_mirror(db).complete:
                whole_after = len(touched)
    assert whole_after is not None and whole_after <= n_chunks // 2, (whole_after, n_chunks)


def test_a_few_single_rows_read_only_their_chunks(tmp_path) -> None:
    """A few random rows read only the chunks holding them (nothing ahead)."""
    path = tmp_path / "a.h5"
    ASEIO(path).extend(_frames(200))
    with ASEIO(path, readonly=True) as db:
        for i in (150, 3, 77):
            db[i]
        assert int(_position_mirror(db).loaded.sum()) == 3


def test_damage_ahead_leaves_healthy_single_rows_readable(tmp_path) -> None:
    """A damaged chunk among those read ahead does not fail a healthy row: each row then reads
    its own chunk, and only a row in the damaged chunk raises StoreCorruptedError."""
    from faultkit import flip_bit

    from asebytes_nodes import StoreCorruptedError

    frames = _frames(200)
    path = tmp_path / "a.h5"
    ASEIO(path).extend(frames)
    dataset = "particles/atoms/position/value"
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        step, last = ds.chunks[0], ds.id.get_num_chunks() - 1
        info = ds.id.get_chunk_info(last)
    flip_bit(path, info.byte_offset + info.size // 2, 3)
    bad = set(range(info.chunk_offset[0], min(info.chunk_offset[0] + step, len(frames))))
    healthy = [i for i in np.random.default_rng(3).permutation(len(frames)).tolist() if i not in bad]
    with ASEIO(path, readonly=True) as db:
        for i in healthy:
            np.testing.assert_array_equal(db[i].positions, frames[i].positions)
        with pytest.raises(StoreCorruptedError, match="position"):
            db[min(bad)]
