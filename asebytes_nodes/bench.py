"""The backend benchmark: write, read and size figures of several backends on the same frames.

``asebytes-nodes bench`` runs it on a user's frames or a built-in dataset and prints the table;
the :class:`~asebytes_nodes.nodes.Benchmark` node runs it in a pipeline. It needs neither
pydantic nor ZnTrack.

Each store is written from the same upstream frames, closed, reopened read-only and read four
ways. Write time counts only ``extend`` calls (reading the upstream frames is not timed); read
timings are the best of ``repeats`` runs, after a garbage collection. Sizes are what the
backend reports for the store and its side files (:meth:`ReadableBackend.store_size`).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends._base import ReadableBackend
from .errors import MissingValueError, RaggedColumnError, UnknownKeyError
from .io import ASEIO
from .options import Options, StoreLike, check_options, option, store_suffix
from .progress import progress
from .registry import list_backends
from .selection import SelectedRows
from .validation import check_key
from .views import check_keys

__all__ = [
    "METRICS",
    "disk_usage",
    "Settings",
    "Store",
    "benchmark",
    "builtin_frames",
    "figure",
    "markdown_table",
    "print_bench",
]


@dataclass(frozen=True)
class Store:
    """A store to measure: a backend and the options set for it (checked when made)."""

    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_options(self.backend, self.options)


@dataclass(frozen=True, kw_only=True)
class Settings(Options):
    """How the stores are measured; the Benchmark node's configuration derives its fields from here."""

    max_frames: int | None = option(None, "Use at most this many upstream frames.", gt=0)
    n_random: int = option(200, "Frames read one by one in random order.", gt=0)
    repeats: int = option(3, "Read timings are the best of this many runs.", gt=0)
    seed: int = option(0, "Seed of the random read order.")
    column: str = option("calc.energy", "Key read as one column.")
    chunk_size: int = option(1000, "Frames per read/write batch; bounds the memory in use.", gt=0)

    def check(self) -> None:
        try:
            check_key(self.column)
        except UnknownKeyError as exc:
            raise ValueError(str(exc)) from None


#: Measured quantities: key, column title, unit.
METRICS = (
    ("write", "write", "frames/s"),
    ("read_all", "read all", "frames/s"),
    ("random", "random reads", "frames/s"),
    ("column", "column read", "frames/s"),
    ("size", "size", "MiB"),
)


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _read_column(db: ASEIO, key: str) -> Any:
    view = db[key]
    try:
        return view.to_numpy()
    except (RaggedColumnError, MissingValueError):  # ragged per-atom values, or rows without the key
        return view.to_list()


def disk_usage(backend: type[ReadableBackend], path: str | Path) -> tuple[int, int]:
    """``(bytes, files)`` of the local store at ``path`` with its side files, as ``backend`` counts them."""
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    sides = [side for side in backend.side_files(path) if side.exists()]
    return backend.store_size(path), len(files) + len(sides)


def measure(frames: ASEIO, store: StoreLike, path: Path, settings: Settings) -> dict[str, float]:
    """Write ``frames`` to a new store at ``path``, read it back, and time both.

    Returns the figures named in :data:`METRICS`, plus ``bytes_per_frame``, ``files`` and
    ``atoms`` (the total atom count).
    """
    n = len(frames)
    write_s = 0.0
    atoms = 0
    with ASEIO(path, backend=store.backend, **store.options) as out, progress(n, store.backend) as bar:
        for images in frames.chunked(settings.chunk_size):
            start = time.perf_counter()
            out.extend(images)
            write_s += time.perf_counter() - start
            atoms += sum(len(a) for a in images)
            bar.update(len(images))
    picks = np.random.default_rng(settings.seed).integers(0, n, settings.n_random).tolist()
    with ASEIO(path, readonly=True) as db:
        read_s = _best(lambda: [None for _ in db.chunked(settings.chunk_size)], settings.repeats)
        random_s = _best(lambda: [db[i] for i in picks], settings.repeats)
        column_s = _best(lambda: _read_column(db, settings.column), settings.repeats)
    size, files = disk_usage(list_backends()[store.backend].load(), path)
    return {
        "write": n / write_s,
        "read_all": n / read_s,
        "random": len(picks) / random_s,
        "column": n / column_s,
        "size": size / 2**20,
        "bytes_per_frame": size / n,
        "files": files,
        "atoms": atoms,
    }


