"""``cache_to``: the first read fills the cache, later reads are served by it, always the right frame.

Matrix
------
==============================  ===========================================  ==========================
case                            how                                          processes
==============================  ===========================================  ==========================
served by the cache             source rows changed in place after filling   in process
any order, repeats, views       random orders with repeats, slices, chunks,  in process, two handles
                                column views, two interleaved handles
restart, half-filled            a child fills half and exits; a fresh        spawn
                                handle reads everything
killed while filling            SIGKILL during single-row fills              fork
worker processes                3 workers with a pickled ASEIO read          fork, at once
                                overlapping random orders
other source / not a cache      another file, split, mapping; a frames       in process
                                store; a newer cache layout
==============================  ===========================================  ==========================

The source is a real parquet file read through ``datasets`` (and an LMDB store where
the test changes the source); frame ``i`` is rebuilt by :func:`frame` in any process.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

pytest.importorskip("datasets")
pytest.importorskip("lmdb")

from asebytes_nodes import (  # noqa: E402
    ASEIO,
    CacheMismatchError,
    FormatVersionError,
    LMDBBackend,
    MemoryBackend,
    ReadOnlyError,
    UnsupportedOperationError,
)
from asebytes_nodes.backends._arrow import write_parquet  # noqa: E402
from asebytes_nodes.cache import HEADER_KEY, ROW_KEY  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal  # noqa: E402

N = 40
TIMEOUT = 60.0


def frame(i: int) -> Atoms:
    """Frame ``i``: 1 to 3 copper atoms, distinct values, the same in every process."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat((1 + i % 3, 1, 1))
    rng = np.random.default_rng(i)
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    atoms.calc = SinglePointCalculator(atoms, energy=-float(i), forces=rng.normal(size=(len(atoms), 3)))
    atoms.info["i"] = i
    return atoms


@pytest.fixture
def source(tmp_path: Path) -> str:
    write_parquet([frame(i) for i in range(N)], tmp_path / "src.parquet")
    return f"hf://{tmp_path / 'src.parquet'}"


def open_cached(uri: str, cache: Path | str) -> ASEIO:
    return ASEIO(uri, split="train", cache_dir=Path(uri[5:]).parent / "hf-cache", cache_to=cache)


def cache_rows(path: Path) -> list[int]:
    """Source row of every data row of a cache file, in cache order."""
    store = LMDBBackend(path, readonly=True)
    return [store.read_row(j)[ROW_KEY] for j in range(1, len(store))]


def test_served_by_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "source.lmdb"
    ASEIO(source).extend([frame(i) for i in range(N)])
    db = ASEIO(source, cache_to=tmp_path / "cache.lmdb")
    for i in (5, 0, 5, 39):
        assert_atoms_equal(frame(i), db[i])
    ASEIO(source)[[0, 1]] = [frame(100), frame(101)]  # change the source, same length
    db = ASEIO(source, cache_to=tmp_path / "cache.lmdb")
    assert_atoms_equal(frame(0), db[0])  # cached before the change
    assert_atoms_equal(frame(101), db[1])  # read now from the changed source
    assert cache_rows(tmp_path / "cache.lmdb") == [5, 0, 39, 1]
    got = db[0]
    got.positions[:] = 0.0
    got.calc.results["forces"][:] = 0.0
    assert_atoms_equal(frame(0), db[0])  # returned frames never share memory with the cache
    with pytest.raises(ReadOnlyError):
        db.append(frame(0))


def test_any_order_repeats_views_and_two_handles(source: str, tmp_path: Path) -> None:
    cache = tmp_path / "c.lmdb"
    a, b = open_cached(source, cache), open_cached(source, cache)
    rng = np.random.default_rng(0)
    for step in range(6):
        order = rng.integers(0, N, 12)
        db = a if step % 2 else b
        for i, got in zip(order.tolist(), db[order], strict=True):
            assert_atoms_equal(frame(i), got, f"step {step} row {i}")
    assert db["calc.energy"].to_list() == [-float(i) for i in range(N)]  # mixed: from the source
    for i, got in enumerate(a[::-1]):
        assert_atoms_equal(frame(N - 1 - i), got)
    assert b["calc.energy"][::-1].to_list() == [-float(i) for i in range(N - 1, -1, -1)]  # all cached
    chunks = list(b[10:20].chunked(3))
    assert [atoms.info["i"] for chunk in chunks for atoms in chunk] == list(range(10, 20))
    rows = cache_rows(cache)
    assert sorted(set(rows)) == list(range(N))
    assert len(rows) == N  # one process: every row appended once


