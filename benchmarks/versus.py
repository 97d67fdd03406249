"""Our backends at the working tree against an earlier revision, side by side in one run.

    python benchmarks/versus.py e04f21f                 # ethanol-20000 and periodic-1000
    python benchmarks/versus.py e04f21f --rounds 5 --out /tmp/versus.md

The revision is checked out into a temporary git worktree. Each round runs one fresh process
per version (old, then new, alternating, so machine noise hits both alike); every figure is the
best over rounds and repeats. Per dataset and backend (LMDB, Zarr, H5MD): write (``extend`` of
every frame into a new store), read-all, 100 random ``db[i]``, the energy column, and a cold
open (the store opened and its first frame read in a fresh process; library and backend module
imports excluded, modules byte-compiled first as an installed wheel is).
Ratios are new / old rate: above 1 is faster now.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    _HERE = Path(__file__).resolve().parent  # keep benchmarks/datasets.py from shadowing `datasets`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))
    __package__ = "benchmarks"

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from .datasets import ethanol, periodic, random_indices

ROOT = Path(__file__).resolve().parent.parent
DATASETS: dict[str, tuple[Callable[[int], list], int]] = {
    "ethanol-20000": (ethanol, 20_000),
    "periodic-1000": (periodic, 1000),
}
SUFFIXES = {"LMDB": ".lmdb", "Zarr": ".zarr", "H5MD": ".h5"}
METRICS = ("write", "read-all", "random", "energy", "cold open")
REPEATS = 3


def _best(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _cold(path: Path, src: str) -> float:
    """Seconds to open ``path`` and read its first frame in a fresh process (imports excluded)."""
    code = (
        "import time, asebytes_nodes, ase, numpy, zarr, h5py, lmdb\n"
        "asebytes_nodes.LMDBBackend, asebytes_nodes.ZarrBackend, asebytes_nodes.H5MDBackend"
        "  # imported untimed\n"
        "from asebytes_nodes import ASEIO\n"
        "start = time.perf_counter()\n"
        f"ASEIO({str(path)!r}, readonly=True)[0]\n"
        "print(time.perf_counter() - start)\n"
    )
    env = {**os.environ, "PYTHONPATH": src}
    # cwd: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=path.parent
    )
    return float(done.stdout.split()[-1])


def _measure(frames: list, indices: object, folder: Path, suffix: str, src: str) -> dict[str, float]:
    """Rates of one backend on one dataset (see the module docstring)."""
    from asebytes_nodes import ASEIO

    n, written = len(frames), iter(range(1000))

    def write() -> None:
        with ASEIO(folder / f"s{next(written)}{suffix}") as db:
            db.extend(frames, show_progress=False)

    figures = {"write": n / _best(write)}
    path = folder / f"s0{suffix}"
    with ASEIO(path, readonly=True) as db:
        list(db)  # warm the page cache and any decoded cache, as run.py does
        figures["read-all"] = n / _best(lambda: list(db))
        figures["random"] = len(indices) / _best(lambda: [db[int(i)] for i in indices])
        figures["energy"] = n / _best(lambda: db["calc.energy"].to_numpy())
    figures["cold open"] = 1.0 / min(_cold(path, src) for _ in range(REPEATS))
    return figures


def child(src: str, workdir: str) -> None:
    """Measure every dataset and backend with the package found first on sys.path; print JSON."""
    import asebytes_nodes

    found = Path(asebytes_nodes.__file__).resolve().parent.parent
    if found != Path(src).resolve():
        raise RuntimeError(f"measuring {src} but asebytes_nodes came from {found}")
    results: dict[str, dict[str, float]] = {}
    for name, (make, n) in DATASETS.items():
        frames, indices = make(n), random_indices(n, 100)
        for backend, suffix in SUFFIXES.items():
            folder = Path(workdir) / f"{name}-{backend}"
            folder.mkdir(parents=True)
            results[f"{name} {backend}"] = _measure(frames, indices, folder, suffix, src)
            shutil.rmtree(folder)
    print(json.dumps(results))


def _run_child(src: Path) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}", "ASEBYTES_NODES_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as work:
        code = f"from benchmarks.versus import child; child({str(src)!r}, {work!r})"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=work)
    if done.returncode:
        raise RuntimeError(f"measuring {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def _merge(best: dict[str, dict[str, float]], new: dict[str, dict[str, float]]) -> None:
    for row, figures in new.items():
        kept = best.setdefault(row, {})
        for metric, value in figures.items():
            kept[metric] = max(kept.get(metric, 0.0), value)


def render(revision: str, old: dict[str, dict[str, float]], new: dict[str, dict[str, float]]) -> str:
    """A Markdown table: rates at the revision and now (frames/s; cold open: opens/s) and ratios."""
    lines = [
        f"# Working tree against {revision}",
        "",
        "Best over rounds of alternating fresh processes; rates in frames/s (cold open: opens/s);",
        "ratio = now / before (above 1: faster now).",
        "",
        "| dataset backend | " + " | ".join(f"{m} before | now | ratio" for m in METRICS) + " |",
        "| --- |" + " ---: | ---: | ---: |" * len(METRICS),
    ]
    for row in old:
        cells = []
        for metric in METRICS:
            a, b = old[row][metric], new[row][metric]
            cells += [f"{a:,.0f}", f"{b:,.0f}", f"{b / a:.2f}"]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _src(tree: Path) -> Path:
    """The folder holding the ``asebytes_nodes`` package of a checkout (``src/`` or the top)."""
    return tree / "src" if (tree / "src" / "asebytes_nodes").is_dir() else tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    tree = Path(tempfile.mkdtemp(prefix="asebytes-versus-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.revision],
                   check=True, capture_output=True)
    try:
        old_src, new_src = _src(tree), _src(ROOT)
        for src in (old_src, new_src):  # as pip does for a wheel: a cold open must not time the compiler
            package = str(src / "asebytes_nodes")
            subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
        old: dict[str, dict[str, float]] = {}
        new: dict[str, dict[str, float]] = {}
        for k in range(args.rounds):
            print(f"round {k + 1}/{args.rounds}", file=sys.stderr, flush=True)
            _merge(old, _run_child(old_src))
            _merge(new, _run_child(new_src))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    table = render(args.revision, old, new)
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
