"""ASEIO over LMDB across processes: pickling, workers, fork, concurrency, crashes.

Every test uses real files in pytest's ``tmp_path`` (no mocks). Child processes
report through a queue and are bounded by timeouts, then killed, so no test can hang.

Matrix
------
=================================  ==========================  ===================================
what                               how                         processes / contexts
=================================  ==========================  ===================================
1. pickling                        ASEIO, RowView (db[2:8]),   in process; LMDB (by path, live
                                   ColumnView (calc.energy)    handle) and memory:// (a copy)
2. worker pools                    torch DataLoader (map-      fork, spawn; num_workers=2
                                   style, batch_size=4);
                                   multiprocessing Pool(2)     fork, spawn; ASEIO pickled per task
3. fork safety                     child reads and appends     fork; handle and views inherited
                                   through inherited handle
4. concurrency                     1 writer (30 x extend(10))  fork; 3 processes at once
                                   + 2 readers (len, last row)
5. two handles, one process        ASEIO(p) twice + readonly   in process; close order both ways
6. reads leave the file alone      sha256 + mtime of x.lmdb    readonly=True and default;
                                   missing path, readonly      StoreNotFoundError, ReadOnlyError
                                   writes
7. crash safety                    SIGKILL during a 20000-     spawn
                                   frame extend
8. map size                        LMDBBackend(map_size=64K)   in process, and a fork reader
                                   then growth on demand       with a map smaller than the file
=================================  ==========================  ===================================

Frames are small molecules (ase.build.molecule) with a SinglePointCalculator
(energy, forces); frame ``i`` is rebuilt deterministically by :func:`make_frame`
in any process, so every read is compared exactly with what was written.
"""

from __future__ import annotations

import hashlib
import inspect
import multiprocessing as mp
import os
import pickle
import queue as queue_module
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

import asebytes_nodes
from asebytes_nodes import ASEIO, ColumnView, LMDBBackend, RowView
from asebytes_nodes.backends._base import READ_ONLY_MESSAGE
from asebytes_nodes.rows import atoms_to_dict

CHILD_TIMEOUT = 60.0  # seconds; generous, but every wait is bounded
NAMES = ("H2O", "CH4", "NH3", "CO2", "C2H6")


# -- frames ------------------------------------------------------------------------------------
def energy_of(i: int) -> float:
    return -10.0 + 0.37 * i


def make_frame(i: int) -> Atoms:
    """Frame ``i``: same values in every process."""
    atoms = molecule(NAMES[i % len(NAMES)])
    rng = np.random.default_rng(i)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    forces = rng.normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=energy_of(i), forces=forces)
    return atoms


def make_frames(start: int, stop: int) -> list[Atoms]:
    return [make_frame(i) for i in range(start, stop)]


def frame_problem(atoms: Atoms, i: int) -> str | None:
    """None if ``atoms`` is exactly frame ``i``, else what differs (usable in children)."""
    expected = make_frame(i)
    if not np.array_equal(atoms.numbers, expected.numbers):
        return f"frame {i}: numbers {atoms.numbers} != {expected.numbers}"
    if not np.array_equal(atoms.positions, expected.positions):
        return f"frame {i}: positions differ"
    if atoms.calc is None:
        return f"frame {i}: no calculator"
    if atoms.calc.results.get("energy") != energy_of(i):
        return f"frame {i}: energy {atoms.calc.results.get('energy')} != {energy_of(i)}"
    if not np.array_equal(atoms.calc.results.get("forces"), expected.calc.results["forces"]):
        return f"frame {i}: forces differ"
    return None


def assert_frame(atoms: Atoms, i: int) -> None:
    problem = frame_problem(atoms, i)
    assert problem is None, problem


