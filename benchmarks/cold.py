"""Cold measurements: one operation on one store, each in a fresh Python process.

A DataLoader worker, a DVC stage or a CLI call opens the store in a new process. Each figure here
is timed the same way: the libraries the reader needs are imported first (untimed, as they are
already imported when a worker forks or a program starts its real work), the indices are drawn
(untimed), then the store is opened and the operation run inside the timed region. The package is
byte-compiled once before (``compile_package``), as pip does for an installed wheel, so the
interpreter's compiler is not what gets measured. The OS page cache stays warm: "cold" is the
process, not the disk.

    python -m benchmarks.cold KIND PATH OP '{"n_rows": 1000, "count": 100}'   # one measurement
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["compile_package", "measure", "page_in", "rounds"]


def compile_package() -> None:
    """Byte-compile our package and the benchmarks once, as an installed wheel is."""
    for folder in ("asebytes_nodes", "benchmarks"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / folder)], check=True)


def _arguments(op: str, spec: dict[str, Any]) -> tuple[Any, ...]:
    from .batches import batch_indices
    from .datasets import random_indices

    if op in ("random", "getitem"):
        return (random_indices(spec["n_rows"], spec["count"]),)
    if op == "batches":
        return (batch_indices(spec["n_rows"], spec.get("count")),)
    return ()


def child(kind: str, path: str, op: str, spec: dict[str, Any]) -> dict[str, float]:
    """Time opening ``path`` with ``kind``'s reader and running ``op`` (imports untimed)."""
    import gc

    from .batches import READERS, preload

    preload(kind)
    args = _arguments(op, spec)
    gc.collect()
    start = time.perf_counter()
    reader = READERS[kind](Path(path))
    value = getattr(reader, op)(*args)
    seconds = time.perf_counter() - start
    reader.close()
    return {"seconds": seconds, "value": value}


def measure(
    kind: str, path: Path, op: str, spec: dict[str, Any], repeats: int = 5, timeout: float = 300
) -> dict[str, Any]:
    """Median seconds of ``repeats`` fresh processes, with every run's seconds and the checksum.

    A process still running after ``timeout`` seconds is killed and the figure is reported as
    slower than that (``seconds`` None, ``timed_out_after``): one cliff must not stall the run.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ASEBYTES_NODES_PROGRESS": "0"}
    command = [sys.executable, "-m", "benchmarks.cold", kind, str(path), op, json.dumps(spec)]
    runs: list[float] = []
    value = None
    for _ in range(repeats):
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:  # the child is killed; a lower bound is still a figure
            return {"seconds": None, "timed_out_after": timeout, "runs": runs, "value": value}
        if done.returncode:
            raise RuntimeError(f"cold {op} on {kind} ({path}) failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.splitlines()[-1])
        runs.append(result["seconds"])
        value = result["value"]
    return {"seconds": statistics.median(runs), "runs": runs, "value": value}


def page_in(path: Path) -> int:
    """Read every file of the store at ``path`` once (bytes read): each fresh process then meets
    the page cache this module's figures assume, whatever the kernel reclaimed since the store
    was written (our LMDB's batches of a 581 MB store have read 16,000 to 71,000 frames/s
    between runs)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = 0
    for file in files:
        with open(file, "rb", buffering=0) as f:
            while block := f.read(1 << 22):
                total += len(block)
    return total


def rounds(
    paths: dict[str, Path], specs: dict[str, dict[str, Any]], repeats: int = 5, timeout: float = 300
) -> dict[str, dict[str, Any]]:
    """:func:`measure` of every store (``paths``: kind -> store) and operation (``specs``: op ->
    spec) in alternating rounds: each round pages every store in and runs each operation once
    per store, so the stores compared meet the same machine (its load and clock drift by several
    percent in a minute). Per kind, per op: the median, every run and the checksum; a timed-out
    operation is not run again. A kind whose child fails gets ``{"error": ...}``."""
    runs: dict[str, dict[str, list[float]]] = {kind: {op: [] for op in specs} for kind in paths}
    out: dict[str, dict[str, Any]] = {kind: {} for kind in paths}
    for _ in range(repeats):
        for kind, path in paths.items():
            if "error" in out[kind]:
                continue
            page_in(path)
            for op, spec in specs.items():
                if out[kind].get(op, {}).get("seconds", 0) is None:
                    continue  # timed out in an earlier round
                try:
                    one = measure(kind, path, op, spec, 1, timeout)
                except RuntimeError as exc:
                    out[kind] = {"error": str(exc)}
                    break
                if one["seconds"] is None:
                    out[kind][op] = {**one, "runs": runs[kind][op]}
                    continue
                runs[kind][op].append(one["seconds"])
                out[kind][op] = {
                    "seconds": statistics.median(runs[kind][op]),
                    "runs": runs[kind][op],
                    "value": one["value"],
                }
    return out


if __name__ == "__main__":
    kind_, path_, op_, spec_ = sys.argv[1:5]
    print(json.dumps(child(kind_, path_, op_, json.loads(spec_))))
