"""The write path of :class:`~._zarr.ZarrBackend`: ``extend``, the commit, and the entry
points of replacements (``set_rows``, ``update_rows``, ``drop_keys``; the copy-on-write
itself is :mod:`._zarr_rewrite`).

Every write runs in :meth:`Writes._writing`: the writers' lock (local stores), the current
record, earlier writes' garbage removed; on failure what the write made is removed. Every
value is checked and encoded before the first byte is written, and :meth:`Writes._commit`
publishes the new record last (see the module docstring of :mod:`._zarr`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync as zarr_sync

from ..errors import ColumnTypeError, ConcurrentCommitError, DiskFullError
from ..indexing import distinct
from ._keys import MISSING, atom_counts
from ._safety import disk_full, is_disk_full
from ._zarr_arrays import gather
from ._zarr_chunks import LazyGroup
from ._zarr_columns import encode_batch, infer_spec, object_spec
from ._zarr_remote import conditional, publish, record_version
from ._zarr_shards import replace_file
from ._zarr_txn import (
    FORMAT_VERSION,
    RECORD_ATTR,
    array_names,
    collect_garbage,
    group_document,
    new_name,
    parse_record,
    seal,
)

__all__ = ["Writes"]


class Writes:
    """Mixin of :class:`~._zarr.ZarrBackend`: every write and its commit."""

    # provided by ZarrBackend
    readonly: bool
    _meta: dict[str, Any]
    _root: str
    _target: str
    _remote: bool
    _storage_options: dict[str, Any] | None
    _lock: Any
    _group: Any
    _began: int
    _next_id: int
    _created: list[str]
    _forks: dict[str, str]
    _etag: str | None
    _document: dict[str, Any]
    _record_bytes: bytes | None
    _deferred: list[Any] | None
    _offsets: np.ndarray | None
    _cache: Any
    _check_writable: Callable[[], None]
    _check: Callable[[Any], None]
    _record_document: Callable[[], bytes | None]
    _open_group: Callable[[], Any]
    _refresh: Callable[[], None]
    _open: Callable[..., None]
    _forget: Callable[[], None]
    _counts_name: Callable[[], str]
    _committed_arrays: Callable[[], set[str]]
    _write_range: Callable[..., None]
    _read_values: Callable[..., tuple[Any, np.ndarray]]
    _rewrite: Callable[..., None]

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write: the writers' lock (local stores), the current record, earlier writes'
        garbage removed. On failure, what the write made is removed and a full disk becomes
        a :class:`DiskFullError`; the store stays at its last commit."""
        self._check_writable()
        if self._group is None:  # the first write makes the store (see ZarrBackend._open)
            try:
                self._open(create=True)
            except OSError as exc:
                if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                    raise disk_full(exc, self._target) from exc
                raise
        with self._lock.exclusive() if self._lock is not None else nullcontext():
            if self._remote:  # the version our commit will be conditional on, read before the record
                self._etag, self._document = record_version(self._group.store)
            self._refresh()
            self._began = int(self._meta.get("generation", 0))
            self._next_id = max(int(self._meta.get("next_id", 0)), _first_free(self._meta))
            self._created, self._forks = [], {}
            try:
                self._collect(self._meta.get("retired", []))
                yield
            except BaseException as exc:
                self._deferred = None
                self._forget()
                with suppress(Exception):  # best effort: the next writer collects what is left
                    self._collect(self._created)
                if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                    raise disk_full(exc, self._target) from exc
                if self._remote and isinstance(exc, Exception) and not isinstance(exc, ConcurrentCommitError):
                    if self._overtaken():  # arrays we read may have been collected after a commit
                        raise self._conflict() from exc
                raise
            finally:
                self._forks = {}

    def _create_local(self, fresh: dict[str, Any]) -> bool:
        """Make a new local store: its group document holding the record ``fresh``, written
        under the lock as zarr writes it (zarr's group open and attribute write cost a few ms).
        False, having written nothing, when the folder holds anything else: zarr opens that."""
        folder = Path(self._target)
        Path(self._root).mkdir(parents=True, exist_ok=True)  # where the lock file lives
        with self._lock.exclusive():
            raw = self._record_document()
            if raw is None:
                if folder.is_dir() and any(e.name != self._lock.path.name for e in os.scandir(folder)):
                    return False
                folder.mkdir(exist_ok=True)
                raw = group_document(fresh)
                replace_file(folder / "zarr.json", raw)
            found = parse_record(raw)
            if found is None:
                return False
            self._check(found)  # another writer made it meanwhile
        self._group, self._meta, self._record_bytes = LazyGroup(self._open_group), found, raw
        return True

    def _collect(self, names: Sequence[str]) -> None:
        """Remove arrays no record uses: ``names`` (retired or made by a failed write); in a
        local store (whose lock we hold) also every other unused array and temporary file."""
        if not self._remote:
            collect_garbage(Path(self._target), self._meta, everything=True)
            return
        for name in names:
            if name not in array_names(self._meta):
                zarr_sync(self._group.store.delete_dir(name))

    def _new_id(self, prefix: str) -> str:
        """A name no array of this store has had: ``c<k>`` for columns, ``n<k>`` for atom counts."""
        name = new_name(prefix, self._next_id, self._remote)
        self._next_id += 1
        self._created.append(name)
        return name

    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        if not rows:
            if self._group is None:  # an empty write still makes the store
                self._open(create=True)
            return
        with self._writing():
            self._extend(rows)

    def _extend(self, rows: Sequence[dict[str, Any]]) -> None:
        meta = self._meta
        n0, atoms0 = meta["length"], meta["atoms"]
        carried = Counter(chain.from_iterable(rows))  # key -> rows carrying it, in C
        if carried.get("arrays.numbers") == len(rows):
            counts = np.fromiter(map(len, map(itemgetter("arrays.numbers"), rows)), np.int64, len(rows))
        else:
            counts = atom_counts(rows)
        columns = {k: dict(v) for k, v in meta["columns"].items()}
        batches: dict[str, tuple[np.ndarray, Any]] = {}
        widened: dict[str, tuple[np.ndarray, Any]] = {}  # columns rewritten whole as object columns
        retired: list[str] = []
        for key, count in carried.items():  # plan and check every column before anything is written
            everywhere = count == len(rows)
            values = list(map(itemgetter(key), rows)) if everywhere else [r.get(key, MISSING) for r in rows]
            present = np.ones(len(rows), bool) if everywhere else None
            spec = columns.get(key)
            if spec is None:  # a new column: guess from its first value, check all; mixed? look at all
                first = next(j for j, v in enumerate(values) if v is not MISSING)
                cid = self._new_id("c")
                spec = infer_spec(key, values[first : first + 1], counts[first : first + 1], cid)
                try:
                    batches[key] = encode_batch(key, spec, values, counts, present)
                except ColumnTypeError:
                    spec = infer_spec(key, values, counts, cid)
                    batches[key] = encode_batch(key, spec, values, counts, present)
            else:
                try:
                    batches[key] = encode_batch(key, spec, values, counts, present)
                except ColumnTypeError:  # a value of another type: the column holds several types from now on
                    spec = object_spec(self._new_id("c"))
                    retired.append(columns[key]["id"])
                    stored = self._stored_values(columns[key])
                    widened[key] = encode_batch(key, spec, stored + values, counts)
            columns[key] = spec
        n1, atoms1 = n0 + len(rows), atoms0 + int(counts.sum())
        counts_name = self._counts_name()
        if self._remote:  # no lock: never write into an array a committed record names
            counts_name, moved = self._relocate(columns, widened)
            retired += moved
        self._deferred = []  # every array is created or grown, then written, in one concurrent batch
        try:
            self._write_range(counts_name, n0, n1, counts, (), np.int64)
            for key, spec in columns.items():
                if key in widened:
                    present, data = widened[key]
                    self._append_column(spec, present, data, counts, 0, n1, 0, atoms1)
                elif key not in meta["columns"] and n0:  # new: written from row 0, every chunk there
                    present, data = batches[key]
                    self._append_column(spec, present, data, counts, n0, n1, atoms0, atoms1, lead=True)
                else:
                    present, data = batches.get(key, (np.zeros(len(rows), bool), None))
                    self._append_column(spec, present, data, counts, n0, n1, atoms0, atoms1)
                spec["count"] += int(present.sum())
            if self._deferred:
                zarr_sync(gather(self._deferred))
        finally:
            self._deferred = None
        self._commit(retired=retired, n_atoms=counts_name, length=n1, atoms=atoms1, columns=columns)

    def _relocate(
        self, columns: dict[str, dict[str, Any]], widened: Collection[str]
    ) -> tuple[str, list[str]]:
        """Object stores: new names for the atom-count array and every committed column an
        ``extend`` writes (``columns`` is changed), each array forked from the committed one
        (see :mod:`._zarr_remote`). Returns the atom-count array's name and the names retired."""
        committed, retired = self._committed_arrays(), []
        counts = self._new_id("n")
        if self._counts_name() in committed:
            self._forks[counts] = self._counts_name()
            retired.append(self._counts_name())
        for key, spec in columns.items():
            old = self._meta["columns"].get(key)
            if old is None or key in widened:
                continue
            spec["id"] = self._new_id("c")
            retired.append(old["id"])
            for leaf in ("/values", "/sizes", "/present"):
                if old["id"] + leaf in committed:
                    self._forks[spec["id"] + leaf] = old["id"] + leaf
        return counts, retired

    def _append_column(
        self,
        spec: dict[str, Any],
        present: np.ndarray,
        data: Any,
        counts: np.ndarray,
        n0: int,
        n1: int,
        atoms0: int,
        atoms1: int,
        lead: bool = False,
    ) -> None:
        """Write rows ``n0:n1`` (atoms ``atoms0:atoms1``) of a column; ``lead``: a column new
        to a store of ``n0`` frames, written from row 0 (a reader takes a missing chunk for
        damage), its earlier rows as the fill value a shard at a time, never built whole."""
        base, kind = spec["id"], spec["kind"]
        fill, atom_fill = (n0, atoms0) if lead else (0, 0)
        if spec.get("present", True):
            self._write_range(base + "/present", n0, n1, present, (), bool)
        elif spec["count"] != n0 or not present.all():  # the first frame without it: flag them all
            if spec["count"] == n0:  # every frame before has it (else none: a new column)
                present = np.concatenate([np.ones(n0, bool), present])
            self._write_range(base + "/present", 0, n1, present, (), bool, fill=n1 - len(present))
            spec["present"] = True
        tail, dtype = tuple(spec.get("shape", ())), spec.get("dtype", "uint8")
        if kind == "atom":
            mean = atoms1 / max(n1, 1)
            if data is None:
                data = np.zeros((atoms1 - atoms0, *tail), dtype)
            self._write_range(
                base + "/values", atoms0 - atom_fill, atoms1, data, tail, dtype, mean, atom_fill
            )
        elif kind == "object":
            blob, sizes = data if data is not None else (b"", np.zeros(n1 - n0, np.int64))
            start = spec["nbytes"]
            self._write_range(base + "/sizes", n0 - fill, n1, sizes, (), np.int64, fill=fill)
            self._write_range(
                base + "/values", start, start + len(blob), np.frombuffer(blob, np.uint8), (), np.uint8, 256
            )
            spec["nbytes"] = start + len(blob)
        else:
            if data is None:
                data = np.zeros((n1 - n0, *tail), dtype)
            self._write_range(base + "/values", n0 - fill, n1, data, tail, dtype, fill=fill)

    def _commit(self, retired: Sequence[str] = (), **changes: Any) -> None:
        """Publish the new record: the one write that makes a write visible. ``retired``:
        arrays it stops using (the next writer deletes them). On an object store the record is
        replaced only if no other writer committed since this write began."""
        if self._remote and not conditional(self._group.store) and self._remote_generation() != self._began:
            raise self._conflict()
        meta = {
            **self._meta,
            "n_atoms": self._counts_name(),
            **changes,
            "version": FORMAT_VERSION,
            "generation": self._began + 1,
            "next_id": self._next_id,
            "retired": sorted(set(retired)),
        }
        meta = seal(meta)
        current = None if self._remote else self._record_document()
        if parse_record(current) is not None:  # ours, local: replaced atomically, as zarr does
            raw = group_document(meta, current)
            replace_file(Path(self._target) / "zarr.json", raw)
            self._record_bytes = raw
        elif not self._remote:
            self._group.attrs[RECORD_ATTR] = meta
        else:
            attributes = {**self._document.get("attributes", {}), RECORD_ATTR: meta}
            document = {**self._document, "attributes": attributes}
            if not publish(self._group.store, document, self._etag):
                raise self._conflict()
        self._meta = meta
        self._created = []
        self._offsets = None
        self._cache.clear()

    def _overtaken(self) -> bool:
        """Has another writer committed since this write began (False if that cannot be read)?"""
        try:
            return self._remote_generation() != self._began
        except Exception:  # noqa: BLE001 - the write's own error is the one to report then
            return False

    def _conflict(self) -> ConcurrentCommitError:
        now = self._remote_generation()
        seen = f"generation {self._began} became {now}" if now != self._began else "its record changed"
        return ConcurrentCommitError(
            f"{self._target}: another writer committed to this store while this write ran "
            f"({seen}); this write was not "
            "committed. Object stores have no lock: run one writer at a time, then repeat the write"
        )

    def _remote_generation(self) -> int:
        """The generation of the record as the object store holds it now."""
        group = zarr.open_group(self._target, mode="r", storage_options=self._storage_options)
        record: Any = group.attrs.asdict().get(RECORD_ATTR, {})
        return int(record.get("generation", 0))

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        latest = {int(i): row for i, row in zip(np.asarray(indices).tolist(), rows, strict=True)}
        order = sorted(latest)  # a repeated row: the last value wins, as in a list
        rows = [latest[i] for i in order]
        with self._writing():
            known = self._meta["columns"]
            removed = [{k for k in known if k not in row} for row in rows]
            counts = atom_counts(rows)
            self._rewrite(np.array(order, np.int64), rows, removed, counts)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        merged: dict[int, dict[str, Any]] = {}
        for i, update in zip(np.asarray(indices).tolist(), updates, strict=True):
            merged.setdefault(int(i), {}).update(update)
        order = sorted(merged)
        with self._writing():
            self._rewrite(np.array(order, np.int64), [merged[i] for i in order], [()] * len(order))

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        order = distinct(np.asarray(indices, np.int64))
        with self._writing():
            gone = {k for k in keys if k in self._meta["columns"]}
            if gone and len(order):
                self._rewrite(order, [{}] * len(order), [gone] * len(order))

    def _encode_rows(
        self,
        key: str,
        spec: dict[str, Any] | None,
        values: list[Any],
        counts: np.ndarray,
        indices: np.ndarray,
        dropping: np.ndarray,
        label: Callable[[int], str],
    ) -> tuple[dict[str, Any], Any, np.ndarray | None]:
        """How the replaced rows ``indices`` store ``values`` of ``key`` (MISSING: not set):
        ``(spec, data, None)``, or for a column widened to an object column
        ``(spec, data of every frame, present flags of every frame)``."""
        if spec is None:  # a new column: guess from its first value, check all; mixed? look at all
            first = next(j for j, v in enumerate(values) if v is not MISSING)
            cid = self._new_id("c")
            spec = infer_spec(key, values[first : first + 1], counts[first : first + 1], cid)
            try:
                return spec, encode_batch(key, spec, values, counts, label=label)[1], None
            except ColumnTypeError:
                spec = infer_spec(key, values, counts, cid)
                return spec, encode_batch(key, spec, values, counts, label=label)[1], None
        if all(v is MISSING for v in values):  # only removals: nothing to encode
            if spec["kind"] == "object":
                return spec, (b"", np.zeros(len(values), np.int64)), None
            rows = int(counts.sum()) if spec["kind"] == "atom" else len(values)
            return spec, np.zeros((rows, *spec["shape"]), spec["dtype"]), None
        try:
            return spec, encode_batch(key, spec, values, counts, label=label)[1], None
        except ColumnTypeError:  # a value of another type: the column holds several types from now on
            stored = self._stored_values(spec)
            for i, value, gone in zip(indices.tolist(), values, dropping.tolist(), strict=True):
                if value is not MISSING or gone:
                    stored[i] = value
            wide = object_spec(self._new_id("c"))
            present, data = encode_batch(key, wide, stored, np.zeros(len(stored), np.int64))
            return wide, data, present

    def _stored_values(self, spec: dict[str, Any]) -> list[Any]:
        """Every committed frame's value of a column, MISSING where a frame lacks it."""
        n = self._meta["length"]
        if not n or not spec["count"]:
            return [MISSING] * n
        values, present = self._read_values(spec, np.arange(n))
        return [v if p else MISSING for v, p in zip(values, present.tolist(), strict=True)]


def _first_free(meta: dict[str, Any]) -> int:
    """One past the largest array number a record uses (version-1 records keep no counter)."""
    numbers = [int(name[1:].partition("x")[0]) for name in array_names(meta) if name[1:2].isdigit()]
    return max(numbers, default=-1) + 1
