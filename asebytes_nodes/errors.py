"""Every exception the package raises on purpose, under one root class.

Each class also inherits the matching built-in exception, so callers can catch
either ``asebytes_nodes.errors.UnknownKeyError`` or plain ``KeyError``.
"""

from __future__ import annotations

import errno
import io

__all__ = [
    "ASEBytesError",
    "BackendNotFoundError",
    "CacheMismatchError",
    "ColumnTypeError",
    "ConcurrentCommitError",
    "DestinationExistsError",
    "DiskFullError",
    "FormatVersionError",
    "InvalidDataError",
    "MissingExtraError",
    "MissingValueError",
    "PartitionError",
    "PipelineSourceError",
    "RaggedColumnError",
    "ReadOnlyError",
    "RowIndexError",
    "SerializationError",
    "StoreCorruptedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnknownKeyError",
    "UnsafeStoreError",
    "UnsupportedOperationError",
]


class ASEBytesError(Exception):
    """Root of every error raised by asebytes_nodes."""


class UnknownKeyError(ASEBytesError, KeyError):
    """A key that is not in the store or does not belong to the flat namespace."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class RowIndexError(ASEBytesError, IndexError):
    """A row index outside the store."""


class MissingExtraError(ASEBytesError, ImportError):
    """An optional dependency needed by a backend is not installed."""


class InvalidDataError(ASEBytesError, ValueError):
    """A value that cannot be stored: wrong shape, wrong length, wrong type."""


class ColumnTypeError(InvalidDataError):
    """A value whose type does not fit the one type its column stores (columnar backends)."""


class SerializationError(InvalidDataError):
    """A value that no backend can serialise (for example an arbitrary object)."""


class MissingValueError(ASEBytesError, ValueError):
    """A column read as one array, but some rows do not carry the key."""


class RaggedColumnError(ASEBytesError, ValueError):
    """A per-atom column whose rows have different atom counts, read as one stacked array."""


class BackendNotFoundError(ASEBytesError, ValueError):
    """No registered backend matches a path, URI or name."""


class StoreCorruptedError(ASEBytesError, OSError):
    """A file that exists but cannot be read as the store it claims to be."""


class StoreNotFoundError(ASEBytesError, FileNotFoundError):
    """A path opened read-only (or for reading) that does not exist."""


class UnsafeStoreError(StoreCorruptedError):
    """A store that points outside itself (external links, virtual datasets, external raw
    storage, names with ``..``) or holds values this package never writes; refused unread."""


class DiskFullError(ASEBytesError, OSError):
    """A write that ran out of disk space; the store stays at its last committed state.

    ``errno`` is :data:`errno.ENOSPC` and ``filename`` the store's location.
    """

    def __init__(self, store: str, detail: str = "") -> None:
        message = (
            f"no space left on the device holding {store!r}{': ' + detail if detail else ''}; "
            "nothing of this write was kept (the store is at its last committed state): "
            "free some space and repeat the write"
        )
        super().__init__(errno.ENOSPC, message, store)

    def __str__(self) -> str:
        return str(self.strerror)


class DestinationExistsError(ASEBytesError, FileExistsError):
    """A conversion's destination exists: without ``overwrite``, or it is not a store that
    ``overwrite`` may replace (a folder of other files, one holding the source)."""


class StoreLockedError(ASEBytesError, TimeoutError):
    """Another writer held the store's lock for longer than the timeout."""


class ConcurrentCommitError(ASEBytesError, RuntimeError):
    """Another writer committed to a store without locks (an object store) while this one wrote."""


class FormatVersionError(StoreCorruptedError):
    """A store written by a newer, incompatible version of the on-disk layout."""


class UnsupportedOperationError(ASEBytesError, io.UnsupportedOperation):
    """An operation the backend cannot perform honestly (insert, delete, drop keys)."""


class ReadOnlyError(UnsupportedOperationError):
    """A write to a store opened read-only."""


class PipelineSourceError(ASEBytesError, ValueError):
    """``from_rev`` could not reach the git repository or revision it was given; the message says
    what ``remote=`` and ``rev=`` mean and what to run."""


class PartitionError(ASEBytesError, RuntimeError):
    """A partition of a parallel conversion failed; the message names the source range, the cause
    is chained."""


class CacheMismatchError(ASEBytesError, ValueError):
    """A ``cache_to`` store filled from another source, split or mapping (delete it to reset)."""
