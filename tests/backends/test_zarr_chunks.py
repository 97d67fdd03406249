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
        for i in rng.integers(0, len(frames), 5).tolist():  # single rows: one chunk's slot each
            atoms = ASEIO(backend)[i]
            np.testing.assert_array_equal(atoms.positions, frames[i].positions)
            np.testing.assert_array_equal(atoms.numbers, frames[i].numbers)
            assert atoms.info["energy_ref"] == frames[i].info["energy_ref"]
            assert backend._cache.held <= budget
    for start, stop in ((0, 300), (17, 19), (40, 140), (299, 300)):  # long scans and short slabs
        ragged = ASEIO(backend)["arrays.positions"][start:stop].to_list()
        for got, atoms in zip(ragged, frames[start:stop], strict=True):
            np.testing.assert_array_equal(got, atoms.positions)
    assert backend._cache.held <= budget


@pytest.mark.parametrize("budget", [0, 3000, 1 << 20])
def test_a_single_row_reads_as_in_a_request_of_many(tmp_path: Path, budget: int) -> None:
    """``db[i]`` takes each column's slab directly (``_zarr_rows._read_one``): the same keys,
    types, dtypes and values as the row read among others, for every kind of frame (scalars,
    0-d and shaped per-frame arrays, per-atom arrays, objects, keys some rows lack), any key
    subset, and every cache budget."""
    from asebytes_nodes.testing.frames import FRAME_KINDS, assert_values_equal, make_frames

    frames = [atoms for kind in sorted(FRAME_KINDS) for atoms in make_frames(kind)]
    path = tmp_path / "all.zarr"
    ASEIO(path).extend(frames)
    backend = ZarrBackend(path, readonly=True, cache_bytes=budget)
    n = len(frames)
    order = np.random.default_rng(1).permutation(n)
    many = {int(i): row for i, row in zip(order, backend.read_rows(order), strict=True)}
    keys = backend.keys()
    some = keys[::2]
    for i in order.tolist():
        one = backend.read_rows([i])[0]
        assert list(one) == list(many[i]), i
        for key in one:
            assert_values_equal(one[key], many[i][key], f"row {i} {key}")
        subset = backend.read_rows([i], some)[0]
        assert set(subset) == set(one) & set(some), i
        assert_values_equal(subset, {k: one[k] for k in subset}, f"row {i} keys {some}")


def test_object_values_stay_right_as_the_handle_writes(tmp_path: Path) -> None:
    """An object column's byte offsets are kept by the handle (a random row would otherwise sum
    every frame's size): replacing a value, extending, and another handle's commit are all seen."""
    frames = _frames(40)
    for i, atoms in enumerate(frames):
        atoms.info["tag"] = "x" * (i % 7)
    path = tmp_path / "o.zarr"
    db = ASEIO(path)
    db.extend(frames)
    assert [db[i].info["tag"] for i in (3, 39, 0)] == ["xxx", "xxxx", ""]
    changed = frames[3].copy()
    changed.info["tag"] = "a much longer value than before"
    db[3] = changed
    assert db[3].info["tag"] == "a much longer value than before" and db[4].info["tag"] == "xxxx"
    db.extend(frames[:2])
    assert db[41].info["tag"] == "x" and db[39].info["tag"] == "xxxx"
    other = ASEIO(path)
    other[39] = changed
    assert db[39].info["tag"] == "a much longer value than before" and db[40].info["tag"] == ""
