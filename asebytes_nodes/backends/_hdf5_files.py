"""One read-only h5py handle per HDF5 file per process, shared by every backend open on it
(H5MD and MDTraj), and what becomes of it after ``fork``.

Rules
-----
* One handle per file (keyed by real path) per process, with its dataset lookups cached: HDF5
  cannot open a file for writing that the process holds open read-only, and h5py lookups cost
  more than small reads.
* The handle is reopened when the file's size or mtime changed (another process wrote), after a
  write a killed process left half done is rolled back (:func:`._hdf5_journal.recover`).
  ``generation`` counts the changes seen (writes of this process, and reopenings because the file
  changed), so a backend knows when to reload what it parsed.
* A write closes the handle and writes through :func:`._hdf5_journal.journaled`; the next read
  reopens it.
* After ``fork`` the child never uses the parent's handle: HDF5's caches and the descriptor's
  offset are the parent's. Nor does it close it: closing flushes and may unlock the parent's
  file. The child keeps the inherited handle referenced (garbage collection would close it) and
  opens its own on first use; the state is keyed on the process id, and the locks are renewed in
  the child (a lock another thread of the parent held at the fork would never be released).
* What of the handle passed the hostile-file check is kept with it (``level``, see
  :mod:`._hdf5_guard`): :meth:`SharedFile.reader` raises it to what its caller asks for before
  returning the handle; below :data:`~._hdf5_guard.LINKS`, :meth:`SharedFile.get` and
  :meth:`SharedFile.dataset` check the links along each path when first opened, and below
  :data:`~._hdf5_guard.FULL` the storage of each dataset before handing it out. A content
  sniffer may open the handle unchecked (:func:`peek`) for the backend opened next to reuse.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import h5py

from ..errors import StoreCorruptedError
from ._hdf5_guard import FULL, LINKS, NONE, refuse_outside, refuse_outside_path, refuse_outside_storage
from ._hdf5_journal import journaled, reading, recover

__all__ = ["SharedFile", "acquire", "open_hdf5", "peek", "release"]


#: HDF5's metadata cache of a read handle, in bytes (HDF5's default starts at 2 MiB): random
#: rows of a 100,000-frame H5MD store look chunks up in B-trees of about 5 MiB per dataset, and
#: a lookup whose B-tree node was evicted reads and parses it again (4-5x the cost of a hit).
METADATA_CACHE_BYTES = 32 << 20


def open_hdf5(path: Path) -> Any:
    """``path`` opened read-only with h5py, not checked yet (:meth:`SharedFile.reader` checks it)."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if h5py.is_hdf5(path):
            raise  # damaged HDF5: reading() names the file and the damage
        raise StoreCorruptedError(f"{path}: cannot open as HDF5 ({exc})") from exc
    config = f.id.get_mdc_config()
    config.set_initial_size = True
    config.initial_size = METADATA_CACHE_BYTES
    config.max_size = max(config.max_size, 2 * METADATA_CACHE_BYTES)
    f.id.set_mdc_config(config)
    return f


