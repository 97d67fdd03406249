"""Chunks our H5MD writer deflates and checksums itself (``h5md/_chunks.py``) are the ones HDF5's
own filters would store: plain h5py reads them, and HDF5's fletcher32 check catches a flipped bit."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from faultkit import flip_bit  # noqa: E402

from asebytes_nodes import ASEIO, StoreCorruptedError  # noqa: E402
from asebytes_nodes.backends.h5md._chunks import fletcher32  # noqa: E402
from benchmarks.datasets import periodic  # noqa: E402

POSITION = "particles/atoms/position/value"


def test_fletcher32_is_hdf5s(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = [
        make(n).astype(np.uint8).tobytes()
        for n in (1, 2, 3, 719, 720, 721, 1441, 4097, 200_001)
        for make in (lambda n: rng.integers(0, 256, n), np.zeros, lambda n: np.full(n, 255))
    ]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        stored = []
        for i, blob in enumerate(blobs):
            ds = f.create_dataset(
                str(i), data=np.frombuffer(blob, np.uint8), chunks=(len(blob),), fletcher32=True
            )
            stored.append(int.from_bytes(ds.id.read_direct_chunk((0,))[1][-4:], "little"))
    assert fletcher32(blobs).tolist() == stored


@pytest.mark.parametrize("size", [1_000, 20_001, 40_000])  # summed at once; one by one (large blobs)
def test_checked_matches_hdf5s_sums_for_many_blobs(tmp_path: Path, size: int) -> None:
    from asebytes_nodes.backends.h5md._direct import _checked

    rng = np.random.default_rng(size)
    blobs = [rng.integers(0, 256, size + k, dtype=np.uint8).tobytes() for k in range(7)]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        stored = []
        for i, blob in enumerate(blobs):
            data = np.frombuffer(blob, np.uint8)
            ds = f.create_dataset(str(i), data=data, chunks=(len(blob),), fletcher32=True)
            stored.append(int.from_bytes(ds.id.read_direct_chunk((0,))[1][-4:], "little"))
    assert _checked(blobs, stored) == [True] * 7
    stored[3] ^= 1 << 20
    assert _checked(blobs, stored) == [True, True, True, False, True, True, True]


def test_direct_chunks_read_back_with_plain_h5py(tmp_path: Path) -> None:
    """Three extends: a narrow start (the atom axis grows past its chunk), one starting inside a
    chunk, and one large enough to deflate in threads."""
    frames, path = periodic(400), tmp_path / "s.h5"
    frames[0] = frames[0][:4]
    with ASEIO(path) as db:
        for part in (frames[:3], frames[3:10], frames[10:]):
            db.extend(part, show_progress=False)
    with h5py.File(path, "r") as f:
        ds = f[POSITION]
        assert ds.chunks[1] < ds.shape[1] and ds.compression == "gzip" and ds.fletcher32
        for i, atoms in enumerate(frames):
            assert np.array_equal(ds[i, : len(atoms)], atoms.positions)
            assert np.isnan(ds[i, len(atoms) :]).all()
        mask, raw = ds.id.read_direct_chunk((200, 0, 0))
        assert mask == 0 and int.from_bytes(raw[-4:], "little") == fletcher32([raw[:-4]])[0]
        rows, atoms, _ = ds.chunks
        decoded = np.frombuffer(zlib.decompress(raw[:-4])).reshape(ds.chunks)
        assert np.array_equal(decoded, ds[200 : 200 + rows, :atoms], equal_nan=True)
        info = ds.id.get_chunk_info_by_coord((200, 0, 0))
    flip_bit(path, info.byte_offset + info.size // 2, 5)
    with ASEIO(path, readonly=True) as db, pytest.raises(StoreCorruptedError, match=POSITION):
        db[200]
