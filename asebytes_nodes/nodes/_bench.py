"""Backend benchmark for :class:`~asebytes_nodes.nodes.Benchmark`, as plain functions.

Each configured store is written from the same upstream frames, closed, reopened read-only
and read four ways. Write time counts only ``extend`` calls (reading the upstream frames is
not timed); read timings are the best of ``repeats`` runs, after a garbage collection.
"""

from __future__ import annotations

import gc
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingValueError, RaggedColumnError
from ..io import ASEIO
from ..progress import progress
from ..views import check_keys
from ._ops import SelectedRows, iter_chunks, store_size, store_suffix

if TYPE_CHECKING:
    from ._config import BenchmarkConfig, StoreSpec

__all__ = ["METRICS", "benchmark", "figure", "markdown_table"]

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


def measure(frames: ASEIO, spec: StoreSpec, path: Path, config: BenchmarkConfig) -> dict[str, float]:
    """Write ``frames`` to a new store at ``path``, read it back, and time both.

    Returns the figures named in :data:`METRICS`, plus ``bytes_per_frame``, ``files`` and
    ``atoms`` (the total atom count).
    """
    n = len(frames)
    write_s = 0.0
    atoms = 0
    with ASEIO(path, backend=spec.backend, **spec.options) as out, progress(n, spec.backend) as bar:
        for images in iter_chunks(frames, config.chunk_size):
            start = time.perf_counter()
            out.extend(images)
            write_s += time.perf_counter() - start
            atoms += sum(len(a) for a in images)
            bar.update(len(images))
    picks = np.random.default_rng(config.seed).integers(0, n, config.n_random).tolist()
    with ASEIO(path, readonly=True) as db:
        read_s = _best(lambda: [None for _ in db.chunked(config.chunk_size)], config.repeats)
        random_s = _best(lambda: [db[i] for i in picks], config.repeats)
        column_s = _best(lambda: _read_column(db, config.column), config.repeats)
    size, files = store_size(path)
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


def benchmark(frames: ASEIO, config: BenchmarkConfig, workdir: str | Path | None = None) -> dict[str, Any]:
    """Every store of ``config.backends`` measured on (the first ``max_frames`` of) ``frames``.

    Returns ``{"frames": n, "atoms_per_frame": mean, <label>: {metric: value}, ...}``; the
    temporary stores are deleted.
    """
    if config.max_frames is not None and config.max_frames < len(frames):
        frames = ASEIO(SelectedRows(frames, np.arange(config.max_frames)))
    if len(frames) == 0:
        raise ValueError("the upstream dataset is empty: there is nothing to benchmark")
    check_keys(frames.backend, [config.column])
    results: dict[str, Any] = {"frames": len(frames)}
    with tempfile.TemporaryDirectory(prefix="asebytes-bench-", dir=workdir) as tmp:
        for label, spec in config.backends.items():
            path = Path(tmp) / f"{label}{store_suffix(spec.backend)}"
            measured = measure(frames, spec, path, config)
            results["atoms_per_frame"] = measured.pop("atoms") / len(frames)
            results[label] = measured
    return results


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return [(label, values) for label, values in results.items() if isinstance(values, dict)]


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


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
