"""The backend protocol: what a store must do so that ``ASEIO`` can use it.

A readable backend implements two methods: ``__len__`` and the batch read
``read_rows(indices, keys)``. Everything else (the single-row read, the per-row
key list ``columns``, column reads, the key list, the schema) has a working
default built on those, which a backend overrides only to go faster. A writable
backend adds an atomic ``extend``, ``set_rows`` and ``update_rows``. Row numbers
passed to a backend are always checked, non-negative integers (see
:mod:`asebytes_nodes.indexing`).

A backend class also owns its edges: ``supports_groups`` with ``list_groups``
(several isolated datasets in one store, opened with ``group=``), and
``side_suffixes`` with ``remove_store`` and ``store_size`` (the files a store keeps
beside itself, such as LMDB's ``-lock``).
"""

from __future__ import annotations

import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import (
    FormatVersionError,
    InvalidDataError,
    ReadOnlyError,
    RowIndexError,
    StoreCorruptedError,
    UnsupportedOperationError,
)
from ..indexing import normalize_index
from ._columns import ColumnInfo, describe_value
from ._keys import MISSING

__all__ = [
    "MISSING",
    "READ_ONLY_MESSAGE",
    "ColumnInfo",
    "ReadableBackend",
    "WritableBackend",
    "check_format_record",
    "check_group_name",
]

READ_ONLY_MESSAGE = "the store is read-only: open it with readonly=False to modify it"


def stale_row_error(row: int, length: int, where: str = "") -> RowIndexError:
    """The error for row ``row`` of a store of ``length`` rows, read through a view made before
    rows were deleted; ``where`` (a path) is named first."""
    prefix = f"{where}: " if where else ""
    return RowIndexError(
        f"{prefix}row {row} is out of range for {length} rows (were rows deleted after this view was made?)"
    )


