"""Chunks our H5MD writer encodes itself as zlib streams of stored blocks and deflated fill runs
(``h5md/_chunks.py``, ``_Stored``): any inflater decodes them, plain h5py reads them, HDF5's
fletcher32 still catches a flipped bit, and data that deflate shrinks is still deflated."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from ase import Atoms  # noqa: E402
from faultkit import flip_bit  # noqa: E402

from asebytes_nodes import ASEIO, StoreCorruptedError  # noqa: E402
from asebytes_nodes.backends.h5md._chunks import _encoding, _fill_runs, _Stored  # noqa: E402
from benchmarks.datasets import periodic  # noqa: E402

POSITION = "particles/atoms/position/value"
SPECIES = "particles/atoms/species/value"


@pytest.mark.parametrize("dtype", ["f8", "f4", "f2", "i8", "u1", "?", np.longdouble])
def test_stored_streams_inflate_to_the_chunk(dtype: object) -> None:
    """Runs of fill at the start, inside and at the end of chunks, short runs left as data,
    chunks longer than a stored block (64 KiB) and fill runs longer than the cached ones."""
    rng = np.random.default_rng(1)
    dtype = np.dtype(dtype)
    fill = np.array(np.nan if dtype.kind == "f" else 0, dtype)
    for items in (1, 7, 600, 70_000):
        tiles = (rng.normal(0, 100, (6, items)) + 1).astype(dtype)
        tiles[1] = fill
        tiles[2, : items // 2] = fill
        tiles[3, items // 3 :] = fill
        tiles[4, 1:3] = fill
        tiles[4, items // 4 : items // 2] = fill
        runs = _fill_runs(tiles, fill)
        assert all(hi - lo >= 64 and lo % dtype.itemsize == 0 for r in runs for lo, hi in r)
        for level in (1, 4, 9):
            encode = _Stored(level, fill.tobytes())
            for row, r in zip(tiles, runs, strict=True):
                view = memoryview(row.tobytes())
                stream = encode(view, r)
                assert zlib.decompress(stream) == row.tobytes()
                assert stream[:2] == zlib.compress(b"", level)[:2]
                assert len(stream) < len(view) + 64 + 5 * (len(view) // 0xFFFF)


def test_encoding_stores_random_floats_and_deflates_the_rest() -> None:
    rng = np.random.default_rng(2)
    floats = np.full((10, 600), np.nan)
    for i in range(10):
        floats[i, : 3 * (i + 2)] = rng.normal(size=3 * (i + 2))
    views = [memoryview(row.tobytes()) for row in floats]
    encode, jobs = _encoding(floats, views, np.nan, 4)
    assert isinstance(encode, _Stored)
    blobs = [encode(*job) for job in jobs]
    assert [zlib.decompress(b) for b in blobs] == [bytes(v) for v in views]
    assert sum(map(len, blobs)) < 0.1 * floats.nbytes  # the padding is deflated
    species = np.repeat(rng.integers(1, 90, (10, 1)), 200, axis=1).astype(np.float64)
    encode, _ = _encoding(species, [memoryview(r.tobytes()) for r in species], np.nan, 4)
    assert not isinstance(encode, _Stored)  # zlib: repeated values shrink
    encode, _ = _encoding(floats[:4], views[:4], np.nan, 4)
    assert not isinstance(encode, _Stored)  # a few chunks: zlib, as HDF5 writes them


def test_stored_chunks_read_back_with_plain_h5py(tmp_path: Path) -> None:
    """Padded frames of one chunk each, frames of several per chunk (padding inside a chunk),
    and a second extend; species (integers as floats) stay deflated."""
    rng = np.random.default_rng(3)
    small = [Atoms("H" * int(n), positions=rng.normal(size=(int(n), 3))) for n in rng.integers(1, 21, 60)]
    path = tmp_path / "s.h5"
    with ASEIO(path) as db:
        db.extend(small, show_progress=False)
        db.extend(small[::-1], show_progress=False)
    wide, wpath = periodic(40), tmp_path / "w.h5"
    with ASEIO(wpath) as db:
        db.extend(wide, show_progress=False)
    for p, frames in ((path, small + small[::-1]), (wpath, wide)):
        with h5py.File(p, "r") as f:
            ds = f[POSITION]
            for i, atoms in enumerate(frames):
                assert np.array_equal(ds[i, : len(atoms)], atoms.positions)
                assert np.isnan(ds[i, len(atoms) :]).all()
            mask, raw = ds.id.read_direct_chunk((ds.chunks[0], 0, 0))
            rows = ds[ds.chunks[0] : 2 * ds.chunks[0]]
            assert mask == 0 and zlib.decompress(raw[:-4]) == rows.tobytes()
            data = sum(24 * len(a) for a in frames[ds.chunks[0] : 2 * ds.chunks[0]])
            assert len(raw) < data + 64 * ds.chunks[0]  # 20-40 bytes per run of padding
            species = f[SPECIES]
            assert species.id.get_storage_size() < 0.2 * species.size * 8
        with ASEIO(p, readonly=True) as db:
            assert [a.get_chemical_symbols() for a in db] == [a.get_chemical_symbols() for a in frames]


def test_flipped_bit_in_a_stored_chunk_is_caught(tmp_path: Path) -> None:
    frames, path = periodic(40), tmp_path / "s.h5"
    with ASEIO(path) as db:
        db.extend(frames, show_progress=False)
    with h5py.File(path, "r") as f:
        info = f[POSITION].id.get_chunk_info_by_coord((20, 0, 0))
    flip_bit(path, info.byte_offset + 10, 3)  # inside the stored data of frame 20
    with ASEIO(path, readonly=True) as db, pytest.raises(StoreCorruptedError, match=POSITION):
        db[20]
