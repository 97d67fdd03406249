"""The Load node: frames from any source the storage layer opens, into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import zntrack

from ..io import ASEIO
from ._config import CacheConfig, LoadConfig
from ._node import FramesNode
from ._ops import write_store

__all__ = ["Load", "load_frames", "source_dependency"]


def source_dependency(source: str) -> str | None:
    """The local path DVC should track for ``source``; None for URIs (``hf://...``)."""
    return None if "://" in source else source


def load_frames(source: str, config: CacheConfig, target: str | Path) -> int:
    """Copy ``source`` (with a LoadConfig: its split, mapping and frame range) into a new store
    at ``target``; returns the number of frames written."""
    options: dict[str, Any] = dict(config.source_options)
    if isinstance(config, LoadConfig):
        options.update({k: v for k, v in (("split", config.split), ("mapping", config.mapping)) if v})
    with ASEIO(source, readonly=True, **options) as frames:
        rows = frames[config.frames.to_slice()].indices if isinstance(config, LoadConfig) else None
        return write_store(frames, target, config.store, chunk_size=config.chunk_size, rows=rows)


class Load(FramesNode):
    """Frames from a file, a store or a dataset URI, written to a store that DVC tracks.

    ``source`` is a path in any format the registry opens (extxyz, traj, LMDB, Zarr, H5MD...)
    or a URI (``hf://``, ``colabfit://``, ``optimade://``). A local path is also a DVC
    dependency, so editing the file re-runs the stage.

    Examples
    --------
    >>> import zntrack
    >>> from asebytes_nodes.nodes import Load
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     load = Load(source="data/md.extxyz", config={"frames": {"stop": 500}})
    >>> project.repro()  # doctest: +SKIP
    >>> len(zntrack.from_rev("Load").frames)  # doctest: +SKIP
    500
    """

    _model: ClassVar[type[CacheConfig]] = LoadConfig

    source: str = zntrack.params()
    config: dict[str, Any] = zntrack.params(default_factory=dict)
    source_file: str | None = zntrack.deps_path(None)
    frames_path: Path | list[Path] = zntrack.outs_path(default_factory=list)

    def configured(self, config: LoadConfig) -> None:
        self.source_file = source_dependency(self.source)
        super().configured(config)

    def run(self) -> None:
        config: CacheConfig = self.settings()
        if source_dependency(self.source) != self.source_file:
            raise ValueError(
                f"{self.name}: source is {self.source!r} but the graph tracks {self.source_file!r}; "
                "change the source where the graph is built and build it again"
            )
        target = self.store_target(config)
        count = self.fetch(config, target)
        print(f"{self.name}: {count} frames from {self.source} -> {target}")

    def fetch(self, config: CacheConfig, target: Path) -> int:
        """Write the source's frames to ``target``; returns the count."""
        return load_frames(self.source, config, target)