def fill_half(uri: str, cache: str) -> None:
    db = open_cached(uri, cache)
    for i in range(0, N, 2):
        db[i]


def test_restart_resumes_a_half_filled_cache(source: str, tmp_path: Path) -> None:
    cache = tmp_path / "c.lmdb"
    proc = mp.get_context("spawn").Process(target=fill_half, args=(source, str(cache)))
    proc.start()
    proc.join(TIMEOUT)
    assert proc.exitcode == 0
    assert cache_rows(cache) == list(range(0, N, 2))
    db = open_cached(source, cache)
    order = np.random.default_rng(1).permutation(N)
    for i, got in zip(order.tolist(), db[order], strict=True):
        assert_atoms_equal(frame(i), got)
    assert sorted(cache_rows(cache)) == list(range(N))  # the half already there was not refilled


def fill_one_by_one(uri: str, cache: str) -> None:
    db = open_cached(uri, cache)
    for _ in range(1000):
        for i in np.random.default_rng(os.getpid()).permutation(N).tolist():
            db[i]
        db = open_cached(uri, cache + ".other")  # keep appending somewhere until killed


def test_killed_while_filling(source: str, tmp_path: Path) -> None:
    cache = tmp_path / "c.lmdb"
    proc = mp.get_context("fork").Process(target=fill_one_by_one, args=(source, str(cache)))
    proc.start()
    deadline = time.monotonic() + TIMEOUT
    while (not cache.exists() or len(LMDBBackend(cache, readonly=True)) < 15) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(TIMEOUT)
    store = LMDBBackend(cache, readonly=True)
    for j in range(1, len(store)):  # every cached row is whole and is the row it claims to be
        row = store.read_row(j)
        i = row.pop(ROW_KEY)
        assert row["info.i"] == i and row["calc.energy"] == -float(i)
    db = open_cached(source, cache)
    for i, got in enumerate(db):
        assert_atoms_equal(frame(i), got)


def worker(blob: bytes, seed: int, queue: mp.Queue, go: mp.Event) -> None:  # type: ignore[type-arg]
    try:
        db = pickle.loads(blob)
        go.wait(TIMEOUT)
        order = np.random.default_rng(seed).permutation(np.arange(N).repeat(2))
        problems = []
        for start in range(0, len(order), 5):
            rows = order[start : start + 5]
            for i, got in zip(rows.tolist(), db[rows], strict=True):
                if got.info["i"] != i or got.get_potential_energy() != -float(i) or len(got) != 1 + i % 3:
                    problems.append(f"row {i}: got frame {got.info['i']}")
        queue.put(problems)
    except BaseException as exc:
        queue.put([repr(exc)])


def test_worker_processes_fill_one_cache(source: str, tmp_path: Path) -> None:
    cache = tmp_path / "c.lmdb"
    blob = pickle.dumps(open_cached(source, cache))
    ctx = mp.get_context("fork")
    queue, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=worker, args=(blob, seed, queue, go)) for seed in range(3)]
    for proc in procs:
        proc.start()
    go.set()
    try:
        reports = [queue.get(timeout=TIMEOUT) for _ in procs]
    finally:
        for proc in procs:
            proc.join(TIMEOUT)
            if proc.is_alive():
                proc.kill()
    assert reports == [[], [], []]
    rows = cache_rows(cache)
    assert sorted(set(rows)) == list(range(N))  # a row filled by two workers at once may appear twice
    db = open_cached(source, cache)
    for i, got in enumerate(db):
        assert_atoms_equal(frame(i), got)


