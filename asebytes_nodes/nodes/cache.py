"""The Cache node: a slow or remote source materialised once into a local, DVC-tracked store."""

from __future__ import annotations

from pathlib import Path

from ..errors import CacheMismatchError
from ..io import ASEIO
from ..registry import list_backends
from ._config import CacheConfig
from ._ops import git_ignore, write_store
from ._source import SourceNode

__all__ = ["Cache", "cache_frames"]

#: Backend of the scratch store that makes an interrupted download resume.
SCRATCH_BACKEND = "lmdb"


def cache_frames(source: str, config: CacheConfig, target: Path, scratch: Path) -> int:
    """Copy every frame of ``source`` into a new store at ``target``; returns the count.

    Rows pass through a ``cache_to`` store at ``scratch`` (:mod:`asebytes_nodes.cache`), so a
    download that is interrupted resumes where it stopped on the next run; the scratch store
    (an LMDB store) is deleted once ``target`` is complete. A scratch store filled from another
    source is discarded.
    """
    remove = list_backends()[SCRATCH_BACKEND].load().remove_store
    try:
        frames = ASEIO(source, readonly=True, cache_to=scratch, **config.source_options)
    except CacheMismatchError:
        remove(scratch)
        frames = ASEIO(source, readonly=True, cache_to=scratch, **config.source_options)
    with frames:
        count = write_store(frames, target, config.store, chunk_size=config.chunk_size)
    remove(scratch)
    return count


class Cache(SourceNode):
    """A local copy of a whole source (``hf://``, ``s3://`` Zarr, a network file...).

    The copy is a plain store and a DVC output: later stages and fresh clones (after
    ``dvc pull``) read it locally, without the source. While it is made, rows also go to a
    ``cache_to`` scratch store in the node's directory (git-ignored), so an interrupted
    download resumes. Unlike :class:`~asebytes_nodes.nodes.Load`, it keeps every frame as it is.

    Examples
    --------
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     cache = Cache(source="colabfit://my_dataset", config={"source_options": {"split": "train"}})
    ...     zarr = Convert(data=cache, config={"store": {"backend": "zarr"}})
    """

    _model = CacheConfig

    def fetch(self, config: CacheConfig, target: Path) -> int:
        scratch = target.with_name(".download.lmdb")
        git_ignore(scratch, SCRATCH_BACKEND, itself=True)
        return cache_frames(self.source, config, target, scratch)
