"""ZnTrack workflow nodes: Load, Cache, Convert, Subset, Split and Part, Benchmark.

Every stage of a pipeline imports this package, so it imports nothing until a name is used.
Each node lives in a public module of its own (a stage runs
``zntrack run asebytes_nodes.nodes.load.Load``); the configuration models are in ``_config``
and derive the backend options from :mod:`asebytes_nodes.options`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Load": ".load",
    "Cache": ".cache",
    "Convert": ".convert",
    "Subset": ".subset",
    "Split": ".split",
    "Part": ".part",
    "Benchmark": ".benchmark",
    "BenchmarkConfig": "._config",
    "CacheConfig": "._config",
    "ConvertConfig": "._config",
    "Filters": "._config",
    "H5MDOptions": "._config",
    "LMDBOptions": "._config",
    "LoadConfig": "._config",
    "Range": "._config",
    "PartConfig": "._config",
    "Sample": "._config",
    "SliceSpec": "._config",
    "SplitConfig": "._config",
    "StoreSpec": "._config",
    "SubsetConfig": "._config",
    "ZarrOptions": "._config",
    "from_rev": "._node",
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
    "Part",
    "PartConfig",
    "Range",
    "Sample",
    "SliceSpec",
    "Split",
    "SplitConfig",
    "StoreSpec",
    "Subset",
    "SubsetConfig",
    "ZarrOptions",
    "from_rev",
]

if TYPE_CHECKING:
    from ._config import (
        BenchmarkConfig,
        CacheConfig,
        ConvertConfig,
        Filters,
        H5MDOptions,
        LMDBOptions,
        LoadConfig,
        PartConfig,
        Range,
        Sample,
        SliceSpec,
        SplitConfig,
        StoreSpec,
        SubsetConfig,
        ZarrOptions,
    )
    from ._node import from_rev
    from .benchmark import Benchmark
    from .cache import Cache
    from .convert import Convert
    from .load import Load
    from .part import Part
    from .split import Split
    from .subset import Subset


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asebytes_nodes.nodes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
