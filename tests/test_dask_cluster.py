"""Parallel conversion on a real ``dask.distributed`` cluster of worker processes (no mocks).

Matrix: a ``LocalCluster`` of 2 worker processes (one thread each), shared by the module
through its scheduler address, plus one conversion that starts its own cluster
(``workers=2``); sources: extxyz of every frame kind; shard backends: LMDB, Zarr, H5MD.
Checks: frame-by-frame equality with a serial conversion, byte-identical shards for 1 and 2
workers, a bad frame's partition named with no dataset written, a worker killed mid-task.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ase.io
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, PartitionError
from asebytes_nodes.shards import ShardedBackend, convert_sharded
from asebytes_nodes.testing.frames import FRAME_KINDS, assert_atoms_equal, make_frames

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "all.extxyz"
    frames = [f for kind in sorted(FRAME_KINDS) for f in make_frames(kind)]
    ase.io.write(path, frames * 3, format="extxyz")
    return path


def test_two_worker_processes_equal_serial(tmp_path: Path, source: Path) -> None:
    convert_sharded(source, tmp_path / "serial", shard_frames=7)
    convert_sharded(source, tmp_path / "parallel", shard_frames=7, workers=2)  # its own LocalCluster
    serial, parallel = ASEIO(tmp_path / "serial"), ASEIO(tmp_path / "parallel")
    assert len(parallel) == len(serial) == len(ASEIO(source))
    for i, (expected, got) in enumerate(zip(serial, parallel, strict=True)):
        assert_atoms_equal(expected, got, f"frame {i}")
    assert parallel.backend.natoms.tolist() == serial.backend.natoms.tolist()


@pytest.mark.parametrize(
    "backend",
    ["lmdb", "zarr"],  # LMDB: the environment zeroes unused page space (meminit=True in _lmdb_env.py)
)
def test_shards_byte_identical_for_1_and_2_workers(
    tmp_path: Path, source: Path, scheduler: str, backend: str
) -> None:
    pytest.importorskip(backend)
    convert_sharded(source, tmp_path / "one", backend=backend, shard_frames=9)
    convert_sharded(source, tmp_path / "two", backend=backend, shard_frames=9, scheduler=scheduler)
    one, two = ShardedBackend(tmp_path / "one"), ShardedBackend(tmp_path / "two")
    assert [(s.file, s.size, s.sha256) for s in two.shards] == [
        (s.file, s.size, s.sha256) for s in one.shards
    ]


def test_h5md_shards_hold_the_same_frames_for_1_and_2_workers(
    tmp_path: Path, source: Path, scheduler: str
) -> None:
    """H5MD shards of 1 and 2 workers: the same files, each with the same frames. Their bytes are
    not compared: HDF5's file-space allocation depends on the writing process's history (in a
    long pytest session a serial shard once got a 58-byte block allocated and freed before an
    object header, shifting later addresses; fresh processes give identical bytes)."""
    pytest.importorskip("h5py")
    convert_sharded(source, tmp_path / "one", backend="h5md", shard_frames=9)
    convert_sharded(source, tmp_path / "two", backend="h5md", shard_frames=9, scheduler=scheduler)
    one, two = ShardedBackend(tmp_path / "one"), ShardedBackend(tmp_path / "two")
    assert [s.file for s in two.shards] == [s.file for s in one.shards]
    for a, b in zip(one.shards, two.shards, strict=True):
        left, right = ASEIO(tmp_path / "one" / a.file), ASEIO(tmp_path / "two" / b.file)
        assert len(left) == len(right) == 9 or a is one.shards[-1]
        for i, (expected, got) in enumerate(zip(left, right, strict=True)):
            assert_atoms_equal(expected, got, f"{a.file} frame {i}")


def test_bad_frame_on_the_cluster(tmp_path: Path, scheduler: str) -> None:
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, [molecule("NH3")] * 10, format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    lines[6 * 6 + 3] = "H 0.0 oops 0.0\n"  # frame 6
    path.write_text("".join(lines))
    with pytest.raises(PartitionError, match=r"source rows 6-8 \(partition 2\).*frame 6"):
        convert_sharded(path, tmp_path / "out", shard_frames=3, scheduler=scheduler)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("asebytes-shards.json"))


@pytest.mark.slow
def test_worker_killed_mid_task_is_retried(tmp_path: Path, scheduler: str) -> None:
    path = tmp_path / "many.extxyz"
    ase.io.write(path, [molecule(n) for n in ("H2O", "CH4", "C2H6", "CH3CH2OH")] * 1500, format="extxyz")
    convert_sharded(path, tmp_path / "serial", shard_frames=500)
    client = distributed.Client(scheduler)
    pids = list(client.run(os.getpid).values())

    def kill_one() -> None:
        time.sleep(1.0)
        os.kill(pids[0], signal.SIGKILL)  # the nanny starts a new worker; its task runs again

    killer = threading.Thread(target=kill_one)
    killer.start()
    convert_sharded(path, tmp_path / "parallel", shard_frames=500, scheduler=scheduler)
    killer.join()
    client.close()
    serial, parallel = ShardedBackend(tmp_path / "serial"), ShardedBackend(tmp_path / "parallel")
    assert [(s.file, s.rows) for s in parallel.shards] == [(s.file, s.rows) for s in serial.shards]
    assert sorted(p.name for p in (tmp_path / "parallel").iterdir()) == sorted(
        [s.file for s in parallel.shards]
        + [s.natoms_file for s in parallel.shards]
        + ["asebytes-shards.json"]
    )
    for i, (a, b) in enumerate(zip(ASEIO(serial), ASEIO(parallel), strict=True)):
        assert_atoms_equal(a, b, f"frame {i}")


def _tasks_on_scheduler(task: int) -> tuple[int, int]:
    """Run on a worker: the task and how many tasks the scheduler holds meanwhile."""
    client = distributed.get_client()
    held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    return task, held


def test_cluster_gets_tasks_a_window_at_a_time(scheduler: str) -> None:
    """The scheduler never holds every task (an extxyz partition carries its part of the
    byte-offset index: 2.3 GB in all at 10^8 frames); results come back in task order."""
    from asebytes_nodes.shards._engines import _WINDOW, DaskEngine

    engine = DaskEngine(2, scheduler, show_progress=False)
    try:
        results = engine.map(_tasks_on_scheduler, list(range(40)), desc="tasks")
    finally:
        engine.close()
    assert [task for task, _ in results] == list(range(40))
    # finished tasks leave the scheduler a moment after their results are taken
    assert max(held for _, held in results) <= 2 * _WINDOW < 40


def test_relative_paths_reach_workers_in_another_folder(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers started elsewhere (dask-jobqueue jobs start in their own folder) get the source
    and the target as absolute paths: relative ones failed there with FileNotFoundError."""
    isolated = tmp_path / "jobs"
    isolated.mkdir()
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        client.run(os.chdir, str(isolated))  # the workers' folder is not the driver's
        monkeypatch.chdir(source.parent)
        count = convert_sharded(source.name, "out", shard_frames=7, scheduler=cluster.scheduler_address)
    assert count == len(ASEIO(source)) == len(ASEIO(source.parent / "out"))
    assert list(isolated.iterdir()) == []


def test_a_script_without_the_main_guard_is_told_to_add_it(tmp_path: Path) -> None:
    """Each Dask worker re-ran the unguarded script, whose conversion then failed on the driver's
    lock: "locked by another writer (pid <the user's script>) ... pass a longer lock_timeout="."""
    import subprocess
    import sys

    ase.io.write(tmp_path / "g.extxyz", [molecule("H2O")] * 6)
    script = tmp_path / "noguard.py"
    script.write_text(
        "from asebytes_nodes import convert\n"
        "convert('g.extxyz', 'g_shards', shard_frames=2, workers=2, show_progress=False)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.returncode != 0
    assert 'put the conversion under `if __name__ == "__main__":`' in done.stderr, done.stderr[-2000:]
    assert "lock_timeout" not in done.stderr
