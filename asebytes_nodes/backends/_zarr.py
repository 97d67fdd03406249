"""Zarr backend: one typed column per key, ragged per-atom arrays, sharded, crash-safe writes.

On-disk layout (version 2)
--------------------------
A Zarr v3 group. Its attribute ``asebytes_nodes`` (the *record*) holds::

    {"format": "asebytes_nodes.zarr", "version": 2, "generation": commits so far,
     "length": committed frames, "atoms": committed atoms, "n_atoms": "n_atoms" or "n<k>",
     "next_id": first unused array number, "retired": [arrays the last commit replaced],
     "columns": {key: {"id": "c3", "kind": ..., "dtype": ..., "shape": [...],
                       "type": ..., "count": frames carrying it, "nbytes": ...}},
     "crc": crc32c of the record's canonical JSON (sorted keys, no spaces) without "crc"}

and its arrays are::

    <n_atoms>        int64 (frames,)     atom count per frame; per-atom offsets are its cumsum
    c<k>/present     bool  (frames,)     does frame i carry the key? Only once some frame
                                         lacks it (``"present": true`` in its record); until
                                         then every frame carries it
    c<k>/values      kind "scalar": (frames,)            one exact scalar type (``type`` code,
                                                         see :func:`._columns.scalar_type_code`)
                     kind "frame":  (frames, *shape)     numpy arrays of one shape and dtype
                     kind "atom":   (atoms, *shape)      per-atom arrays, all frames concatenated
                     kind "object": uint8 (nbytes,)      msgpack values (strings, lists, dicts, ...)
    c<k>/sizes       int64 (frames,)     kind "object" only: bytes of frame i's value
    .asebytes-lock   empty file          the writers' lock (local stores; see below)
    groups/<name>/   a group of its own  ``ZarrBackend(path, group=name)``: another dataset with
                                         its own record and arrays, laid out as above (no lock
                                         file of its own: the store's lock serves every group)

Column names are ids (``c0``, ``c1``...) so keys may hold dots and slashes; an id is
never reused within a store. Arrays are chunked along their first axis to about
``chunk_bytes`` (small per-frame rows up to 8 times that; see ``_zarr_arrays``) and
sharded to about ``shard_bytes``, so a store is a few files per
column whatever its length. Every chunk's codec chain ends in ``crc32c`` (version 2),
so a damaged chunk is an error, never wrong numbers.

Commits and crashes
-------------------
The record is the only thing a commit writes, and it is written last (the group's
``zarr.json`` is replaced atomically, as zarr does it). Every write leaves each array the
committed record names readable with its committed content, at every moment:

- ``extend``/``append`` write past the committed length of the existing arrays (files
  replaced atomically, committed chunks kept byte for byte) and into new arrays, then
  commit ``length``. Data past ``length`` is ignored and overwritten by the next write.
- Replacements (``db[i] = atoms``, slice assignment, ``update``, ``drop``) are
  copy-on-write: every column they touch gets a new id whose arrays are the old ones
  with the rows replaced, all rows of one call in one pass; the commit points the
  record at the new ids and lists the old ones as ``retired``. In a local store the
  new array's unchanged shard files are hard links to the old one's (so a replacement
  costs the shards it changes, plus the whole ``present`` flags of the column); in an
  object store, or for arrays that zarr writes (other compressors), the columns touched
  are copied whole. A changed atom count rewrites per-atom columns from that frame on.
- The next writer deletes the retired arrays, and in a local store every other array
  and ``*.partial`` file no record names (left by a killed or failed writer); readers
  never delete anything; the collector looks only at its own dataset's folder (``c<k>``,
  ``n<k>`` names), so it never touches ``groups/``. (:mod:`._zarr_write` runs writes and
  commits, :mod:`._zarr_rewrite` builds replacements, :mod:`._zarr_txn` checks, seals and
  cleans up after records, :mod:`._zarr_read` guards every read, :mod:`._zarr_rows` reads
  rows and columns, :mod:`._zarr_arrays` reads and writes rows of arrays, :mod:`._zarr_columns`
  is the column model.)

A kill at any moment therefore leaves every frame at its old or its new version. A full
disk raises :class:`~asebytes_nodes.errors.DiskFullError`; what the write had made is
removed and the store stays at its last commit.

Concurrency
-----------
Local stores: writers take ``<store>/.asebytes-lock`` (``flock``, see
:class:`~._safety.StoreLock`) for a whole write, so two writers take turns; the file is
empty between writes (the holder is written into it only while the lock is held), and
readers never create, lock or change it, so reading leaves a DVC-tracked store as it was.
Readers take no lock: a read that meets a file being replaced (a checksum mismatch) or an
array deleted under it (the record's generation changed) is read again, up to a few
times, from the current record. Object stores (``s3://``...) have no lock; there a writer
never writes an object a committed record names: every array an ``extend`` or a
replacement writes gets a name unique to that write (``c<k>x<8 hex digits>``), forked
from the committed array by copying its full shard objects on the server (an ``extend``
there costs a copy request per shard object of the columns it writes), and the record is
replaced with ``If-Match`` on the version the writer began from (S3; other object
stores compare the generation just before). Of two simultaneous writers one commits;
the other raises :class:`~asebytes_nodes.errors.ConcurrentCommitError`, commits nothing,
removes its own arrays, and the winner's frames are intact (see :mod:`._zarr_remote`).

Writing and reading fast
------------------------
In a local store with a Blosc compressor (or none), :mod:`._zarr_shards` writes the
arrays: exactly the files zarr writes, without zarr's fixed per-array and per-chunk
async cost, and every rewritten file is replaced atomically; a new local store's group
document and every commit are written the same way (zarr's group open and attribute
write cost a few ms per write). Remote stores, other compressors and arrays laid out
differently go through zarr, all arrays of one ``extend`` in one concurrent batch.

Reads of a local store never go through zarr when the arrays are laid out that way (what
this package writes, any version): :mod:`._zarr_chunks` reads each inner chunk a request
needs straight from its shard file (crc32c-checked index and chunk, one ``pread``, one
decode; each chunk decoded at most once per request) and keeps decoded chunks up to
``cache_bytes`` (64 MiB) per handle, rows of held chunks gathered in one numpy call. Random
rows of a large store cost the chunks that hold them, never a whole column (issue 17);
zarr's fixed ~0.5-1 ms per array read is gone, and the zarr group itself is opened only
when a write needs it. Object stores and other codecs read through zarr, with a cache of
whole decoded columns. ``read_batch`` (:mod:`._zarr_batch`) gathers training batches with
numpy. Every cache is dropped when the record changes; values returned are fresh copies.

Inner chunks are 8 KiB and shards 16 MiB by default (``chunk_bytes``, ``shard_bytes``): how they
were chosen is in :mod:`._zarr_arrays`.

Version history
---------------
1. First layout (asebytes-nodes 0.1). ``generation`` was added later within version 1
   (a record without it reads as generation 0). Replacements wrote in place.
2. Chunk checksums (``crc32c`` after the compressor) on new arrays; the record's own
   ``crc``; copy-on-write replacements (``n_atoms``, ``next_id``, ``retired`` in the
   record; the atom-count array may be renamed ``n<k>``); the writers' lock file.
   Version-1 stores open and are written in the version-2 way (their arrays keep their
   codec, without chunk checksums; new columns get them); the first commit marks them 2.
   Later within version 2, with no change to a dataset's own layout: groups
   (``groups/<name>/``, ignored by writers that predate them); on object stores,
   arrays forked under new names by every ``extend`` with the record replaced
   conditionally (names the version-2 record already allowed); local arrays written
   without a compressor that saves under 10% on their first rows (read as before;
   ``compress_all=True`` keeps it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import (
    ASEBytesError,
    DiskFullError,
    InvalidDataError,
    MissingExtraError,
    StoreCorruptedError,
    StoreNotFoundError,
)
from ..registry import builtin
from ._base import ColumnInfo, WritableBackend, check_cache_bytes, check_format_record, check_group_name
from ._columns import Column, first_value
from ._safety import DEFAULT_LOCK_TIMEOUT, StoreLock, disk_full, is_disk_full
from ._zarr_txn import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RECORD_ATTR,
    array_names,
    check_inside,
    check_record,
    document_stat,
    group_document,
    parse_record,
    seal,
    verify_seal,
)

try:
    import zarr

    from ._zarr_arrays import ArrayAccess, compressors
    from ._zarr_batch import BatchReads
    from ._zarr_chunks import ChunkCache, LazyGroup
    from ._zarr_read import CheckedReads
    from ._zarr_remote import create_group, group_at
    from ._zarr_rewrite import CopyOnWrite
    from ._zarr_rows import RowReads
    from ._zarr_shards import chunk_codec  # numcodecs, crc32c: zarr's
    from ._zarr_write import Writes
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The Zarr backend needs zarr>=3. Run: pip install "asebytes-nodes[zarr]"'
    ) from exc

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LOCK_NAME", "ZarrBackend"]

LOCK_NAME = ".asebytes-lock"
GROUPS_DIR = "groups"  # ZarrBackend(path, group=name) keeps its dataset in <path>/groups/<name>
GROUP_DOCUMENT = group_document()


class ZarrBackend(Writes, CopyOnWrite, BatchReads, RowReads, ArrayAccess, CheckedReads, WritableBackend):
    """Frames in a Zarr v3 group, local or at any fsspec URL (``s3://``, ``gs://``...).

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("frames.zarr", compressor="zstd", clevel=9)  # doctest: +SKIP

    Parameters
    ----------
    target
        A local path or an fsspec URL.
    readonly
        Refuse every write.
    storage_options
        fsspec options for URLs (credentials, endpoint).
    compressor, clevel
        ``"lz4"`` (default, Blosc with shuffle), ``"zstd"``, ``"blosclz"``, ``"zlib"``,
        ``"gzip"`` or ``None``; and its level. In a local store, a new array whose first 32 KiB
        a Blosc compressor shrinks by less than 10% is stored without it (read faster).
    compress_all
        Keep the compressor on every new array, also where it saves under 10% (positions and
        forces of varied structures: about 6%): the smallest store, whose reads decompress
        every chunk (shuffled batches of 100,000 periodic frames: 232 against 266 ms).
    chunk_frames, shard_frames
        Rows per chunk and per shard (frames for per-frame columns, atoms for per-atom
        ones are scaled by the mean atom count). Default: about ``chunk_bytes`` (8 KiB)
        per chunk and ``shard_bytes`` (16 MiB) per shard.
    cache_bytes
        Bytes of decoded chunks (or columns) kept in memory by this handle; 0 turns it off.
    lock_timeout
        Seconds a writer of a local store waits for another writer before
        :class:`~asebytes_nodes.errors.StoreLockedError`.
    group
        A dataset of its own in the store (``groups/<group>``: own record, length, keys and
        schema); writers of every group of a store share its lock. Default: the store's
        main dataset. :meth:`list_groups` names the groups.
    """

    name: ClassVar[str] = "zarr"
    extensions: ClassVar[tuple[str, ...]] = builtin("zarr").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("zarr").schemes
    supports_drop_keys: ClassVar[bool] = True
    supports_groups: ClassVar[bool] = True
    side_suffixes: ClassVar[tuple[str, ...]] = ()  # the lock file lives inside the store
    read_batch_size: ClassVar[int] = 16384

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        storage_options: dict[str, Any] | None = None,
        compressor: str | None = "lz4",
        clevel: int = 5,
        compress_all: bool = False,
        chunk_frames: int | None = None,
        shard_frames: int | None = None,
        chunk_bytes: int = 8 << 10,
        shard_bytes: int = 16 << 20,
        cache_bytes: int = 64 << 20,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        group: str | None = None,
    ) -> None:
        self._root = os.fspath(target)
        self._group_name = None if group is None else check_group_name(self._root, group)
        self._target = self._root if group is None else f"{self._root.rstrip('/')}/{GROUPS_DIR}/{group}"
        self._cache_limit = check_cache_bytes(self._root, cache_bytes)
        self._remote = "://" in self._target
        self.readonly = readonly
        self._storage_options = storage_options
        self._layout: dict[str, Any] = {
            "compressor": compressor,
            "clevel": clevel,
            "compress_all": compress_all,
            "chunk_frames": chunk_frames,
            "shard_frames": shard_frames,
            "chunk_bytes": chunk_bytes,
            "shard_bytes": shard_bytes,
        }
        self._compressors = compressors(compressor, clevel)
        # new arrays of a local store are written directly, in zarr's layout (see _zarr_shards)
        self._direct = None if self._remote else chunk_codec(compressor, clevel)
        self._lock_timeout = lock_timeout
        # writers hold it exclusively; readers only ever wait on it shared, and never create it
        where = Path(self._root) / LOCK_NAME  # one lock for every group of the store
        lock = StoreLock(where, store=self._root, timeout=lock_timeout, clear=True)
        self._lock = None if self._remote else lock
        self._next_id = 0
        self._created: list[str] = []
        self._forks: dict[str, str] = {}  # object stores: array written -> committed array it extends
        self._began = 0
        self._etag: str | None = None
        self._document: dict[str, Any] = {}
        self._touched = False
        self._record_bytes: bytes | None = None
        self._seen: tuple[int, ...] | None = None  # document_stat when _record_bytes was read
        try:
            self._open()
        except OSError as exc:
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise disk_full(exc, self._target) from exc
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self, create: bool = False) -> None:
        """Open the store; a missing local one is made by the first write (``create``), not here."""
        self._arrays: dict[str, Any] = {}
        self._offsets: np.ndarray | None = None
        self._cache = ChunkCache(self._cache_limit)
        self._deferred: list[Any] | None = None
        kwargs: dict[str, Any] = {"storage_options": self._storage_options} if self._remote else {}
        if self._group_name is not None and not self._remote:  # a planted link leads nowhere else
            check_inside(Path(self._root), [f"{GROUPS_DIR}/{self._group_name}"])
        if not self._remote and self.readonly and not Path(self._target).exists():
            raise self._not_found("opened read-only")
        fresh = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "length": 0, "atoms": 0, "columns": {}}
        fresh = seal({**fresh, "generation": 0, "n_atoms": "n_atoms", "next_id": 0, "retired": []})
        if not create and not self.readonly:  # a typo'd path must not leave a store behind
            missing = not group_at(self._target, self._storage_options) if self._remote else None
            if missing or (not self._remote and not Path(self._target).exists()):
                self._group, self._meta = None, fresh  # empty until the first write makes it
                return
        if self._group_name is not None and not self.readonly:
            self._make_parents()
        found = None if self._remote else parse_record(self._record_document())
        if found is not None:  # our local store: zarr opens the group only when a write needs it
            self._check(found)
            self._group, self._meta = LazyGroup(self._open_group), found
            return
        if create and not self._remote and self._create_local(fresh):  # a new store, without zarr
            return
        try:
            if self._remote and not self.readonly:  # S3: created with its record in one request, or not
                create_group(self._target, self._storage_options, {RECORD_ATTR: fresh})
            self._group = zarr.open_group(self._target, mode="r" if self.readonly else "a", **kwargs)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            if self._remote:
                group_at(self._target, self._storage_options)  # an object at the key: say so
            raise self._not_found(str(exc)) from exc
        except PermissionError as exc:  # an object store refused the credentials
            raise PermissionError(f"{self._target}: {exc}") from exc
        except (ValueError, zarr.errors.ContainsArrayError, zarr.errors.MetadataValidationError) as exc:
            raise StoreCorruptedError(f"{self._target}: cannot open as a Zarr group ({exc})") from exc
        meta: Any = self._group.attrs.asdict().get(RECORD_ATTR)
        if meta is None:
            with warnings.catch_warnings():  # zarr names our lock file "not a component"
                warnings.filterwarnings("ignore", message=f".*{LOCK_NAME}")
                if any(name != GROUPS_DIR for name in self._group.keys()):
                    raise StoreCorruptedError(
                        f"{self._target}: a Zarr group, but not an asebytes-nodes store "
                        f"(no {RECORD_ATTR!r} attribute)"
                    )
            groups = [] if self._remote or self._group_name is not None else self.list_groups(self._root)
            if self.readonly and groups:  # only groups: an empty default store would hide them
                raise StoreNotFoundError(
                    f"{self._root}: no frames outside its groups; its groups: {', '.join(groups)} "
                    "(pick one with group=...)"
                )
            meta = fresh
            if not self.readonly:  # under the lock: never over a record another writer just made
                with self._lock.exclusive() if self._lock is not None else nullcontext():
                    found = zarr.open_group(self._target, mode="a", **kwargs).attrs.asdict().get(RECORD_ATTR)
                    if found is None:
                        self._group.attrs[RECORD_ATTR] = meta
                    else:
                        meta = found
                        self._check(meta)
        else:
            self._check(meta)
        self._meta: dict[str, Any] = meta

    def _not_found(self, why: str) -> StoreNotFoundError:
        if not self._remote and Path(self._root).is_file():
            return StoreNotFoundError(
                f"{self._root}: a file, not a Zarr store (a folder); open it with its own backend"
            )
        if self._group_name is None:
            return StoreNotFoundError(f"{self._target}: no such Zarr store ({why})")
        known = [] if self._remote else self.list_groups(self._root)
        return StoreNotFoundError(
            f"{self._root}: no group {self._group_name!r} in this Zarr store ({why}); its groups: "
            f"{known}. Open it writable to create the group, or pick one of those"
        )

    def _make_parents(self) -> None:
        """Group documents for the store and its ``groups`` folder, where missing (never over
        an existing one: local stores create them exclusively, S3 conditionally)."""
        for where in (self._root, f"{self._root.rstrip('/')}/{GROUPS_DIR}"):
            if self._remote:
                create_group(where, self._storage_options, {})
                continue
            Path(where).mkdir(parents=True, exist_ok=True)
            with suppress(FileExistsError), open(Path(where) / "zarr.json", "xb") as doc:
                doc.write(GROUP_DOCUMENT)

    @classmethod
    def holds_store(cls, target: str | os.PathLike[str]) -> bool:
        """Inherited, or a folder with a group document (``zarr.json``)."""
        return super().holds_store(os.fspath(target)) or (Path(target).expanduser() / "zarr.json").is_file()

    @classmethod
    def list_groups(cls, target: str | os.PathLike[str]) -> list[str]:
        """Names of the datasets in ``groups/`` of the store at ``target``, sorted."""
        target = os.fspath(target)
        if "://" in target:
            try:
                found = zarr.open_group(f"{target.rstrip('/')}/{GROUPS_DIR}", mode="r").group_keys()
            except (OSError, zarr.errors.BaseZarrError):
                return []
            return sorted(name for name in found if _is_group_name(name))
        folder = Path(target) / GROUPS_DIR
        if not folder.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(folder)
            if _is_group_name(entry.name)
            and entry.is_dir(follow_symlinks=False)
            and (folder / entry.name / "zarr.json").is_file()
        )

    def cache_record(self) -> dict[str, Any]:
        """Inherited, plus the group when one was asked for."""
        record = super().cache_record()
        return record if self._group_name is None else {**record, "group": self._group_name}

    def _check(self, meta: Any) -> None:
        """Refuse a record of another format or version, damaged, or naming foreign paths."""
        check_format_record(self._target, meta, FORMAT_NAME, FORMAT_VERSION, "Zarr")
        verify_seal(self._target, meta)
        check_record(self._target, meta)
        if not self._remote:
            check_inside(Path(self._target), array_names(meta))

    def _refresh(self) -> None:
        """Re-read the committed metadata (another process may have written)."""
        if self._group is None:  # no store yet: open it once another handle has made it
            made = group_at(self._target, self._storage_options) if self._remote else None
            if made or (not self._remote and (Path(self._target) / "zarr.json").exists()):
                self._open()
            return
        if not self._remote:  # the group's own record, without zarr; the same bytes: nothing to do
            seen = document_stat(self._target)
            if seen is not None and seen == self._seen and self._record_bytes is not None:
                return  # the document this handle read, untouched since (a stat, not a read)
            raw = self._record_document()
            if raw is not None and raw == self._record_bytes:
                self._seen = seen
                return
            record = parse_record(raw)
            if record is not None:
                if record != self._meta:
                    self._check(record)
                    self._group, self._meta = LazyGroup(self._open_group), record
                    self._forget()
                self._record_bytes, self._seen = raw, seen  # a document whose record is self._meta
                return  # anything else: zarr reports what is wrong
        kwargs: dict[str, Any] = {"storage_options": self._storage_options} if self._remote else {}
        try:
            group = zarr.open_group(self._target, mode="r" if self.readonly else "a", **kwargs)
            meta: Any = group.attrs.asdict().get(RECORD_ATTR, self._meta)
        except (ValueError, OSError, zarr.errors.BaseZarrError) as exc:
            if isinstance(exc, ASEBytesError):
                raise
            raise StoreCorruptedError(
                f"{self._target}: the group's record cannot be read ({type(exc).__name__}: {exc}); "
                "restore the store from a copy"
            ) from exc
        if meta != self._meta:
            self._check(meta)
            self._group, self._meta = group, meta
            self._forget()

    def _record_document(self) -> bytes | None:
        """The bytes of a local store's group document (None if it cannot be read)."""
        try:
            with open(os.path.join(self._target, "zarr.json"), "rb") as document:
                return document.read()
        except OSError:
            return None

    def _open_group(self) -> Any:
        return zarr.open_group(self._target, mode="r" if self.readonly else "a")

    def _forget(self) -> None:
        """Drop everything read under an older record: array handles, offsets, decoded columns."""
        self._arrays, self._offsets, self._seen = {}, None, None
        self._cache.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "target": self._root,
            "group": self._group_name,
            "readonly": self.readonly,
            "storage_options": self._storage_options,
            "layout": self._layout,
            "cache_bytes": self._cache_limit,
            "lock_timeout": self._lock_timeout,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["target"],
            readonly=state["readonly"],
            storage_options=state["storage_options"],
            cache_bytes=state["cache_bytes"],
            lock_timeout=state.get("lock_timeout", DEFAULT_LOCK_TIMEOUT),
            group=state.get("group"),
            **state["layout"],
        )

    def close(self) -> None:
        self._cache.clear()  # its open shard files
        if self._lock is not None:
            self._lock.close()

    @property
    def location(self) -> str:
        return self._root

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        self._refresh()
        return int(self._meta["length"])

    def keys(self) -> list[str]:
        return sorted(k for k, spec in self._meta["columns"].items() if spec["count"] > 0)

    def key_counts(self) -> dict[str, int]:
        return {k: int(self._meta["columns"][k]["count"]) for k in self.keys()}

    def format_info(self) -> dict[str, Any]:
        return {k: self._meta[k] for k in ("format", "version", "generation") if k in self._meta}

    def schema(self) -> dict[str, ColumnInfo]:
        """Inherited; an object column is described by its first stored value (the key model of
        :mod:`._columns`, as every backend)."""
        n = len(self)

        def sampler(key: str) -> Callable[[], Any]:
            return lambda: first_value(lambda rows: self.read_column(key, rows), n)

        return {key: Column.of(self._meta["columns"][key]).info(key, sampler(key)) for key in self.keys()}

    def columns(self, index: int = 0) -> list[str]:
        return self._guarded(lambda: self._columns(index))

    def _columns(self, index: int) -> list[str]:
        n = self._meta["length"]
        return [
            k
            for k, spec in self._meta["columns"].items()
            if spec["count"] == n
            or (spec["count"] and bool(self._slab(spec["id"] + "/present", n, index, index + 1)[0]))
        ]

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return self._guarded(lambda: self._read_rows(indices, keys))

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        return self._guarded(lambda: self._read_column(key, indices))

    def read_column_array(self, key: str, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        return self._guarded(lambda: self._read_column_array(key, indices))


def _is_group_name(name: str) -> bool:
    try:
        check_group_name("", name)
    except InvalidDataError:
        return False
    return True
