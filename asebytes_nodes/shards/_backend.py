"""The sharded dataset as a backend: a manifest and shard stores, read as one list.

The layout and its version history are documented in :mod:`._manifest`. Opening a
dataset reads the manifest only; a shard is opened (read-only, without lock files) the
first time one of its rows is read, after checking that its file exists and has the
size the manifest records. ``len``, ``keys``, ``key_counts`` and the atom counts of all
frames (:attr:`ShardedBackend.natoms`, from the shards' atom-count files) need no shard opened.

Writes are appends: :meth:`ShardedBackend.extend` tops up the last shard (written anew
under another name) and starts new ones, then replaces the manifest. One writer at a
time holds an ``flock`` on the dataset folder; each write first deletes temporary files
and shard files no manifest names (what a killed writer leaves).
"""

from __future__ import annotations

import errno
import inspect
import itertools
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np

from ..backends._base import ReadableBackend, WritableBackend, path_of
from ..backends._lmdb_lock import WriterLock
from ..backends._safety import DEFAULT_LOCK_TIMEOUT
from ..errors import (
    InvalidDataError,
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnsupportedOperationError,
)
from ..registry import open_backend
from ._concat import ConcatBackend
from ._manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    TEMP_PREFIX,
    Manifest,
    ShardEntry,
    digest,
    disk_size,
)
from ._write import (
    DEFAULT_SHARD_BYTES,
    backend_class,
    frames_per_shard,
    read_range,
    remove_path,
    write_shard,
)

__all__ = ["ShardedBackend"]


#: Reads retried when an append replaces the shard files a read is using (see ``_reopened``).
_REOPEN_ATTEMPTS = 8


