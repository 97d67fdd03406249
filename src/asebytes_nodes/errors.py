"""Every exception the package raises on purpose, under one root class.

Each class also inherits the matching built-in exception, so callers can catch
either ``asebytes_nodes.errors.UnknownKeyError`` or plain ``KeyError``.
"""

from __future__ import annotations

import io

__all__ = [
    "ASEBytesError",
    "BackendNotFoundError",
    "CacheMismatchError",
    "FormatVersionError",
    "InvalidDataError",
    "MissingExtraError",
    "MissingValueError",
    "RaggedColumnError",
    "ReadOnlyError",
    "RowIndexError",
    "SerializationError",
    "StoreCorruptedError",
    "StoreNotFoundError",
    "UnknownKeyError",
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


class FormatVersionError(StoreCorruptedError):
    """A store written by a newer, incompatible version of the on-disk layout."""


class UnsupportedOperationError(ASEBytesError, io.UnsupportedOperation):
    """An operation the backend cannot perform honestly (insert, delete, drop keys)."""


class ReadOnlyError(UnsupportedOperationError):
    """A write to a store opened read-only."""


class CacheMismatchError(ASEBytesError, ValueError):
    """A ``cache_to`` store filled from another source, split or mapping (delete it to reset)."""
