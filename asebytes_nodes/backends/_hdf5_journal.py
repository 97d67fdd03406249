"""Crash-safe writes of HDF5 files (H5MD and MDTraj backends): an undo journal, one writer at a
time, space checks and checksum errors.

HDF5 rewrites its metadata (B-trees, object headers, free-space lists, the superblock) in place
and keeps no journal of its own, so a process killed mid-write can leave every earlier frame
unreadable or changed. Writes therefore go through :func:`journaled`, which opens the file with
h5py's ``fileobj`` driver over :class:`_UndoFile`:

Design (a byte-level rollback journal, like SQLite's)
-----------------------------------------------------
* Before the first overwrite of any byte that lies inside the file's length at the start of
  the write, the old content of the touched 4 KiB pages is appended to ``<file>-journal``
  (one record per run of pages: offset, length, bytes, CRC-32). Bytes past the old end need no
  undo: the file is cut back to its old length. Plain ``write`` calls reach the page cache,
  which outlives a killed process, and the journal record always lands before the store's own
  write, so a kill at any moment leaves a journal that can undo everything written so far.
* Commit: close the HDF5 file (HDF5 flushes its caches through the driver), ``fsync`` the
  store, delete the journal. The deletion is the commit point.
* Recovery ("hot journal", :func:`recover`): whoever next opens the file (a reader's handle
  (re)opening because the file changed, or any writer) finds the journal, takes the writer
  lock, writes the old bytes back, cuts the file to its old length (or deletes a file the
  write created) and deletes the journal. A journal whose write never touched the file is
  harmless and waits for the next writer. A reader without write
  permission on the folder gets :class:`~asebytes_nodes.errors.StoreCorruptedError` saying
  so. A torn last record (a kill while appending it) fails its CRC and is ignored: the store
  write it preceded never happened.
* One writer at a time: :class:`~._safety.StoreLock` on ``<file>.lock`` (exclusive for a write
  from planning to commit, waiting up to 60 s (``store_lock(path, timeout=...)``), then
  :class:`~asebytes_nodes.errors.StoreLockedError` naming the holder).
* Readers (ours) open the file through HDF5's own ``sec2`` driver and hold ``<file>.lock``
  shared for each read call, so a read never overlaps a write: readers wait out a write (where
  they would otherwise see a half-written file) and reopen when the file changed (size or
  mtime). Reads never go through the Python driver. HDF5's own file lock, which a reader
  holds while the file is open, does not stop a write through the ``fileobj`` driver: a write
  no longer fails because another process has the store open. Other programs (h5py, znh5md,
  MDAnalysis) that keep the file open across one of our writes see the new content only after
  reopening it, as with any HDF5 file changed by another process.
* Full disk: :func:`journaled` checks free space for the write's estimate first (HDF5 must never
  hit ``ENOSPC`` itself, which crashed it with the ``sec2`` driver); if a write or the journal
  still runs out of space, the write is rolled back from the journal and
  :class:`~asebytes_nodes.errors.DiskFullError` is raised. The journal itself needs at most the
  size of the pages the write overwrites.
* Checksums: chunked datasets get HDF5's ``fletcher32`` filter (:data:`CHECKSUM`); new files
  use HDF5 1.8's object formats, whose superblock, object headers and group indexes carry
  checksums; JSON records in attributes are sealed with a CRC-32 (:func:`seal`). :func:`checked`
  turns HDF5's checksum failure into StoreCorruptedError naming the dataset and rows,
  :func:`reading` turns any other HDF5 failure while reading into StoreCorruptedError naming
  the file, and :func:`checksum_problems` scans every chunk of a file for ``check()``. Not
  covered: variable-length values (strings, encoded objects), which HDF5 keeps in its global
  heap without a checksum.

Cost: writes go through Python callbacks (one per HDF5 I/O call, a few hundred per write);
overwritten pages are copied once to the journal; one ``fsync`` per write. Kill -9 safe; power
loss is covered for the store (fsync before the journal is deleted) but not for the journal's
records, which are not fsynced one by one (that would cost an fsync per overwritten page run).
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import traceback
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import ASEBytesError, DiskFullError, StoreCorruptedError
from ._safety import DEFAULT_LOCK_TIMEOUT, StoreLock, disk_full, is_disk_full, require_space

__all__ = [
    "CHECKSUM",
    "JOURNAL_SUFFIX",
    "LOCK_SUFFIX",
    "checked",
    "checksum_problems",
    "journaled",
    "read_attribute",
    "reading",
    "recover",
    "seal",
    "store_lock",
    "unseal",
]

JOURNAL_SUFFIX = "-journal"
LOCK_SUFFIX = ".lock"
#: Dataset creation options that add a checksum to every chunk.
CHECKSUM: dict[str, Any] = {"fletcher32": True}
_PAGE = 4096
_MAGIC = b"asebytes-undo-1\n"
_HEAD = struct.Struct("<QB")  # old length, 1 if the write created the file
_REC = struct.Struct("<QI")  # offset, length (then the bytes, then CRC-32 of header + bytes)
_CRC = struct.Struct("<I")
_COALESCE = 1 << 20  # appends past the old end are joined into writes of up to this many bytes


class _Locks:
    """This process's StoreLock per store, keyed by real path."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # path as given -> real path (one syscall per component)
        self.locks: dict[str, StoreLock] = {}
        self.shared_depth: dict[str, int] = {}  # read calls in progress (all threads)
        self.shared: dict[str, bool] = {}  # per store being read: did its first read take the lock?
        self.writing: set[str] = set()  # stores this process is writing: their journal is live
        self.mutex = threading.RLock()


