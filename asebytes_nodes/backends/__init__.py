"""Storage backends. Implementations live in private modules, imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._base import MISSING, ColumnInfo, ReadableBackend, WritableBackend

__all__ = [
    "MISSING",
    "ASEFileBackend",
    "ColumnInfo",
    "H5MDBackend",
    "HFBackend",
    "LMDBBackend",
    "MDTrajBackend",
    "MemoryBackend",
    "ReadableBackend",
    "WritableBackend",
    "ZarrBackend",
]

_LAZY = {
    "ASEFileBackend": "._asefile",
    "H5MDBackend": ".h5md",
    "HFBackend": "._hf",
    "LMDBBackend": "._lmdb",
    "MDTrajBackend": "._mdtraj",
    "MemoryBackend": "._memory",
    "ZarrBackend": "._zarr",
}

if TYPE_CHECKING:
    from ._asefile import ASEFileBackend
    from ._hf import HFBackend
    from ._lmdb import LMDBBackend
    from ._mdtraj import MDTrajBackend
    from ._memory import MemoryBackend
    from ._zarr import ZarrBackend
    from .h5md import H5MDBackend


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asebytes_nodes.backends' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