class ReadableBackend(ABC):
    """A store of flat rows that can be read.

    Subclasses must implement ``__len__`` and :meth:`read_rows`.
    """

    #: Short name used in messages and in the registry.
    name: ClassVar[str] = "custom"
    #: File extensions (with dot) and URI schemes this backend opens, for the registry.
    extensions: ClassVar[tuple[str, ...]] = ()
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Can this backend write at all?
    supports_write: ClassVar[bool] = False
    #: Can rows be inserted in the middle?
    supports_insert: ClassVar[bool] = False
    #: Can rows be deleted?
    supports_delete: ClassVar[bool] = False
    #: Does every read refuse a row past the end with ``RowIndexError`` (:func:`stale_row_error`)?
    #: A view made before a delete holds row numbers past the end: views check them against
    #: ``len()`` first for a backend that deletes rows and does not declare this.
    checks_rows: ClassVar[bool] = False
    #: Can single keys be removed from stored rows?
    supports_drop_keys: ClassVar[bool] = False
    #: Rows per backend call when views stream many rows (columnar stores read more at once).
    read_batch_size: ClassVar[int] = 1024
    #: Does the constructor take ``group=`` (several isolated datasets in one store)?
    supports_groups: ClassVar[bool] = False
    #: Files a store keeps beside itself, as suffixes of its path (LMDB's ``-lock``, say).
    side_suffixes: ClassVar[tuple[str, ...]] = ()

    readonly: bool = True
    _cache_identity: str

    def __new__(cls, *args: Any, **kwargs: Any) -> ReadableBackend:
        self = super().__new__(cls)
        # what names a store without a location to a cache (cache_record); made with the instance,
        # so every copy pickled from it (a DataLoader worker's) carries the same one
        self._cache_identity = os.urandom(16).hex()  # as uuid4's randomness, a tenth of its cost
        return self

    @abstractmethod
    def __len__(self) -> int:
        """Number of rows."""

    @abstractmethod
    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Rows ``indices`` (checked, non-negative, possibly repeated) as new dicts, each
        restricted to the ``keys`` it carries (all if None).

        The caller owns the returned values: they must not share memory with any cache,
        nor with another returned row (a repeated index gives a copy).
        """

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Row ``index`` as a new dict; the default reads a batch of one."""
        return self.read_rows([index], keys)[0]

    def read_row_at(self, index: int) -> tuple[int, dict[str, Any]]:
        """Row ``index`` as given by a user (negative counts from the end; out of range:
        ``RowIndexError``) and its row number; backends that can check and read in one
        transaction override it (``db[i]`` reads each row through it)."""
        row = normalize_index(index, len(self))
        return row, self.read_row(row)

    def columns(self, index: int = 0) -> list[str]:
        """Keys carried by row ``index``; the default reads the row."""
        return list(self.read_row(index))

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        """Values of one key for several rows: a list with :data:`MISSING` where a row lacks
        it, or (for columnar stores, when every row has it) one stacked numpy array."""
        return [row.get(key, MISSING) for row in self.read_rows(indices, [key])]

    def read_column_array(self, key: str, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """``np.asarray(read_column(key, indices))`` when a backend can give it without Python
        values per row (``to_numpy`` asks first), else None: the default."""
        return None

    def read_batch(
        self, indices: np.ndarray, keys: Sequence[str] | None = None, *,
        fill: Mapping[str, Any] | None = None, atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any]:
        """Rows ``indices`` (non-empty) as one training batch of arrays (see :mod:`asebytes_nodes.batch`
        for the format and the arguments); the default assembles ``read_rows``, backends override
        it to decode straight to arrays."""
        from ..batch import read_batch_default

        return read_batch_default(self, indices, keys, fill=fill, atoms=atoms)

    @classmethod
    def read_batch_joint(
        cls, parts: Sequence[tuple[Any, np.ndarray, np.ndarray]], indices: np.ndarray,
        keys: Sequence[str] | None = None, *, atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any] | None:
        """One batch of rows ``indices`` held by several stores of this class (the shards of a
        dataset): each part is ``(store, its rows, their positions in indices)``. None (the
        default): each store reads its own batch, and the batches are joined."""
        return None

    def length_known(self) -> bool:
        """Does ``len()`` answer without reading everything? False only for streams without a count."""
        return True

    def iter_rows(self, keys: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row in order, in batches of :attr:`read_batch_size`; streams override this to
        read forward without knowing their length."""
        n = len(self)
        for start in range(0, n, self.read_batch_size):
            yield from self.read_rows(np.arange(start, min(start + self.read_batch_size, n)), keys)

    def keys(self) -> list[str]:
        """Every key carried by at least one row, sorted. The default reads the key list of every row."""
        found: set[str] = set()
        for i in range(len(self)):
            found.update(self.columns(i))
        return sorted(found)

    def schema(self) -> dict[str, ColumnInfo]:
        """dtype and shape of every key, from the first row that carries it."""
        remaining = set(self.keys())
        result: dict[str, ColumnInfo] = {}
        for i in range(len(self)):
            if not remaining:
                break
            wanted = [k for k in self.columns(i) if k in remaining]
            if not wanted:
                continue
            for key, value in self.read_row(i, wanted).items():
                result[key] = describe_value(key, value)
                remaining.discard(key)
        return {k: result[k] for k in sorted(result)}

    def key_counts(self) -> dict[str, int]:
        """How many rows carry each key, sorted by key. The default reads every row's key list."""
        counts: dict[str, int] = {}
        for i in range(len(self)):
            for key in self.columns(i):
                counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def cache_record(self) -> dict[str, Any]:
        """What identifies this store to a cache of its rows (plain JSON values).

        A store without a :attr:`location` is known by its instance (and copies pickled from it):
        a cache it filled is refused to any other, since nothing else tells their rows apart.
        """
        if self.location is not None:
            return {"backend": self.name, "location": self.location}
        return {"backend": self.name, "location": None, "instance": self._cache_identity}

    @classmethod
    def list_groups(cls, target: str | Path) -> list[str]:
        """Names of the groups stored at ``target``, sorted; ``[]`` for backends without groups."""
        return []

    @classmethod
    def side_files(cls, target: str | Path) -> list[Path]:
        """The files beside the store at ``target`` named by :attr:`side_suffixes`."""
        path = _local_path(cls, target, "list the side files of")
        return [path.with_name(path.name + suffix) for suffix in cls.side_suffixes]

    @classmethod
    def holds_store(cls, target: str | Path) -> bool:
        """Whether the existing ``target`` is a store :meth:`remove_store` may delete to replace it.

        A file is; a folder only when empty: backends that keep a store in a folder override this
        to recognise their own (Zarr's ``zarr.json``), so ``overwrite=True`` never deletes a folder
        of other files that happens to carry a store's name.
        """
        path = _local_path(cls, target, "inspect")
        return not path.is_dir() or not any(path.iterdir())

    @classmethod
    def remove_store(cls, target: str | Path) -> None:
        """Delete the store at ``target`` (a file or a directory) and its side files, if they exist."""
        path = _local_path(cls, target, "remove")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        for side in cls.side_files(path):
            side.unlink(missing_ok=True)

    @classmethod
    def store_size(cls, target: str | Path) -> int:
        """Bytes on disk of the store at ``target`` with its side files (0 if nothing exists)."""
        path = _local_path(cls, target, "measure")
        total = 0
        for item in [path, *cls.side_files(path)]:
            if item.is_dir():
                total += sum(f.stat().st_size for f in item.rglob("*") if f.is_file())
            elif item.is_file():
                total += item.stat().st_size
        return total

    def format_info(self) -> dict[str, Any]:
        """What the store says about itself: format name and layout version, where it has them."""
        return {}

    def check(self) -> list[str]:
        """Problems found by reading every row and checking it, each naming its row
        (:func:`~asebytes_nodes.validation.check_rows`: batch by batch, with a progress bar).

        Backends extend this with checks of their own layout (lengths, offsets, schema).
        """
        from ..validation import check_rows

        return check_rows(self)

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release files and handles; the default has nothing to release."""

    @property
    def location(self) -> str | None:
        """Path or URI the store lives at, or None for in-memory stores."""
        return None

    def _check_writable(self) -> None:
        """Refuse a write: first one this backend can never do (whatever ``readonly=`` says), then
        one through a handle opened read-only."""
        if not self.supports_write:
            raise ReadOnlyError(
                f"the {self.name} backend reads stores but does not write them; copy the frames into "
                "a writable store to change them, e.g. ASEIO('frames.lmdb').extend(db)"
            )
        if self.readonly:
            raise ReadOnlyError(READ_ONLY_MESSAGE)

    def __enter__(self) -> ReadableBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" {self.location!r}" if self.location else ""
        return f"<{type(self).__name__}{where} rows={len(self)}>"


class WritableBackend(ReadableBackend):
    """A store that can also be written.

    Subclasses implement :meth:`extend`, :meth:`set_rows` and :meth:`update_rows`,
    each atomic: either every row is written or none is. Each begins with
    ``self._check_writable()``.
    """

    supports_write: ClassVar[bool] = True
    readonly: bool = False

    @abstractmethod
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows at the end, all or nothing."""

    @abstractmethod
    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        """Replace whole rows."""

    @abstractmethod
    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        """Merge ``updates[k]`` into row ``indices[k]``: given keys are set, others kept."""

    def insert_rows(self, index: int, rows: Sequence[dict[str, Any]]) -> None:
        """Insert rows before row ``index`` (``index == len`` appends)."""
        self._check_writable()
        raise UnsupportedOperationError(
            f"the {self.name} backend cannot insert rows in the middle; use extend() to append, "
            "or copy the rows into a backend that can (supports_insert is True)"
        )

    def delete_rows(self, indices: Sequence[int] | np.ndarray) -> None:
        """Delete rows; later rows move up."""
        self._check_writable()
        raise UnsupportedOperationError(
            f"the {self.name} backend cannot delete rows; copy the rows you keep into a new store "
            "or use a backend that can (supports_delete is True)"
        )

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        """Remove ``keys`` from the given rows."""
        self._check_writable()
        raise UnsupportedOperationError(
            f"the {self.name} backend cannot remove keys from stored rows; rewrite the rows "
            "with set_rows or use a backend that can (supports_drop_keys is True)"
        )


def check_format_record(where: str, record: Any, name: str, version: int, layout: str) -> None:
    """Refuse a store whose format record names another format or a newer layout version."""
    if not isinstance(record, dict) or record.get("format") != name:
        raise StoreCorruptedError(f"{where}: unknown format record {record!r}")
    if int(record.get("version", 0)) > version:
        raise FormatVersionError(
            f"{where}: written with {layout} layout version {record['version']}, but this "
            f"asebytes-nodes reads up to version {version}; upgrade asebytes-nodes"
        )


_GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_group_name(store: str, group: Any) -> str:
    """``group`` if it is a valid group name (``[A-Za-z0-9_.-]+``, not ``.`` or ``..``)."""
    if not isinstance(group, str) or not _GROUP_NAME.fullmatch(group) or group in (".", ".."):
        raise InvalidDataError(
            f"{store}: invalid group name {group!r}; a group name is a non-empty string of letters, "
            "digits, '_', '.' and '-' (not '.' or '..'): rename the group"
        )
    return group


def check_cache_bytes(store: str, value: Any) -> int:
    """``value`` if it is a cache size a backend takes: bytes, as a non-negative int (0: none)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidDataError(
            f"{store}: cache_bytes must be a whole number of bytes, 0 or more (0 keeps no cache), "
            f"got {value!r}; for 64 MiB pass 64 << 20"
        )
    return int(value)


def _local_path(cls: type[ReadableBackend], target: str | Path, what: str) -> Path:
    text = str(target)
    if "://" in text:
        raise UnsupportedOperationError(
            f"the {cls.name} backend cannot {what} {text!r}: only local paths are supported here; "
            "use the object store's own tools for URIs"
        )
    return path_of(text)


def path_of(target: str | Path) -> Path:
    """A local path from a string or Path, with ``~`` expanded."""
    return Path(target).expanduser()