_LOCKS = _Locks()


def _forget_locks() -> None:
    """In a forked child: flock locks of inherited descriptors are the parent's; start afresh
    (the parent's descriptors stay open: closing one would not unlock it either)."""
    global _LOCKS
    _LOCKS = _Locks()


os.register_at_fork(after_in_child=_forget_locks)


def _key(path: Path) -> str:
    name = os.fspath(path)
    key = _LOCKS.keys.get(name)
    if key is None:
        key = _LOCKS.keys[name] = os.path.realpath(name)
    return key


def store_lock(path: Path, timeout: float | None = None) -> StoreLock:
    """The writer lock of the HDF5 file ``path`` (``<path>.lock``), one per path per process;
    ``timeout`` (seconds, default :data:`~._safety.DEFAULT_LOCK_TIMEOUT`) sets how long its
    writers wait, for this process."""
    key = _key(path)
    if timeout is None:  # a read call's lookup: no mutex once the lock exists (a dict read)
        found = _LOCKS.locks.get(key)
        if found is not None:
            return found
    with _LOCKS.mutex:
        lock = _LOCKS.locks.get(key)
        if lock is None:
            lock = StoreLock(f"{path}{LOCK_SUFFIX}", store=str(path), timeout=DEFAULT_LOCK_TIMEOUT)
            _LOCKS.locks[key] = lock
        if timeout is not None:
            lock.timeout = timeout
        return lock


class reading:
    """``with reading(path):`` holds the store's lock shared for one read call (no-op inside
    this process's own write). Whatever HDF5 raises while reading (damaged metadata or chunks)
    becomes StoreCorruptedError naming the store. Call :func:`recover` before (re)opening the
    file. A class, not a generator: every read call of a training loop passes here."""

    __slots__ = ("path", "key")

    def __init__(self, path: Path) -> None:
        self.path, self.key = path, _key(path)

    def __enter__(self) -> None:
        lock, key = store_lock(self.path), self.key
        with _LOCKS.mutex:
            depth = _LOCKS.shared_depth.get(key, 0)
            if depth == 0:  # the first read call (of any thread) takes the lock, the last lets it go
                _LOCKS.shared[key] = lock.share()
            _LOCKS.shared_depth[key] = depth + 1

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        key = self.key
        with _LOCKS.mutex:
            _LOCKS.shared_depth[key] -= 1
            if _LOCKS.shared_depth[key] == 0 and _LOCKS.shared.pop(key):
                _LOCKS.locks[key].unshare()
        if isinstance(exc, Exception) and not isinstance(exc, ASEBytesError) and _from_h5py(exc):
            raise StoreCorruptedError(
                f"{self.path}: HDF5 cannot read the file ({type(exc).__name__}: {exc}); it is "
                "damaged or truncated; restore it from a copy"
            ) from exc


