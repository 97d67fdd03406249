"""The Subset node: chosen rows of an upstream node's frames, as indices and optionally a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zntrack

from ..io import ASEIO
from ._config import SubsetConfig
from ._node import FramesNode
from ._ops import SelectedRows, as_aseio, fingerprint, write_store
from ._select import select_rows

__all__ = ["Subset"]


class Subset(FramesNode):
    """Rows of ``data.frames`` picked by indices, a slice, filters, a seeded sample or a split.

    The output ``selection.json`` holds the row numbers and a fingerprint of the upstream
    data, so stages that read this subset re-run when the upstream frames change even if
    the row numbers do not. With ``config.materialize`` the frames are also copied into a
    store of their own; otherwise :attr:`frames` reads the upstream store through the indices.

    Examples
    --------
    One split, three nodes: the same fractions and seed give disjoint parts.

    >>> split = {"fractions": {"train": 0.8, "val": 0.1, "test": 0.1}, "seed": 42}
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     load = Load(source="data/md.extxyz")
    ...     train = Subset(data=load, name="Train", config={"split": {**split, "part": "train"},
    ...                                                     "filters": {"max_force": 10.0}})
    ...     test = Subset(data=load, name="Test", config={"split": {**split, "part": "test"}})
    >>> project.repro()  # doctest: +SKIP
    >>> len(zntrack.from_rev("Train", rev="v1").frames)  # doctest: +SKIP
    """

    _model = SubsetConfig

    data: Any = zntrack.deps()
    config: dict[str, Any] = zntrack.params(default_factory=dict)
    selection_path: Path = zntrack.outs_path(zntrack.nwd / "selection.json")
    frames_path: Path | list[Path] = zntrack.outs_path(default_factory=list)

    def output_backend(self, config: SubsetConfig) -> str | None:
        return config.materialize.backend if config.materialize is not None else None

    def run(self) -> None:
        config: SubsetConfig = self.settings()
        source = as_aseio(self.data.frames)
        rows = select_rows(source, config)
        selection = {"indices": rows.tolist(), "source_rows": len(source), "source": fingerprint(source)}
        if config.materialize is not None:
            target = self.store_target(config)
            write_store(source, target, config.materialize, chunk_size=config.chunk_size, rows=rows)
        Path(self.selection_path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.selection_path).write_text(json.dumps(selection))
        print(f"{self.name}: {len(rows)} of {len(source)} frames selected")

    @property
    def indices(self) -> np.ndarray:
        """Selected row numbers of the upstream frames, read through the node's state."""
        with self.state.fs.open(Path(self.selection_path).as_posix()) as fh:
            return np.asarray(json.load(fh)["indices"], dtype=np.int64)

    @property
    def frames(self) -> ASEIO:
        """The selected frames as a lazy, read-only ASEIO, at this node's revision."""
        if self.store_path is not None:
            return super().frames
        return ASEIO(SelectedRows(as_aseio(self.data.frames), self.indices))
