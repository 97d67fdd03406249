"""The Split node: one seeded split into named parts, computed once.

Split writes every part's row numbers to one ``split.json``; each
:class:`~asebytes_nodes.nodes.Part` reads its part from there. The parts are disjoint by
construction: a parameter of the split (seed, fractions, filters) moves all of them, since
every Part depends on the Split's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zntrack

from ._config import SplitConfig
from ._node import ConfiguredNode
from ._ops import as_aseio, fingerprint, frames_of
from ._select import split_rows

__all__ = ["Split"]


class Split(ConfiguredNode):
    """Rows of ``data.frames`` (indices or slice, then filters) cut into named, disjoint parts.

    Outputs ``split.json``: the row numbers of every part and a fingerprint of the upstream
    data. Read a part through a :class:`~asebytes_nodes.nodes.Part` node, or directly with :meth:`part`.

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
        source = as_aseio(frames_of(self.data))
        with self.stage_errors():
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
