"""The chunk B-tree read without HDF5 (``_hdf5_btree.ChunkIndex``) finds what HDF5 finds, and gives
way to HDF5 for every index it does not read."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import hdf5kit  # noqa: E402

from asebytes_nodes import ASEIO  # noqa: E402
from asebytes_nodes.backends._hdf5_btree import ChunkIndex, _messages, _Unreadable  # noqa: E402


def _write(path: Path, rows: int, *, libver: str = "earliest", track_order: bool = False) -> None:
    """Datasets of one-row chunks (a tree of several levels) and of several rows a chunk."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w", libver=libver) as f:
        a = f.create_dataset(
            "a", (0, 5, 3), maxshape=(None, 5, 3), chunks=(1, 5, 3), dtype="f8",
            compression="gzip", fletcher32=True, track_order=track_order,
        )  # fmt: skip
        b = f.create_dataset("b", (0,), maxshape=(None,), chunks=(7,), dtype="i8", track_order=track_order)
        for lo in range(0, rows, 500):  # extended as our writers do
            n = min(500, rows - lo)
            a.resize(lo + n, axis=0)
            a[lo:] = rng.normal(size=(n, 5, 3))
            b.resize(lo + n, axis=0)
            b[lo:] = np.arange(lo, lo + n)


def _assert_as_hdf5(ds: h5py.Dataset) -> None:
    n = -(-ds.shape[0] // ds.chunks[0])
    chunks = np.random.default_rng(0).permutation(n)
    single = ChunkIndex.of(ds)  # random rows: one key read per chunk
    assert single is not None and all(single.one(k) for k in chunks[:300].tolist())
    index = ChunkIndex.of(ds)  # batches: whole leaves
    assert index is not None
    assert index.lookup(chunks).all()
    for k in chunks[:300].tolist():
        assert (single.address[k], single.size[k], single.mask[k]) == (
            index.address[k],
            index.size[k],
            index.mask[k],
        )
    for k in chunks[:400].tolist():  # HDF5's lookups of a sample (each costs more than ours)
        info = ds.id.get_chunk_info_by_coord((k * ds.chunks[0], *(0 for _ in ds.shape[1:])))
        assert (index.address[k], index.size[k], index.mask[k]) == (
            info.byte_offset,
            info.size,
            info.filter_mask,
        )
        mask, blob = ds.id.read_direct_chunk((k * ds.chunks[0], *(0 for _ in ds.shape[1:])))
        assert index.read(np.array([k])) == [blob] and mask == index.mask[k]


@pytest.mark.parametrize("track_order", [False, True])
def test_finds_every_chunk_hdf5_finds(tmp_path: Path, track_order: bool) -> None:
    path = tmp_path / "t.h5"
    _write(path, 9000, track_order=track_order)  # 9,000 one-row chunks: a root over leaves over...
    with h5py.File(path, "r") as f:
        header = h5py.h5o.get_info(f["a"].id).addr
        version = path.read_bytes()[header : header + 4]
        for name in ("a", "b"):
            _assert_as_hdf5(f[name])
        index = ChunkIndex.of(f["a"])
        assert index is not None and len(index._leaves) > 64  # more than one level above the leaves
    # both object header versions were read (h5py writes version 2 when creation order is tracked)
    assert version == b"OHDR" if track_order else version[:1] == b"\x01"


def test_batches_read_the_remaining_leaves_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small requests read their own leaves; once one would have read an eighth of them the rest
    are read too (in groups), and every chunk is then where HDF5 says it is."""
    from asebytes_nodes.backends import _hdf5_btree

    monkeypatch.setattr(_hdf5_btree, "_LEAVES_AT_ONCE", 7)  # several groups from 141 leaves
    path = tmp_path / "t.h5"
    _write(path, 9000)
    order = np.random.default_rng(5).permutation(9000)
    with h5py.File(path, "r") as f:
        ds = f["a"]
        index = ChunkIndex.of(ds)
        assert index is not None
        leaves = len(index._read)
        assert index.lookup(order[:4]).all()
        assert 0 < index._read.sum() * _hdf5_btree._REST < leaves  # a few leaves: only its own
        step = 4
        while not index._read.all():
            assert index.lookup(order[step : step + 4]).all()
            step += 4
        assert step <= 4 * (leaves // _hdf5_btree._REST + 1)
        assert index.known.all() and (index.size > 0).all()
        for k in order[::97].tolist():
            info = ds.id.get_chunk_info_by_coord((k, 0, 0))
            assert (index.address[k], index.size[k], index.mask[k]) == (
                info.byte_offset,
                info.size,
                info.filter_mask,
            )


def test_our_h5md_store_read_through_the_index(tmp_path: Path) -> None:
    path = hdf5kit.build(tmp_path / "s.h5", "h5md", 300)
    frames = [hdf5kit.frame("h5md", i) for i in range(300)]
    with h5py.File(path, "r") as f:
        for name in ("particles/atoms/position/value", "particles/atoms/forces/value"):
            _assert_as_hdf5(f[name])
    idx = np.random.default_rng(1).permutation(300)[:64]
    with ASEIO(path, readonly=True) as db:
        batch = db[idx].to_batch(["arrays.positions", "calc.forces"])
    positions = np.concatenate([frames[i].positions for i in idx])
    np.testing.assert_array_equal(batch["arrays.positions"], positions)
    np.testing.assert_array_equal(batch["calc.forces"], np.concatenate([frames[i].get_forces() for i in idx]))


def test_gives_way_to_hdf5(tmp_path: Path) -> None:
    """Indexes of HDF5 1.10+ (layout version 4), writable handles, datasets chunked across their
    other axes: no index here."""
    latest, plain = tmp_path / "latest.h5", tmp_path / "plain.h5"
    _write(latest, 100, libver="latest")
    _write(plain, 100)
    with h5py.File(latest, "r") as f:
        assert ChunkIndex.of(f["a"]) is None
    with h5py.File(plain, "r+") as f:
        assert ChunkIndex.of(f["a"]) is None
        f.create_dataset("c", (10, 8), chunks=(2, 4), dtype="f4")
    with h5py.File(plain, "r") as f:
        assert ChunkIndex.of(f["c"]) is None


def test_a_damaged_leaf_key_is_not_found_here(tmp_path: Path) -> None:
    """A leaf key naming another offset: the chunk is left to HDF5 (which then decides, see
    test_hdf5_chunk_index), never read here as some other row's chunk."""
    path = tmp_path / "t.h5"
    _write(path, 200)
    offset, row = hdf5kit.btree_key(path, "a", 6)
    raw = bytearray(path.read_bytes())
    first = offset - 8 * 3  # the key's first-axis offset (rank 3: offsets of 3 axes, then the element's)
    assert struct.unpack_from("<Q", raw, first)[0] == row
    struct.pack_into("<Q", raw, first, row + 100_000)
    path.write_bytes(bytes(raw))
    with h5py.File(path, "r") as f:
        index = ChunkIndex.of(f["a"])
        assert index is not None
        found = index.lookup(np.arange(200))
        assert not found[row] and found.sum() == 199
        single = ChunkIndex.of(f["a"])
        assert single is not None and not single.one(row) and single.one(row + 1)


def test_object_header_blocks_that_loop_are_refused(tmp_path: Path) -> None:
    """A continuation message pointing back at its own block (a hostile file): refused, not a hang."""
    path = tmp_path / "loop.bin"
    header = struct.pack("<BBHII", 1, 0, 1, 1, 24) + b"\0" * 4  # version 1, one message, 24 bytes
    message = struct.pack("<HHB3x", 0x10, 16, 0) + struct.pack("<QQ", 16, 24)  # continue at byte 16
    path.write_bytes(header + message)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(_Unreadable, match="loop"):
            list(_messages(fd, 0, 0))
    finally:
        os.close(fd)
