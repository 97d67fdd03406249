"""The Convert node: an upstream node's frames, or a file, rewritten in a chosen backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zntrack

from ..io import ASEIO
from ._config import ConvertConfig
from ._node import FramesNode
from ._ops import as_aseio, frames_of, write_sharded, write_store

__all__ = ["Convert", "input_frames"]


def input_frames(node: zntrack.Node) -> Any:
    """The frames a node reads: its upstream node's ``frames``, or its ``source`` file opened read-only."""
    if node.data is not None:
        return frames_of(node.data)
    return ASEIO(node.source, readonly=True)


class Convert(FramesNode):
    """Frames rewritten into the backend of ``config.store``, with its options.

    Give either ``data`` (an upstream node with ``frames``: Load, Subset, another Convert, or
    any node whose ``frames`` is an ASEIO or a list of Atoms; or that attribute itself,
    ``data=load.frames``) or ``source`` (a file, tracked by
    DVC). Backend options are checked per backend: Zarr compressor, level, chunk and shard
    sizes; LMDB map size; H5MD author, compression and particles group. With ``shards``,
    ``workers > 1`` or a ``scheduler``, the output is one folder of shard stores (one DVC
    output) written in parallel by Dask workers.

    Examples
    --------
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     load = Load(source="data/md.extxyz")
    ...     zarr = Convert(data=load, config={"store": {"backend": "zarr",
    ...                                                  "options": {"compressor": "zstd", "clevel": 7}}})
    >>> project.repro()  # doctest: +SKIP
    >>> zntrack.from_rev("Convert").frames["calc.energy"].to_numpy()  # doctest: +SKIP
    """

    _model = ConvertConfig

    data: Any = zntrack.deps(None)
    source: str | None = zntrack.deps_path(None)
    config: dict[str, Any] = zntrack.params(default_factory=dict)
    frames_path: Path | list[Path] = zntrack.outs_path(default_factory=list)

    def configured(self, config: ConvertConfig) -> None:
        if (self.data is None) == (self.source is None):
            raise ValueError(f"{self.name}: give exactly one of data (an upstream node) and source (a path)")
        super().configured(config)

    def run(self) -> None:
        config: ConvertConfig = self.settings()
        target = self.store_target(config)
        with self.stage_errors():
            if config.sharded:  # one shard per partition, written by Dask workers (asebytes_nodes.shards)
                count = write_sharded(as_aseio(input_frames(self)), target, config.store, config)
            else:
                count = write_store(input_frames(self), target, config.store, chunk_size=config.chunk_size)
        print(f"{self.name}: {count} frames -> {target}")
