"""LMDB batches from row templates (``_lmdb_batch``): the template tables (lengths shared by
several templates, templates learnt wider than the joined rows' spare bytes, the cache reset)
and the two gathers (rows whose keys sit alike as one record array, other rows joined per
key) give what decoded rows give."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batchkit import KEYS, assert_same_batch, batch_row, template_batch

from asebytes_nodes import LMDBBackend
from asebytes_nodes.backends import _lmdb_batch
from asebytes_nodes.batch import read_batch_default


def _row(rng: np.random.Generator, n: int, i: int, **extra: Any) -> dict[str, Any]:
    return batch_row(rng, n, i, cell=np.eye(3) * 5.0, **extra)


def _check(backend: LMDBBackend, batches: list[list[int]], keys: Any) -> None:
    for idx in batches:
        fast = template_batch(backend, idx, keys)
        assert fast is not None, idx
        assert_same_batch(fast, read_batch_default(backend, np.asarray(idx), keys))


@pytest.fixture(autouse=True)
def _fresh_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lmdb_batch, "_TABLES", _lmdb_batch.Tables())


def test_three_templates_of_one_length(tmp_path: Path) -> None:
    """A bool, a fixint and nil in one slot: one row length, three templates, any mix."""
    rng = np.random.default_rng(0)
    base = _row(rng, 3, 1)
    rows = [{**base, "info.slot": value} for value in (True, 7, None)] * 4
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend(rows)
    order = np.random.default_rng(1).permutation(12).tolist()
    _check(backend, [order, order[:9], [2, 1, 0, 2, 1, 0, 5, 4, 3]], [*KEYS, "info.index"])
    lengths = [t.length for t in _lmdb_batch._TABLES.templates if t is not None]
    assert len(lengths) == 3 and len(set(lengths)) == 1


def test_templates_learnt_wider_than_the_spare_bytes(tmp_path: Path) -> None:
    """Rows whose headers grow (a longer string each time) within one batch and across batches."""
    rng = np.random.default_rng(2)
    rows = [_row(rng, int(rng.integers(1, 6)), i, **{"info.label": "x" * (40 * i)}) for i in range(20)]
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend(rows)
    _check(backend, [[0, 1], list(range(19, -1, -1)), [3, 19, 3, 0]], KEYS)
    _check(backend, [list(range(20))], ["calc.energy", "info.index", "cell"])


def test_one_template_and_many_give_the_same_batch(tmp_path: Path) -> None:
    """Fixed atom counts (one table of rows) and ragged ones (joined per key), with empty frames."""
    rng = np.random.default_rng(3)
    rows = [_row(rng, 4, i) for i in range(10)] + [_row(rng, n, 10 + n) for n in (0, 1, 7, 0, 2)]
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend(rows)
    _check(backend, [list(range(10)), [10, 13], [10], [14, 0, 10, 12, 11, 3]], KEYS)
    _check(backend, [list(range(15))], None)


def test_templates_shifted_by_earlier_bytes_share_one_record(tmp_path: Path) -> None:
    """Rows whose keys sit alike but start at different offsets (an earlier string of another
    length: ethanol's case) are gathered as one record; a bool and a stress ride along."""
    rng = np.random.default_rng(4)
    rows = [
        {
            "info.label": "x" * (i % 5),
            **_row(rng, 3, i, **{"info.flag": i % 2 == 0, "calc.stress": rng.normal(size=6)}),
        }
        for i in range(12)
    ]
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend(rows)
    keys = [*KEYS, "info.flag", "calc.stress"]
    _check(backend, [list(range(12)), [11, 0, 5, 5, 2]], keys)
    plan = _lmdb_batch._TABLES.plan(tuple(keys))
    used = plan.record_ids[1:]
    assert len(plan.records) == 1 and (used == 0).all()  # five templates, one record
    assert len(set(plan.bases[1:].tolist())) == 5
    got = backend.read_batch(np.array([3, 1]), keys)
    assert got["info.flag"].tolist() == [False, False] and got["calc.stress"].shape == (2, 6)


def test_uint64_beyond_int64_is_left_to_decoded_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend([_row(rng, 2, 2**63 + i) for i in range(3)] + [_row(rng, 2, i) for i in range(3)])
    assert template_batch(backend, [0, 1, 2], ["info.index"]) is None
    assert template_batch(backend, [0, 3], ["info.index"]) is None
    assert template_batch(backend, [3, 4, 5], ["info.index"])["info.index"].tolist() == [0, 1, 2]  # type: ignore[index]


def test_the_template_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lmdb_batch, "_MAX_TEMPLATES", 3)
    rng = np.random.default_rng(5)
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend([_row(rng, n, n) for n in range(1, 9)])
    for start in range(0, 8, 2):
        _check(backend, [[start, start + 1], [7 - start, 6 - start, 7 - start]], KEYS)
    assert len(_lmdb_batch._TABLES.templates) <= 3 + 1 + 3  # at most a batch's worth past the bound


def test_threads_learning_at_once_read_the_same_batch(tmp_path: Path) -> None:
    """Threads learning templates at the same time (each batch keeps the tables it started with)."""
    rng = np.random.default_rng(6)
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend([_row(rng, int(rng.integers(1, 40)), i) for i in range(200)])
    batches = [np.random.default_rng(seed).permutation(200)[:32] for seed in range(24)]
    expected = [read_batch_default(backend, idx, KEYS) for idx in batches]
    errors: list[BaseException] = []

    def work(part: int) -> None:
        try:
            for j in range(part, len(batches), 4):
                assert_same_batch(backend.read_batch(batches[j], KEYS), expected[j])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
