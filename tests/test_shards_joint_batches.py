"""Batches across LMDB shards are gathered at once (``read_batch_joint``): each shard's rows are
verified in its own snapshot, their bytes joined in the order asked and gathered in one pass. The
batch equals one store's; stores of several layouts join; pieces whose templates are of different
lineages, and more shards than may be open together, fall back to a batch per shard."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.backends import _lmdb_batch
from asebytes_nodes.backends._lmdb import LMDBBackend
from asebytes_nodes.shards import ShardedBackend
from asebytes_nodes.testing.frames import make_frames

pytest.importorskip("lmdb")

_KEYS = ["arrays.positions", "arrays.numbers", "calc.energy", "calc.forces", "cell"]
_DATA = Path(__file__).parent / "data"


def _sharded(tmp_path: Path, frames: list[Any], **options: Any) -> tuple[ShardedBackend, ASEIO]:
    one = ASEIO(tmp_path / "one.lmdb")
    one.extend(frames)
    ASEIO(tmp_path / "ds", backend="shards", shard_frames=5).extend(frames)
    return ShardedBackend(tmp_path / "ds", readonly=True, **options), one


def _count_reads(backend: Any) -> dict[str, list[int]]:
    """Each shard's batch reads: ``read_batch`` (a batch of its own) and ``_checked`` (its rows)."""
    calls: dict[str, list[int]] = {"read_batch": [], "_checked": []}
    for p in range(len(backend.shards)):
        shard = backend._part(p)
        for name in calls:
            method = getattr(shard, name)
            setattr(
                shard, name, lambda *a, _m=method, _n=name, _p=p, **k: calls[_n].append(_p) or _m(*a, **k)
            )
    return calls


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype, key


@pytest.mark.parametrize("atoms", [None, np.array([0, -1])], ids=["all", "ends"])
@pytest.mark.parametrize("keys", [_KEYS, None], ids=["keys", "default"])
def test_a_batch_across_shards_is_gathered_at_once(tmp_path: Path, keys: Any, atoms: Any) -> None:
    frames = make_frames("periodic_variable_n") * 4  # 20 ragged frames in 4 shards
    backend, one = _sharded(tmp_path, frames)
    calls = _count_reads(backend)
    order = [17, 3, 9, 3, 0, 12, 17, 6]  # shuffled, repeats, every shard
    for _ in range(2):  # read from LMDB, then from the rows kept
        _assert_same(
            ASEIO(backend)[order].to_batch(keys, atoms=atoms), one[order].to_batch(keys, atoms=atoms)
        )
    assert calls["read_batch"] == [], "no shard read a batch of its own"
    assert sorted(calls["_checked"]) == sorted(2 * [0, 1, 2, 3]), "each shard's rows read once per batch"


def test_pieces_of_other_template_lineages_are_read_per_shard(tmp_path: Path, monkeypatch: Any) -> None:
    frames = make_frames("periodic_variable_n") * 2
    backend, one = _sharded(tmp_path, frames)
    db = ASEIO(backend)
    db[[0, 1]].to_batch(_KEYS)  # shard 0's rows kept with the templates learnt now
    monkeypatch.setattr(_lmdb_batch, "_TABLES", _lmdb_batch.Tables())  # as when the tables are reset
    db[[5, 6]].to_batch(_KEYS)  # shard 1's rows kept with templates of a new lineage
    calls = _count_reads(backend)
    _assert_same(db[[6, 0, 5, 1]].to_batch(_KEYS), one[[6, 0, 5, 1]].to_batch(_KEYS))
    assert sorted(calls["read_batch"]) == [0, 1], "the pieces do not join: a batch per shard"


@pytest.mark.parametrize("max_open", [2, 4])
def test_more_shards_than_may_be_open_are_read_per_shard(
    tmp_path: Path, monkeypatch: Any, max_open: int
) -> None:
    frames = make_frames("periodic_variable_n") * 4
    backend, one = _sharded(tmp_path, frames, max_open=max_open)
    joint = LMDBBackend.read_batch_joint
    calls: list[int] = []
    monkeypatch.setattr(LMDBBackend, "read_batch_joint", lambda *a, **k: calls.append(1) or joint(*a, **k))
    order = [0, 5, 10, 15, 1]  # four shards
    _assert_same(ASEIO(backend)[order].to_batch(_KEYS), one[order].to_batch(_KEYS))
    assert len(calls) == (max_open >= 4), "joint only where the four shards may be open together"


def test_stores_of_older_layouts_join_in_one_batch(tmp_path: Path) -> None:
    stores = []
    for version in (1, 2):  # layouts 1 (no checksums) and 2 (CRC-32), beside a new store (3)
        shutil.copy(_DATA / f"lmdb_v{version}.lmdb", tmp_path / f"v{version}.lmdb")
        stores.append(ASEIO(tmp_path / f"v{version}.lmdb", readonly=True))
    new = ASEIO(tmp_path / "v3.lmdb")
    new.extend(list(stores[0][:]))
    joined = stores[0] + stores[1] + new  # one concatenation of three LMDB stores
    order = [13, 0, 7, 16, 5]
    keys = ["arrays.positions", "arrays.numbers", "calc.energy", "cell"]
    got = joined[order].to_batch(keys)
    frames = [joined[i] for i in order]
    assert got["n_atoms"].tolist() == [len(a) for a in frames]
    np.testing.assert_array_equal(got["arrays.positions"], np.concatenate([a.positions for a in frames]))
    np.testing.assert_array_equal(got["calc.energy"], [a.get_potential_energy() for a in frames])
    np.testing.assert_array_equal(got["cell"], np.stack([a.cell.array for a in frames]))


