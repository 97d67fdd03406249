"""Two writer processes extending one Zarr store on S3 (the local moto server) at once.

Object stores have no lock, so this is the case the commit protocol of
``asebytes_nodes/backends/_zarr_remote.py`` exists for. The test makes the worst order
happen on purpose, with real processes: writer B begins an ``extend`` (its writes are
under way, so it has read the record), is stopped with SIGSTOP, writer A extends and
commits, then B continues and finishes its writes. Before the fix B wrote into the
arrays the committed record names (the last, partly filled shard object) and only then
noticed the conflict, so A's frames were damaged. Now B writes only arrays of its own,
its commit fails (``If-Match`` on the record) with ConcurrentCommitError, and:

* the store decodes and holds exactly the frames before plus A's frames (``check()``
  finds nothing);
* B's arrays are gone from the bucket; every array left is named by the record or
  retired by it;
* a third writer C, run while B is still stopped, commits after A and collects the arrays
  A retired, which B was copying from: B's failing reads are reported as the conflict
  they are (ConcurrentCommitError), not as damage.

B is stopped once any object of the store changed (its first write), which is after
it read the record whatever the code under test writes first; with the code before the
fix the test fails on A's frames (frame 9 held B's atoms).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from typing import Any

import pytest
from ase import Atoms

pytest.importorskip("zarr")

from asebytes_nodes import ASEIO, ConcurrentCommitError  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402

TIMEOUT = 120.0  # seconds; every wait on a child is bounded
LAYOUT = {"chunk_frames": 2, "shard_frames": 4}  # many small shard objects: B's write takes a while


def _writer(queue: Any, url: str, options: dict[str, Any], frames: list[Atoms]) -> None:
    """Spawned child: report "ready", extend, report how that ended."""
    try:
        db = ASEIO(url, storage_options=options, **LAYOUT)
        queue.put(("ready", None))
        db.extend(frames)
        queue.put(("ok", len(db)))
    except ConcurrentCommitError as exc:
        queue.put(("conflict", str(exc)))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def _wait(queue: Any, proc: Any) -> tuple[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=0.2)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - queue.Empty
            if not proc.is_alive() and queue.empty():
                pytest.fail(f"child exited with code {proc.exitcode} and no report")
    pytest.fail(f"no report from a child within {TIMEOUT} s")


def _objects(url: str, options: dict[str, Any]) -> dict[str, str]:
    """Every object of the store (key relative to it -> ETag), listed without any cache."""
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True, use_listings_cache=False)
    path = url.removeprefix("s3://")
    return {key[len(path) + 1 :]: info["ETag"] for key, info in fs.find(path, detail=True).items()}


def _top_level(url: str, options: dict[str, Any]) -> set[str]:
    return {key.split("/", 1)[0] for key in _objects(url, options)}


def test_the_loser_of_two_simultaneous_extends_damages_nothing(s3: tuple[str, dict[str, Any]]) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    base = [*make_frames("ethanol"), *make_frames("periodic_variable_n")]  # 9: last shard part-filled
    theirs = [*make_frames("periodic_variable_n")] * 8  # B: 40 frames, ~10 shard objects per array
    mine = make_frames("ethanol")[:3]  # A
    with ASEIO(url, storage_options=options, **LAYOUT) as db:
        db.extend(base)
        before = _objects(url, options)

    ctx = mp.get_context("spawn")
    queues = [ctx.Queue(), ctx.Queue()]
    slow = ctx.Process(target=_writer, args=(queues[0], url, options, theirs))
    fast = ctx.Process(target=_writer, args=(queues[1], url, options, mine))
    slow.start()
    try:
        assert _wait(queues[0], slow)[0] == "ready"
        deadline = time.monotonic() + TIMEOUT
        while _objects(url, options) == before:  # B's first write: it has read the record
            assert time.monotonic() < deadline and slow.is_alive(), "writer B never began writing"
            time.sleep(0.01)
        os.kill(slow.pid, signal.SIGSTOP)
        fast.start()
        assert _wait(queues[1], fast) == ("ready", None)
        status, result = _wait(queues[1], fast)
        assert status == "ok", result
        assert result == len(base) + len(mine)
        with ASEIO(url, storage_options=options) as db:  # C: collects the arrays B forks from
            db.extend(mine)
        os.kill(slow.pid, signal.SIGCONT)
        status, result = _wait(queues[0], slow)
        assert status == "conflict", result
        assert "another writer committed" in result
    finally:
        for proc in (slow, fast):
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGCONT)
                proc.join(TIMEOUT)
                if proc.is_alive():
                    proc.kill()

    with ASEIO(url, storage_options=options, readonly=True) as db:
        assert len(db) == len(base) + 2 * len(mine)
        for i, (want, got) in enumerate(zip(base + mine + mine, db, strict=True)):
            assert_atoms_equal(want, got, f"frame {i}")
        assert db.backend.check() == []
        record = db.backend._meta
        named = {record["n_atoms"], *(spec["id"] for spec in record["columns"].values())}
    assert _top_level(url, options) - {"zarr.json"} <= named | set(record["retired"])
