"""What every local, file-based backend needs to keep its promises under faults.

- :class:`StoreLock`: one writer at a time per store, across processes (``fcntl.flock``
  on a lock file), waiting up to a timeout and then raising
  :class:`~asebytes_nodes.errors.StoreLockedError` naming the store and the holder
  (the lock file records the holder's pid and host). Readers may take the lock shared to
  wait out a writer's commit. ``flock`` locks belong to an open file description, so two
  handles in one process serialise too; they are released by the kernel when a process
  dies, so a killed writer never leaves a stale lock.
- :func:`require_space`: refuse a write that cannot fit before its first byte, for
  libraries that do not fail cleanly when the disk fills (HDF5, memory-mapped files).
- :func:`disk_full`: translate a low-level ``ENOSPC``/``EDQUOT``/``EFBIG`` error into
  :class:`~asebytes_nodes.errors.DiskFullError` naming the store.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DiskFullError, StoreLockedError

__all__ = ["DEFAULT_LOCK_TIMEOUT", "StoreLock", "disk_full", "is_disk_full", "require_space"]

#: Seconds a writer waits for another writer's lock before giving up.
DEFAULT_LOCK_TIMEOUT = 60.0
#: Kept free on top of a write's own estimate: file-system metadata, library overhead.
_SPACE_MARGIN = 1 << 20
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StoreLock:
    """An advisory lock on a store, held through the file ``path``.

    >>> lock = StoreLock("frames.zarr/.lock", store="frames.zarr")  # doctest: +SKIP
    >>> with lock.exclusive():  # doctest: +SKIP
    ...     ...  # write and commit

    Re-entrant within one handle: a nested ``exclusive()`` inside a held one is a no-op.
    With ``clear``, the holder is erased on release, so the file is empty between writes
    (a lock file inside a DVC-tracked store then does not change its hash).
    """

    def __init__(
        self, path: str | Path, *, store: str, timeout: float = DEFAULT_LOCK_TIMEOUT, clear: bool = False
    ) -> None:
        self.path = Path(path)
        self.store = store
        self.timeout = timeout
        self.clear = clear
        #: Write the holder into the lock file? (False for a lock taken on a data file.)
        self.records_holder = True
        self._fd: int | None = None
        self._depth = 0
        self._threads = threading.RLock()  # the thread writing through this handle

    def _open(self, create: bool) -> int | None:
        if self._fd is None:
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            try:
                self._fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError:
                if not create:
                    return None
                self.path.parent.mkdir(parents=True, exist_ok=True)  # a new store's folders, as Zarr's
                self._fd = os.open(self.path, flags, 0o644)
            except PermissionError:
                if create:
                    raise
                # a reader of a store it may not write (shared read-only data): flock needs no
                # write permission, so it still waits out a writer's critical section
                self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def holder(self) -> str:
        """Who holds (or last held) the lock, as the lock file records it."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return "unknown"
        return text or "unknown"

    def _acquire(self, fd: int, mode: int) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.store!r} is locked by another writer ({self.holder()}) and stayed locked "
                        f"for {self.timeout:g} s; wait for it to finish, or pass a longer lock_timeout="
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone for the duration (one writer at a time, also among the threads
        sharing this handle: ``flock`` cannot tell them apart)."""
        if not self._threads.acquire(timeout=self.timeout):
            raise StoreLockedError(
                f"{self.store!r} is being written by another thread of this process, for more than "
                f"{self.timeout:g} s; wait for it to finish, or pass a longer lock_timeout="
            )
        try:
            with self._alone():
                yield
        finally:
            self._threads.release()

    @contextmanager
    def _alone(self) -> Iterator[None]:
        """:meth:`exclusive` in the thread that holds ``_threads``."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        fd = self._open(create=True)
        assert fd is not None  # create=True either opens or raises
        self._acquire(fd, fcntl.LOCK_EX)
        try:
            if self.records_holder:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:  # a full disk must not stop the lock from working
            pass
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            if self.clear:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Wait out a writer's critical section; no-op if no writer ever made the lock file."""
        taken = self.share()
        try:
            yield
        finally:
            if taken:
                self.unshare()

    def share(self) -> bool:
        """Take the lock shared (what :meth:`shared` holds); False if nothing was taken: inside
        this handle's own write, or no writer ever made the lock file. :meth:`unshare` ends it."""
        if self._depth:
            return False
        fd = self._open(create=False)
        if fd is None:
            return False
        self._acquire(fd, fcntl.LOCK_SH)
        return True

    def unshare(self) -> None:
        """Let go of a lock :meth:`share` took."""
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (releasing any lock this handle holds)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._depth = 0

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "store": self.store, "timeout": self.timeout, "clear": self.clear}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"], store=state["store"], timeout=state["timeout"], clear=state.get("clear", False)
        )


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_space(path: str | Path, nbytes: int, *, store: str) -> None:
    """Raise :class:`DiskFullError` if the file system of ``path`` cannot take ``nbytes`` more."""
    stats = os.statvfs(_existing_parent(Path(path)))
    free = stats.f_bavail * stats.f_frsize
    if nbytes + _SPACE_MARGIN > free:
        raise DiskFullError(
            store, f"this write needs about {nbytes + _SPACE_MARGIN:,} bytes and {free:,} are free"
        )


def is_disk_full(exc: BaseException) -> bool:
    """Is ``exc`` (or anything it was raised from) an out-of-space error?"""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def disk_full(exc: BaseException, store: str) -> DiskFullError:
    """The package error for an out-of-space ``exc`` (raise it ``from exc``)."""
    return DiskFullError(store, f"{type(exc).__name__}: {exc}")


_RENAME_NOREPLACE = 1  # renameat2 flags (Linux 3.15+, glibc 2.28+)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(a: Path, b: Path, flags: int) -> bool | None:
    """``renameat2(a, b, flags)``: True if done, False if refused, None where the kernel, C library
    or file system has no such call (``os.replace``'s fallbacks then)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    rename = getattr(libc, "renameat2", None)
    if rename is None:
        return None
    if rename(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return True
    return None if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL) else False


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step, where the kernel and file system can."""
    return bool(_renameat2(a, b, _RENAME_EXCHANGE))


def put_new(new: Path, final: Path) -> None:
    """Move the complete store ``new`` to ``final`` unless something is there by then (another
    process's conversion finished first): FileExistsError, and ``new`` stays where it is."""
    done = _renameat2(new, final, _RENAME_NOREPLACE)
    if done is None:  # no renameat2: a folder by rename (it fails onto a file or a folder not empty),
        try:  # a file by a hard link (it fails onto any name)
            os.rename(new, final) if new.is_dir() else os.link(new, final)
            done = True
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.EPERM):
                raise
            if exc.errno == errno.EPERM and not os.path.lexists(final):  # no hard links here
                os.replace(new, final)
                return
            done = False
        if done and not new.is_dir() and new.exists():
            os.unlink(new)  # the link made: the temporary name goes
    if not done:
        raise FileExistsError(errno.EEXIST, "exists", os.fspath(final))


def put_in_place(new: Path, final: Path) -> Path | None:
    """Move the complete store ``new`` to ``final``. A store already there is never left half
    deleted: a file is replaced atomically; a folder is swapped with ``new`` atomically where the
    kernel can (else renamed aside first, whole). Returns where the old store now is, for the
    caller to delete (None when nothing is left of it)."""
    if not os.path.lexists(final) or (not final.is_dir() and not new.is_dir()):
        os.replace(new, final)
        return None
    if _exchange(new, final):
        return new
    aside = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    os.replace(final, aside)
    os.replace(new, final)
    return aside
