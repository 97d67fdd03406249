"""Rows an LMDB batch read verified, kept for later batches of the same snapshot
(``_lmdb_batch_cache``): later epochs give what decoded rows give, a commit (by any handle)
drops the copy, rows past the budget are read from the store, and tables of another lineage
start a new copy."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batchkit import KEYS, assert_same_batch, batch_row

from asebytes_nodes import LMDBBackend, StoreCorruptedError
from asebytes_nodes.backends import _lmdb_batch, _lmdb_batch_cache
from asebytes_nodes.batch import read_batch_default


def _epoch(backend: LMDBBackend, seed: int, n: int, keys: Any = KEYS) -> None:
    for idx in np.array_split(np.random.default_rng(seed).permutation(n), max(1, n // 8)):
        assert_same_batch(backend.read_batch(idx, keys), read_batch_default(backend, idx, keys))


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lmdb_batch, "_TABLES", _lmdb_batch.Tables())
    monkeypatch.setattr(_lmdb_batch_cache, "_CACHES", [])
    monkeypatch.setattr(_lmdb_batch_cache, "_INDEX", {})
    monkeypatch.setattr(_lmdb_batch_cache, "_HELD", [0])


@pytest.mark.parametrize("ragged", [False, True])
def test_later_epochs_read_the_kept_rows(tmp_path: Path, ragged: bool) -> None:
    rng = np.random.default_rng(0)
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend([batch_row(rng, int(rng.integers(1, 9)) if ragged else 4, i) for i in range(64)])
    for seed in range(3):
        _epoch(backend, seed, 64)
        _epoch(backend, seed, 64, ["calc.energy", "info.index"])
    (cache,) = _lmdb_batch_cache._CACHES
    assert int((cache.slot_of >= 0).sum()) == 64
    idx = np.array([5, 5, 63, 0])
    atoms = np.array([0, -1])
    assert_same_batch(
        backend.read_batch(idx, KEYS, atoms=atoms), read_batch_default(backend, idx, KEYS, atoms=atoms)
    )


def test_a_commit_drops_the_copy(tmp_path: Path) -> None:
    """Rows changed in place (same length and template) by another handle, then one appended."""
    rng = np.random.default_rng(1)
    path = tmp_path / "b.lmdb"
    backend = LMDBBackend(path)
    backend.extend([batch_row(rng, 3, i) for i in range(16)])
    other = LMDBBackend(path)  # another handle on the same file
    _epoch(backend, 0, 16)
    _epoch(backend, 1, 16)
    other.update_rows([2, 9], [{"calc.energy": 123.0}, {"calc.energy": -4.5}])
    assert backend.read_batch(np.arange(16), ["calc.energy"])["calc.energy"][[2, 9]].tolist() == [123.0, -4.5]
    other.set_rows([5], [batch_row(rng, 3, 77)])
    other.extend([batch_row(rng, 3, 99)])
    _epoch(backend, 2, 17)
    assert backend.read_batch(np.arange(17), ["info.index"])["info.index"][[5, 16]].tolist() == [77, 99]
    other.close()
    backend.close()


def test_rows_past_the_budget_are_read_from_the_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    backend = LMDBBackend(tmp_path / "b.lmdb", cache_bytes=9000)
    backend.extend([batch_row(rng, 5, i) for i in range(40)])
    for seed in range(3):
        _epoch(backend, seed, 40)
    cache = _lmdb_batch_cache._CACHES[0]
    assert 0 < cache.used <= 9000 and 0 < int((cache.slot_of >= 0).sum()) < 40
    backend.close()


def test_the_copies_of_many_small_stores_are_all_kept(tmp_path: Path) -> None:
    """Eight stores read in turn (a sharded dataset's shards): every copy is kept while all of
    them fit four budgets (the four stores read last were kept: later epochs over eight shards
    read LMDB again); past that, the copies read longest ago go and the total stays bounded."""
    rng = np.random.default_rng(5)
    stores = []
    for s in range(8):
        backend = LMDBBackend(tmp_path / f"s{s}.lmdb", cache_bytes=40_000)
        backend.extend([batch_row(rng, 5, 100 * s + i) for i in range(12)])
        stores.append(backend)
    for seed in range(2):
        for backend in stores:
            _epoch(backend, seed, 12)
    caches = _lmdb_batch_cache._CACHES
    assert len(caches) == 8 and all(int((c.slot_of >= 0).sum()) == 12 for c in caches)
    held = sum(c.used for c in caches)
    assert held == _lmdb_batch_cache._HELD[0] <= 4 * 40_000
    small = max(1, held // 8 // 2)  # budgets of half a store: four budgets hold four of them at most
    for backend in stores:
        backend.close()
    stores = [LMDBBackend(tmp_path / f"s{s}.lmdb", cache_bytes=small) for s in range(8)]
    for backend in stores:
        _epoch(backend, 0, 12)
    assert sum(c.used for c in _lmdb_batch_cache._CACHES) == _lmdb_batch_cache._HELD[0] <= 4 * small
    for backend in stores:
        backend.close()


def test_rows_past_the_indexed_range_are_read_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot array covers row numbers up to a bound (16 MiB of it at most): rows past it are
    never kept, their batches read the store and stay right."""
    monkeypatch.setattr(_lmdb_batch_cache, "_INDEXED_ROWS", 16)
    rng = np.random.default_rng(6)
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend([batch_row(rng, 5, i) for i in range(40)])
    for seed in range(2):
        _epoch(backend, seed, 40)
    cache = _lmdb_batch_cache._CACHES[0]
    assert len(cache.slot_of) == 16 and int((cache.slot_of >= 0).sum()) == 16
    backend.close()


def test_cache_bytes_zero_keeps_no_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    backend = LMDBBackend(tmp_path / "b.lmdb", cache_bytes=0)
    backend.extend([batch_row(rng, 5, i) for i in range(40)])
    for seed in range(2):
        _epoch(backend, seed, 40)
    assert _lmdb_batch_cache._CACHES == []
    assert pickle.loads(pickle.dumps(backend))._cache_bytes == 0
    backend.close()


def test_tables_of_another_lineage_start_a_new_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lmdb_batch, "_MAX_TEMPLATES", 3)  # the tables are reset again and again
    rng = np.random.default_rng(3)
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend([batch_row(rng, n % 7 + 1, n) for n in range(30)])
    for seed in range(4):
        _epoch(backend, seed, 30)


def test_a_damaged_row_is_still_named_in_a_new_process_view(tmp_path: Path) -> None:
    """The copy belongs to one open environment: a file damaged and opened again is read again."""
    rng = np.random.default_rng(4)
    path = tmp_path / "b.lmdb"
    backend = LMDBBackend(path)
    rows = [batch_row(rng, 3, i) for i in range(20)]
    backend.extend(rows)
    _epoch(backend, 0, 20)
    backend.close()
    data = bytearray(path.read_bytes())
    at = bytes(data).find(np.asarray(rows[0]["arrays.positions"]).tobytes())
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))
    backend = LMDBBackend(path, readonly=True)
    with pytest.raises(StoreCorruptedError, match="row 0 fails its checksum"):
        backend.read_batch(np.array([7, 0]), KEYS)
    backend.close()