def test_every_shard_of_a_dataset_stays_open_and_keeps_its_rows(tmp_path: Path, monkeypatch: Any) -> None:
    """Over more shards than were kept open (64) or kept rows (256 copies), shuffled epochs reopened
    shards and re-read rows all the time (400 shards: 1.2k frames/s, now 11k and 37k)."""
    import resource

    from asebytes_nodes.backends import _lmdb_batch_cache

    monkeypatch.setattr(_lmdb_batch_cache, "_CACHES", [])
    monkeypatch.setattr(_lmdb_batch_cache, "_INDEX", {}, raising=False)
    monkeypatch.setattr(_lmdb_batch_cache, "_HELD", [0])
    frames = make_frames("periodic_variable_n") * 60  # 300 frames, a shard each
    ASEIO(tmp_path / "ds", backend="shards", shard_frames=1).extend(frames)
    backend = ShardedBackend(tmp_path / "ds", readonly=True)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert backend.max_open == (4096 if soft == resource.RLIM_INFINITY else max(64, min(4096, soft // 4)))
    assert ShardedBackend(tmp_path / "ds", readonly=True, max_open=8).max_open == 8
    if backend.max_open < 300:
        pytest.skip(f"this process may open {soft} files: too few to keep 300 shards open")
    db = ASEIO(backend)
    for batch in db.batches(32, keys=_KEYS, shuffle=True, seed=0):
        assert len(batch["n_atoms"]) <= 32
    assert sum(h is not None for h in backend._handles) == 300
    copies = _lmdb_batch_cache._CACHES
    assert len(copies) == 300 and all(c.buffer.nbytes <= 1 << 20 for c in copies), "small copies, all kept"
    fetched: list[int] = []
    fetch = _lmdb_batch._fetch
    monkeypatch.setattr(
        _lmdb_batch, "_fetch", lambda txn, rows: fetched.append(len(rows)) or fetch(txn, rows)
    )
    one = ASEIO(tmp_path / "one.lmdb", cache_bytes=0)
    one.extend(frames)
    for idx in np.array_split(np.random.default_rng(1).permutation(300), 10):  # a second epoch
        _assert_same(db[idx].to_batch(_KEYS), one[idx].to_batch(_KEYS))
    assert len(fetched) == 10, "the second epoch read only the one store's rows, no shard's"


def test_a_shard_closed_past_max_open_forgets_its_kept_rows(tmp_path: Path, monkeypatch: Any) -> None:
    """A reopened shard is another environment: the closed one's copy never served again but stayed
    (480 shards reopened past max_open: RSS 198 -> 480 MB over 15 epochs)."""
    from asebytes_nodes.backends import _lmdb_batch_cache

    monkeypatch.setattr(_lmdb_batch_cache, "_CACHES", [])
    monkeypatch.setattr(_lmdb_batch_cache, "_INDEX", {})
    monkeypatch.setattr(_lmdb_batch_cache, "_HELD", [0])
    frames = make_frames("periodic_variable_n") * 3  # 15 frames in 5 shards
    ASEIO(tmp_path / "ds", backend="shards", shard_frames=3).extend(frames)
    db = ASEIO(ShardedBackend(tmp_path / "ds", readonly=True, max_open=2))
    for _ in range(2):
        for batch in db.batches(4, keys=_KEYS, shuffle=True, seed=3):
            assert len(batch["n_atoms"]) <= 4
    assert len(_lmdb_batch_cache._CACHES) <= 2, "only the open shards' copies are kept"


_LOW_LIMIT = """
import errno, resource, sys
from asebytes_nodes import ASEIO
from asebytes_nodes.shards import ShardedBackend
print(ShardedBackend(sys.argv[1], readonly=True).max_open)
db = ASEIO(ShardedBackend(sys.argv[1], readonly=True, max_open=200))
try:
    db[list(range(0, 120, 2))].to_batch(["calc.energy"])
except OSError as exc:
    print(type(exc).__name__, exc.errno == errno.EMFILE, "ulimit -n" in str(exc))
"""


def test_a_low_file_limit_opens_fewer_shards_and_says_what_ran_out(tmp_path: Path) -> None:
    """Under ulimit -n 64 the default of at least 64 open shards failed, and the error called a
    sound shard file corrupted."""
    import subprocess
    import sys

    frames = make_frames("periodic_variable_n") * 24  # 120 frames, one shard each 2
    ASEIO(tmp_path / "ds", backend="shards", shard_frames=2).extend(frames)
    script = tmp_path / "low.py"
    script.write_text(_LOW_LIMIT)
    done = subprocess.run(
        ["bash", "-c", f"ulimit -n 40; {sys.executable} {script} {tmp_path / 'ds'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["16", "OSError", "True", "True"], done.stdout + done.stderr
