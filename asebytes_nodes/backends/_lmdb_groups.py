"""Groups of the LMDB backend: several isolated datasets in one file (``group=``).

The dataset opened without ``group=`` lives in LMDB's main (unnamed) database, as in every file
written before groups existed. Group ``name`` lives in the named database ``b"g:" + name``, with
the same keys as the main one (its own format record, length, key counts, blocks and rows).
LMDB keeps each named database's record as a key of the main database: the main dataset's own
keys begin with ``c``, ``m`` and ``r``, so ``g:`` keys never mix with its rows, blocks or
records. Beside them the main database holds ``b"b:" + name`` (sealed like every record; like
every key but rows it sorts before the rows, as LMDB's append mode needs): the transaction id
of the group's last write, which the group's ``m:length`` must not be older than (a damaged
page pointer leading to an old copy of it would otherwise show fewer rows). A write to a
group also restamps the main dataset's ``m:length`` with its transaction id, so the main
dataset's stamp stays that of the file's last commit.

At most :data:`MAX_GROUPS` groups per file (LMDB's ``max_dbs``, fixed when a process opens
the file; more would make every transaction cost more).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidDataError, StoreCorruptedError, StoreNotFoundError
from ._base import check_group_name, path_of

try:
    import lmdb
except ImportError:  # pragma: no cover - _lmdb raises the MissingExtraError first
    lmdb = None  # type: ignore[assignment]

__all__ = ["GROUP_PREFIX", "MAX_DBS", "MAX_GROUPS", "GroupsMixin", "local_path", "only_groups", "stamp_key"]

GROUP_PREFIX = b"g:"
STAMP_PREFIX = b"b:"  # sorts before rows: appends need the rows last
MAX_DBS = 128  # LMDB's max_dbs: named databases per environment (128 costs nothing per transaction)
MAX_GROUPS = MAX_DBS - 2


def db_name(group: str) -> bytes:
    return GROUP_PREFIX + group.encode()


def stamp_key(group: str) -> bytes:
    return STAMP_PREFIX + group.encode()


def group_names(keys: Any) -> list[str]:
    """Group names among the main database's keys from ``GROUP_PREFIX`` on (in order)."""
    names = []
    for key in keys:
        if key[:2] != GROUP_PREFIX:
            break
        try:
            names.append(check_group_name("", key[2:].decode()))
        except (UnicodeDecodeError, InvalidDataError):
            continue  # not a name this package writes
    return names


def only_groups(keys: Any) -> bool:
    """Does the main database hold nothing but group records (no main dataset)?"""
    return all(key[:2] in (GROUP_PREFIX, STAMP_PREFIX) for key in keys)


def open_group(env: Any, path: Path, group: str, txn: Any, create: bool) -> Any:
    """The handle of ``group``'s database; None if absent and not ``create``.

    Opened in ``txn`` (a write transaction: valid for the environment once it commits) or,
    with ``txn`` None, in py-lmdb's own short transaction (a handle opened in a read
    transaction of ours is closed with it).
    """
    try:
        return env.open_db(db_name(group), txn=txn, create=create)
    except lmdb.NotFoundError:
        return None
    except lmdb.DbsFullError as exc:
        raise InvalidDataError(
            f"{path}: cannot add group {group!r}: an LMDB store holds at most {MAX_GROUPS} groups; "
            "use another file for more datasets"
        ) from exc
    except lmdb.IncompatibleError as exc:
        raise StoreCorruptedError(
            f"{path}: the record of group {group!r} is not an LMDB database: the file is damaged "
            "or was not written by asebytes-nodes"
        ) from exc


def missing_group(path: Path, group: str, found: list[str]) -> StoreNotFoundError:
    return StoreNotFoundError(
        f"{path}: no group {group!r} in this store (opened read-only); "
        + (f"its groups: {', '.join(found)}; pick one, or " if found else "it has no groups; ")
        + "open it writable to create the group"
    )


def local_path(target: str | os.PathLike[str]) -> Path:
    """The data file named by a path or an ``lmdb://`` URI."""
    text = os.fspath(target)
    return path_of(text[len("lmdb://") :] if text.startswith("lmdb://") else text)


class GroupsMixin:
    """The LMDB backend's group handling (its ``_group``, ``_shared`` and ``_path``)."""

    _group: str | None
    _shared: Any
    _path: Path

    def _db(self, required: bool = True, create_in: Any = None) -> Any:
        """The group's LMDB database handle (None: the main database, or a group not created
        yet unless ``required``); ``create_in`` a write transaction: create it there."""
        if self._group is None:
            return None
        shared = self._shared
        assert shared is not None
        handle = shared.dbs.get(self._group)
        if handle is None and create_in is not None:  # valid once that write commits
            return open_group(shared.env, self._path, self._group, create_in, create=True)
        if handle is None:
            handle = open_group(shared.env, self._path, self._group, None, create=False)
            if handle is None:
                if required:
                    raise missing_group(self._path, self._group, self.list_groups(self._path))
                return None
            shared.dbs[self._group] = handle
        return handle

    @classmethod
    def list_groups(cls, target: str | os.PathLike[str]) -> list[str]:
        """Inherited; ``[]`` for a file that does not exist."""
        path = local_path(target)
        if not path.exists():
            return []
        backend: Any = cls(path, readonly=True)  # type: ignore[call-arg]
        try:
            with backend._txn() as txn:
                return group_names(txn.main().keys(GROUP_PREFIX))
        finally:
            backend.close()

    def cache_record(self) -> dict[str, Any]:
        """Inherited, plus the group."""
        record: dict[str, Any] = super().cache_record()  # type: ignore[misc]
        return record if self._group is None else {**record, "group": self._group}
