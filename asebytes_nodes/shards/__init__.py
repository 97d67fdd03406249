"""Sharded datasets, lazy concatenation of stores, and parallel conversion on Dask.

* :class:`ShardedBackend`: a folder with a manifest and shard stores (LMDB, Zarr or H5MD),
  read and appended to as one list; ``ASEIO(folder)`` recognises it by its manifest.
* :class:`ConcatBackend` / :func:`concat`: any stores read as one list (``db1 + db2``).
* :func:`convert_sharded`: a source cut into partitions (extxyz byte ranges, row ranges,
  a HuggingFace dataset's Arrow files or stream shards, a selection's rows), each written as
  one shard by a serial loop or by Dask workers
  (``asebytes_nodes.convert(..., shard_frames=..., workers=...)``).

Names resolve on first use, so the registry's manifest sniffer imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ConcatBackend", "ShardedBackend", "concat", "convert_sharded", "shard_size"]

_LAZY = {
    "ConcatBackend": "._concat",
    "concat": "._concat",
    "ShardedBackend": "._backend",
    "convert_sharded": "._convert",
    "shard_size": "._write",
}

if TYPE_CHECKING:
    from ._backend import ShardedBackend
    from ._concat import ConcatBackend, concat
    from ._convert import convert_sharded
    from ._write import shard_size


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asebytes_nodes.shards' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