def test_other_sources_are_refused(source: str, tmp_path: Path) -> None:
    cache = tmp_path / "c.lmdb"
    open_cached(source, cache)[3]
    other = tmp_path / "other.parquet"
    write_parquet([frame(i) for i in range(N)], other)
    with pytest.raises(CacheMismatchError, match=r"filled from another source \(source: .*src.parquet"):
        open_cached(f"hf://{other}", cache)
    with pytest.raises(CacheMismatchError, match="mapping: .* delete the cache to reset it"):
        ASEIO(source, split="train", cache_dir=tmp_path / "hf-cache", cache_to=cache,
              mapping={"positions": "arrays.positions", "numbers": "arrays.numbers", "exclude": ["info.i"],
                       "flat": True})
    frames_store = tmp_path / "frames.lmdb"
    ASEIO(frames_store).extend([frame(0)])
    with pytest.raises(CacheMismatchError, match="is not a cache"):
        open_cached(source, frames_store)
    newer = tmp_path / "newer.lmdb"
    header = {"format": "asebytes_nodes.cache", "version": 99, "source": {}}
    LMDBBackend(newer).extend([{HEADER_KEY: json.dumps(header)}])
    with pytest.raises(FormatVersionError, match="cache layout version 99"):
        open_cached(source, newer)
    with pytest.raises(UnsupportedOperationError, match="writable store"):
        open_cached(source, LMDBBackend(cache, readonly=True))
    memory = open_cached(source, MemoryBackend())  # any writable backend instance
    assert_atoms_equal(frame(7), memory[7])
    assert_atoms_equal(frame(7), memory[7])
    assert len(memory.backend.cache) == 2  # type: ignore[attr-defined]


def test_a_source_without_a_location_is_known_by_its_instance(tmp_path: Path) -> None:
    """Two location-less sources of one length never share a cache; a pickled copy of one does."""
    water, ammonia = MemoryBackend(), MemoryBackend()
    ASEIO(water).extend([frame(0), frame(1)])
    ASEIO(ammonia).extend([frame(2), frame(3)])
    cache = tmp_path / "cache.lmdb"
    assert_atoms_equal(frame(1), ASEIO(water, cache_to=cache)[1])
    with pytest.raises(CacheMismatchError, match="known only by its instance"):
        ASEIO(ammonia, cache_to=cache)
    copy = pickle.loads(pickle.dumps(ASEIO(water, cache_to=cache)))
    assert_atoms_equal(frame(0), copy[0])
    assert_atoms_equal(frame(1), copy[1])
    sent = pickle.loads(pickle.dumps(ammonia))  # pickled before any cache (a spawned worker's copy)
    assert_atoms_equal(frame(3), ASEIO(sent, cache_to=tmp_path / "other.lmdb")[1])
    assert_atoms_equal(frame(2), ASEIO(ammonia, cache_to=tmp_path / "other.lmdb")[0])
    both = ASEIO(tmp_path / "a.lmdb")
    both.extend([frame(4)])
    joined = ASEIO(water) + both  # a concatenation is known by its parts, in every copy of it
    assert_atoms_equal(frame(4), ASEIO(joined.backend, cache_to=tmp_path / "joined.lmdb")[2])
    again = pickle.loads(pickle.dumps(joined.backend))
    assert_atoms_equal(frame(4), ASEIO(again, cache_to=tmp_path / "joined.lmdb")[2])


def test_extra_header_rows_are_skipped(tmp_path: Path) -> None:
    """Two processes opening one new cache at once may both append a header (each saw it
    empty): row 0 decides, the second header is not taken for a cached row."""
    source = tmp_path / "source.lmdb"
    ASEIO(source).extend([frame(i) for i in range(N)])
    cache = tmp_path / "cache.lmdb"
    first = ASEIO(source, cache_to=cache)
    header = LMDBBackend(cache, readonly=True).read_row(0)
    LMDBBackend(cache).extend([header])  # the other process's header, after row 0's
    assert_atoms_equal(frame(3), first[3])
    again = ASEIO(source, cache_to=cache)
    assert len(again) == N
    assert_atoms_equal(frame(0), again[0])
    assert_atoms_equal(frame(3), again[3])
    store = LMDBBackend(cache, readonly=True)
    assert [store.read_row(j).get(ROW_KEY) for j in range(1, len(store))] == [None, 3, 0]
