"""H5MD chunks read as stored and decoded by us (``h5md._direct``) give what HDF5 gives.

Matrix: the fletcher32 sums against HDF5's own (one blob and many, odd lengths, all zeros);
one forces chunk of a store rewritten as HDF5 may store it (byte-swapped checksum, deflate
skipped by the filter mask, bytes after the deflate stream) reads the values HDF5 reads; a chunk
HDF5 refuses (wrong checksum, deflate stream cut short) is StoreCorruptedError naming dataset and
rows; each by row, by batch with mirrors and without, and by row once a batch has opened the
chunk index (a lone chunk decoded alone, ``Grid.lone``, which leaves every doubt to the general
path).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from faultkit import versioned_frame  # noqa: E402

from asebytes_nodes import ASEIO, StoreCorruptedError  # noqa: E402
from asebytes_nodes.backends.h5md._chunks import fletcher32  # noqa: E402
from asebytes_nodes.backends.h5md._direct import _checked, _checked_one  # noqa: E402

FORCES = "/particles/atoms/forces/value"


def _swapped(total: int) -> int:
    return ((total & 0x00FF00FF) << 8) | ((total >> 8) & 0x00FF00FF)


def test_checksums_are_hdf5s(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # the largest sums a blob summed alone can reach: 64 Ki words of 0xffff (float64 stays exact)
    blobs = [rng.bytes(n) for n in (1, 2, 3, 1001, 4096, 200_001)]
    blobs += [b"\0" * 7, b"\xff" * 9, b"\xff" * (1 << 17)]
    with h5py.File(tmp_path / "sums.h5", "w") as f:  # HDF5's own sums: fletcher32-only datasets
        stored = []
        for i, blob in enumerate(blobs):
            data = np.frombuffer(blob, "u1")
            ds = f.create_dataset(f"d{i}", data=data, chunks=data.shape, fletcher32=True)
            stored.append(int.from_bytes(ds.id.read_direct_chunk((0,))[1][-4:], "little"))
    assert fletcher32(blobs).tolist() == stored
    for blob, total in zip(blobs, stored, strict=True):
        assert _checked([blob], [total]) == [True]
        assert _checked([blob], [_swapped(total)]) == [True]
        assert _checked([blob], [total ^ 1]) == [False]
        assert _checked_one(blob, total) and _checked_one(blob, _swapped(total))
        assert not _checked_one(blob, total ^ 1)
    assert _checked(blobs, stored) == [True] * len(blobs)
    assert _checked(blobs, [s ^ (i == 3) for i, s in enumerate(stored)]) == [
        i != 3 for i in range(len(blobs))
    ]


def _store(tmp_path: Path) -> tuple[Path, int, tuple[int, ...], np.ndarray]:
    """A store, the row of a forces chunk in its middle, that chunk's offset and decoded tile."""
    path = tmp_path / "x.h5"
    with ASEIO(path) as db:
        db.extend([versioned_frame(i) for i in range(400)])  # 20+ chunks: a batch opens the index
    with h5py.File(path, "r") as f:
        ds = f[FORCES]
        step = ds.chunks[0]
        row = (32 // step) * step
        at = (row, *(0 for _ in ds.shape[1:]))
        assert ds.id.read_direct_chunk(at)[0] == 0  # deflate then fletcher32, none skipped
        tile = np.asarray(ds[row : row + step])
    return path, row, at, tile


def _rewrite(path: Path, at: tuple[int, ...], blob: bytes, mask: int = 0) -> None:
    with h5py.File(path, "r+") as f:
        f[FORCES].id.write_direct_chunk(at, blob, filter_mask=mask)


def _with_sum(data: bytes, total: int | None = None) -> bytes:
    total = int(fletcher32([data])[0]) if total is None else total
    return data + total.to_bytes(4, "little")


def _reads(path: Path, row: int) -> list[np.ndarray]:
    """Forces of ``row``: by row and by batch, with mirrors and without."""
    got = []
    for cache_bytes in (0, 64 << 20):
        with ASEIO(path, readonly=True, cache_bytes=cache_bytes) as db:
            got.append(db[row].get_forces())
            got.append(db[[row, 0]].to_batch(["calc.forces"])["calc.forces"][: len(got[-1])])
            every = db[[row, *range(len(db))]].to_batch(["calc.forces"])  # many chunks summed at once
            got.append(every["calc.forces"][: len(got[-1])])
    for cache_bytes in (0, 64 << 20):  # the chunk decoded alone, into a mirror or not
        with ASEIO(path, readonly=True, cache_bytes=cache_bytes) as db:
            _open_index_around(db, row)
            got.append(db[row].get_forces())
    return got


def _open_index_around(db: ASEIO, row: int) -> None:
    """Read every chunk of forces but the one holding ``row`` in a batch: HDF5's chunk index is
    then open, and a single row's chunk is decoded alone."""
    with h5py.File(db.backend.location, "r") as f:
        step = f[FORCES].chunks[0]
    others = [i for i in range(len(db)) if i // step != row // step]
    assert len(others) // step >= 8  # enough chunks for a batch to open the index
    db[others].to_batch(["calc.forces"])


@pytest.mark.parametrize("variant", ["swapped checksum", "deflate skipped", "bytes after the stream"])
def test_chunks_hdf5_accepts_read_as_hdf5_reads_them(tmp_path: Path, variant: str) -> None:
    path, row, at, tile = _store(tmp_path)
    raw = np.ascontiguousarray(tile, "<f8").tobytes()
    deflated = zlib.compress(raw, 4)
    if variant == "swapped checksum":
        _rewrite(path, at, _with_sum(deflated, _swapped(int(fletcher32([deflated])[0]))))
    elif variant == "deflate skipped":
        _rewrite(path, at, _with_sum(raw), mask=1)
    else:
        _rewrite(path, at, _with_sum(deflated + b"junk"))
    with h5py.File(path, "r") as f:
        expected = f[FORCES][row]
    np.testing.assert_array_equal(expected, tile[0])
    for forces in _reads(path, row):
        np.testing.assert_array_equal(forces, expected[: len(forces)])


@pytest.mark.parametrize("variant", ["wrong checksum", "stream cut short"])
def test_chunks_hdf5_refuses_are_errors(tmp_path: Path, variant: str) -> None:
    path, row, at, tile = _store(tmp_path)
    deflated = zlib.compress(np.ascontiguousarray(tile, "<f8").tobytes(), 4)
    if variant == "wrong checksum":
        _rewrite(path, at, _with_sum(deflated, int(fletcher32([deflated])[0]) ^ 4))
        why = "checksum"
    else:
        _rewrite(path, at, _with_sum(deflated[: len(deflated) // 2]))
        why = "inflate"
    with h5py.File(path, "r") as f, pytest.raises(OSError):
        f[FORCES][row]
    for cache_bytes in (0, 64 << 20):
        with ASEIO(path, readonly=True, cache_bytes=cache_bytes) as db:
            with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-.*{why}"):
                db[row]
            with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-.*{why}"):
                db[[0, row]].to_batch(["calc.forces"])
            with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-.*{why}"):
                db[:].to_batch(["calc.forces"])
            assert db[row - 1].info["frame"] == row - 1  # other chunks still read
    for cache_bytes in (0, 64 << 20):
        with ASEIO(path, readonly=True, cache_bytes=cache_bytes) as db:
            _open_index_around(db, row)
            with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-.*{why}"):
                db[row]
            assert db[row - 1].info["frame"] == row - 1


def test_a_chunk_inflating_far_beyond_its_size_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    """A hostile chunk with a valid checksum whose deflate stream expands to 64 MiB (a "zip bomb")
    is StoreCorruptedError; decoding it never holds more than about one chunk, read by the
    general path or decoded alone (the chunk index opened first)."""
    import tracemalloc

    path, row, at, _tile = _store(tmp_path)
    _rewrite(path, at, _with_sum(zlib.compress(bytes(64 << 20), 9)))
    for index_open in (False, True):
        with ASEIO(path, readonly=True, cache_bytes=0) as db:
            if index_open:
                _open_index_around(db, row)
            tracemalloc.start()
            try:
                with pytest.raises(StoreCorruptedError, match=f"{FORCES} rows {row}-.*more bytes decoded"):
                    db[row]
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak < 8 << 20, f"decoding a hostile chunk held {peak:,} bytes (index open: {index_open})"
