"""Rows a batch read has verified, kept for later batches of the same snapshot (issue 15).

A training epoch reads every row once in shuffled batches, and the next epoch reads them all
again. :func:`._lmdb_batch.read_batch` verifies each row (checksum, template) before using it;
the rows it verified are copied here, with their templates, up to a budget per store and
process (the ``cache_bytes`` of the LMDB handle that makes the copy: 64 MiB by default), so
that a later batch of rows all held here is gathered from this copy without LMDB, checksums
or template checks (as Zarr keeps decoded chunks, :mod:`._zarr_chunks`).

A copy serves only the snapshot it was verified in: the same environment (its size record,
one per :class:`._lmdb_env.SharedEnv`), the same database and the same LMDB transaction id
(a commit, here or in another process, makes a new id and the copy is dropped). Template ids
are those of the tables the rows were identified with; rows identified with tables of another
lineage (the tables were reset, or two threads learnt different templates) start a new copy.
Rows beyond the budget are not kept (their batches read the store as before). All copies
together hold at most ``_STORES`` budgets: a new copy drops those read longest ago until it has
room for its own, and a copy stops growing when the total would pass that; so the shards of
a sharded dataset (many small stores, each with its own copy) are all kept when their rows
fit, where keeping the four stores read last made every later epoch over eight shards read
LMDB again (4.8k against 43.9k frames/s over four).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["RowCache", "cache_of", "drop_copies", "extends"]

_STORES = 4  # full budgets all copies hold together
_COPIES = 4096  # copies kept at most (a shard each: a sharded dataset's shards all keep theirs)
_INDEXED_ROWS = 1 << 22  # row numbers a copy can hold (its slot array: 16 MiB at most)


class RowCache:
    """Verified rows of one snapshot: their bytes one after the other in ``buffer``, and per
    row number where its bytes start and its template id in ``tables``."""

    def __init__(self, size: list[int], db: Any, txn_id: int, budget: int) -> None:
        self.size, self.db, self.txn_id = size, db, txn_id  # what identifies the snapshot
        self.budget = budget  # bytes of rows kept at most
        self.tables: Any = None
        self.slot_of = np.zeros(0, np.int32)  # per row number: its slot, -1 if not held
        self.starts = np.zeros(0, np.int64)  # per slot: where the row starts in buffer
        self.ids = np.zeros(0, np.int64)  # per slot: the row's template
        self.count = 0  # slots in use (the arrays grow by doubling)
        self.buffer = np.zeros(0, np.uint8)  # grown by doubling as rows come, up to the budget
        self.used = 0  # bytes of buffer in use (changed under _LOCK: see _reserve)
        self.dropped = False  # no longer among _CACHES: it takes no more rows
        self.lock = threading.Lock()

    def get(self, rows: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray] | None:
        """``(tables, starts, ids)`` of ``rows`` (a non-empty array of row numbers) if all are
        held, else None."""
        try:
            at = self.slot_of[rows]
        except IndexError:  # a row number past every row held
            return None
        if at.min() < 0:
            return None
        return self.tables, self.starts[at], self.ids[at]

    def keep(
        self, tables: Any, joined: bytes, size: int, starts: np.ndarray, ids: np.ndarray, rows: list[int]
    ) -> bool:
        """Hold the first ``size`` bytes of ``joined`` (rows at ``starts`` of templates ``ids``
        in ``tables``); False if ``tables`` is of another lineage than the rows held."""
        if self.used + size > self.budget:
            return True
        with self.lock:
            held = self.tables
            if held is not None and not extends(tables, held):
                return False
            slot_of = self.slot_of
            # rows past _INDEXED_ROWS are not kept: the slot array stays small (a 64 MiB copy holds
            # far fewer rows, and an epoch re-read pays off only where the copy holds the store)
            new = [
                j
                for j, row in enumerate(rows)
                if row < _INDEXED_ROWS and (row >= len(slot_of) or slot_of[row] < 0)
            ]
            at = self.used
            if not new or at + size > self.budget or not _reserve(self, size):
                return True
            if at + size > len(self.buffer):  # grown by doubling: readers keep the buffer they hold
                room = min(self.budget, max(2 * len(self.buffer), at + size, 1 << 20))
                grown_buffer = np.empty(room, np.uint8)
                grown_buffer[:at] = self.buffer[:at]
                self.buffer = grown_buffer
            self.buffer[at : at + size] = np.frombuffer(joined, np.uint8, size)
            first = self.count
            self.count += len(new)
            if self.count > len(self.starts):  # readers keep the arrays they hold: grow into copies
                grown = np.zeros((2, max(2 * self.count, 1024)), np.int64)
                grown[0, :first], grown[1, :first] = self.starts[:first], self.ids[:first]
                self.starts, self.ids = grown
            self.starts[first : self.count] = at + starts[new]
            self.ids[first : self.count] = ids[new]
            if held is None or len(tables.templates) > len(held.templates):
                self.tables = tables
            top = max(rows[j] for j in new)
            if top >= len(slot_of):  # grown into a copy, as above
                grown_of = np.full(min(max(top + 1, 2 * len(slot_of), 1024), _INDEXED_ROWS), -1, np.int32)
                grown_of[: len(slot_of)] = slot_of
                slot_of = grown_of
            slot_of[[rows[j] for j in new]] = np.arange(first, self.count)  # visible to readers only now
            self.slot_of = slot_of
            return True


def extends(tables: Any, held: Any) -> bool:
    """Do ``tables`` hold every template of ``held`` under the same id (one lineage)?"""
    n = len(held.templates)
    return len(tables.templates) >= n and tables.templates[n - 1] is held.templates[n - 1]


_CACHES: list[RowCache] = []  # most recently used last
_INDEX: dict[tuple[int, int], RowCache] = {}  # the copies of _CACHES by their store (ids of size and db)
_LOCK = threading.Lock()
_HELD = [0]  # bytes all copies in _CACHES use


def _reserve(cache: RowCache, size: int) -> bool:
    """Count ``size`` more bytes in ``cache`` if all copies then hold at most ``_STORES`` of its
    budgets (and it is still kept)."""
    with _LOCK:
        if cache.dropped or _HELD[0] + size > _STORES * cache.budget:
            return False
        cache.used += size
        _HELD[0] += size
        return True


def _drop(j: int) -> None:
    """Forget copy ``j`` (under _LOCK)."""
    cache = _CACHES.pop(j)
    cache.dropped = True
    _HELD[0] -= cache.used
    _INDEX.pop((id(cache.size), id(cache.db)), None)


def drop_copies(size: list[int]) -> None:
    """Forget the copies of an environment being closed (its size record ``size``): a store
    reopened is another environment, so they would never serve again (a sharded dataset that
    reopens shards past ``max_open`` kept every closed shard's copy: 480 shards, 198 -> 480 MB)."""
    with _LOCK:
        for j in reversed([j for j, cache in enumerate(_CACHES) if cache.size is size]):
            _drop(j)


def cache_of(size: list[int], db: Any, txn_id: int, budget: int, fresh: bool = False) -> RowCache:
    """The row copy of a snapshot (a new one of ``budget`` bytes if there is none or ``fresh``:
    the held one is of another lineage)."""
    with _LOCK:
        held = _INDEX.get((id(size), id(db)))
        if held is not None:  # a copy holds size and db: their ids name no other while it lives
            j = _CACHES.index(held)
            if held.txn_id == txn_id and not fresh:
                if j < len(_CACHES) - 1:
                    _CACHES.append(_CACHES.pop(j))
                return held
            _drop(j)
        while _CACHES and (len(_CACHES) >= _COPIES or _HELD[0] > (_STORES - 1) * budget):
            _drop(0)  # room for the new copy's budget: the copies read longest ago go
        cache = _INDEX[id(size), id(db)] = RowCache(size, db, txn_id, budget)
        _CACHES.append(cache)
        return cache
