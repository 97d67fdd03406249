"""ZnTrack workflow nodes: Load, Convert, Cache, Subset and Benchmark.

Every stage of a pipeline imports this package, so it imports nothing until a name is used.
Configuration models live beside the nodes (``LoadConfig``, ``SubsetConfig``...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Load": "._load",
    "Cache": "._cache",
    "Convert": "._convert",
    "Subset": "._subset",
    "Benchmark": "._benchmark",
    "BenchmarkConfig": "._config",
    "CacheConfig": "._config",
    "ConvertConfig": "._config",
    "Filters": "._config",
    "H5MDOptions": "._config",
    "LMDBOptions": "._config",
    "LoadConfig": "._config",
    "Range": "._config",
    "Sample": "._config",
    "SliceSpec": "._config",
    "Split": "._config",
    "StoreSpec": "._config",
    "SubsetConfig": "._config",
    "ZarrOptions": "._config",
}

__all__ = [
    "Benchmark",
    "BenchmarkConfig",
    "Cache",
    "CacheConfig",
    "Convert",
    "ConvertConfig",
    "Filters",
    "H5MDOptions",
    "LMDBOptions",
    "Load",
    "LoadConfig",
    "Range",
    "Sample",
    "SliceSpec",
    "Split",
    "StoreSpec",
    "Subset",
    "SubsetConfig",
    "ZarrOptions",
]

if TYPE_CHECKING:
    from ._benchmark import Benchmark
    from ._cache import Cache
    from ._config import (
        BenchmarkConfig,
        CacheConfig,
        ConvertConfig,
        Filters,
        H5MDOptions,
        LMDBOptions,
        LoadConfig,
        Range,
        Sample,
        SliceSpec,
        Split,
        StoreSpec,
        SubsetConfig,
        ZarrOptions,
    )
    from ._convert import Convert
    from ._load import Load
    from ._subset import Subset


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asebytes_nodes.nodes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
