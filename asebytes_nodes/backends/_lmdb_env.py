"""Open LMDB environments of this process, one per file, shared by every handle on it.

py-lmdb refuses to open one file twice in a process, so handles share an environment.
An environment inherited through ``fork`` is reopened in the child; one whose file was
replaced under the same name (new inode), or whose commit failed (LMDB may then refuse
every later transaction), is closed and marked stale, and each handle reopens the file on
its next use. Before a file is mapped, :func:`._lmdb_check.check_file` refuses one shorter
than its meta pages claim. A read-only open makes no file: LMDB opens a writable file with
O_CREAT, so a store deleted in between is made anew; that file is found by its inode, dropped
unless another process has it open, and the open raises StoreNotFoundError.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidDataError, StoreCorruptedError, StoreNotFoundError
from ._lmdb_batch_cache import drop_copies
from ._lmdb_check import _MAGIC, _META_SIZE, _meta, check_file
from ._lmdb_groups import MAX_DBS
from ._lmdb_lock import WriterLock
from ._safety import disk_full, is_disk_full

try:
    import lmdb
except ImportError:  # pragma: no cover - _lmdb raises the MissingExtraError first
    lmdb = None  # type: ignore[assignment]
try:  # py-lmdb 3 imports this inside the first lmdb.open: 1-10 ms of a cold open, paid here instead
    importlib.import_module("lmdb._envid")
except ImportError:  # pragma: no cover - other py-lmdb versions
    pass

__all__ = ["EnvOptions", "acquire_env", "discard_env", "release_env"]

_INITIAL_MAP_SIZE = 1 << 30  # address space only: the file grows with its data


class SharedEnv:
    """One open LMDB environment, shared by every handle on the same file in this process."""

    def __init__(
        self, env: Any, writable: bool, key: str, found: os.stat_result, options: EnvOptions
    ) -> None:
        self.env = env
        self.psize = int(env.stat()["psize"])
        self.size = [found.st_size]  # bytes of the file, as last measured (see _lmdb_bounds)
        self.dbs: dict[str, Any] = {}  # group name -> LMDB database handle (see _lmdb_groups)
        self.options = options
        self.writable = writable
        self.key = key
        self.inode = found.st_ino
        self.stale = False
        self.pid = os.getpid()
        self.users = 0
        self.lock = threading.RLock()  # one writing thread at a time in this process
        self.writer: WriterLock | None = None  # one writing process at a time

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        drop_copies(self.size)  # rows kept for batches: no handle reads this environment again
        self.env.close()


# Keyed by real path. A file replaced under the same name (a conversion moved into
# place) has a new inode: its old environment is closed and marked stale, and every
# handle on it reopens the new file on its next use.
_ENVS: dict[str, SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _inode(path: Path) -> int:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return -1


@dataclass(frozen=True)
class EnvOptions:
    """LMDB environment options a handle may choose (see :class:`~._lmdb.LMDBBackend`).

    One environment serves every handle on a file in a process, so handles that open it at
    the same time must agree on these.
    """

    max_readers: int = 1024
    sync: bool = True
    readahead: bool = True
    lock: bool | None = None  # None: LMDB's lock file where the folder is writable

    def __post_init__(self) -> None:
        readers = self.max_readers
        if isinstance(readers, bool) or not isinstance(readers, int) or readers < 1:
            raise InvalidDataError(f"max_readers must be a positive int, got {self.max_readers!r}")
        for name in ("sync", "readahead"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidDataError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.lock is not None and not isinstance(self.lock, bool):
            raise InvalidDataError(f"lock must be True, False or None, got {self.lock!r}")


def acquire_env(path: Path, readonly: bool, map_size: int, options: EnvOptions = EnvOptions()) -> SharedEnv:
    if options.lock is False and not readonly:
        raise InvalidDataError(
            f"{path}: lock=False is for read-only stores (read-only media, no writer anywhere); "
            "open it with readonly=True, or keep LMDB's lock"
        )
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        shared = _ENVS.get(key)
        if shared is not None and shared.inode != _inode(path):
            shared.close()
            shared.stale = True
            del _ENVS[key]
            shared = None
        if shared is not None and shared.pid != os.getpid():  # inherited through fork
            shared.env.close()  # the writer lock's descriptor stays: closing it would unlock the parent
            shared = None
        if shared is not None and shared.options != options:
            raise InvalidDataError(
                f"{path}: already open in this process with {shared.options}; LMDB keeps one "
                f"environment per file and process, so a handle cannot open it with {options}"
            )
        if shared is not None and (readonly or shared.writable):
            shared.users += 1
            return shared
        if shared is not None:  # a writer needs an environment opened for writing
            if shared.users:
                raise PermissionError(
                    f"{path}: already opened read-only in this process because the file is not "
                    "writable; a writable handle cannot share it"
                )
            shared.close()
        env, writable, found = _open_env(path, readonly, map_size, options)
        shared = SharedEnv(env, writable, key, found, options)
        shared.users = 1
        _ENVS[shared.key] = shared
        return shared


def _open_env(
    path: Path, readonly: bool, map_size: int, options: EnvOptions
) -> tuple[Any, bool, os.stat_result]:
    """Open ``path`` with LMDB: (environment, opened for writing, the file's stat).

    A read-only handle opens a writable file for writing, so that a writer in this process can
    share its environment; LMDB then opens with O_CREAT, and a store deleted between our look
    and LMDB's open is made anew, empty. So the path is looked at again after the open: another
    file there (the inode is compared while a descriptor keeps the old one from being reused)
    closes the environment, drops the file if LMDB just made it, and opens what is there now.
    """
    for _ in range(3):
        try:  # existence, size and inode in one open (a cold open counts its system calls)
            fd: int | None = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):  # as Path.exists
            fd = None
        try:
            found = None if fd is None else os.fstat(fd)
            if found is None and readonly:
                raise StoreNotFoundError(f"{path}: no such LMDB store (opened read-only)")
            folder = os.access(path.parent, os.W_OK)
            # not without a lock: no writer can share that environment, and LMDB opens it O_RDONLY
            writable = not readonly or (options.lock is not False and os.access(path, os.W_OK) and folder)
            if not writable and not readonly:
                raise PermissionError(f"{path}: the file or its folder is not writable")
            check_file(path, fd)  # a missing file (fd None) passes: a writer makes it
            env = _lmdb_open(path, writable, map_size, options, found, folder)
            if found is None:  # a writer's new file
                return env, writable, os.stat(path)
            if not (readonly and writable) or _same_file(path, found):
                return env, writable, found
            env.close()
            _drop_new_file(path)
        finally:
            if fd is not None:
                os.close(fd)
    raise StoreNotFoundError(f"{path}: the file was replaced or deleted each time it was opened")


def _lmdb_open(
    path: Path, writable: bool, map_size: int, options: EnvOptions, found: os.stat_result | None, folder: bool
) -> Any:
    try:
        # An explicit map_size is honoured (LMDB raises it to the data already stored);
        # the default reserves address space only, the file grows with its data.
        return lmdb.open(
            str(path),
            subdir=False,
            readonly=not writable,
            lock=options.lock if options.lock is not None else folder or Path(str(path) + "-lock").exists(),
            map_size=map_size or max(_INITIAL_MAP_SIZE, 2 * found.st_size if found else 0),
            max_dbs=MAX_DBS,
            meminit=True,  # zeroed page space: the same rows give the same file bytes (shards, DVC)
            max_readers=options.max_readers,
            sync=options.sync,
            readahead=options.readahead,
        )
    except lmdb.InvalidError as exc:
        raise StoreCorruptedError(f"{path}: not an LMDB file or damaged ({exc})") from exc
    except lmdb.Error as exc:
        if is_disk_full(exc):
            raise disk_full(exc, str(path)) from exc
        if "Too many open files" in str(exc):  # the process's limit, not the file: say so
            raise OSError(
                errno.EMFILE,
                f"{path}: this process has as many files open as it may (ulimit -n); raise the limit, "
                "or keep fewer stores open (a sharded dataset's max_open=)",
            ) from exc
        raise StoreCorruptedError(f"{path}: cannot open as LMDB ({exc})") from exc


def _same_file(path: Path, found: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return now.st_ino == found.st_ino and now.st_dev == found.st_dev


def _drop_new_file(path: Path) -> None:
    """Delete ``path`` if it is a file as LMDB makes it (no transaction ever committed) that no
    other process has open. Every LMDB user holds a shared ``fcntl`` lock on byte 0 of the
    ``-lock`` file while open and waits on it to open, so holding it alone keeps them out until
    the file is gone. The ``-lock`` file stays: a process waiting on it may be using it."""
    try:
        lock = os.open(f"{path}-lock", os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        with open(path, "rb") as file:
            first = _meta(file.read(_META_SIZE), 0)
            file.seek(first["psize"])
            second = _meta(file.read(_META_SIZE), 0)
        if first["magic"] == second["magic"] == _MAGIC and first["txnid"] == second["txnid"] == 0:
            os.unlink(path)
    except (OSError, struct.error):  # in use elsewhere, gone, or not such a file: leave it
        pass
    finally:
        os.close(lock)  # drops the lock


def discard_env(shared: SharedEnv) -> None:
    """Close an environment after a failed commit; every handle on it reopens the file."""
    with _ENVS_LOCK:
        if _ENVS.get(shared.key) is shared:
            del _ENVS[shared.key]
        if not shared.stale and shared.pid == os.getpid():
            shared.close()
        shared.stale = True


def release_env(shared: SharedEnv) -> None:
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users <= 0 and _ENVS.get(shared.key) is shared:
            del _ENVS[shared.key]
            if shared.pid == os.getpid():
                shared.close()
