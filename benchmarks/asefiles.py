"""Random access to ASE files: our read-only backend against ``ase.io.read``.

    python benchmarks/asefiles.py            # 10,000 ethanol frames (about a minute)
    python benchmarks/asefiles.py --quick    # 1,000 frames (smoke test)

Prints a Markdown table. The target (issue 4): extxyz random reads at least 20x
faster than ``ase.io.read(path, index=i)`` on a 10,000-frame file, with the
indexing pass reported on its own and included in a cold-open figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: import this folder as the ``benchmarks`` package, and take the
    # folder itself off sys.path so its datasets.py cannot shadow the ``datasets`` library.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))
    __package__ = "benchmarks"

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import ase.io
import numpy as np

from asebytes_nodes import ASEIO
from asebytes_nodes.backends._asefile import ASEFileBackend

from .datasets import ethanol, random_indices
from .measure import best_of
from .report import _table


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _each(read: Callable[[int], Any], indices: list[int]) -> list[Any]:
    return [read(i) for i in indices]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f}" if seconds < 0.01 else f"{seconds * 1e3:,.1f}"


def _open(path: Path, cache: Path | bool) -> ASEIO:
    return ASEIO(ASEFileBackend(path, index_cache=cache))


def _fresh_columns(path: Path, cache: Path) -> list[str]:
    with _open(path, cache) as db:
        return db.columns


def bench(
    n_frames: int, n_random: int, repeats: int, workdir: Path
) -> tuple[list[list[str]], dict[str, float]]:
    """Table rows (measurement, ours ms, ase.io ms, ase.io / ours) and the headline figures."""
    _log(f"building {n_frames:,} ethanol frames")
    frames = ethanol(n_frames)
    indices = random_indices(n_frames, n_random).tolist()
    rows: list[list[str]] = []
    figures: dict[str, float] = {}

    def row(what: str, ours: float, theirs: float | None) -> None:
        ratio = "–" if theirs is None else f"{theirs / ours:,.1f}×"
        rows.append([what, _ms(ours), "–" if theirs is None else _ms(theirs), ratio])

    for suffix in (".xyz", ".traj"):
        path = workdir / f"ethanol{suffix}"
        _log(f"{path.name}: writing")
        ase.io.write(path, frames)
        name = "extxyz" if suffix == ".xyz" else "traj"
        cache = workdir / "cache"
        scan_s = best_of(partial(_open, path, False), repeats) if suffix == ".xyz" else 0.0
        _open(path, cache)  # fills the cache
        warm_s = best_of(partial(_open, path, cache), repeats)
        db = _open(path, cache)
        expected = [frames[i].get_potential_energy() for i in indices]
        got = [a.get_potential_energy() for a in _each(db.__getitem__, indices)]
        assert np.allclose(got, expected), f"{name}: random reads returned wrong frames"
        _log(f"{path.name}: random reads")
        ours_s = best_of(partial(_each, db.__getitem__, indices), repeats) / n_random
        theirs_s = best_of(partial(_each, partial(ase.io.read, path), indices), repeats) / n_random
        if suffix == ".xyz":
            row(f"{name}: indexing pass ({n_frames:,} frames, once per file version)", scan_s, None)
            figures.update(scan_s=scan_s, random_ratio=theirs_s / ours_s)
            figures["cold_ratio"] = theirs_s * n_random / (scan_s + ours_s * n_random)
        row(f"{name}: open" + (" with a cached index" if suffix == ".xyz" else ""), warm_s, None)
        row(f"{name}: one random frame (mean of {n_random})", ours_s, theirs_s)
        if suffix == ".xyz":
            row(
                f"{name}: {n_random} random frames from a cold open, indexing included",
                scan_s + ours_s * n_random,
                theirs_s * n_random,
            )
        _log(f"{path.name}: last frame, keys, energy column, read-all")
        last_s = best_of(partial(db.__getitem__, -1), repeats)
        row(f"{name}: last frame `db[-1]`", last_s, best_of(partial(ase.io.read, path, -1), repeats))
        keys_s = best_of(partial(_fresh_columns, path, cache), 1)
        row(f"{name}: key list of a fresh handle (`db.columns`)", keys_s, None)
        energy_s = best_of(db["calc.energy"].to_numpy, 1)  # the view (and key list) is made untimed
        all_s = best_of(db[:].to_list, 1)
        theirs_all_s = best_of(partial(ase.io.read, path, ":"), 1)
        row(f"{name}: energy column", energy_s, None)
        row(f"{name}: read all frames", all_s, theirs_all_s)
        db.close()
    return rows, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 frames instead of 10,000")
    args = parser.parse_args(argv)
    n_frames, n_random, repeats = (1000, 20, 2) if args.quick else (10_000, 40, 3)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="asebytes-nodes-asefiles-") as tmp:
        rows, figures = bench(n_frames, n_random, repeats, Path(tmp))
    table = _table(["measurement", "ours ms", "ase.io.read ms", "ase.io / ours"], rows)
    verdict = "met" if figures["random_ratio"] >= 20 else "NOT met"
    print(
        f"## ASE files: {n_frames:,} ethanol frames (energy, forces, stress, info)\n\n"
        f"Ours is `ASEIO(path)` over `ASEFileBackend`; the peer is `ase.io.read(path, index=i)` "
        f'(and `index=":"` for read-all). Best of {repeats} runs per figure (1 for the last '
        f"three rows of each format); same {n_random} seeded random indices for both.\n\n"
        f"{table}\n\n"
        f"extxyz random reads: {figures['random_ratio']:,.0f}× faster than ase.io.read "
        f"(target 20×: {verdict}); {figures['cold_ratio']:,.0f}× with the indexing pass "
        f"({_ms(figures['scan_s'])} ms) included. Run took {time.perf_counter() - start:.0f} s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
