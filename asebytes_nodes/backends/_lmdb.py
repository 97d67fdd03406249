"""LMDB backend: one file, one msgpack blob per row, atomic batch writes.

On-disk layout (version 3)
--------------------------
A single LMDB data file at the given path (``subdir=False``) plus LMDB's
``<path>-lock`` file beside it. LMDB's main (unnamed) database holds the dataset opened
without ``group=``; each group has a named database with the same keys (see
:mod:`._lmdb_groups`):

=====================  =====================================================
key                    value
=====================  =====================================================
``b"m:format"``        msgpack ``{"format": "asebytes_nodes.lmdb", "version": N}``
``b"m:length"``        number of rows, u64 big endian; version 2 adds the LMDB
                       transaction id of the last write (u64 big endian)
``b"m:keys"``          msgpack ``{key: number of rows carrying it}``
``b"m:scalars"``       msgpack ``{key: type code}`` of scalar columns kept in blocks
``b"c" + u16 BE len``  block ``b`` of a scalar column: 512 presence bytes (bool),
``+ key + u64 BE b``   then 512 values (rows ``512 b`` to ``512 b + 511``)
``b"r" + u64 BE i``    row ``i``, encoded by :mod:`asebytes_nodes.codec`
=====================  =====================================================

In version 3 every value but ``m:format`` ends with 4 bytes: the little-endian
CRC-32C of the value, computed starting from the CRC-32C of its key (see
:mod:`._lmdb_check`). A damaged row or block is refused with
:class:`~asebytes_nodes.errors.StoreCorruptedError` naming it; ``check()``
reports each. Every write rewrites ``m:length`` with its own transaction id, and a
reader refuses one older than the snapshot it reads: a damaged page pointer that leads to
a freed page holding an old copy of the record would otherwise show fewer rows. Before
mapping a file, its two LMDB meta pages are read and a file shorter than the pages they
claim is refused (LMDB would die with ``SIGBUS``), and a value is read only after its claimed
size is checked against the file (:mod:`._lmdb_bounds`).

Rows sort after all other keys, so appends use LMDB's append mode. A column
whose values all share one exact scalar type (Python ``float`` -> code ``f``,
``int`` in int64 range -> ``i``, ``bool`` -> ``b``, a numpy scalar -> ``n`` +
``dtype.str``) is also kept in blocks (:mod:`._lmdb_blocks`), so reading it
(``db["calc.energy"]``) costs one LMDB read per 512 rows instead of decoding
every row; a column that stops being one type loses its blocks and is read from
the rows. Rows stay the source of truth; blocks are written in the same
transaction. The length is committed in the same transaction as the rows, so a
reader never sees a half-written ``extend`` and a killed writer leaves the
earlier rows intact.

Reads of many rows (``read_rows``, ``read_batch``) fetch them in one bounded pass and verify
their checksums in another (:func:`._lmdb_batch.fetch_rows`); training batches are then
gathered with numpy from the joined rows, by byte templates of the row encoding
(:mod:`._lmdb_batch`), without decoding rows one by one.

Version history
---------------
1. First layout (asebytes-nodes 0.1): values without checksums.
2. A CRC-32 after every value but the format record, and the last write's transaction
   id in ``m:length`` (issue 12). Version 1 stores are read and written in their own
   layout (no checksums).
3. CRC-32C instead of zlib's CRC-32 (2-4x faster on rows of a few kB); named databases for
   groups. Versions 1 and 2 are read and written in their own layout; new stores (and
   every group) are version 3.

Process rules (py-lmdb): one environment per file per process, shared by
every handle on that path; an environment inherited through ``fork`` is
closed and reopened in the child; reads open no write transaction, so the
data file's bytes are unchanged by reading. A write that fails in LMDB (a full
disk) closes the environment, and every handle reopens it on its next use, so
an environment LMDB marked unusable after a failed commit is never used again.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from ..codec import decode_row, decode_value, encode_row, encode_value
from ..errors import (
    MissingExtraError,
    StoreCorruptedError,
)
from ..indexing import normalize_index
from ..registry import builtin
from ._base import (
    MISSING,
    WritableBackend,
    check_cache_bytes,
    check_format_record,
    check_group_name,
    stale_row_error,
)
from ._lmdb_batch import BatchReads, fetch_rows
from ._lmdb_blocks import (
    META_KEYS,
    META_SCALARS,
    Bookkeeping,
    describe_key,
    read_meta,
    read_scalar_column,
    scalar_array,
)
from ._lmdb_bounds import BoundedTxn, EmptyTxn
from ._lmdb_check import SEALS, Sealed, SealedC, Unsealed, free_bytes, lmdb_failure
from ._lmdb_env import EnvOptions, SharedEnv, acquire_env, discard_env, release_env
from ._lmdb_groups import GROUP_PREFIX, STAMP_PREFIX, GroupsMixin, local_path, only_groups, stamp_key
from ._lmdb_lock import WriterLock
from ._lmdb_rows import _META_LENGTH, _PAGE_OVERHEAD, _U64, RowEdits, _row_key, _size
from ._safety import DEFAULT_LOCK_TIMEOUT, disk_full, is_disk_full, require_space

try:
    import lmdb
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The LMDB backend needs the lmdb package. Run: pip install "asebytes-nodes[lmdb]"'
    ) from exc

__all__ = ["LMDBBackend"]

FORMAT_NAME = "asebytes_nodes.lmdb"
FORMAT_VERSION = 3
_META_FORMAT = b"m:format"
_STAMP = struct.Struct(">QQ")  # row count, transaction id of the last write (layout 2)


class LMDBBackend(GroupsMixin, RowEdits, BatchReads, WritableBackend):
    """Rows in a single-file LMDB database.

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("frames.lmdb")  # doctest: +SKIP

    Parameters
    ----------
    path
        The data file (created if missing unless ``readonly``).
    readonly
        Refuse every write. Reading never changes the data file.
    map_size
        Initial address space in bytes (default 1 GiB, or twice the file); it doubles on
        demand whenever a write finds it full.
    lock_timeout
        Seconds a write waits for another process's write to finish before raising
        :class:`~asebytes_nodes.errors.StoreLockedError` (see :mod:`._lmdb_lock`).
    max_readers, sync, readahead
        LMDB's environment options: concurrent read transactions (default 1024, raise it for
        more reader threads and processes; fixed by whoever creates the ``-lock`` file), fsync
        at every commit (``sync=False`` is faster and still safe against a killed process, not
        against power loss), OS read-ahead (``readahead=False`` helps random reads of stores
        larger than memory).
    lock
        ``False`` opens a read-only store without LMDB's lock file (read-only media, or a
        DVC-tracked store no process writes); default: the lock file where the folder is
        writable. Handles on one file in one process must agree on these four.
    cache_bytes
        Rows that ``to_batch`` has verified are kept, per store and process, up to this many
        bytes, so later epochs skip fetching and checking them (:mod:`._lmdb_batch_cache`;
        dropped at any commit). 0 keeps none.
    """

    name: ClassVar[str] = "lmdb"
    extensions: ClassVar[tuple[str, ...]] = builtin("lmdb").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("lmdb").schemes
    side_suffixes: ClassVar[tuple[str, ...]] = ("-lock",)  # the lock file beside the data file
    supports_insert: ClassVar[bool] = True
    supports_delete: ClassVar[bool] = True
    supports_drop_keys: ClassVar[bool] = True
    supports_groups: ClassVar[bool] = True
    checks_rows: ClassVar[bool] = True
    _seal: type[Unsealed] | type[Sealed]  # the checksum of this dataset's layout version

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        group: str | None = None,
        map_size: int = 0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        max_readers: int = 1024,
        sync: bool = True,
        readahead: bool = True,
        lock: bool | None = None,
        cache_bytes: int = 64 << 20,
    ) -> None:
        self._path = local_path(target)
        self._cache_bytes = check_cache_bytes(str(self._path), cache_bytes)
        self._group = None if group is None else check_group_name(str(self._path), group)
        self.readonly = readonly
        self._map_size = map_size
        self._lock_timeout = lock_timeout
        self._env_options = EnvOptions(max_readers=max_readers, sync=sync, readahead=readahead, lock=lock)
        self._writing: Any = None  # the write transaction in progress, if any
        self._shared: SharedEnv | None = None
        self._open()

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self, create: bool = False) -> None:
        """Open the file; a missing one is made by the first write (``create``), not here."""
        self._absent = not (create or self.readonly or self._path.exists())
        if self._absent:
            self._seal = SealedC  # a new file's
            return
        if create:
            self._path.parent.mkdir(parents=True, exist_ok=True)  # a new store's folders, as Zarr's
        self._shared = acquire_env(self._path, self.readonly, self._map_size, self._env_options)
        try:
            self._check_format()
        except BaseException:
            self.close()
            raise

    def _check_format(self) -> None:
        fmt = None
        if self._db(required=self.readonly) is not None or self._group is None:
            with self._txn() as txn:
                raw = txn.get(_META_FORMAT)
                if raw is not None:
                    fmt = decode_value(bytes(raw))
                elif not only_groups(txn.keys()):
                    raise StoreCorruptedError(
                        f"{self._path}: an LMDB file, but not an asebytes-nodes store (no format record)"
                    )
        if fmt is None:
            self._seal = SealedC
            if not self.readonly:

                def init(txn: Any) -> None:
                    if txn.get(_META_FORMAT) is not None:  # another handle made the file meanwhile
                        return
                    txn.put(_META_FORMAT, encode_value({"format": FORMAT_NAME, "version": FORMAT_VERSION}))
                    self._put(txn, _META_LENGTH, _U64.pack(0))
                    self._put(txn, META_KEYS, encode_value({}))
                    self._put(txn, META_SCALARS, encode_value({}))

                self._write(init, 0)
            return
        check_format_record(str(self._path), fmt, FORMAT_NAME, FORMAT_VERSION, "LMDB")
        version = fmt.get("version")
        if version not in SEALS:
            raise StoreCorruptedError(
                f"{self._path}: format record names layout version {version!r}; this package "
                f"reads versions 1 to {FORMAT_VERSION}: the record is damaged"
            )
        self._seal = SEALS[version]

    @property
    def _env(self) -> Any:
        """The environment; reopened after a fork or a replaced file, made by the first write."""
        shared = self._shared
        if shared is None and not self._absent:
            raise ValueError(f"{self._path}: the store is closed")
        if shared is None or shared.pid != os.getpid() or shared.stale:
            self._shared = None
            self._open(create=True)
            shared = self._shared
            assert shared is not None
        return shared.env

    def close(self) -> None:
        self._absent = False
        if self._shared is not None:
            shared, self._shared = self._shared, None
            release_env(shared)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": str(self._path),
            "readonly": self.readonly,
            "map_size": self._map_size,
            "group": self._group,
            "lock_timeout": self._lock_timeout,
            "env": self._env_options,
            "cache_bytes": self._cache_bytes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"],
            readonly=state["readonly"],
            map_size=state["map_size"],
            group=state.get("group"),
            lock_timeout=state.get("lock_timeout", DEFAULT_LOCK_TIMEOUT),
            cache_bytes=state.get("cache_bytes", 64 << 20),
            **dataclasses.asdict(state.get("env", EnvOptions())),
        )

    @property
    def location(self) -> str:
        return str(self._path)

    # -- transactions ------------------------------------------------------------------------
    def _txn(self) -> BoundedTxn | EmptyTxn:
        """A read transaction: ``with self._txn() as txn``; it ends (and LMDB's errors become
        :class:`StoreCorruptedError` naming the store) when the block does."""
        if self._absent and self._shared is None and not self._path.exists():
            return EmptyTxn()  # reading makes no file
        env = self._env
        shared = self._shared
        assert shared is not None
        db = None if self._group is None else self._db()
        while True:
            try:
                txn = env.begin(buffers=True)
            except lmdb.MapResizedError:  # another process grew the map
                env.set_mapsize(0)
                continue
            return BoundedTxn(txn, self._path, shared.psize, shared.size, db)

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """This process's threads, then every process, one writer at a time."""
        shared = self._shared
        assert shared is not None
        with shared.lock:
            if shared.writer is None:
                shared.writer = WriterLock(self._path, store=str(self._path), timeout=self._lock_timeout)
            shared.writer.timeout = self._lock_timeout
            with shared.writer.exclusive():
                yield

    def _write(self, work: Any, nbytes: int) -> None:
        """Run ``work(txn)`` in one write transaction, growing the map and retrying when full.

        ``nbytes`` (about what the write stores) is checked against the free disk space
        first; a write LMDB fails on a full disk raises :class:`DiskFullError`, and the
        environment is reopened, since LMDB may have marked it unusable.
        """
        require_space(self._path, nbytes + _PAGE_OVERHEAD * 64, store=str(self._path))
        while True:
            env = self._env
            try:
                with self._writer_lock(), env.begin(write=True, buffers=True) as raw:
                    shared = self._shared
                    assert shared is not None
                    db = self._db(create_in=raw)
                    self._writing = txn = BoundedTxn(raw, self._path, shared.psize, shared.size, db)
                    try:
                        work(txn)
                        if self._seal is not Unsealed:
                            self._put(txn, _META_LENGTH, _STAMP.pack(self._length(txn), txn.id()))
                        if self._group is not None:
                            self._stamp_group(txn)
                    finally:
                        self._writing = None
                if self._group is not None:
                    shared.dbs[self._group] = db
                return
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                env.set_mapsize(0)
            except lmdb.Error as exc:
                assert self._shared is not None
                discard_env(self._shared)
                if is_disk_full(exc) or free_bytes(self._path) < nbytes + (1 << 20):
                    raise disk_full(exc, str(self._path)) from exc
                raise lmdb_failure(self._path, exc) from exc
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full(exc, str(self._path)) from exc
                raise

    def _stamp_group(self, txn: BoundedTxn) -> None:
        """Record this write's transaction id for the group, and as the main dataset's stamp."""
        assert self._group is not None
        main = txn.main()
        key = stamp_key(self._group)
        main.put(key, SealedC.wrap(key, _U64.pack(txn.id())))
        fmt = main.get(_META_FORMAT)
        seal = SEALS.get(decode_value(bytes(fmt)).get("version"), Unsealed) if fmt is not None else Unsealed
        if seal is not Unsealed:
            raw = main.get(_META_LENGTH)
            body = None if raw is None else seal.unwrap(_META_LENGTH, raw)
            if body is not None and len(body) == _STAMP.size:
                n = _STAMP.unpack(body)[0]
                main.put(_META_LENGTH, seal.wrap(_META_LENGTH, _STAMP.pack(n, txn.id())))

    def _put(self, txn: Any, key: bytes, value: bytes) -> None:
        txn.put(key, self._seal.wrap(key, value))

    def _record(self, txn: Any, key: bytes, small: bool = False, seal: Any = None) -> Any:
        """The stored value of ``key`` without its checksum (None if absent); refuses damage.
        ``small``: a record the layout keeps small (see :meth:`BoundedTxn.small`); ``seal``:
        the checksum, if not this dataset's (group stamps in the main database: CRC-32C)."""
        raw = txn.small(key) if small else txn.get(key)
        if raw is None:
            return None
        body = (seal or self._seal).unwrap(key, raw)
        if body is None:
            raise self._damaged(key)
        return body

    def _damaged(self, key: bytes) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"{self._path}: {describe_key(key)} fails its checksum: the file is damaged; restore "
            "it from a copy, or run `asebytes-nodes validate` to list every damaged row"
        )

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._txn() as txn:
            return self._length(txn)

    def _length(self, txn: Any) -> int:
        raw = self._record(txn, _META_LENGTH, small=True)
        if raw is None:
            if txn.get(_META_FORMAT) is None:  # a new file, before its format record
                return 0
            raise StoreCorruptedError(f"{self._path}: the row count record is missing: the file is damaged")
        if self._seal is Unsealed or len(raw) == _U64.size:  # layout 1, or written in this transaction
            if len(raw) != _U64.size:
                raise self._damaged(_META_LENGTH)
            return int(_U64.unpack(raw)[0])
        if len(raw) != _STAMP.size:
            raise self._damaged(_META_LENGTH)
        n, written = _STAMP.unpack(raw)
        if self._group is None:
            last = txn.id() - 1 if txn is self._writing else txn.id()  # a write's id is the next one
        else:
            stamp = self._record(txn.main(), stamp_key(self._group), small=True, seal=SealedC)
            if stamp is None or len(stamp) != _U64.size:
                raise self._damaged(stamp_key(self._group))
            last = _U64.unpack(stamp)[0]
        if written < last:  # (a compacting copy restarts ids: newer ones pass)
            raise StoreCorruptedError(
                f"{self._path}: the row count record was written by transaction {written}, but the "
                f"file's last commit is transaction {last}: a damaged page leads to an old copy "
                "of it; restore the file from a copy"
            )
        return int(n)

    def _get(self, txn: Any, i: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        key = _row_key(i)
        raw = txn.get(key)
        if raw is None:
            self._within(txn, [i])
            raise StoreCorruptedError(f"{self._path}: row {i} is missing from the file")
        body = self._seal.unwrap(key, raw)
        if body is None:
            raise self._damaged(key)
        return self._decode(i, body, keys)

    def _decode(self, i: int, body: Any, keys: Sequence[str] | None = None) -> dict[str, Any]:
        try:
            return decode_row(body, keys)
        except StoreCorruptedError as exc:
            raise type(exc)(f"{self._path}: row {i}: {exc}") from exc

    def columns(self, index: int = 0) -> list[str]:
        with self._txn() as txn:
            return list(self._get(txn, index))

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        with self._txn() as txn:
            return self._get(txn, index, keys)

    def read_row_at(self, index: int) -> tuple[int, dict[str, Any]]:
        """The length checked and the row read in one transaction (one snapshot)."""
        with self._txn() as txn:
            row = normalize_index(index, self._length(txn))
            return row, self._get(txn, row)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        rows, decode, trailer = np.asarray(indices).tolist(), self._decode, self._seal.trailer
        with self._txn() as txn:
            try:
                values = fetch_rows(txn, self._seal, rows, self._damaged)
            except StoreCorruptedError:
                self._within(txn, rows)
                raise
            if trailer:
                values = [value[: len(value) - trailer] for value in values]
            return [decode(i, value, keys) for i, value in zip(rows, values, strict=True)]

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any]:
        with self._txn() as txn:
            get = self._getter(txn)
            code = read_meta(get, META_SCALARS, self._seal is not Unsealed).get(key)
            keys = (key,)

            def from_rows(rows: Any) -> list[Any]:
                return [self._get(txn, i, keys).get(key, MISSING) for i in rows]

            if code is not None:
                rows = np.asarray(indices, dtype=np.int64)
                return read_scalar_column(get, key, code, rows, from_rows, lambda r: self._within(txn, r))
            return from_rows(np.asarray(indices).tolist())

    def _within(self, txn: Any, rows: Sequence[int] | np.ndarray) -> None:
        """Refuse rows past the end of the store (a view made before rows were deleted) with a
        :class:`RowIndexError`, rather than reading them as missing values or damage."""
        n, last = self._length(txn), int(np.max(rows, initial=-1))
        if last >= n:
            raise stale_row_error(last, n, str(self._path))

    def read_column_array(self, key: str, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """``np.asarray(read_column(key, indices))`` straight from a scalar column's blocks (no
        Python value per row), or None when the column has no blocks or lacks some rows."""
        rows = np.asarray(indices, dtype=np.int64)
        with self._txn() as txn:
            get = self._getter(txn)
            code = read_meta(get, META_SCALARS, self._seal is not Unsealed).get(key)
            return None if code is None or not len(rows) else scalar_array(get, key, code, rows)

    def keys(self) -> list[str]:
        with self._txn() as txn:
            return sorted(self._key_counts(txn))

    def key_counts(self) -> dict[str, int]:
        with self._txn() as txn:
            return dict(sorted(self._key_counts(txn).items()))

    def format_info(self) -> dict[str, Any]:
        with self._txn() as txn:
            raw = txn.get(_META_FORMAT)
            if raw is None:  # a store not written yet: the layout its first write makes
                return {"format": FORMAT_NAME, "version": FORMAT_VERSION}
            return dict(decode_value(bytes(raw)))

    def _key_counts(self, txn: Any) -> dict[str, int]:
        # without a format record the store is new (EmptyTxn): no keys, not a damaged record
        return read_meta(self._getter(txn), META_KEYS, txn.get(_META_FORMAT) is not None)

    def _getter(self, txn: Any) -> Any:
        return lambda key: self._record(txn, key)

    def _book(self, txn: Any) -> Bookkeeping:
        put = self._put
        strict = self._seal is not Unsealed  # versions 2 and 3 write every meta record at creation
        return Bookkeeping(txn, self._getter(txn), lambda key, value: put(txn, key, value), strict)

    def check(self) -> list[str]:
        """Inherited row checks, after verifying the checksum of every other record."""
        problems: list[str] = []
        try:
            with self._txn() as txn:
                for key in txn.keys():
                    if key[:1] == b"r":  # rows sort last; the inherited check reads them
                        break
                    if key[:2] == GROUP_PREFIX:  # LMDB's record of a group's database
                        continue
                    seal = SealedC if key[:2] == STAMP_PREFIX else None
                    try:
                        if key != _META_FORMAT and self._record(txn, key, seal=seal) is None:
                            raise self._damaged(key)
                    except StoreCorruptedError as exc:
                        problems.append(str(exc))
        except StoreCorruptedError as exc:
            problems.append(str(exc))
        try:
            return problems + super().check()
        except StoreCorruptedError as exc:  # no row count: the rows cannot be enumerated
            return [*problems, str(exc)]

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        blobs = [encode_row(r) for r in rows]  # every row encodes before the transaction starts
        sealed_for: list[int] = []  # the first row number the blobs are sealed for (in place)

        def work(txn: Any) -> None:
            n = self._length(txn)
            book = self._book(txn)
            book.appended(n, rows)
            keys = list(map(_row_key, range(n, n + len(blobs))))
            if sealed_for != [n]:  # the first try, or a retry after another writer appended
                if sealed_for:
                    blobs[:] = [blob[: len(blob) - self._seal.trailer] for blob in blobs]
                self._seal.wrap_many(keys, blobs)
                sealed_for[:] = [n]
            added = txn.cursor().putmulti(zip(keys, blobs, strict=True), append=True)[1]
            if added != len(blobs):  # append mode adds nothing after a key sorting past the rows
                raise StoreCorruptedError(f"{self._path}: a key sorts after the rows: the file is damaged")
            self._put(txn, _META_LENGTH, _U64.pack(n + len(blobs)))
            book.commit()

        if blobs:
            self._write(work, _size(blobs))
        elif self._absent and self._shared is None:
            self._open(create=True)  # an empty write still makes the store
