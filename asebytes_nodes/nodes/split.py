"""The Split and Part nodes: one seeded split computed once, and its parts as nodes of their own.

Split writes every part's row numbers to one ``split.json``; each Part reads its part from
there. The parts are disjoint by construction: a parameter of the split (seed, fractions,
filters) moves all of them, since every Part depends on the Split's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zntrack

from ..io import ASEIO
from ._config import PartConfig, SplitConfig
from ._node import ConfiguredNode
from ._ops import as_aseio, fingerprint
from ._select import split_rows
from .subset import SelectionNode

__all__ = ["Part", "Split"]


class Split(ConfiguredNode):
    """Rows of ``data.frames`` (indices or slice, then filters) cut into named, disjoint parts.

    Outputs ``split.json``: the row numbers of every part and a fingerprint of the upstream
    data. Read a part through a :class:`Part` node, or directly with :meth:`part`.

    Examples
    --------
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     load = Load(source="data/md.extxyz")
    ...     split = Split(data=load, config={"fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
    ...                                      "seed": 42, "filters": {"max_force": 10.0}})
    ...     train = Part(split=split, name="Train", config={"part": "train",
    ...                                                     "materialize": {"backend": "lmdb"}})
    ...     test = Part(split=split, name="Test", config={"part": "test"})
    >>> project.repro()  # doctest: +SKIP

    ``dvc exp run -S 'Split.config.seed=7'`` then draws a new split and re-runs every part.
    """

    _model = SplitConfig

    data: Any = zntrack.deps()
    config: dict[str, Any] = zntrack.params(default_factory=dict)
    split_path: Path = zntrack.outs_path(zntrack.nwd / "split.json")

    def run(self) -> None:
        config: SplitConfig = self.settings()
        source = as_aseio(self.data.frames)
        parts = split_rows(source, config)
        record = {
            "parts": {name: rows.tolist() for name, rows in parts.items()},
            "source_rows": len(source),
            "source": fingerprint(source),
        }
        Path(self.split_path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.split_path).write_text(json.dumps(record))
        sizes = ", ".join(f"{name} {len(rows)}" for name, rows in parts.items())
        print(f"{self.name}: {sizes} of {len(source)} frames")

    def record(self) -> dict[str, Any]:
        """The content of ``split.json``, read through the node's state."""
        with self.state.fs.open(Path(self.split_path).as_posix()) as fh:
            result: dict[str, Any] = json.load(fh)
        return result

    def part(self, name: str) -> np.ndarray:
        """Row numbers of part ``name`` of the upstream frames."""
        parts = self.record()["parts"]
        if name not in parts:
            raise KeyError(f"{self.name} has no part {name!r}; its parts are {sorted(parts)}")
        return np.asarray(parts[name], dtype=np.int64)


class Part(SelectionNode):
    """One part of a :class:`Split`, as ``selection.json`` and optionally a store.

    ``split`` is the Split node; ``config.part`` names the part. A part name the split does
    not have is refused when the graph is built, and again when the stage runs.
    """

    _model = PartConfig

    split: Any = zntrack.deps()

    def configured(self, config: PartConfig) -> None:
        fractions = _split_fractions(self.split)
        if fractions is not None and config.part not in fractions:
            raise ValueError(
                f"{self.name}: part {config.part!r} is not one of the split's {sorted(fractions)}"
            )
        super().configured(config)

    def upstream(self) -> ASEIO:
        return as_aseio(self.split.data.frames)

    def run(self) -> None:
        config: PartConfig = self.settings()
        try:
            rows = self.split.part(config.part)
        except KeyError as exc:
            raise SystemExit(f"{self.name}: {exc.args[0]}") from exc
        self.write_selection(self.upstream(), rows, config, digest=self.split.record()["source"])


def _split_fractions(split: Any) -> dict[str, float] | None:
    """The fractions of a Split node being built (None if they cannot be read yet)."""
    config = getattr(split, "__dict__", {}).get("config")
    return config.get("fractions") if isinstance(config, dict) else None
