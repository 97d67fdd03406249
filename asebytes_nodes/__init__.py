"""asebytes_nodes: store, version and move ASE ``Atoms`` datasets.

``import asebytes_nodes`` is light: names resolve on first use, and optional
backends import their libraries only when opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import __all__ as _ERRORS  # errors.py imports only errno and io

__version__ = "0.1.0"

_LAZY = {
    "ASEIO": "asebytes_nodes.io",
    "atoms_to_dict": "asebytes_nodes.rows",
    "dict_to_atoms": "asebytes_nodes.rows",
    "ReadableBackend": "asebytes_nodes.backends._base",
    "WritableBackend": "asebytes_nodes.backends._base",
    "ColumnInfo": "asebytes_nodes.backends._columns",
    "MISSING": "asebytes_nodes.backends._keys",
    "MemoryBackend": "asebytes_nodes.backends._memory",
    "LMDBBackend": "asebytes_nodes.backends._lmdb",
    "ZarrBackend": "asebytes_nodes.backends._zarr",
    "H5MDBackend": "asebytes_nodes.backends.h5md",
    "MDTrajBackend": "asebytes_nodes.backends._mdtraj",
    "ASEFileBackend": "asebytes_nodes.backends._asefile",
    "convert": "asebytes_nodes.transfer",
    "copy_frames": "asebytes_nodes.transfer",
    "set_progress": "asebytes_nodes.progress",
    "HFBackend": "asebytes_nodes.backends._hf",
    "ColumnMapping": "asebytes_nodes.backends._hf_mapping",
    "write_parquet": "asebytes_nodes.backends._arrow",
    "RowView": "asebytes_nodes.views",
    "ColumnView": "asebytes_nodes.views",
    "Ragged": "asebytes_nodes.views",
    "BackendEntry": "asebytes_nodes.registry",
    "list_backends": "asebytes_nodes.registry",
    "open_backend": "asebytes_nodes.registry",
    "register_backend": "asebytes_nodes.registry",
}
_LAZY.update({name: "asebytes_nodes.errors" for name in _ERRORS})

__all__ = [
    "ASEBytesError",
    "ASEFileBackend",
    "ASEIO",
    "BackendEntry",
    "BackendNotFoundError",
    "CacheMismatchError",
    "ColumnInfo",
    "ColumnMapping",
    "ColumnTypeError",
    "ColumnView",
    "ConcurrentCommitError",
    "DestinationExistsError",
    "DiskFullError",
    "FormatVersionError",
    "H5MDBackend",
    "HFBackend",
    "InvalidDataError",
    "LMDBBackend",
    "MDTrajBackend",
    "MISSING",
    "MemoryBackend",
    "MissingExtraError",
    "MissingValueError",
    "PartitionError",
    "PipelineSourceError",
    "Ragged",
    "RaggedColumnError",
    "ReadOnlyError",
    "ReadableBackend",
    "RowIndexError",
    "RowView",
    "SerializationError",
    "StoreCorruptedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnknownKeyError",
    "UnsafeStoreError",
    "UnsupportedOperationError",
    "WritableBackend",
    "ZarrBackend",
    "__version__",
    "atoms_to_dict",
    "convert",
    "copy_frames",
    "dict_to_atoms",
    "list_backends",
    "open_backend",
    "register_backend",
    "set_progress",
    "write_parquet",
]

if TYPE_CHECKING:
    from .backends._arrow import write_parquet
    from .backends._asefile import ASEFileBackend
    from .backends._base import MISSING, ColumnInfo, ReadableBackend, WritableBackend
    from .backends._hf import HFBackend
    from .backends._hf_mapping import ColumnMapping
    from .backends._lmdb import LMDBBackend
    from .backends._mdtraj import MDTrajBackend
    from .backends._memory import MemoryBackend
    from .backends._zarr import ZarrBackend
    from .backends.h5md import H5MDBackend
    from .errors import (
        ASEBytesError,
        BackendNotFoundError,
        CacheMismatchError,
        ColumnTypeError,
        ConcurrentCommitError,
        DestinationExistsError,
        DiskFullError,
        FormatVersionError,
        InvalidDataError,
        MissingExtraError,
        MissingValueError,
        PartitionError,
        PipelineSourceError,
        RaggedColumnError,
        ReadOnlyError,
        RowIndexError,
        SerializationError,
        StoreCorruptedError,
        StoreLockedError,
        StoreNotFoundError,
        UnknownKeyError,
        UnsafeStoreError,
        UnsupportedOperationError,
    )
    from .io import ASEIO
    from .progress import set_progress
    from .registry import BackendEntry, list_backends, open_backend, register_backend
    from .rows import atoms_to_dict, dict_to_atoms
    from .transfer import convert, copy_frames
    from .views import ColumnView, Ragged, RowView


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asebytes_nodes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
