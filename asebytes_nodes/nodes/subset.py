"""The Subset node: chosen rows of an upstream node's frames, as indices and optionally a store;
and what it shares with :class:`~asebytes_nodes.nodes.Part`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zntrack

from ..io import ASEIO
from ..selection import SelectedRows
from ._config import SubsetConfig
from ._node import FramesNode, missing_output
from ._ops import as_aseio, fingerprint, frames_of, write_sharded, write_store
from ._select import select_rows

__all__ = ["SelectionNode", "Subset"]


class SelectionNode(FramesNode):
    """A node whose output is rows of upstream frames: ``selection.json`` (the row numbers and a
    fingerprint of the upstream data) and, with ``config.materialize``, a store of their own.

    The fingerprint makes the stages that read the selection re-run when the upstream frames
    change even if the row numbers do not. Without a store, :attr:`frames` reads the upstream
    store through the indices.
    """

    _store_field = "materialize"

    config: dict[str, Any] = zntrack.params(default_factory=dict)
    selection_path: Path = zntrack.outs_path(zntrack.nwd / "selection.json")
    frames_path: Path | list[Path] = zntrack.outs_path(default_factory=list)

    def upstream(self) -> ASEIO:
        """The frames the row numbers refer to."""
        raise NotImplementedError

    def write_selection(
        self, source: ASEIO, rows: np.ndarray, config: Any, digest: str | None = None
    ) -> None:
        """Write ``selection.json`` (``digest``: the upstream fingerprint, computed if not given)
        and the materialised store, if configured."""
        if config.materialize is not None:
            target = self.store_target(config)
            if getattr(config, "sharded", False):  # shards written by Dask workers (asebytes_nodes.shards)
                write_sharded(ASEIO(SelectedRows(source, rows)), target, config.materialize, config)
            else:
                write_store(source, target, config.materialize, chunk_size=config.chunk_size, rows=rows)
        selection = {
            "indices": rows.tolist(),
            "source_rows": len(source),
            "source": digest or fingerprint(source),
        }
        Path(self.selection_path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.selection_path).write_text(json.dumps(selection))
        print(f"{self.name}: {len(rows)} of {len(source)} frames selected")

    @property
    def indices(self) -> np.ndarray:
        """Selected row numbers of the upstream frames, read through the node's state."""
        path = Path(self.selection_path).as_posix()
        try:
            with self.state.fs.open(path) as fh:
                return np.asarray(json.load(fh)["indices"], dtype=np.int64)
        except FileNotFoundError as exc:  # not pulled, or not fetched at that revision
            raise missing_output(self, path, exc) from exc

    @property
    def frames(self) -> ASEIO:
        """The selected frames as a lazy, read-only ASEIO, at this node's revision."""
        if self.store_path is not None:
            return super().frames
        return ASEIO(SelectedRows(self.upstream(), self.indices))


class Subset(SelectionNode):
    """Rows of ``data.frames`` picked by indices, a slice, filters or a seeded sample.

    Outputs ``selection.json`` and, with ``config.materialize``, a store (see
    :class:`SelectionNode`). To cut frames into train/validation/test parts, use
    :class:`~asebytes_nodes.nodes.Split` and :class:`~asebytes_nodes.nodes.Part`, whose parts
    are disjoint whatever their parameters.

    Examples
    --------
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     load = Load(source="data/md.extxyz")
    ...     small = Subset(data=load, name="Small", config={"filters": {"n_atoms": {"max": 20}},
    ...                                                     "sample": {"n": 100, "seed": 1}})
    >>> project.repro()  # doctest: +SKIP
    >>> len(zntrack.from_rev("Small").frames)  # doctest: +SKIP
    100
    """

    _model = SubsetConfig

    data: Any = zntrack.deps()

    def upstream(self) -> ASEIO:
        return as_aseio(frames_of(self.data))

    def run(self) -> None:
        config: SubsetConfig = self.settings()
        source = self.upstream()
        with self.stage_errors():
            rows = select_rows(source, config, workers=config.workers, scheduler=config.scheduler)
        self.write_selection(source, rows, config)
