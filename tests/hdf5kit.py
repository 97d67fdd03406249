"""Fault-test helpers shared by the H5MD and MDTraj tests (``tests/backends/test_*_faults.py``).

Child-process operations live here (a module on ``tests/``, importable by the forkserver),
so tests can kill, starve or race them. A store's state is compared as a list of frame
signatures; the expected states of an operation are read from copies of the store on which
the operation ran to completion (before) and not at all (after), written by the same backend.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import random
import signal
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from faultkit import (
    _context,
    child_seconds,
    copy_store,
    files_below,
    fill_disk,
    flip_bit,
    kill_delay,
    kill_during,
    run_in_child,
    small_disk,
    truncate,
    versioned_frame,
)

from asebytes_nodes import ASEIO

#: Keyword arguments that open each backend on a ``.h5`` file.
BACKENDS: dict[str, dict[str, Any]] = {"h5md": {"backend": "h5md"}, "mdtraj": {"backend": "mdtraj"}}


@functools.cache
def _fullerene() -> Atoms:
    return molecule("C60", cell=np.eye(3) * 20.0, pbc=True)


def md_frame(i: int, v: int = 0) -> Atoms:
    """Frame ``i`` in version ``v`` for MDTraj files (one atom count, periodic, energy, time)."""
    atoms = _fullerene().copy()
    rng = np.random.default_rng(1000 * v + i)
    atoms.positions += 10.0 + rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = SinglePointCalculator(atoms, energy=float(i + 1000 * v))
    atoms.info["time"] = float(i)
    return atoms


def frame(backend: str, i: int, v: int = 0) -> Atoms:
    return versioned_frame(i, v) if backend == "h5md" else md_frame(i, v)


def open_store(path: str | Path, backend: str, **kwargs: Any) -> ASEIO:
    return ASEIO(path, **BACKENDS[backend], **kwargs)


def build(path: Path, backend: str, n: int, compression: str | None = "gzip") -> Path:
    """A store of ``n`` frames, written in batches of 500 (several commits)."""
    with open_store(path, backend, compression=compression) as db:
        for start in range(0, n, 500):
            db.extend([frame(backend, i) for i in range(start, min(n, start + 500))])
    return path


def signature(atoms: Any) -> tuple[Any, ...]:
    calc = atoms.calc.results if atoms.calc is not None else {}
    return (
        atoms.numbers.tobytes(),
        atoms.positions.tobytes(),
        atoms.cell.array.tobytes(),
        tuple(sorted((k, np.asarray(v).tobytes()) for k, v in calc.items())),
        tuple(sorted((k, repr(v)) for k, v in atoms.info.items())),
    )


def matches(backend: str, atoms: Any) -> int | None:
    """The number ``i`` of a version-0 frame read back, or None if it is not exactly
    ``frame(backend, i)`` (MDTraj keeps float32: compared to that precision)."""
    if backend == "h5md":
        i = int(atoms.info["frame"])
        return i if signature(atoms) == signature(frame(backend, i)) else None
    i = int(atoms.info["time"])
    ref = md_frame(i)
    same = np.allclose(atoms.positions, ref.positions, atol=1e-5) and np.allclose(
        atoms.calc.results["energy"], ref.calc.results["energy"], rtol=1e-6
    )
    return i if same else None


def digest(frames: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(frames).encode()).hexdigest()


def state(path: Path, backend: str) -> list[tuple[Any, ...]]:
    with open_store(path, backend, readonly=True) as db:
        return [signature(a) for a in db]


# -- operations (run in children) -----------------------------------------------------------------
def operate(path: str, backend: str, name: str, grow: int = 400) -> None:
    """Open the store at ``path`` and run write operation ``name`` on it."""
    with open_store(path, backend) as db:
        n = len(db)
        if name == "extend":
            db.extend([frame(backend, i, 1) for i in range(n, n + grow)])
        elif name == "setitem":
            db[7] = frame(backend, 7, 1)  # H5MD: another molecule, so another atom count
        elif name == "slice":
            db[20:60] = [frame(backend, i, 1) for i in range(20, 60)]
        elif name == "update":
            db.update(11, calc={"energy": -1.5})
        elif name == "drop":
            db.drop(["info.version"], [3, 4, 5])
        else:
            raise ValueError(name)


#: The write operations each backend supports (MDTraj files cannot drop keys).
OPS = {
    "h5md": ("extend", "setitem", "slice", "update", "drop"),
    "mdtraj": ("extend", "setitem", "slice", "update"),
}


def count_io(path: str, backend: str, name: str) -> int:
    """How many write calls the operation makes to the file (runs it; use a copy)."""
    from asebytes_nodes.backends import _hdf5_journal

    real = _hdf5_journal._UndoFile.write
    calls = [0]

    def counting(self: Any, data: Any) -> int:
        calls[0] += 1
        return real(self, data)

    _hdf5_journal._UndoFile.write = counting  # type: ignore[method-assign]
    try:
        operate(path, backend, name)
    finally:
        _hdf5_journal._UndoFile.write = real  # type: ignore[method-assign]
    return calls[0]


def operate_killed_at(path: str, backend: str, name: str, k: int, after: bool) -> None:
    """Child: run the operation and SIGKILL this process at its ``k``-th write call to the
    file, just before it (``after`` False: the journal has the old bytes, the file not yet the
    new ones) or just after it. A kill past the last call is a kill before the commit point."""
    from asebytes_nodes.backends import _hdf5_journal

    real = _hdf5_journal._UndoFile.write
    calls = [0]

    def dying(self: Any, data: Any) -> int:
        calls[0] += 1
        if calls[0] == k and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        done = real(self, data)
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return done

    real_commit = _hdf5_journal._UndoFile.commit

    def commit_then_die(self: Any) -> None:  # k past the last call: die between fsync and unlink
        os.fdatasync(self.fd)
        os.kill(os.getpid(), signal.SIGKILL)

    _hdf5_journal._UndoFile.write = dying  # type: ignore[method-assign]
    if k == 0:
        _hdf5_journal._UndoFile.commit = commit_then_die  # type: ignore[method-assign]
    try:
        operate(path, backend, name)
    finally:
        _hdf5_journal._UndoFile.write = real  # type: ignore[method-assign]
        _hdf5_journal._UndoFile.commit = real_commit  # type: ignore[method-assign]
    os.kill(os.getpid(), signal.SIGKILL)  # the operation ended before call k: still a kill


# -- full disk ------------------------------------------------------------------------------------
def overflow(path: str, backend: str, report: str) -> None:
    """Child: extend in batches until the disk is full; write what happened to ``report``."""
    out: dict[str, Any] = {"committed": 0}
    with open_store(path, backend, compression=None) as db:
        i, size = 0, 300  # about 100-300 kB a batch
        while True:
            batch = [frame(backend, j) for j in range(i, i + size)]
            try:
                db.extend(batch)
            except Exception as exc:
                out.update(type=type(exc).__name__, errno=getattr(exc, "errno", None), text=str(exc))
                out["filename"] = getattr(exc, "filename", None)
                break
            i += size
            out["committed"] = len(db)
    Path(report).write_text(json.dumps(out))


def raw_overflow(path: str, report: str) -> None:
    """Child: write more than the disk holds through the journal directly (no space estimate),
    so the failure comes from ENOSPC in the middle of HDF5's writes."""
    from asebytes_nodes.backends import _hdf5_journal

    out: dict[str, Any] = {}
    try:
        with _hdf5_journal.journaled(Path(path), 0) as f:
            ds = f.require_dataset("x", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
            ds.resize((4 << 20,))
            ds[:] = np.arange(4 << 20, dtype="f8")  # 32 MiB
    except Exception as exc:
        out.update(type=type(exc).__name__, errno=getattr(exc, "errno", None), text=str(exc))
    Path(report).write_text(json.dumps(out))


# -- concurrency ----------------------------------------------------------------------------------
def writer(path: str, backend: str, offset: int, batches: int, size: int) -> None:
    """Child: append ``batches`` batches of frames numbered from ``offset``."""
    for b in range(batches):
        with open_store(path, backend) as db:
            db.extend([frame(backend, offset + b * size + j) for j in range(size)])


def reader(path: str, backend: str, seconds: float, report: str) -> None:
    """Child: read the whole store again and again; every frame must be one some writer wrote."""
    out: dict[str, Any] = {"reads": 0, "lengths": [], "bad": []}
    deadline = time.monotonic() + seconds
    with open_store(path, backend, readonly=True) as db:
        while time.monotonic() < deadline:
            try:
                frames = list(db)
            except Exception as exc:
                out["bad"].append(f"{type(exc).__name__}: {exc}")
                continue
            out["reads"] += 1
            out["lengths"].append(len(frames))
            out["bad"] += [f"row {j} differs" for j, a in enumerate(frames) if matches(backend, a) is None]
    Path(report).write_text(json.dumps(out))


def hold_lock(path: str, seconds: float) -> None:
    """Child: hold the store's writer lock for ``seconds``."""
    from asebytes_nodes.backends._hdf5_journal import store_lock

    with store_lock(Path(path)).exclusive():
        time.sleep(seconds)


# -- damage ---------------------------------------------------------------------------------------
def read_all(paths: list[str], backend: str, expected: str, report: str) -> None:
    """Child: for each damaged copy, open it, read every frame and run check(); append one JSON
    line per copy to ``report`` (a crash leaves the lines of the copies before it)."""
    from asebytes_nodes import ASEBytesError

    for path in paths:
        outcome: dict[str, Any] = {"path": path}
        try:
            with open_store(path, backend, readonly=True) as db:
                got = [signature(a) for a in db]
                problems = db.backend.check()
        except ASEBytesError as exc:
            outcome.update(kind="error", type=type(exc).__name__, text=str(exc)[:300])
        except Exception as exc:
            outcome.update(kind="raw", type=type(exc).__name__, text=str(exc)[:300])
        else:
            outcome.update(kind="exact" if digest(got) == expected else "wrong", problems=problems[:3])
        with open(report, "a") as f:
            f.write(json.dumps(outcome) + "\n")


# -- the checks both test files run ---------------------------------------------------------------
def expected_states(seed: Path, work: Path, backend: str, name: str) -> tuple[list[Any], list[Any]]:
    """Frame signatures before and after operation ``name`` on a copy of ``seed``."""
    done = copy_store(seed, work / f"done-{name}.h5")
    operate(str(done), backend, name)
    return state(seed, backend), state(done, backend)


def assert_recovered(
    path: Path, backend: str, before: list[Any], after: list[Any], what: str, write_first: bool = False
) -> None:
    """After a kill: the store opens, holds the old or the new frames, passes check(), takes a
    write. ``write_first``: the first to open the store is a writer (else a reader)."""
    if write_first:
        with open_store(path, backend) as db:
            db.append(frame(backend, 4000))
    got = state(path, backend)  # read-only open: rolls the interrupted write back
    if write_first:
        with open_store(path, backend, readonly=True) as db:
            assert matches(backend, db[len(got) - 1]) == 4000, what
        got = got[:-1]
    assert got in (before, after), (
        f"{what}: {len(got)} frames match neither the {len(before)} before nor the {len(after)} after"
    )
    assert not Path(f"{path}-journal").exists(), f"{what}: the journal is still there after recovery"
    with open_store(path, backend) as db:
        assert db.backend.check() == [], what
        n = len(db)
        db.append(frame(backend, 5000))
        assert matches(backend, db[n]) == 5000 and len(db) == n + 1, what


def kill_at_io(seed: Path, work: Path, backend: str, name: str, trials: int) -> int:
    """Kill the operation at ``trials`` of its write calls (before and after each), plus once
    between fsync and the journal's deletion; every outcome must recover. Returns the trials."""
    before, after = expected_states(seed, work, backend, name)
    total = count_io(str(copy_store(seed, work / "count.h5")), backend, name)
    picks = sorted({1, total, *np.linspace(1, total, trials).astype(int).tolist()})
    cases = [(k, after_call) for k in picks for after_call in (False, True)] + [(0, False)]
    for n, (k, after_call) in enumerate(cases):
        path = copy_store(seed, work / f"k{n}.h5")
        code = run_in_child(operate_killed_at, (str(path), backend, name, k, after_call))
        assert code == -signal.SIGKILL, f"{name}: the child ended with {code}, not by the kill"
        moment = "commit" if k == 0 else f"write call {k}/{total} ({'after' if after_call else 'before'})"
        what = f"{backend} {name} killed at {moment}"
        assert_recovered(path, backend, before, after, what, write_first=n % 2 == 1)
    return len(cases)


def kill_at_random(seed: Path, work: Path, backend: str, name: str, trials: int, rng: random.Random) -> int:
    """SIGKILL at uniformly drawn moments of the operation (open to close); returns kills landed."""
    before, after = expected_states(seed, work, backend, name)
    duration = child_seconds(operate, str(copy_store(seed, work / "timed.h5")), backend, name)
    landed = 0
    for n in range(trials):
        path = copy_store(seed, work / f"r{n}.h5")
        delay = kill_delay(rng, duration, n)
        landed += kill_during(operate, (str(path), backend, name), delay)
        assert_recovered(path, backend, before, after, f"{backend} {name} killed {delay * 1e3:.1f} ms in")
    return landed


def full_disk(tmp: Path, backend: str) -> None:
    """Extend on an 8 MiB tmpfs until it is full (in a child: a crash would show as its exit
    code), then check the error, the store, the side files, and that a write works once
    space is freed. Then the same through the journal without a space estimate."""
    report = tmp / "report.json"
    with small_disk(8) as disk:
        ballast = fill_disk(disk, keep_free=6 << 20)
        path = disk / "full.h5"
        assert run_in_child(overflow, (str(path), backend, str(report))) == 0
        out = json.loads(report.read_text())
        assert out["type"] == "DiskFullError" and out["errno"] == errno.ENOSPC, out
        assert out["filename"] == str(path) and out["committed"] > 0, out
        assert files_below(path) <= {"full.h5", "full.h5.lock"}, files_below(path)
        with open_store(path, backend, readonly=True) as db:
            assert [matches(backend, a) for a in db] == list(range(out["committed"]))
        ballast.unlink()
        with open_store(path, backend) as db:
            db.extend([frame(backend, i) for i in range(out["committed"], out["committed"] + 100)])
            assert len(db) == out["committed"] + 100 and db.backend.check() == []
        raw = disk / "raw.h5"
        build(raw, backend, 10, compression=None)
        size, frames = raw.stat().st_size, state(raw, backend)
        assert run_in_child(raw_overflow, (str(raw), str(report))) == 0
        out = json.loads(report.read_text())
        assert out["type"] == "DiskFullError" and out["errno"] == errno.ENOSPC, out
        assert raw.stat().st_size == size and state(raw, backend) == frames
        assert files_below(raw) <= {"raw.h5", "raw.h5.lock"}, files_below(raw)


def writers_and_reader(tmp: Path, backend: str) -> dict[str, Any]:
    """Two processes append batches to one store while a third reads it whole, repeatedly."""
    path = build(tmp / "shared.h5", backend, 50, compression=None)
    report = tmp / "reader.json"
    ctx = _context()
    procs = [
        ctx.Process(target=writer, args=(str(path), backend, 10_000, 6, 50)),
        ctx.Process(target=writer, args=(str(path), backend, 20_000, 6, 50)),
        ctx.Process(target=reader, args=(str(path), backend, 2.5, str(report))),
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    seen = json.loads(report.read_text())
    assert seen["bad"] == [] and seen["reads"] > 0, seen["bad"][:5]
    assert all(n >= 50 and (n - 50) % 50 == 0 for n in seen["lengths"]), seen["lengths"]
    with open_store(path, backend, readonly=True) as db:
        got = sorted(matches(backend, a) for a in db)
    want = [*range(50), *range(10_000, 10_300), *range(20_000, 20_300)]
    assert got == want
    return seen


def locked_out(tmp: Path, backend: str) -> None:
    """A writer waiting longer than its timeout gets StoreLockedError naming store and holder."""
    from asebytes_nodes import StoreLockedError
    from asebytes_nodes.backends._hdf5_journal import store_lock

    path = build(tmp / "locked.h5", backend, 5, compression=None)
    db = open_store(path, backend)  # opened first: readers wait for a writer too
    proc = _context().Process(target=hold_lock, args=(str(path), 2.0))
    proc.start()
    try:
        deadline, lockfile = time.monotonic() + 10, Path(f"{path}.lock")
        while not (lockfile.exists() and f"pid {proc.pid}" in lockfile.read_text()):
            assert time.monotonic() < deadline, "the child never took the lock"
            time.sleep(0.02)
        store_lock(path, timeout=0.3)
        with db:
            try:
                db.extend([frame(backend, 5)])
            except StoreLockedError as exc:
                assert str(path) in str(exc) and f"pid {proc.pid}" in str(exc), str(exc)
            else:
                raise AssertionError("a second writer got in while the lock was held")
    finally:
        store_lock(path, timeout=60.0)
        proc.join(30)
    with open_store(path, backend, readonly=True) as db:
        assert len(db) == 5


def damage(tmp: Path, backend: str, flips: int, cuts: int, seed: int = 0) -> dict[str, int]:
    """Flip one bit at ``flips`` random offsets, cut the file at ``cuts`` random sizes; read
    each damaged copy whole in a child. Returns outcome counts; wrong data never passes."""
    path = build(tmp / "good.h5", backend, 300)
    expected = digest(state(path, backend))
    size = path.stat().st_size
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    report = tmp / "damage.json"
    cases = [("flip", rng.randrange(size)) for _ in range(flips)]
    cases += [("cut", rng.randrange(size)) for _ in range(cuts)]
    what = {}
    for n, (how, where) in enumerate(cases):
        bad = copy_store(path, tmp / f"bad{n}.h5")
        if how == "flip":
            flip_bit(bad, where, rng.randrange(8))
        else:
            truncate(bad, where)
        what[str(bad)] = f"{how} at {where}"
    todo = list(what)
    while todo:  # one child reads many copies; after a crash, a new child takes the rest
        report.unlink(missing_ok=True)
        code = run_in_child(read_all, (todo, backend, expected, str(report)))
        lines = report.read_text().splitlines() if report.exists() else []
        for outcome in map(json.loads, lines):
            kind = outcome["kind"]
            assert kind != "wrong", f"{what[outcome['path']]}: wrong frames read without an error"
            assert kind != "raw", f"{what[outcome['path']]}: {outcome['type']}: {outcome['text']}"
            counts[kind] = counts.get(kind, 0) + 1
        todo = todo[len(lines) :]
        if code != 0:
            counts[f"crash (exit {code})"] = counts.get(f"crash (exit {code})", 0) + 1
            todo = todo[1:]
    return counts


def flipped_chunk(tmp: Path, backend: str, dataset: str) -> None:
    """A bit flipped inside one data chunk: reading it names the dataset and rows; check() lists it."""
    import h5py

    from asebytes_nodes import StoreCorruptedError

    path = build(tmp / "chunk.h5", backend, 300, compression=None)
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
        rows = f[dataset].chunks[0]
    flip_bit(path, info.byte_offset + info.size // 2, 3)
    with open_store(path, backend, readonly=True) as db:
        try:
            list(db)
        except StoreCorruptedError as exc:
            assert dataset in str(exc) and "rows 0-" in str(exc), str(exc)
        else:
            raise AssertionError("a flipped bit in a chunk went unnoticed")
        problems = db.backend.check()
    assert any(dataset in p and f"rows 0-{min(rows, 300) - 1}" in p for p in problems), problems


def btree_key(path: Path, dataset: str, child: int) -> tuple[int, int]:
    """(file offset of the last coordinate of key ``child``, first row of chunk ``child``) in
    the v1 B-tree leaf holding the chunks of ``dataset``, found by its children's addresses."""
    import h5py

    with h5py.File(path, "r") as f:
        ds = f[dataset]
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
        rank = ds.ndim
    addresses = {info.byte_offset for info in infos}
    raw = path.read_bytes()
    key = 8 + 8 * (rank + 1)  # chunk size, filter mask, offsets (rank + 1: the element's bytes)
    at = raw.find(b"TREE")
    while at >= 0:
        kind, level, used = struct.unpack_from("<BBH", raw, at + 4)
        entries = at + 24  # signature, type, level, entries used, two sibling addresses
        children = [struct.unpack_from("<Q", raw, entries + i * (key + 8) + key)[0] for i in range(used)]
        if kind == 1 and level == 0 and used > child and set(children) <= addresses:
            first_row = struct.unpack_from("<Q", raw, entries + child * (key + 8) + 8)[0]
            return entries + child * (key + 8) + 8 + 8 * rank, first_row
        at = raw.find(b"TREE", at + 4)
    raise AssertionError(f"no v1 B-tree leaf of {dataset} in {path}")