def _from_h5py(exc: BaseException) -> bool:
    """Was ``exc`` raised inside h5py (HDF5 failing on the file), not by our own code?"""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and "h5py" in frames[-1].filename


def recover(path: Path) -> bool:
    """Roll back the write a killed process left half done; True if there was one. Call it
    before opening the file, also inside :func:`reading` (the shared lock is let go for it)."""
    journal = Path(f"{path}{JOURNAL_SUFFIX}")
    key = _key(path)
    if not journal.exists() or key in _LOCKS.writing:
        return False
    lock = store_lock(path)
    # flock cannot turn a shared lock into an exclusive one while another reader holds it
    # shared too (both would wait): let ours go, recover, take it again.
    reader = _LOCKS.shared_depth.get(key, 0) > 0 and not lock._depth and lock._fd is not None
    if reader:
        assert lock._fd is not None  # checked just above
        fcntl.flock(lock._fd, fcntl.LOCK_UN)
    try:
        with lock.exclusive():
            if not journal.exists():  # another process recovered first
                return False
            _roll_back(path, journal)
    except PermissionError as exc:
        raise StoreCorruptedError(
            f"{path}: an interrupted write left {journal.name}, and rolling it back needs write "
            "permission on the file and its folder; open the store once where you can write it"
        ) from exc
    finally:
        if reader:
            assert lock._fd is not None  # store locks are never closed
            lock._acquire(lock._fd, fcntl.LOCK_SH)  # waits up to the timeout, like shared()
    return True


def _roll_back(path: Path, journal: Path) -> None:
    data = journal.read_bytes()
    head = len(_MAGIC) + _HEAD.size
    if len(data) < head + _CRC.size or not data.startswith(_MAGIC):
        journal.unlink()  # torn before the first store byte was written
        return
    if _CRC.unpack_from(data, head)[0] != zlib.crc32(data[:head]):
        journal.unlink()
        return
    old_length, created = _HEAD.unpack_from(data, len(_MAGIC))
    if created:
        with suppress(FileNotFoundError):
            path.unlink()
        journal.unlink()
        return
    fd = os.open(path, os.O_RDWR)
    try:
        pos = head + _CRC.size
        while pos + _REC.size <= len(data):
            offset, length = _REC.unpack_from(data, pos)
            end = pos + _REC.size + length
            if end + _CRC.size > len(data) or _CRC.unpack_from(data, end)[0] != zlib.crc32(data[pos:end]):
                break  # torn record: the store write it preceded never happened
            _pwrite_all(fd, data[pos + _REC.size : end], offset)
            pos = end + _CRC.size
        os.ftruncate(fd, old_length)
        os.fsync(fd)
    finally:
        os.close(fd)
    journal.unlink()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