def make_store(path: Path, n: int) -> None:
    with ASEIO(path) as db:
        db.extend(make_frames(0, n))
        assert len(db) == n


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- child-process plumbing --------------------------------------------------------------------
def run_and_report(queue: Any, func: Any, *args: Any) -> None:
    """Child entry point: put ("ok", result) or ("error", traceback) on ``queue``."""
    try:
        queue.put(("ok", func(*args)))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def collect(queue: Any, procs: list[Any], n_reports: int, timeout: float = CHILD_TIMEOUT) -> list[Any]:
    """Wait for ``n_reports`` reports and for ``procs`` to exit; kill leftovers; raise on errors."""
    deadline = time.monotonic() + timeout
    reports = []
    try:
        for _ in range(n_reports):
            try:
                reports.append(queue.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue_module.Empty:
                pytest.fail(f"only {len(reports)} of {n_reports} child reports within {timeout} s")
        for proc in procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    errors = [payload for status, payload in reports if status != "ok"]
    assert not errors, "child process failed:\n" + "\n".join(errors)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [payload for _, payload in reports]


# -- 1. pickling -------------------------------------------------------------------------------
def test_pickle_lmdb_aseio_rowview_columnview(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    make_store(path, 12)
    with ASEIO(path) as db:
        blob = pickle.dumps(db)
        assert len(blob) < 2000, "an LMDB ASEIO must pickle by path, not by data"
        clone = pickle.loads(blob)
        assert isinstance(clone, ASEIO)
        assert clone.backend is not db.backend
        assert len(clone) == 12
        for i in range(12):
            assert_frame(clone[i], i)

        rows = pickle.loads(pickle.dumps(db[2:8]))
        assert isinstance(rows, RowView)
        assert rows.indices.tolist() == list(range(2, 8))
        for k, atoms in enumerate(rows):
            assert_frame(atoms, 2 + k)
        assert_frame(rows[-1], 7)

        energy = pickle.loads(pickle.dumps(db["calc.energy"]))
        assert isinstance(energy, ColumnView)
        assert energy.to_numpy().tolist() == [energy_of(i) for i in range(12)]
        assert energy[3] == energy_of(3)
        numbers = pickle.loads(pickle.dumps(db["arrays.numbers"])).to_list()
        positions = pickle.loads(pickle.dumps(db[2:8]["arrays.positions"])).to_list()
        for i in range(12):
            assert np.array_equal(numbers[i], make_frame(i).numbers)
        for k in range(6):
            assert np.array_equal(positions[k], make_frame(2 + k).positions)

        # The copies are live handles on the same file, not snapshots.
        db.append(make_frame(12))
        assert len(clone) == 13
        assert_frame(clone[12], 12)
        assert len(rows) == 6  # a view keeps its own row numbers
        clone.close()
        rows._backend.close()
        energy._backend.close()
        assert len(db) == 13  # closing the copies leaves the original open
        assert_frame(db[12], 12)


def test_pickle_lmdb_keeps_readonly(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    make_store(path, 3)
    with ASEIO(path, readonly=True) as db:
        clone = pickle.loads(pickle.dumps(db))
        try:
            assert clone.backend.readonly
            assert_frame(clone[2], 2)
            with pytest.raises(asebytes_nodes.ReadOnlyError):
                clone.append(make_frame(3))
        finally:
            clone.close()
    with ASEIO(path) as db:
        assert len(db) == 3


def test_pickle_memory_is_a_copy() -> None:
    db = ASEIO("memory://")
    db.extend(make_frames(0, 10))
    clone = pickle.loads(pickle.dumps(db))
    assert len(clone) == 10
    for i in range(10):
        assert_frame(clone[i], i)
    rows = pickle.loads(pickle.dumps(db[2:8]))
    assert [frame_problem(a, 2 + k) for k, a in enumerate(rows)] == [None] * 6
    energy = pickle.loads(pickle.dumps(db["calc.energy"]))
    assert energy.to_numpy().tolist() == [energy_of(i) for i in range(10)]

    # Writes to the copy do not reach the original, nor the other way round.
    clone.append(make_frame(10))
    clone[0] = make_frame(5)
    clone.update(1, calc={"energy": 123.0})
    assert len(clone) == 11
    assert_frame(clone[0], 5)
    assert len(db) == 10
    assert_frame(db[0], 0)
    assert_frame(db[1], 1)
    db.append(make_frame(20))
    assert len(clone) == 11
    assert len(rows._backend) == 10


# -- 2. worker pools ---------------------------------------------------------------------------
class FrameDataset:
    """Map-style dataset (module level so spawned workers can import it)."""

    def __init__(self, db: ASEIO) -> None:
        self.db = db

    def __len__(self) -> int:
        return len(self.db)

    def __getitem__(self, i: int) -> tuple[int, int, Any, float]:
        import torch

        atoms = self.db[i]
        return int(i), os.getpid(), torch.as_tensor(atoms.positions), atoms.get_potential_energy()


def collate_as_list(batch: list[Any]) -> list[Any]:
    return list(batch)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_torch_dataloader_workers(tmp_path: Path, context: str) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    path = tmp_path / "x.lmdb"
    make_store(path, 40)
    with ASEIO(path, readonly=True) as db:
        loader = DataLoader(
            FrameDataset(db),
            batch_size=4,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=2,
            multiprocessing_context=context,
            collate_fn=collate_as_list,
            timeout=CHILD_TIMEOUT,
        )
        batches = list(loader)
    assert [len(b) for b in batches] == [4] * 10
    seen = [item[0] for batch in batches for item in batch]
    assert sorted(seen) == list(range(40))  # every row exactly once
    pids = {item[1] for batch in batches for item in batch}
    assert os.getpid() not in pids
    assert len(pids) == 2  # batches go round-robin to both workers
    for batch in batches:
        for i, _, positions, energy in batch:
            assert isinstance(positions, torch.Tensor)
            assert torch.equal(positions, torch.as_tensor(make_frame(i).positions))
            assert energy == energy_of(i)


def read_frame_task(args: tuple[ASEIO, int]) -> tuple[int, int, np.ndarray, np.ndarray, float]:
    """Pool task: the ASEIO arrives pickled with every task."""
    db, i = args
    atoms = db[i]
    return os.getpid(), i, atoms.numbers.copy(), atoms.positions.copy(), atoms.get_potential_energy()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_pool_workers_read_pickled_aseio(tmp_path: Path, context: str) -> None:
    path = tmp_path / "x.lmdb"
    make_store(path, 40)
    with ASEIO(path) as db:
        assert_frame(db[0], 0)  # the parent has the environment open before the workers start
        with mp.get_context(context).Pool(2) as pool:
            results = pool.map_async(read_frame_task, [(db, i) for i in range(40)], chunksize=4).get(
                timeout=CHILD_TIMEOUT
            )
        assert len(db) == 40  # the parent's handle still works
    assert [r[1] for r in results] == list(range(40))
    assert os.getpid() not in {r[0] for r in results}
    for _, i, numbers, positions, energy in results:
        expected = make_frame(i)
        assert np.array_equal(numbers, expected.numbers)
        assert np.array_equal(positions, expected.positions)
        assert energy == energy_of(i)


# -- 3. fork safety ----------------------------------------------------------------------------
def child_read_and_append(db: ASEIO, rows: RowView, path: str) -> dict[str, Any]:
    """Runs in a forked child with the parent's handle and view inherited (not pickled)."""
    problems = [frame_problem(db[i], i) for i in range(len(db))]
    problems += [frame_problem(a, 2 + k) for k, a in enumerate(rows)]
    energies = db["calc.energy"].to_numpy().tolist()
    db.extend([make_frame(10), make_frame(11)])
    with ASEIO(path, readonly=True) as fresh:  # a new handle on the same path in the child
        fresh_len = len(fresh)
        problems.append(frame_problem(fresh[11], 11))
    after = len(db)  # the inherited handle still works after the other one closed
    return {"problems": [p for p in problems if p], "energies": energies, "fresh": fresh_len, "after": after}


def test_fork_child_reads_and_appends_through_inherited_handle(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    with ASEIO(path) as db:
        db.extend(make_frames(0, 10))
        assert_frame(db[3], 3)
        rows = db[2:5]
        assert db["calc.energy"][9] == energy_of(9)
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=run_and_report, args=(queue, child_read_and_append, db, rows, str(path)))
        proc.start()
        (report,) = collect(queue, [proc], 1)
        assert report["problems"] == []
        assert report["energies"] == [energy_of(i) for i in range(10)]
        assert report["fresh"] == 12
        assert report["after"] == 12

        # The parent sees the child's rows through its own, older handle, and can still write.
        assert len(db) == 12
        for i in range(12):
            assert_frame(db[i], i)
        for k, atoms in enumerate(rows):
            assert_frame(atoms, 2 + k)
        db.append(make_frame(12))
        assert len(db) == 13
    with ASEIO(path, readonly=True) as db:
        assert db["calc.energy"].to_numpy().tolist() == [energy_of(i) for i in range(13)]


# -- 4. concurrency ----------------------------------------------------------------------------
N_BATCHES, BATCH = 30, 10


def writer_loop(path: str, start: Any) -> int:
    if not start.wait(CHILD_TIMEOUT):
        raise TimeoutError("readers never became ready")
    with ASEIO(path) as db:
        for b in range(N_BATCHES):
            db.extend(make_frames(b * BATCH, (b + 1) * BATCH))
            time.sleep(0.005)  # let readers see intermediate lengths
        return len(db)


def reader_loop(path: str, ready: Any, writer_done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + CHILD_TIMEOUT
    lengths: list[int] = []
    problems: list[str] = []
    rng = np.random.default_rng(os.getpid())
    with ASEIO(path, readonly=True) as db:
        ready.set()
        while time.monotonic() < deadline:
            finished = writer_done.is_set()  # checked before reading: the last pass sees the end
            n = len(db)
            lengths.append(n)
            if n % BATCH:
                problems.append(f"saw length {n}, not a multiple of {BATCH}")
            if n:
                for i in (n - 1, int(rng.integers(n))):
                    try:
                        problem = frame_problem(db[i], i)
                    except Exception as exc:  # a row below the length must always be readable
                        problem = f"row {i} < len {n} unreadable: {exc!r}"
                    if problem:
                        problems.append(problem)
            if finished:
                break
        else:
            problems.append("reader hit its deadline")
    return {"lengths": lengths, "problems": problems[:20]}


def test_one_writer_two_readers(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    make_store(path, 0)  # the file exists (empty store) before readers open it read-only
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    readies = [ctx.Event(), ctx.Event()]
    start, writer_done = ctx.Event(), ctx.Event()
    readers = [
        ctx.Process(target=run_and_report, args=(queue, reader_loop, str(path), ready, writer_done))
        for ready in readies
    ]
    writer = ctx.Process(target=run_and_report, args=(queue, writer_loop, str(path), start))
    procs = [*readers, writer]
    try:
        for proc in procs:
            proc.start()
        for ready in readies:
            assert ready.wait(CHILD_TIMEOUT), "a reader did not start"
        start.set()
        # The writer's report comes first (readers only stop once writer_done is set).
        status, payload = queue.get(timeout=CHILD_TIMEOUT)
        assert status == "ok", payload
        assert payload == N_BATCHES * BATCH
        writer_done.set()
        reports = collect(queue, procs, 2)
    finally:
        writer_done.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    seen: set[int] = set()
    for report in reports:
        assert report["problems"] == []
        assert report["lengths"] == sorted(report["lengths"])  # never goes backwards
        assert report["lengths"][-1] == N_BATCHES * BATCH
        seen.update(report["lengths"])
    assert len(seen) > 3, f"readers saw too few intermediate lengths to test anything: {sorted(seen)}"
    with ASEIO(path, readonly=True) as db:
        assert len(db) == N_BATCHES * BATCH
        assert db["calc.energy"].to_numpy().tolist() == [energy_of(i) for i in range(len(db))]


# -- 5. two handles in one process -------------------------------------------------------------
def test_two_handles_on_one_path(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    a = ASEIO(path)
    b = ASEIO(path)  # neither makes the file: the first write does
    a.extend(make_frames(0, 5))
    r = ASEIO(path, readonly=True)
    try:
        assert len(b) == 5 and len(r) == 5
        assert_frame(b[4], 4)
        assert_frame(r[4], 4)
        b.extend(make_frames(5, 8))
        assert len(a) == 8
        assert r["calc.energy"].to_numpy().tolist() == [energy_of(i) for i in range(8)]
        with pytest.raises(asebytes_nodes.ReadOnlyError):
            r.append(make_frame(8))
        assert len(a) == 8

        a.close()
        a.close()  # closing twice must not release the shared environment twice
        with pytest.raises(ValueError):
            len(a)
        b.append(make_frame(8))
        assert len(r) == 9
        assert_frame(r[8], 8)
        r.close()
        b.append(make_frame(9))
        assert len(b) == 10
        assert_frame(b[9], 9)
    finally:
        for handle in (a, b, r):
            handle.close()

    # The other order: read-only first, then a writer; close the reader first.
    r = ASEIO(path, readonly=True)
    w = ASEIO(path)
    try:
        w.append(make_frame(10))
        assert len(r) == 11
        assert_frame(r[10], 10)
        r.close()
        w.append(make_frame(11))
        assert len(w) == 12
        for i in range(12):
            assert_frame(w[i], i)
    finally:
        r.close()
        w.close()


# -- 6. reads change nothing; read-only errors -------------------------------------------------
def read_everything(db: ASEIO, n: int) -> None:
    assert len(db) == n
    for i, atoms in enumerate(db):
        assert_frame(atoms, i)
    for i, atoms in enumerate(db[::-1].to_list()):
        assert_frame(atoms, n - 1 - i)
    assert_frame(db[-1], n - 1)
    assert sum(len(chunk) for chunk in db.chunked(3)) == n
    columns = db.columns
    assert {"arrays.numbers", "arrays.positions", "calc.energy", "calc.forces"} <= set(columns)
    assert set(db.schema) == set(columns)
    for key in columns:
        assert len(db[key].to_list()) == n
    assert db["calc.energy"].to_numpy().tolist() == [energy_of(i) for i in range(n)]
    both = db[["calc.energy", "calc.forces"]].to_dict()
    assert len(both["calc.forces"]) == n


@pytest.mark.parametrize("readonly", [True, False], ids=["readonly", "default"])
def test_reading_leaves_data_file_unchanged(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "x.lmdb"
    make_store(path, 12)
    old = 1_000_000_000 * 10**9  # 2001-09-09: any write would move the mtime
    os.utime(path, ns=(old, old))
    before = (sha256_of(path), path.stat().st_mtime_ns, path.stat().st_size)
    with ASEIO(path, readonly=readonly) as db:
        read_everything(db, 12)
        clone = pickle.loads(pickle.dumps(db))
        read_everything(clone, 12)
        clone.close()
    assert (sha256_of(path), path.stat().st_mtime_ns, path.stat().st_size) == before


def test_readonly_missing_path_raises_store_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "missing.lmdb"
    with pytest.raises(asebytes_nodes.StoreNotFoundError) as info:
        ASEIO(missing, readonly=True)
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in str(info.value)
    assert not missing.exists()
    assert not Path(str(missing) + "-lock").exists()


WRITES = {
    "extend": lambda db: db.extend([make_frame(99)]),
    "append": lambda db: db.append(make_frame(99)),
    "insert": lambda db: db.insert(0, make_frame(99)),
    "setitem": lambda db: db.__setitem__(0, make_frame(99)),
    "setslice": lambda db: db.__setitem__(slice(0, 2), [make_frame(98), make_frame(99)]),
    "delitem": lambda db: db.__delitem__(0),
    "delslice": lambda db: db.__delitem__(slice(0, 2)),
    "update": lambda db: db.update(0, info={"tag": 1}),
    "drop": lambda db: db.drop("calc.forces"),
    "backend.extend": lambda db: db.backend.extend([atoms_to_dict(make_frame(99))]),
    "backend.set_rows": lambda db: db.backend.set_rows([0], [atoms_to_dict(make_frame(99))]),
}


def test_write_through_readonly_handle_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    make_store(path, 4)
    before = sha256_of(path)
    with ASEIO(path, readonly=True) as db:
        for name, write in WRITES.items():
            with pytest.raises(asebytes_nodes.ReadOnlyError) as info:
                write(db)
            assert str(info.value) == READ_ONLY_MESSAGE, name
        assert len(db) == 4
        for i in range(4):
            assert_frame(db[i], i)
    assert sha256_of(path) == before


# -- 7. crash safety ---------------------------------------------------------------------------
def crash_writer(path: str, ready: Any, done: Any, n: int) -> None:
    """Spawned child: prepares ``n`` frames, says ready, then writes them in one extend."""
    db = ASEIO(path)
    images = make_frames(5, 5 + n)
    ready.set()
    db.extend(images)
    done.set()  # reached only if the kill came too late
    time.sleep(CHILD_TIMEOUT)


def store_bytes(path: Path) -> int:
    """Bytes of a store: its file, or every file below its folder (Zarr)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr"])
def test_killed_writer_leaves_earlier_rows(tmp_path: Path, suffix: str) -> None:
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    path = tmp_path / f"x{suffix}"
    make_store(path, 5)
    size_before = store_bytes(path)
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=crash_writer, args=(str(path), ready, done, 20000))
    proc.start()
    try:
        assert ready.wait(CHILD_TIMEOUT), "the writer did not get ready"
        # Kill as soon as the data file starts growing: the commit is in progress.
        deadline = time.monotonic() + CHILD_TIMEOUT
        while store_bytes(path) == size_before and time.monotonic() < deadline:
            pass
        grew = store_bytes(path) != size_before
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    assert proc.exitcode == -signal.SIGKILL
    assert not done.is_set(), "the extend finished before the kill; the test did not test a crash"
    assert grew, "the writer never started writing the data file"

    with ASEIO(path, readonly=True) as db:
        assert len(db) == 5
        for i in range(5):
            assert_frame(db[i], i)
        assert db["calc.energy"].to_numpy().tolist() == [energy_of(i) for i in range(5)]
    with ASEIO(path) as db:  # the killed writer's lock is recovered: writing works again
        db.append(make_frame(5))
        assert len(db) == 6
        for i in range(6):
            assert_frame(db[i], i)


# -- 8. map size -------------------------------------------------------------------------------
def big_frame(i: int, n_values: int = 16_384) -> Atoms:
    atoms = make_frame(i)
    atoms.info["blob"] = np.full(n_values, float(i))  # 128 KiB per frame
    return atoms


def test_map_grows_on_demand(tmp_path: Path) -> None:
    assert "map_size" in inspect.signature(LMDBBackend).parameters
    path = tmp_path / "x.lmdb"
    tiny = 64 * 1024
    backend = LMDBBackend(path, map_size=tiny)
    env = backend._env
    small = env.info()["map_size"]
    assert tiny <= small <= 4 * 2**20  # the explicit size is honoured, not a hidden minimum
    with ASEIO(backend) as db:
        db.extend([big_frame(i) for i in range(8)])  # 1 MiB in one transaction
        for start in range(8, 40, 8):
            db.extend([big_frame(i) for i in range(start, start + 8)])
        assert env.info()["map_size"] > small
        assert path.stat().st_size > small
        assert len(db) == 40
        for i in range(40):
            atoms = db[i]
            assert_frame(atoms, i)
            assert np.array_equal(atoms.info["blob"], np.full(16_384, float(i)))
    with ASEIO(path, readonly=True) as db:
        assert len(db) == 40
        assert [float(b[0]) for b in db["info.blob"].to_list()] == [float(i) for i in range(40)]


def reader_with_small_map(path: str, ready: Any, go: Any) -> dict[str, Any]:
    with ASEIO(path, readonly=True) as db:
        env = db.backend._env
        env.set_mapsize(64 * 1024)
        small = env.info()["map_size"]
        n_before = len(db)
        ready.set()
        if not go.wait(CHILD_TIMEOUT):
            raise TimeoutError("parent never wrote")
        n = len(db)
        problems = [frame_problem(db[i], i) for i in range(n)]
        blobs = [float(b[0]) for b in db["info.blob"].to_list()]
        return {
            "small": small,
            "before": n_before,
            "after": n,
            "problems": [p for p in problems if p],
            "blobs": blobs,
        }


def test_reader_in_other_process_follows_map_growth(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    with ASEIO(path) as db:
        db.append(big_frame(0))
        ctx = mp.get_context("fork")
        queue, ready, go = ctx.Queue(), ctx.Event(), ctx.Event()
        proc = ctx.Process(target=run_and_report, args=(queue, reader_with_small_map, str(path), ready, go))
        proc.start()
        try:
            assert ready.wait(CHILD_TIMEOUT)
            db.extend([big_frame(i) for i in range(1, 24)])  # 3 MiB: beyond the reader's map
            assert path.stat().st_size > 2 * 2**20
        finally:
            go.set()
        (report,) = collect(queue, [proc], 1)
    assert report["small"] < 2 * 2**20
    assert report["before"] == 1
    assert report["after"] == 24
    assert report["problems"] == []
    assert report["blobs"] == [float(i) for i in range(24)]
