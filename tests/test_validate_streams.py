"""``info`` and ``validate`` stream: memory stays bounded however many frames a store holds.

Measured in a fresh process as the peak of its anonymous memory (``RssAnon``): LMDB maps
its file, and the mapped pages a full pass touches count in the resident size but are the
page cache, not memory the process holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from asebytes_nodes import ASEIO

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists() or "RssAnon" not in Path("/proc/self/status").read_text(),
    reason="reads the peak anonymous memory from /proc (Linux)",
)

CHILD = """
import sys, threading, time
from asebytes_nodes.cli import main

def anon():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) * 1024

command, tiny, big = sys.argv[1:]
main([command, tiny])  # imports and first-use caches, outside the measurement
base, peak = anon(), [0]

def sample():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)

threading.Thread(target=sample, daemon=True).start()
code = main([command, big])
print(code, max(peak[0], anon()) - base)
"""


def _store(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    frames = [
        Atoms("H8", positions=rng.random((8, 3)), cell=np.eye(3) * 5, pbc=True, info={"step": i})
        for i in range(n)
    ]
    with ASEIO(path) as db:
        db.extend(frames, show_progress=False)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("streams")
    return _store(folder / "tiny.lmdb", 10), _store(folder / "big.lmdb", 40_000)


@pytest.mark.parametrize("command", ["info", "validate"])
def test_peak_memory_does_not_grow_with_the_store(stores: tuple[Path, Path], command: str) -> None:
    """40,000 frames: holding one value per frame for the whole store (as ``info`` did, in
    one chunk of 100,000 frames) costs more than half the store's size; streaming, a chunk."""
    tiny, big = stores
    done = subprocess.run(
        [sys.executable, "-c", CHILD, command, str(tiny), str(big)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, grew = map(int, done.stdout.split()[-2:])
    assert code == 0
    size = big.stat().st_size
    assert grew < size / 2, f"{command} grew by {grew / 2**20:.1f} MiB on a {size / 2**20:.1f} MiB store"


def test_validate_reads_wide_frames_in_batches_of_bounded_bytes() -> None:
    """``check_rows`` sizes its batches by what a row holds, not by the backend's
    ``read_batch_size`` (16,384 rows of H5MD's 128-atom frames held 655 MB): every row is
    checked once, in order, and a bad row is still named."""
    from collections.abc import Sequence
    from typing import Any

    from asebytes_nodes import ReadableBackend
    from asebytes_nodes.validation import _CHECK_BYTES, _FIRST_CHECK, check_rows

    atoms, n = 1000, 2000

    class Wide(ReadableBackend):  # a user backend making 48 kB rows on request
        read_batch_size = 16384

        def __init__(self) -> None:
            self.requests: list[list[int]] = []

        def __len__(self) -> int:
            return n

        def read_rows(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None) -> Any:
            self.requests.append([int(i) for i in indices])
            return [
                {
                    "arrays.numbers": np.ones(atoms, np.int64),
                    "arrays.positions": np.zeros((atoms, 3)),
                    "calc.forces": np.zeros((atoms + (i == n - 3), 3)),  # row n - 3: one force too many
                }
                for i in indices
            ]

    backend = Wide()
    problems = check_rows(backend)
    assert [i for request in backend.requests for i in request] == list(range(n))
    row_bytes = atoms * (8 + 24 + 24)
    assert len(backend.requests[0]) == _FIRST_CHECK
    assert max(len(r) for r in backend.requests[1:]) <= _CHECK_BYTES // row_bytes + 1
    assert len(problems) == 1 and f"row {n - 3}" in problems[0] and "calc.forces" in problems[0]