class SharedFile:
    """The read-only handle on one file in this process, shared by every backend open on it."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.file: Any = None
        self.level = NONE  # what of the open handle passed the hostile-file check
        self.datasets: dict[str, Any] = {}
        self.paths: set[str] = set()  # paths whose links were checked (see get)
        self.mirrors: dict[str, Any] = {}  # decoded copies of datasets (see h5md._gather), or None
        self.mirror_bytes = 0
        self.found: dict[str, Any] = {}  # chunks HDF5's index was seen to find (see h5md._gather.confirm)
        self.pid = os.getpid()
        self.generation = 0  # bumped whenever the content may have changed (a write, another process)
        self.stamp: tuple[int, int] | None = None  # (mtime, size) of the content seen last
        self.users = 0
        self.lock = threading.RLock()

    def _forget_if_forked(self) -> None:
        if self.pid != os.getpid():
            _INHERITED.append(self.file)  # the parent's: never used, never closed here
            self.file, self.level, self.pid, self.stamp = None, NONE, os.getpid(), None
            self._forget()
            self.generation += 1

    def _stat(self) -> tuple[int, int] | None:
        """(mtime, size) of the file; None while there is none, or it is empty (a file that
        ``tempfile`` made is a new store, written from scratch on the first write)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size) if st.st_size else None

    def _forget(self) -> None:
        """Forget what was read through the handle: dataset lookups, decoded copies, chunks found."""
        self.datasets, self.mirrors, self.mirror_bytes, self.found = {}, {}, 0, {}
        self.paths = set()

    def _drop(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.level = None, NONE
        self._forget()

    def reader(self, open_file: Callable[[Path], Any] = open_hdf5, level: int = FULL) -> Any:
        """The read-only handle (None while the file does not exist), reopened if the file changed
        and checked to ``level`` (:mod:`._hdf5_guard`); ``open_file`` opens it when needed."""
        with self.lock:
            handle = self._current(open_file)
            self.require(level)
            return handle

    def require(self, level: int) -> None:
        """Check the open handle to ``level`` unless it passed it already (call with the lock
        held); a refused file is closed."""
        if self.file is None or self.level >= level:
            return
        if isinstance(self.file, h5py.File):
            try:
                refuse_outside(self.file, self.path, level)
            except BaseException:
                self._drop()
                raise
        self.level = level

    def _current(self, open_file: Callable[[Path], Any]) -> Any:
        """The handle, (re)opened as the file is now (call with the lock held)."""
        self._forget_if_forked()
        stamp = self._stat()
        if (self.file is None or stamp != self.stamp) and recover(self.path):  # a killed write
            stamp = self._stat()
        if self.file is not None and stamp != self.stamp:
            self._drop()
            self.generation += 1
        if self.file is None and stamp is not None:
            self.file = open_file(self.path)
            if stamp != self.stamp:
                self.generation += 1
            self.stamp = stamp
        return self.file

    def unchanged(self, generation: int) -> bool:
        """Is the open handle still what a reader saw at ``generation`` (same process, the file's
        size and mtime as when opened)? Then what it parsed holds without taking the store lock."""
        with self.lock:
            return (
                self.file is not None
                and self.pid == os.getpid()
                and self.generation == generation
                and self._stat() == self.stamp
            )

    def get(self, name: str) -> Any:
        """Object ``name`` of the current handle (None if absent; call :meth:`reader` first), the
        links along its path checked unless the whole file's were."""
        self._check_path(name)
        return self.file.get(name)

    def _check_path(self, name: str) -> None:
        if self.level < LINKS and name not in self.paths and isinstance(self.file, h5py.File):
            refuse_outside_path(self.file, name, self.path)
            self.paths.add(name)

    def dataset(self, name: str) -> Any:
        """Dataset ``name`` of the current handle (call :meth:`reader` first), the links along
        its path and its storage checked unless the whole file's were."""
        ds = self.datasets.get(name)
        if ds is None:
            self._check_path(name)
            ds = self.file[name]  # h5py's error if absent: reading() names the file damaged
            if self.level < FULL and isinstance(ds, h5py.Dataset):
                refuse_outside_storage(ds, self.path)
            self.datasets[name] = ds
        return ds

    @contextmanager
    def writer(self, nbytes: int) -> Iterator[Any]:
        """The file opened for writing (created if needed) for one all-or-nothing write of about
        ``nbytes``, closed afterwards (see :mod:`._hdf5_journal`)."""
        with self.lock:
            self._forget_if_forked()
            self._drop()
            try:
                with journaled(self.path, nbytes) as handle:
                    yield handle
                self.stamp = self._stat()  # what this write left: reopening for it is no news
            except BaseException:
                self.stamp = None
                raise
            finally:
                self.generation += 1


_FILES: dict[str, SharedFile] = {}
_FILES_LOCK = threading.Lock()
_INHERITED: list[Any] = []


def acquire(path: Path) -> SharedFile:
    """The shared state of ``path``, counting one more user (give it back with :func:`release`)."""
    key = os.path.realpath(path)
    with _FILES_LOCK:
        shared = _FILES.get(key)
        if shared is None:
            shared = _FILES[key] = SharedFile(path, key)
        shared.users += 1
        return shared


def peek(path: Path) -> tuple[Any, Callable[[], None]]:
    """The shared handle of ``path`` (None: no file) opened unchecked, for a content sniffer that
    looks at the root group's links, never through them, and what lets the handle and the store's
    shared lock go. A sniffer hands the latter to the registry's ``keep_until_opened``: the
    backend opened next reuses both."""
    shared = acquire(path)
    held = ExitStack()
    held.callback(release, shared)
    try:
        held.enter_context(reading(path))
        handle = shared.reader(level=NONE)
    except BaseException:
        held.close()
        raise
    return handle, held.close


def release(shared: SharedFile) -> None:
    """One user fewer; the last one closes the handle (unless it is a parent's)."""
    with _FILES_LOCK:
        shared.users -= 1
        if shared.users <= 0 and _FILES.get(shared.key) is shared:
            del _FILES[shared.key]
            with shared.lock:
                if shared.pid == os.getpid():
                    shared._drop()
                shared.file = None
                shared._forget()


def _renew_locks() -> None:
    global _FILES_LOCK
    _FILES_LOCK = threading.Lock()
    for shared in _FILES.values():
        shared.lock = threading.RLock()


os.register_at_fork(after_in_child=_renew_locks)
