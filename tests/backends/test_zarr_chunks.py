"""Chunk-by-chunk reads of a local Zarr store (``_zarr_chunks``): whatever the cache holds, evicts
or recycles, every read returns the rows written, and the cache stays within its budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("zarr")

from asebytes_nodes import ASEIO, ZarrBackend  # noqa: E402


def _frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        k = int(rng.integers(1, 12))
        atoms = Atoms(numbers=rng.integers(1, 30, k), positions=rng.random((k, 3)), cell=np.eye(3), pbc=True)
        atoms.info["energy_ref"] = float(rng.random())
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("budget", [0, 700, 3000, 20_000, 1 << 20])
def test_random_batches_and_slabs_are_exact_under_any_budget(tmp_path: Path, budget: int) -> None:
    path = tmp_path / "p.zarr"
    frames = _frames(300)
    ASEIO(path, chunk_bytes=256).extend(frames)  # about 10 rows of positions per chunk
    backend = ZarrBackend(path, readonly=True, cache_bytes=budget)
    rng = np.random.default_rng(1)
    keys = ["arrays.positions", "arrays.numbers", "info.energy_ref"]
    for _ in range(60):  # chunks decoded, kept, recycled and decoded again
        idx = rng.integers(0, len(frames), int(rng.integers(1, 40)))
        batch = backend.read_batch(idx, keys)
        for key, name in (("arrays.positions", "positions"), ("arrays.numbers", "numbers")):
            np.testing.assert_array_equal(batch[key], np.concatenate([frames[i].arrays[name] for i in idx]))
        np.testing.assert_array_equal(batch["info.energy_ref"], [frames[i].info["energy_ref"] for i in idx])
        assert backend._cache.held <= budget
    for start, stop in ((0, 300), (17, 19), (40, 140), (299, 300)):  # long scans and short slabs
        ragged = ASEIO(backend)["arrays.positions"][start:stop].to_list()
        for got, atoms in zip(ragged, frames[start:stop], strict=True):
            np.testing.assert_array_equal(got, atoms.positions)
    assert backend._cache.held <= budget
