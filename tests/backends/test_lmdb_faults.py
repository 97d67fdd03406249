"""LMDB under faults: truncated and bit-flipped files, hostile rows, full disks, concurrent writers.

Matrix: damage (truncation at offsets inside both meta pages, at 0 bytes, 1 page and across the
file; single bit flips every few hundred bytes, every ~100 with ``-m slow``) x a store of
versioned frames, each read in a child process so a signal counts as a failure; hostile rows
(msgpack timestamp, unknown extension, object dtype) written with a valid checksum; a full
tmpfs (map growth included); two writer processes and a reader; version-1 and version-2 stores
(fixtures written by those layouts' code) still read and written.
"""

from __future__ import annotations

import collections
import errno
import json
import shutil
import signal
import struct
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from faultkit import (
    _context,
    copy_store,
    files_below,
    fill_disk,
    flip_bit,
    frame_version,
    run_in_child,
    small_disk,
    truncate,
    versioned_frame,
)

from asebytes_nodes import (
    ASEIO,
    ASEBytesError,
    DiskFullError,
    LMDBBackend,
    StoreCorruptedError,
    StoreLockedError,
    UnsafeStoreError,
)
from asebytes_nodes.codec import encode_row
from asebytes_nodes.rows import atoms_to_dict

lmdb = pytest.importorskip("lmdb")

N = 60  # frames in a damaged store
OUTCOMES = {0: "exact frames", 10: "StoreCorruptedError", 11: "other package error"}


