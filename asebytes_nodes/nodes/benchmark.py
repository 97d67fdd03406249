"""The Benchmark node: write, read and size figures of several backends on one upstream dataset.

The measurement is :func:`asebytes_nodes.bench.benchmark` (also behind ``asebytes-nodes bench``);
this node feeds it the upstream frames and writes its results as DVC metrics and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import zntrack

from ..bench import METRICS, Settings, benchmark, figure, markdown_table
from ._config import BenchmarkConfig
from ._node import ConfiguredNode
from ._ops import as_aseio, frames_of

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Benchmark", "readable_metrics"]


def _bars(key: str) -> Any:
    """A plots field holding one measure (a key of METRICS) of every store, drawn by
    ``dvc plots show`` as a horizontal bar chart."""
    title, unit = _UNITS[key]
    return zntrack.plots(x=unit, y="store", template="bar_horizontal", title=title, x_label=unit)


_UNITS = {key: (title, unit) for key, title, unit in METRICS}


def readable_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """What ``dvc metrics show`` lists: the frame count and, per store, the measures of METRICS
    to three significant digits (the full figures are in ``benchmark.md``)."""
    rounded = {
        label: {key: float(f"{values[key]:.3g}") for key, _, _ in METRICS}
        for label, values in results.items()
        if isinstance(values, dict)
    }
    return {"frames": results["frames"], **rounded}


class Benchmark(ConfiguredNode):
    """Reproducible backend comparison on the frames of ``data``.

    Every store in ``config.backends`` is written from the same frames and read back whole,
    at random rows, and as one column. Outputs: ``benchmark.md`` (the table to read),
    ``benchmark.png`` (bar charts), ``metrics.json`` (the measures to three digits, for
    ``dvc metrics show nodes/<name>/metrics.json`` and ``dvc metrics diff``) and one CSV per
    measure with a DVC bar-chart definition (``dvc plots show``, whose page loads Vega from a
    CDN: it stays blank offline, where ``benchmark.png`` shows the same).

    Examples
    --------
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     load = Load(source="data/md.extxyz")
    ...     bench = Benchmark(data=load, config={"backends": {
    ...         "lmdb": {"backend": "lmdb"},
    ...         "zarr-zstd": {"backend": "zarr", "options": {"compressor": "zstd"}}}})
    >>> project.repro()  # doctest: +SKIP
    >>> print(Path("nodes/Benchmark/benchmark.md").read_text())  # doctest: +SKIP
    """

    _model = BenchmarkConfig

    data: Any = zntrack.deps()
    config: dict[str, Any] = zntrack.params(default_factory=dict)
    metrics: dict[str, Any] = zntrack.metrics()
    write: pd.DataFrame = _bars("write")
    read_all: pd.DataFrame = _bars("read_all")
    random: pd.DataFrame = _bars("random")
    column: pd.DataFrame = _bars("column")
    size: pd.DataFrame = _bars("size")
    figure_path: Path = zntrack.outs_path(zntrack.nwd / "benchmark.png")
    table_path: Path = zntrack.outs_path(zntrack.nwd / "benchmark.md")

    def run(self) -> None:
        import pandas as pd

        config: BenchmarkConfig = self.settings()
        settings = Settings(**config.model_dump(exclude={"backends"}))
        with self.stage_errors():
            results = benchmark(as_aseio(frames_of(self.data)), config.backends, settings)
        self.metrics = readable_metrics(results)
        stores = pd.Index(
            [label for label, values in results.items() if isinstance(values, dict)], name="store"
        )
        for key, _, unit in METRICS:
            setattr(self, key, pd.DataFrame({unit: [results[s][key] for s in stores]}, index=stores))
        Path(self.figure_path).parent.mkdir(parents=True, exist_ok=True)
        figure(results, self.figure_path)
        Path(self.table_path).write_text(markdown_table(results))
        print(markdown_table(results))
