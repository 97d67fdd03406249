"""Run the storage benchmark suite and write results.json and results.md.

    python benchmarks/run.py            # full run (several minutes)
    python benchmarks/run.py --quick    # small sizes, under a minute (smoke test)
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
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ase import Atoms

from .datasets import ethanol, periodic
from .measure import bench_codec, bench_dataset, bench_lookup
from .peers import PEERS
from .report import figure, render

HERE = Path(__file__).resolve().parent
PACKAGES = (
    "asebytes-nodes", "asebytes", "ase", "ase-db-backends", "znh5md",
    "lmdb", "msgpack", "zarr", "h5py", "numpy",
)


@dataclass(frozen=True)
class Config:
    """Sizes for one mode of the suite."""

    mode: str
    datasets: tuple[tuple[str, Callable[[int], list[Atoms]], int], ...]
    codec_frames: int
    lookup_sizes: tuple[int, ...]
    repeats: int = 3  # best of up to this many timed runs per figure


FULL = Config(
    mode="full",
    datasets=(
        ("ethanol-1000", ethanol, 1000),
        ("ethanol-20000", ethanol, 20_000),
        ("periodic-1000", periodic, 1000),
    ),
    codec_frames=1000,
    lookup_sizes=(10**3, 10**4, 10**5, 10**6),
)
QUICK = Config(
    mode="quick",
    datasets=(("ethanol-50", ethanol, 50), ("periodic-50", periodic, 50)),
    codec_frames=50,
    lookup_sizes=(10**3, 10**4),
    repeats=1,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def _git_state() -> str:
    """Commit of the measured code, with "+dirty" when the package has uncommitted changes."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if _git("status", "--porcelain", "asebytes_nodes") else "")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _meta(config: Config) -> dict[str, Any]:
    return {
        "git": _git_state(),
        "mode": config.mode,
        "repeats": config.repeats,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


def run(config: Config) -> dict[str, Any]:
    """Every benchmark of ``config``, as one JSON-ready dict."""
    start = time.perf_counter()
    results: dict[str, Any] = {"meta": _meta(config), "datasets": {}}
    skipped = {cls: reason for cls in PEERS if (reason := cls.skip_reason()) is not None}
    peers = [cls for cls in PEERS if cls not in skipped]
    results["skipped"] = {cls.name: reason for cls, reason in skipped.items()}
    for name, reason in results["skipped"].items():
        _log(f"skipping {name}: {reason}")
    with tempfile.TemporaryDirectory(prefix="asebytes-nodes-bench-") as tmp:
        workdir = Path(tmp)
        _log("codec round trip")  # first, before the datasets fill the process's heap
        results["codec"] = bench_codec(ethanol(config.codec_frames))
        for name, build, n in config.datasets:
            _log(f"{name}: building")
            frames = build(n)
            folder = workdir / name
            folder.mkdir()
            results["datasets"][name] = bench_dataset(
                frames, peers, folder, repeats=config.repeats, log=_log
            )
        _log("lookup scaling")
        results["lookup_scaling"] = bench_lookup(
            config.lookup_sizes, workdir, repeats=config.repeats, log=_log
        )
    results["notes"] = {cls.name: cls.note for cls in peers}
    results["meta"]["git_at_end"] = _git_state()  # the package may change while a long run goes on
    results["runtime_seconds"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where results.* go")
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else FULL)
    markdown = render(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "results.md").write_text(markdown)
    figure(results, args.out_dir / "results.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