def build(path: Path, n: int = N) -> Path:
    """A store written the usual way: several transactions, an overwrite, a scalar column."""
    with ASEIO(path) as db:
        for start in range(0, n, 20):
            db.extend([versioned_frame(i) for i in range(start, min(n, start + 20))])
        db[n // 2] = versioned_frame(n // 2)
    return path


def classify(path: str, n: int) -> int:
    """0 if the store reads back exactly ``n`` versioned frames (rows and the energy column),
    10/11 on a clean package error, 20 on wrong data, 30 on any other exception."""
    try:
        with ASEIO(path, readonly=True) as db:
            frames = list(db)
            energies = db["calc.energy"].to_list()
        if len(frames) != n or energies != [float(i) for i in range(n)]:
            return 20
        if [frame_version(atoms) for atoms in frames] != [(i, 0) for i in range(n)]:
            return 20
    except AssertionError:
        return 20
    except StoreCorruptedError:
        return 10
    except ASEBytesError:
        return 11
    except Exception:  # noqa: BLE001 - any other exception is a failure the parent reports
        return 30
    return 0


def read_everything(path: str, n: int) -> None:
    """Child: exit with :func:`classify`'s code (a signal kills it)."""
    sys.exit(classify(path, n))


def damage_trials(store: str, trials: list[tuple[str, int, int]], n: int, log: str) -> None:
    """Child: for each ``(kind, offset, bit)`` damage a fresh copy and log its outcome.

    One process runs many trials; one killed by a signal leaves the trial it died in unlogged.
    """
    base = Path(store)
    for kind, offset, bit in trials:
        damaged = copy_store(base, base.with_name("damaged.lmdb"))
        if kind == "flip":
            flip_bit(damaged, offset, bit)
        else:
            truncate(damaged, offset)
        code = classify(str(damaged), n)
        for side in files_below(damaged):
            (damaged.parent / side).unlink()
        with open(log, "a") as f:
            f.write(f"{offset} {bit} {code}\n")


def run_trials(
    store: Path, trials: list[tuple[str, int, int]], n: int = N
) -> dict[tuple[int, int], int | None]:
    """Outcome per ``(offset, bit)`` (None: the reading process died of a signal)."""
    log = store.with_name("trials.log")
    results: dict[tuple[int, int], int | None] = {}
    while len(results) < len(trials):
        todo = [t for t in trials if t[1:] not in results]
        log.write_text("")
        code = run_in_child(damage_trials, (str(store), todo, n, str(log)))
        done = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
        results.update({(offset, bit): outcome for offset, bit, outcome in done})
        if code == -signal.SIGKILL and done:  # out of time (faultkit's timeout): go on in a new child
            continue
        if code != 0:  # the trial after the last logged one killed (or hung) the child
            results[todo[len(done)][1:]] = None
    return results


# -- truncation ------------------------------------------------------------------------------
def test_truncated_file_is_refused_on_open(tmp_path: Path) -> None:
    store = build(tmp_path / "full.lmdb")
    size = store.stat().st_size
    offsets = sorted({0, 1, 16, 100, 151, 4095, 4096, 4097, 4096 + 151, 8191, 8192, size - 1}
                     | set(range(8192, size, max(1, size // 40))))
    results = run_trials(store, [("cut", offset, 0) for offset in offsets])
    print(f"truncation of {size} bytes at {len(offsets)} offsets: {collections.Counter(results.values())}")
    assert all(code == 10 for code in results.values()), results
    for offset in (0, 4096, size // 2):
        damaged = copy_store(store, tmp_path / f"cut{offset}.lmdb")
        truncate(damaged, offset)
        with pytest.raises(StoreCorruptedError, match=f"cut{offset}.lmdb"):
            ASEIO(damaged, readonly=True)


# -- bit flips -------------------------------------------------------------------------------
def flip_outcomes(tmp_path: Path, step: int) -> collections.Counter:
    store = build(tmp_path / "clean.lmdb")
    size = store.stat().st_size
    assert classify(str(store), N) == 0
    offsets = range(step // 2, size, step)
    results = run_trials(store, [("flip", offset, offset % 8) for offset in offsets])
    seen = collections.Counter(OUTCOMES.get(c, f"exit code {c}") for c in results.values())  # type: ignore[arg-type]
    print(f"bit flips over {size} bytes, every {step}: {dict(seen)}")
    failures = {offset: code for offset, code in results.items() if code not in OUTCOMES}
    assert not failures, f"offsets that crashed (None) or returned wrong data (20): {failures}"
    assert seen["StoreCorruptedError"] > 0
    return seen


def test_bit_flips_give_exact_frames_or_a_clean_error(tmp_path: Path) -> None:
    flip_outcomes(tmp_path, 499)


@pytest.mark.slow
def test_bit_flips_every_hundred_bytes(tmp_path: Path) -> None:
    flip_outcomes(tmp_path, 97)


def flip_everywhere(path: Path, needle: bytes, at: int, bit: int = 0) -> None:
    """Flip a bit ``at`` bytes into every copy of ``needle`` (free pages may keep old copies)."""
    data = path.read_bytes()
    start = data.find(needle)
    assert start >= 0
    while start >= 0:
        flip_bit(path, start + at, bit)
        start = data.find(needle, start + 1)


def test_check_names_each_damaged_row_and_block(tmp_path: Path) -> None:
    store = build(tmp_path / "s.lmdb")
    for i in (7, 41):
        flip_everywhere(store, versioned_frame(i).positions.tobytes(), 5)
    flip_everywhere(store, np.arange(N, dtype=float).tobytes(), 8 * 30 + 3, 2)
    with ASEIO(store) as db:
        problems = db.backend.check()
        assert len(problems) == 3, problems
        assert any("row 7 fails its checksum" in p for p in problems)
        assert any("row 41 fails its checksum" in p for p in problems)
        assert any("column 'calc.energy' block 0" in p for p in problems)
        with pytest.raises(StoreCorruptedError, match="row 41 fails its checksum"):
            db[41]
        with pytest.raises(StoreCorruptedError, match="'calc.energy' block 0"):
            db["calc.energy"].to_list()
        assert frame_version(db[40]) == (40, 0)


# -- hostile rows ----------------------------------------------------------------------------
def hostile_row(value: object) -> bytes:
    plain, layout, raw = msgpack.unpackb(encode_row(atoms_to_dict(versioned_frame(1))))
    plain["info.when"] = value
    return msgpack.packb([plain, layout, raw], use_bin_type=True)


HOSTILE = {
    "timestamp": msgpack.Timestamp(1_700_000_000, 5),
    "unknown-extension": msgpack.ExtType(42, b"payload"),
    "object-array": msgpack.ExtType(1, b"\x02|O\x01" + (1).to_bytes(8, "little") + bytes(8)),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_rows_holding_extension_types_we_never_write_are_refused(tmp_path: Path, kind: str) -> None:
    from asebytes_nodes.backends._lmdb_check import SealedC as Sealed

    path = build(tmp_path / "h.lmdb", 3)
    env = lmdb.open(str(path), subdir=False)
    with env.begin(write=True) as txn:  # an attacker computes valid checksums and stamps
        key = b"r" + (1).to_bytes(8, "big")
        txn.put(key, Sealed.wrap(key, hostile_row(HOSTILE[kind])))
        txn.put(b"m:length", Sealed.wrap(b"m:length", struct.pack(">QQ", 3, txn.id())))
    env.close()
    with ASEIO(path, readonly=True) as db:
        with pytest.raises(UnsafeStoreError, match=r"row 1: key\['info.when'\]"):
            db[1]
        assert frame_version(db[2]) == (2, 0)
        assert any("row 1" in p for p in db.backend.check())


# -- older layout ----------------------------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2])
def test_older_layouts_still_open_read_and_write(tmp_path: Path, version: int) -> None:
    fixture = Path(__file__).parent.parent / "data" / f"lmdb_v{version}.lmdb"  # written by that layout's code
    path = tmp_path / "old.lmdb"
    shutil.copy(fixture, path)
    with ASEIO(path) as db:
        assert db.backend.format_info()["version"] == version
        assert [frame_version(a) for a in db] == [(i, 0) for i in range(6)]
        assert db["calc.energy"].to_list() == [float(i) for i in range(6)]
        db.extend([versioned_frame(6)])
        db[0] = versioned_frame(0, 1)
        assert db.backend.check() == []
    with ASEIO(path, readonly=True) as db:
        assert db.backend.format_info()["version"] == version
        assert [frame_version(a) for a in db] == [(0, 1)] + [(i, 0) for i in range(1, 7)]
        assert db.backend.check() == []
    new = ASEIO(tmp_path / "new.lmdb")
    assert new.backend.format_info()["version"] == 3


# -- full disk -------------------------------------------------------------------------------
def read_count(path: str, n: int) -> None:
    """Child: exit 0 if the store holds exactly frames 0..n-1 in version 0."""
    read_everything(path, n)


def test_full_disk_keeps_the_last_commit_and_recovers(tmp_path: Path) -> None:
    with small_disk(8) as disk:
        path = disk / "frames.lmdb"
        db = ASEIO(LMDBBackend(path, map_size=1 << 16))  # tiny map: it grows while filling
        ballast = fill_disk(disk, keep_free=3 << 20)
        committed, errors = 0, []
        for _ in range(200):
            batch = [versioned_frame(i) for i in range(committed, committed + 250)]
            try:
                db.extend(batch)
            except Exception as exc:  # noqa: BLE001 - the test checks what was raised
                errors.append(exc)
                break
            committed += len(batch)
        assert len(errors) == 1 and isinstance(errors[0], DiskFullError), errors
        assert errors[0].errno == errno.ENOSPC and errors[0].filename == str(path)
        assert committed > 0 and len(db) == committed
        assert files_below(path) == {"frames.lmdb", "frames.lmdb-lock"}
        assert run_in_child(read_count, (str(path), committed)) == 0
        ballast.unlink()
        db.extend([versioned_frame(i) for i in range(committed, committed + 250)])
        committed += 250
        db.close()
        with ASEIO(path) as again:
            again.extend([versioned_frame(committed)])
        assert run_in_child(read_count, (str(path), committed + 1)) == 0


def test_full_disk_inside_lmdb_commit_reopens_the_environment(tmp_path: Path) -> None:
    """A write that passes the free-space estimate but fails in LMDB's own commit."""
    with small_disk(16) as disk:
        path = disk / "frames.lmdb"
        db = ASEIO(path)
        db.extend([versioned_frame(i) for i in range(10)])
        # rows of ~2.8 kB go to overflow pages: LMDB uses ~4.2 kB each (8.4 MB), more than
        # the estimate checked before the write (5.6 MB + 1 MiB margin) and than the free space
        big = [{**atoms_to_dict(versioned_frame(10 + k)), "info.pad": "x" * 2000} for k in range(2000)]
        ballast = fill_disk(disk, keep_free=7_500_000)
        with pytest.raises(DiskFullError) as caught:
            db.backend.extend(big)
        assert isinstance(caught.value.__cause__, lmdb.Error)  # raised by LMDB's commit
        assert len(db) == 10 and frame_version(db[9]) == (9, 0)
        assert run_in_child(read_count, (str(path), 10)) == 0
        ballast.unlink()
        db.backend.extend(big)
        assert len(db) == 2010 and frame_version(db[9]) == (9, 0)
        db.close()


# -- concurrency -----------------------------------------------------------------------------
WRITES, BATCH = 12, 5


def writer(path: str, version: int) -> None:
    with ASEIO(path) as db:
        for k in range(WRITES):
            db.extend([versioned_frame(1000 * version + BATCH * k + j, version) for j in range(BATCH)])


def reader(path: str, report: str) -> None:
    """Child: read the whole store again and again while writers extend it."""
    sizes, deadline = [], time.monotonic() + 60
    with ASEIO(path, readonly=True) as db:
        while time.monotonic() < deadline:
            frames = list(db)
            seen = {1: [], 2: []}
            for atoms in frames:
                i, v = frame_version(atoms)
                seen[v].append(i - 1000 * v)
            for got in seen.values():  # each writer's frames: a prefix, in order
                assert got == list(range(len(got))), got
            sizes.append(len(frames))
            if len(frames) == 2 * WRITES * BATCH:
                break
    Path(report).write_text(json.dumps(sizes))


def test_two_writers_and_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "shared.lmdb"
    ASEIO(path).extend([])  # the store exists before the read-only reader opens it
    ctx = _context()
    procs = [ctx.Process(target=reader, args=(str(path), str(tmp_path / "sizes.json")))]
    procs += [ctx.Process(target=writer, args=(str(path), v)) for v in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    assert sizes[-1] == 2 * WRITES * BATCH and sizes == sorted(sizes)
    with ASEIO(path, readonly=True) as db:
        versions = collections.Counter(frame_version(a)[1] for a in db)
        assert versions == {1: WRITES * BATCH, 2: WRITES * BATCH}
        assert db.backend.check() == []


def hold_writer_lock(path: str, seconds: float, ready: str) -> None:
    """Child: hold the store's writer lock the way a writer mid-commit does."""
    from asebytes_nodes.backends._lmdb_lock import WriterLock

    with WriterLock(Path(path), store=path, timeout=5).exclusive():
        Path(ready).touch()
        time.sleep(seconds)


def test_a_writer_waits_for_the_lock_then_gives_up_naming_the_holder(tmp_path: Path) -> None:
    path = build(tmp_path / "locked.lmdb", 3)
    before = path.read_bytes()
    ready = tmp_path / "ready"
    holder = _context().Process(target=hold_writer_lock, args=(str(path), 3.0, str(ready)))
    holder.start()
    try:
        while not ready.exists():
            time.sleep(0.01)
        db = ASEIO(path, lock_timeout=0.5)
        assert frame_version(db[2]) == (2, 0)  # readers never wait
        with pytest.raises(StoreLockedError, match=rf"locked.lmdb.*pid {holder.pid}"):
            db.append(versioned_frame(3))
        assert path.read_bytes() == before and files_below(path) == {"locked.lmdb", "locked.lmdb-lock"}
        db.backend._lock_timeout = 30  # type: ignore[attr-defined]
        db.append(versioned_frame(3))  # waits for the holder, then writes
        assert [frame_version(a) for a in db] == [(i, 0) for i in range(4)]
    finally:
        holder.join(10)


def test_an_old_copy_of_the_row_count_is_refused(tmp_path: Path) -> None:
    """A damaged branch page can lead LMDB to a freed page holding an older, valid-looking
    copy of ``m:length`` (fewer rows); the record's transaction id gives it away."""
    path = tmp_path / "old.lmdb"
    with ASEIO(path) as db:
        db.extend([versioned_frame(i) for i in range(5)])
    env = lmdb.open(str(path), subdir=False)
    with env.begin() as txn:
        old_count = txn.get(b"m:length")
    env.close()
    with ASEIO(path) as db:
        db.extend([versioned_frame(i) for i in range(5, 9)])
    env = lmdb.open(str(path), subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"m:length", old_count)  # checksum valid, content from an earlier commit
    env.close()
    with pytest.raises(StoreCorruptedError, match="row count record was written by transaction"):
        len(ASEIO(path, readonly=True))