class ShardedBackend(ConcatBackend, WritableBackend):
    """A folder of shard stores with a manifest, read and appended to as one list.

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("frames/", backend="shards", shard_backend="lmdb", shard_frames=100_000)  # doctest: +SKIP
    >>> ASEIO("frames/")  # an existing dataset is recognised by its manifest  # doctest: +SKIP

    Parameters
    ----------
    target
        The dataset folder; a missing one is made by the first write (``readonly``: StoreNotFoundError).
    readonly
        Refuse every write.
    shard_backend
        Registry name of the shard stores (``lmdb``, ``zarr``, ``h5md``); for a new dataset
        (default ``lmdb``). An existing dataset keeps its own, and a different name is refused.
    shard_frames, shard_bytes
        Rows per full shard, or the bytes a shard should hold (default 128 MiB, turned into a
        row count from the first rows written); for a new dataset.
    shard_options
        Options for the shard backend's constructor when writing shards.
    max_open
        Most shards kept open at once: shuffled reads over thousands of shards would otherwise
        exhaust the process's file descriptors, and over more shards than are open they reopen
        shards all the time (400 LMDB shards, 64 open: 1.6k frames/s). Default: for LMDB shards
        (one descriptor each) a quarter of the descriptors the process may open, from 16 to
        4,096 (``ulimit -n`` raises it); 64 for others (a Zarr shard keeps a file per column
        open, an H5MD shard HDF5's caches).
    lock_timeout
        Seconds a write waits for another writer of the dataset.
    """

    name: ClassVar[str] = "shards"

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        shard_backend: str | None = None,
        shard_frames: int | None = None,
        shard_bytes: int | None = None,
        shard_options: dict[str, Any] | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        max_open: int | None = None,
    ) -> None:
        self._folder = path_of(os.fspath(target))
        self.readonly = readonly
        self._settings = {
            "shard_backend": shard_backend,
            "shard_frames": shard_frames,
            "shard_bytes": shard_bytes,
            "shard_options": shard_options,
            "lock_timeout": lock_timeout,
            "max_open": max_open,
        }
        self._shard_bytes = shard_bytes or DEFAULT_SHARD_BYTES
        self._shard_options = dict(shard_options or {})
        #: The empty manifest of a dataset not written yet: the folder is made by the first write.
        self._new: Manifest | None = None
        if not (self._folder / MANIFEST).is_file():
            self._new = self._planned(shard_backend or "lmdb", shard_frames)
        self._lock = WriterLock(self._folder, store=str(self._folder), timeout=lock_timeout)
        self._load()
        self.max_open = max(1, max_open) if max_open is not None else _default_open(self._manifest.backend)
        if shard_backend is not None and shard_backend != self._manifest.backend:
            raise InvalidDataError(
                f"{self._folder}: the dataset's shards are {self._manifest.backend!r} stores, not "
                f"{shard_backend!r}; drop shard_backend= or write a new dataset"
            )

    @classmethod
    def holds_store(cls, target: str | os.PathLike[str]) -> bool:
        """Inherited, or a folder with a shard manifest."""
        return super().holds_store(os.fspath(target)) or (path_of(os.fspath(target)) / MANIFEST).is_file()

    def _planned(self, backend: str, shard_frames: int | None) -> Manifest:
        folder = self._folder
        if self.readonly:
            raise StoreNotFoundError(f"{folder}: no sharded dataset here (no {MANIFEST}); check the path")
        if folder.exists():
            foreign = sorted(p.name for p in folder.iterdir() if not p.name.startswith(TEMP_PREFIX))
            if foreign:
                raise InvalidDataError(
                    f"{folder}: not a sharded dataset (no {MANIFEST}) and not empty ({', '.join(foreign[:5])}"
                    "...); choose an empty or new folder"
                )
        backend_class(backend)  # an unknown or uninstalled backend fails before any file is made
        if shard_frames is not None and shard_frames < 1:
            raise InvalidDataError(f"shard_frames must be at least 1, got {shard_frames}")
        return Manifest(backend=backend, shard_frames=shard_frames or 0)

    def _load(self) -> None:
        try:
            self._manifest = Manifest.load(self._folder)
        except FileNotFoundError:
            if self._new is None:
                raise StoreNotFoundError(f"{self._folder}: the manifest {MANIFEST} is gone") from None
            self._manifest = self._new  # not written yet: empty
        self._set_parts(
            [s.rows for s in self._manifest.shards],
            [partial(self._open_shard, p) for p in range(len(self._manifest.shards))],
        )
        self._natoms: np.ndarray | None = None

    # -- reading -----------------------------------------------------------------------------
    def _entry(self, p: int) -> ShardEntry:
        """Shard ``p``'s entry; if its file is gone, the one that replaced it since this handle read
        the manifest (an append tops up the last shard as a new file starting with the same rows),
        so a reader keeps its snapshot while another handle appends."""
        entry = self._manifest.shards[p]
        if (self._folder / entry.file).exists():
            return entry
        try:
            current = Manifest.load(self._folder).shards
        except (OSError, StoreCorruptedError):
            return entry
        same_start = sum(s.rows for s in current[:p]) == int(self._starts[p])
        return current[p] if p < len(current) and same_start and current[p].rows >= entry.rows else entry

    def _open_shard(self, p: int) -> ReadableBackend:
        entry = self._entry(p)
        path = self._folder / entry.file
        rows = f"rows {int(self._starts[p])}-{int(self._starts[p + 1]) - 1}"
        if not path.exists():
            raise StoreCorruptedError(
                f"{self._folder}: shard file {entry.file} ({rows}) is missing; restore it "
                "(dvc checkout / dvc pull), or rewrite the dataset"
            )
        size = disk_size(path)
        if size != entry.size:
            raise StoreCorruptedError(
                f"{self._folder}: shard file {entry.file} ({rows}) is {size} bytes, but the manifest "
                f"says {entry.size}: it was truncated or modified; restore it or rewrite the dataset"
            )
        options: dict[str, Any] = {}
        cls = backend_class(self._manifest.backend)[0]
        if "lock" in inspect.signature(cls).parameters:
            options["lock"] = False  # shards never change once named: no lock file in the dataset
        try:
            shard = open_backend(os.fspath(path), backend=self._manifest.backend, readonly=True, **options)
        except MissingExtraError:
            raise
        except Exception as exc:
            if getattr(exc, "errno", None) == errno.EMFILE and not isinstance(exc, StoreCorruptedError):
                raise  # the process's file limit, not the shard
            raise StoreCorruptedError(
                f"{self._folder}: shard file {entry.file} ({rows}) cannot be opened: {exc}"
            ) from exc
        held = len(shard)
        if held != entry.rows:
            shard.close()
            raise StoreCorruptedError(
                f"{self._folder}: shard file {entry.file} ({rows}) holds {held} rows, but the "
                f"manifest says {entry.rows}; restore it or rewrite the dataset"
            )
        return shard

    def _reopened(self, read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``read(*args, **kwargs)``; if it fails while a shard's file is gone (an append replaced
        it, maybe while this read opened it), again with those shards reopened from the files that
        replaced them: a few times, as appends may keep replacing them meanwhile."""
        attempts = 1
        while True:
            try:
                return read(*args, **kwargs)
            except (OSError, ValueError):  # StoreNotFoundError, StoreCorruptedError, closed handles
                shards = enumerate(self._manifest.shards)
                gone = [p for p, entry in shards if not (self._folder / entry.file).exists()]
                if not gone or attempts == _REOPEN_ATTEMPTS:
                    raise
            time.sleep(0.001 * 2**attempts)  # appends in quick succession: let one finish
            attempts += 1
            for p in gone:
                self._recent.pop(p, None)
                handle, self._handles[p] = self._handles[p], None
                if handle is not None:
                    handle.close()

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return self._reopened(super().read_rows, indices, keys)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        return self._reopened(super().read_column, key, indices)

    def read_batch(
        self,
        indices: np.ndarray,
        keys: Sequence[str] | None = None,
        *,
        fill: Mapping[str, Any] | None = None,
        atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any]:
        return self._reopened(super().read_batch, indices, keys, fill=fill, atoms=atoms)

    def columns(self, index: int = 0) -> list[str]:
        return self._reopened(super().columns, index)

    def _counts(self, p: int) -> dict[str, int]:
        return self._manifest.shards[p].keys

    def _where(self, p: int) -> str:
        return f"shard file {self._manifest.shards[p].file}"

    @property
    def natoms(self) -> np.ndarray:
        """Atom count of every frame (uint32), from the manifest's array: no shard is opened."""
        if self._natoms is None:
            parts = [
                self._entry(p).load_natoms(self._folder)[: entry.rows]
                for p, entry in enumerate(self._manifest.shards)
            ]
            self._natoms = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
        return self._natoms

    @property
    def shards(self) -> list[ShardEntry]:
        """The manifest's shard entries, in order."""
        return list(self._manifest.shards)

    @property
    def location(self) -> str:
        return os.fspath(self._folder)

    def format_info(self) -> dict[str, Any]:
        m = self._manifest
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "shard_backend": m.backend,
            "shards": len(m.shards),
            "shard_frames": m.shard_frames,
        }

    def check(self) -> list[str]:
        """Inherited; also each shard's size and content hash against the manifest, and the atom counts."""
        problems: list[str] = []
        for entry in self._manifest.shards:
            path = self._folder / entry.file
            if not path.exists():
                problems.append(f"shard file {entry.file}: missing")
            elif digest(path) != (entry.size, entry.sha256):
                problems.append(f"shard file {entry.file}: its bytes differ from the manifest's size/sha256")
            natoms = self._folder / entry.natoms_file
            if not natoms.exists() or digest(natoms)[1] != entry.natoms:
                problems.append(
                    f"atom-count file {entry.natoms_file}: missing, or its bytes differ from the manifest's"
                )
        if problems:
            return problems
        return super().check()

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        """Inherited; tops up the last shard (as a new file), starts new ones, then replaces the manifest."""
        self._check_writable()
        if self._new is not None:
            self._folder.mkdir(parents=True, exist_ok=True)  # the lock is taken on the folder
        if not len(rows):
            if self._new is not None and not (self._folder / MANIFEST).is_file():
                self._new.save(self._folder)  # an empty write still makes the dataset
            return
        with self._lock.exclusive():
            self.close()
            self._load()  # another handle may have written since
            old = self._manifest
            self._clean(old)
            cap = old.shard_frames or frames_per_shard(list(rows[:256]), self._shard_bytes)
            shards = list(old.shards)
            replaced: list[ShardEntry] = []
            pos = 0
            if shards and shards[-1].rows < cap:
                last = len(shards) - 1
                pos = min(cap - shards[-1].rows, len(rows))
                kept = read_range(self._part(last), 0, shards[-1].rows)
                replaced.append(shards[-1])
                shards[-1] = self._write(last, itertools.chain(kept, rows[:pos]))
            while pos < len(rows):
                shards.append(self._write(len(shards), rows[pos : pos + cap]))
                pos += cap
            Manifest(backend=old.backend, shard_frames=cap, shards=shards).save(self._folder)
            self.close()
            for entry in replaced:  # renamed first: a reader sees it gone at once, never half deleted
                for name in (entry.file, entry.natoms_file):
                    retired = self._folder / f"{TEMP_PREFIX}{name}.{os.getpid()}"
                    os.replace(self._folder / name, retired)
                    remove_path(retired)
            self._load()

    def _write(self, index: int, rows: Any) -> ShardEntry:
        return write_shard(self._folder, index, rows, self._manifest.backend, self._shard_options)

    def _clean(self, manifest: Manifest) -> None:
        """Delete temporary files and shard/atom-count files the manifest does not name."""
        keep = {s.file for s in manifest.shards} | {s.natoms_file for s in manifest.shards}
        for item in self._folder.iterdir():
            name = item.name
            if name.startswith(TEMP_PREFIX) or (name.startswith("shard-") and name not in keep):
                remove_path(item)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        raise UnsupportedOperationError(self._append_only("replace rows"))

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        raise UnsupportedOperationError(self._append_only("update rows"))

    def _append_only(self, what: str) -> str:
        return (
            f"{self._folder}: a sharded dataset cannot {what}: its shards never change once written "
            "(so DVC keeps them); copy the frames, changed, into a new dataset (asebytes_nodes.convert)"
        )

    def _check_writable(self) -> None:
        WritableBackend._check_writable(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"target": os.fspath(self._folder), "readonly": self.readonly, **self._settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("target"), **state)  # type: ignore[misc]


def _default_open(backend: str) -> int:
    """Shards kept open by default (see :class:`ShardedBackend`'s ``max_open``)."""
    if backend != "lmdb":
        return 64
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 4096 if soft == resource.RLIM_INFINITY else min(4096, max(16, soft // 4))