class _UndoFile:
    """The file object h5py writes through: saves old pages to the journal before overwriting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal_path = Path(f"{path}{JOURNAL_SUFFIX}")
        self.old_length = path.stat().st_size if path.exists() else 0
        self.created = self.old_length == 0  # no file, or an empty one: written from scratch
        self.saved = np.zeros(0, bool)  # pages whose old bytes are in the journal
        self.pos = 0
        self.failure: OSError | None = None  # the first error writing the file or the journal
        self.spill: dict[int, bytearray] | None = None  # pages written after it, kept in memory
        self.size = 0  # the file's length as HDF5 sees it once spilling
        self.fd: int | None = None
        self.pending = bytearray()  # appended bytes not yet written, from offset pending_at
        self.pending_at = 0
        self.journal: int | None = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            head = _MAGIC + _HEAD.pack(self.old_length, self.created)
            self.journal_end = len(head) + _CRC.size
            _pwrite_all(self.journal, head + _CRC.pack(zlib.crc32(head)), 0)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except BaseException:
            self.close_files()
            self.journal_path.unlink()
            raise

    # -- the file-object interface h5py's fileobj driver calls ------------------------------
    # HDF5 must never see a failed write: on a full disk it has crashed (segfaults in h5py's
    # close and dealloc). So after the first error the rest of the write goes to memory
    # ("spill"), HDF5 finishes and closes cleanly, and :func:`journaled` rolls back and raises.
    def _length(self) -> int:
        self._write_pending()
        return self.size if self.spill is not None else os.fstat(self.fd).st_size  # type: ignore[arg-type]

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self._length() + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _pread(self, size: int, pos: int) -> bytes:
        self._write_pending()
        if self.spill is None:
            return os.pread(self.fd, size, pos)  # type: ignore[arg-type]
        size = max(0, min(size, self.size - pos))
        if not size:
            return b""
        first, last = pos // _PAGE, (pos + size - 1) // _PAGE + 1
        data = b"".join(bytes(self._page(p)) for p in range(first, last))
        return data[pos - first * _PAGE : pos - first * _PAGE + size]

    def _page(self, p: int) -> bytearray:
        page = self.spill.get(p) if self.spill is not None else None
        if page is None:
            page = bytearray(_PAGE)
            if self.fd is not None:
                old = os.pread(self.fd, _PAGE, p * _PAGE)
                page[: len(old)] = old
        return page

    def read(self, size: int = -1) -> bytes:
        data = self._pread(self._length() - self.pos if size < 0 else size, self.pos)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._pread(len(view), self.pos)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        pending, pos = self.pending, self.pos
        # Appends past the old end need no undo record: consecutive ones (a write's new chunks,
        # one HDF5 call each) are joined and written together, one system call per MiB.
        if (
            self.spill is None
            and pos >= self.old_length
            and (pos == self.pending_at + len(pending) or not pending)
            and len(pending) + len(view) <= _COALESCE
        ):
            if not pending:
                self.pending_at = pos
            pending += view
        else:
            self._write_pending()
            self._write_at(pos, view)
        self.pos = pos + len(view)
        return len(view)

    def _write_pending(self) -> None:
        """Write the joined appends (before anything reads the file, its length or closes it)."""
        if self.pending:
            data, self.pending = self.pending, bytearray()
            self._write_at(self.pending_at, memoryview(data))

    def _write_at(self, pos: int, view: memoryview) -> None:
        if self.spill is None:
            try:
                if pos < self.old_length:
                    self._save(pos, min(pos + len(view), self.old_length))
                _pwrite_all(self.fd, view, pos)  # type: ignore[arg-type]
            except OSError as exc:  # the journal holds what reached the file
                self._start_spilling(exc)
        if self.spill is not None:
            for p in range(pos // _PAGE, (pos + len(view) - 1) // _PAGE + 1):
                page = self.spill[p] = self._page(p)
                lo, hi = max(pos, p * _PAGE), min(pos + len(view), (p + 1) * _PAGE)
                page[lo - p * _PAGE : hi - p * _PAGE] = view[lo - pos : hi - pos]
            self.size = max(self.size, pos + len(view))

    def _start_spilling(self, exc: OSError | None) -> None:
        if self.spill is None:
            self.failure = self.failure or exc
            self.size = os.fstat(self.fd).st_size if self.fd is not None else 0
            self.spill = {}

    def truncate(self, size: int | None = None) -> int:
        self._write_pending()
        size = self.pos if size is None else size
        if self.spill is None:
            try:
                if size < self.old_length:
                    self._save(size, self.old_length)
                os.ftruncate(self.fd, size)  # type: ignore[arg-type]
            except OSError as exc:
                self._start_spilling(exc)
        if self.spill is not None:
            self.size = size
        return size

    def flush(self) -> None:
        """Write the joined appends (every other write is already in the page cache)."""
        self._write_pending()

    # -- the journal ---------------------------------------------------------------------------
    def _save(self, lo: int, hi: int) -> None:
        """Append the old bytes of the pages overlapping [lo, hi) not yet in the journal."""
        first, last = lo // _PAGE, (hi - 1) // _PAGE + 1
        if len(self.saved) < last:  # grown geometrically: one flag per page of the old file
            grown = np.zeros(max(last, 2 * len(self.saved)), bool)
            grown[: len(self.saved)] = self.saved
            self.saved = grown
        todo = np.flatnonzero(~self.saved[first:last]) + first
        if not len(todo):
            return
        runs = np.split(todo, np.flatnonzero(np.diff(todo) != 1) + 1)
        assert self.fd is not None and self.journal is not None  # open until spilling
        for run in runs:
            start = int(run[0]) * _PAGE
            stop = min((int(run[-1]) + 1) * _PAGE, self.old_length)
            old = os.pread(self.fd, stop - start, start)
            record = _REC.pack(start, len(old)) + old
            _pwrite_all(self.journal, record + _CRC.pack(zlib.crc32(record)), self.journal_end)
            self.journal_end += len(record) + _CRC.size
            self.saved[run] = True

    def commit(self) -> None:
        """Make the write durable, then delete the journal: the commit point."""
        self._write_pending()
        if self.failure is not None:  # the last appends met a full disk
            raise self.failure
        assert self.fd is not None  # only close_files() closes it
        os.fdatasync(self.fd)  # data and length; the mtime can wait
        self.close_files()
        self.journal_path.unlink()

    def roll_back(self) -> None:
        """Undo everything this write changed (after an error; the HDF5 file is closed)."""
        self.close_files()
        _roll_back(self.path, self.journal_path)

    def close_files(self) -> None:
        """Close both files; later calls (h5py may close the HDF5 file late) go to memory."""
        self._write_pending()
        self._start_spilling(None)
        for name in ("fd", "journal"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


@contextmanager
def journaled(path: Path, nbytes: int, timeout: float | None = None) -> Iterator[Any]:
    """An ``h5py.File`` open for writing whose changes all land or none do.

    ``nbytes``: the write's estimated size, checked against free space first. Hold
    :func:`store_lock` exclusive around the whole write (planning included); this takes it too.
    An exception rolls the file back; out of space becomes DiskFullError.
    """
    store, key = str(path), _key(path)
    with store_lock(path, timeout).exclusive():
        recover(path)
        require_space(path, nbytes, store=store)
        undo = _UndoFile(path)
        handle = None
        _LOCKS.writing.add(key)
        try:
            # New files get HDF5 1.8's formats: checksummed superblock, object headers and group
            # indexes (so metadata damage is detected), readable by every HDF5 since 1.8.
            handle = h5py.File(undo, "w", libver=("v108", "v108")) if undo.created else h5py.File(undo, "r+")
            yield handle
            handle.close()
            if undo.failure is not None:
                raise undo.failure
            undo.commit()
        except BaseException as exc:
            if handle is not None:
                with suppress(Exception):
                    handle.close()
            undo.roll_back()
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise disk_full(exc, store) from exc
            raise
        finally:
            _LOCKS.writing.discard(key)


def seal(attrs: Any, name: str, record: Any) -> None:
    """Write ``record`` as JSON into attribute ``name`` with its CRC-32 in ``name + "_crc32"``
    (large attributes live in HDF5 storage that has no checksum of its own)."""
    text = json.dumps(record)
    attrs[name] = text
    attrs[f"{name}_crc32"] = np.uint32(zlib.crc32(text.encode()))


def read_attribute(obj: Any, name: str) -> Any:
    """Attribute ``name`` of the h5py group or dataset ``obj`` (None if absent; a scalar as a
    0-d value, strings as bytes), read through HDF5's attribute calls: h5py's ``attrs`` mapping
    costs about twice as much per attribute, which every cold open pays. Other objects (the
    zarrmd view) are read through their ``attrs``."""
    oid = getattr(obj, "id", None)
    if not isinstance(oid, h5py.h5g.GroupID | h5py.h5d.DatasetID):
        return obj.attrs.get(name)
    key = name.encode()
    if not h5py.h5a.exists(oid, key):
        return None
    attr = h5py.h5a.open(oid, key)
    if attr.get_space().get_simple_extent_type() == h5py.h5s.NULL:
        return obj.attrs[name]  # an empty attribute: as h5py gives it
    value = np.empty(attr.shape, attr.dtype)
    attr.read(value)
    return value[()] if value.ndim == 0 else value


def unseal(obj: Any, name: str, where: str) -> Any:
    """The JSON record in attribute ``name`` of ``obj`` (None if absent), checked against its
    CRC-32 when it has one (records written before the CRC existed have none)."""
    text = read_attribute(obj, name)
    if text is None:
        return None
    text = text.decode() if isinstance(text, bytes) else str(text)
    crc = read_attribute(obj, f"{name}_crc32")
    if crc is not None and int(crc) != zlib.crc32(text.encode()):
        raise StoreCorruptedError(
            f"{where}: the record in attribute {name!r} fails its CRC-32 check; the file is damaged; "
            "restore it from a copy"
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreCorruptedError(f"{where}: the record in attribute {name!r} is not JSON ({exc})") from exc


def estimate(values: Any) -> int:
    """Bytes a write of ``values`` (arrays, object arrays of arrays, or lists of them) needs."""
    if isinstance(values, np.ndarray):
        if values.dtype != object:
            return values.nbytes
        return sum(estimate(v) for v in values.ravel().tolist()) + 16 * values.size
    if isinstance(values, list | tuple):
        return sum(estimate(v) for v in values)
    if isinstance(values, bytes | str):
        return len(values)
    return 16


@contextmanager
def checked(ds: Any, rows: Any = None) -> Iterator[None]:
    """Turn HDF5's failure to read a damaged chunk into StoreCorruptedError naming ``ds`` and rows."""
    try:
        yield
    except OSError as exc:
        text = str(exc)
        if "filter" not in text and "checksum" not in text.lower() and "read" not in text.lower():
            raise
        raise _damaged(ds, rows, exc) from exc


