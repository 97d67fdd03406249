"""The Cache node: a slow or remote source materialised once into a local, DVC-tracked store."""

from __future__ import annotations

from ._config import CacheConfig
from ._load import Load

__all__ = ["Cache"]


class Cache(Load):
    """A local copy of a whole source (``hf://``, ``s3://`` Zarr, a network file...).

    The copy is a DVC output: later stages and fresh clones (after ``dvc pull``) read it
    locally instead of fetching the source again. The source streams through in chunks of
    ``config.chunk_size`` frames. Unlike :class:`Load`, it keeps every frame as it is.

    Examples
    --------
    >>> with zntrack.Project() as project:  # doctest: +SKIP
    ...     cache = Cache(source="colabfit://my_dataset", config={"source_options": {"split": "train"}})
    ...     zarr = Convert(data=cache, config={"store": {"backend": "zarr"}})
    """

    _model = CacheConfig
