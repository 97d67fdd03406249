"""A Zarr column first appended after many frames is written from row 0 a shard at a time: the
earlier frames' fill was built in memory whole (+51 MB for 100,000 frames of 32 atoms, 2.4 GB
at a million of 100), and a kill during that write leaves the earlier frames as they were."""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("zarr")

from faultkit import run_in_child  # noqa: E402

from asebytes_nodes import ASEIO  # noqa: E402
from asebytes_nodes.backends import _zarr_arrays  # noqa: E402

FRAMES, ATOMS = 400, 2_500  # a million atoms: the late per-atom column holds 8 MB
LAYOUT = {"shard_bytes": 512 << 10, "chunk_bytes": 32 << 10}  # small shards: appends rewrite the last


def _frame(i: int, **arrays: np.ndarray) -> Atoms:
    atoms = Atoms(numbers=np.full(ATOMS, 8), positions=np.full((ATOMS, 3), float(i)))
    for key, value in arrays.items():
        atoms.new_array(key, value)
    return atoms


def _store(path: Path, **options: Any) -> ASEIO:
    db = ASEIO(path, **LAYOUT, **options)
    for first in range(0, FRAMES, FRAMES // 4):  # a few extends, as a growing dataset has
        db.extend([_frame(i) for i in range(first, first + FRAMES // 4)])
    return db


@pytest.mark.parametrize("compressor", ["lz4", "zstd-raw"])  # our shard writer; zarr's
def test_a_late_per_atom_key_is_written_in_bounded_memory(tmp_path: Path, compressor: str) -> None:
    db = _store(tmp_path / "s.zarr", compressor=compressor)
    charges = np.arange(ATOMS, dtype=float) + 1
    tracemalloc.start()
    try:
        db.extend([_frame(FRAMES, charges=charges)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    column = (FRAMES + 1) * ATOMS * charges.itemsize
    assert peak < column / 2, f"{peak / 1e6:.1f} MB for a column of {column / 1e6:.1f} MB"

    again = ASEIO(tmp_path / "s.zarr", readonly=True)
    assert again.backend.check() == []
    got = again["arrays.charges"].to_list()
    assert got[:FRAMES] == [None] * FRAMES  # the frames before never had it
    np.testing.assert_array_equal(got[FRAMES], charges)
    assert "charges" not in again[FRAMES - 1].arrays


def _killed_in_late_append(path: str) -> None:
    """Append a frame with a new key; die (SIGKILL) once its column's fill is on disk, uncommitted."""
    written = _zarr_arrays.write_new_array

    def write_then_die(*args: Any, **kwargs: Any) -> None:
        written(*args, **kwargs)
        if args[1].endswith("/values") and args[-1]:  # the late column's values, fill and all
            os.kill(os.getpid(), signal.SIGKILL)

    _zarr_arrays.write_new_array = write_then_die  # type: ignore[assignment]
    ASEIO(path, **LAYOUT).extend([_frame(FRAMES, charges=np.ones(ATOMS))])


def test_a_kill_during_the_late_append_keeps_the_earlier_frames(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _store(path)
    assert run_in_child(_killed_in_late_append, (str(path),)) == -signal.SIGKILL

    db = ASEIO(path, **LAYOUT)
    assert len(db) == FRAMES and db.backend.check() == []
    for i in (0, FRAMES // 2, FRAMES - 1):
        assert "charges" not in db[i].arrays
        np.testing.assert_array_equal(db[i].positions, np.full((ATOMS, 3), float(i)))
    db.extend([_frame(FRAMES, charges=np.ones(ATOMS))])  # the next writer clears what the kill left
    again = ASEIO(path, readonly=True)
    assert again.backend.check() == [] and len(again) == FRAMES + 1
    assert again["arrays.charges"].to_list()[FRAMES - 1] is None