def _damaged(ds: Any, rows: Any, exc: BaseException) -> StoreCorruptedError:
    ds = getattr(ds, "_dset", ds)  # h5py's asstr() wrapper
    where = "" if rows is None else f" rows {_span(rows)}"
    return StoreCorruptedError(
        f"{ds.file.filename}: dataset {ds.name}{where} is damaged ({exc}); the file's checksums or "
        "structure do not match what was written; restore the file from a copy"
    )


def _span(rows: Any) -> str:
    if isinstance(rows, slice):
        return f"{rows.start}-{rows.stop - 1}"
    arr = np.asarray(rows).ravel()
    return f"{int(arr.min())}-{int(arr.max())}" if arr.size else "none"


def checksum_problems(f: Any) -> list[str]:
    """Every chunk of every dataset in ``f`` that fails its checksum or cannot be read, by rows."""
    found: list[str] = []
    if not isinstance(f, h5py.Group):  # no file yet, or H5MD in Zarr (no HDF5 checksums)
        return found

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.shape is None or not obj.shape:
            return
        step = obj.chunks[0] if obj.chunks else max(1, obj.shape[0])
        for start in range(0, obj.shape[0], step):
            stop = min(start + step, obj.shape[0])
            try:
                obj[start:stop]
            except OSError as exc:
                found.append(f"dataset /{name} rows {start}-{stop - 1}: damaged ({exc})")

    f.visititems(visit)
    return found
