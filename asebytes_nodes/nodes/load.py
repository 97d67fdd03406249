"""The Load node: frames from any source the storage layer opens, into a store."""

from __future__ import annotations

from pathlib import Path

from ..errors import RowIndexError
from ..io import ASEIO
from ._config import LoadConfig
from ._ops import write_store
from ._source import SourceNode

__all__ = ["Load", "load_frames"]


def load_frames(source: str, config: LoadConfig, target: str | Path) -> int:
    """Copy ``source`` (its split, mapping and frame range) into a new store at ``target``;
    returns the number of frames written."""
    with ASEIO(source, readonly=True, **config.open_options()) as frames:
        rows = frames[config.frames.to_slice()].indices
        if frames.backend.length_known() and len(frames) and not len(rows):
            raise RowIndexError(config.frames.picks_none(len(frames)))
        return write_store(frames, target, config.store, chunk_size=config.chunk_size, rows=rows)


class Load(SourceNode):
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

    _model = LoadConfig

    def fetch(self, config: LoadConfig, target: Path) -> int:
        return load_frames(self.source, config, target)