def benchmark(
    frames: ASEIO,
    stores: Mapping[str, StoreLike],
    settings: Settings | None = None,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Every store of ``stores`` (by label) measured on (the first ``max_frames`` of) ``frames``.

    Returns ``{"frames": n, "atoms_per_frame": mean, <label>: {metric: value}, ...}``; the
    temporary stores are deleted.

    >>> frames = ASEIO("memory://")
    >>> frames.extend(builtin_frames("ethanol", 20))
    >>> results = benchmark(frames, {"lmdb": Store("lmdb")}, Settings(n_random=5, repeats=1))
    >>> results["frames"], results["lmdb"]["write"] > 0
    (20, True)
    """
    settings = settings or Settings()
    if settings.max_frames is not None and settings.max_frames < len(frames):
        frames = ASEIO(SelectedRows(frames, np.arange(settings.max_frames)))
    if len(frames) == 0:
        raise ValueError("the upstream dataset is empty: there is nothing to benchmark")
    check_keys(frames.backend, [settings.column])
    results: dict[str, Any] = {"frames": len(frames)}
    with tempfile.TemporaryDirectory(prefix="asebytes-bench-", dir=workdir) as tmp:
        for label, store in stores.items():
            path = Path(tmp) / f"{label}{store_suffix(store.backend)}"
            measured = measure(frames, store, path, settings)
            results["atoms_per_frame"] = measured.pop("atoms") / len(frames)
            results[label] = measured
    return results


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return [(label, values) for label, values in results.items() if isinstance(values, dict)]


def _fmt(value: float) -> str:
    """Three significant digits, as in the metrics (runs here vary by more than that):
    ``719,662`` -> ``720,000``, ``0.8512`` -> ``0.851``."""
    rounded = float(f"{value:.3g}")
    return f"{rounded:,.0f}" if abs(rounded) >= 100 else f"{rounded:.3g}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per store."""
    head = [f"{title} ({unit})" for _, title, unit in METRICS]
    lines = [
        f"Benchmark on {results['frames']} frames ({results['atoms_per_frame']:.1f} atoms per frame).",
        "",
        "| store | " + " | ".join(head) + " | files |",
        "|---" * (len(head) + 2) + "|",
    ]
    for label, values in _rows(results):
        cells = [_fmt(values[key]) for key, _, _ in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {int(values['files'])} |")
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], path: str | Path) -> None:
    """Horizontal bar charts, one panel per metric, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(results)
    labels = [label for label, _ in rows]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 0.5 * len(labels) + 1.6))
    for ax, (key, title, unit) in zip(axes, METRICS, strict=True):
        values = [v[key] for _, v in rows]
        ax.barh(labels, values, color="tab:blue")
        ax.set_title(title)
        ax.set_xlabel(unit)
        ax.invert_yaxis()
        for y, value in enumerate(values):
            ax.text(value, y, " " + _fmt(value), va="center", fontsize=8)
        ax.margins(x=0.35)
    fig.suptitle(f"{results['frames']} frames, {results['atoms_per_frame']:.1f} atoms per frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_CRYSTALS = (("Cu", "fcc", 3.61), ("Si", "diamond", 5.43), ("NaCl", "rocksalt", 5.64))


def builtin_frames(name: str, n: int, seed: int = 0) -> list[Any]:
    """``n`` seeded frames with energy, forces and stress: ``ethanol`` (9 atoms, no cell)
    or ``periodic`` (rattled bulk crystals of 2 to 108 atoms)."""
    from ase.build import bulk, molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        if name == "ethanol":
            atoms = molecule("CH3CH2OH")
        elif name == "periodic":
            symbol, kind, a = _CRYSTALS[i % len(_CRYSTALS)]
            reps = rng.integers(1, 4, 3)
            atoms = bulk(symbol, kind, a=a, cubic=True).repeat(tuple(int(r) for r in reps))
        else:
            raise ValueError(f"unknown built-in dataset {name!r}; use 'ethanol' or 'periodic'")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.info["index"] = i
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(rng.normal(-4.0 * len(atoms), 1.0)),
            forces=rng.normal(0.0, 0.5, (len(atoms), 3)),
            stress=rng.normal(0.0, 0.01, 6),
        )
        frames.append(atoms)
    return frames


def print_bench(args: argparse.Namespace) -> None:
    """Run the benchmark the command line asked for and print a Markdown table (or JSON)."""
    if args.path:
        frames = ASEIO(args.path, readonly=True, **({"split": args.split} if args.split else {}))
    else:
        frames = ASEIO("memory://")
        frames.extend(builtin_frames(args.dataset, args.frames))
    backends = args.backends  # checked names (the command line's --backends)
    settings = Settings(max_frames=args.frames, n_random=min(200, args.frames))
    results = benchmark(frames, {b: Store(b) for b in backends}, settings)
    print(json.dumps(results, indent=2) if args.json else markdown_table(results))
