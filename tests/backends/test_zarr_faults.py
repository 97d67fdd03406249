"""The Zarr backend under faults: concurrent writers and readers, object-store races, full disks,
damaged and hostile stores, and version-1 stores.

Test matrix (real processes, real files, a real tmpfs and a local moto S3 server; no mocks):

* concurrency: two writer processes extending one local store at once (both batches land,
  every frame exact); reader processes reading every frame in a loop while a writer extends
  and replaces frames (every frame read is exact, no error); a held lock gives
  ``StoreLockedError`` naming the store and the holder; reading never creates or changes a file.
* object stores: a commit by another handle between a write's start and its commit gives
  ``ConcurrentCommitError`` and commits nothing; the next write goes through.
* full disk (8 MiB tmpfs): ``extend`` and slice assignment until the disk overflows give one
  ``DiskFullError`` naming the store, no temporary or unreferenced files stay, the store is at its
  last commit, and after space is freed the same and a new handle extend again.
* damage: a flipped bit in a chunk is a ``StoreCorruptedError`` naming the column, and ``check()``
  names each damaged chunk; bit flips and truncations at many offsets of every file of a store,
  read in child processes, give exact frames or a package error, never wrong data or a crash.
* hostile records (``..``, absolute paths, separators in array names; symbolic links out of the
  store) are refused with ``UnsafeStoreError`` before anything is read, written or deleted.
* a version-1 store (``tests/data/zarr_v1.zarr``, written by the version-1 code) opens, reads
  exactly, and takes every write operation.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from faultkit import (  # noqa: E402
    copy_store,
    files_below,
    flip_bit,
    frame_version,
    run_in_child,
    small_disk,
    truncate,
    versioned_frame,
)

from asebytes_nodes import (  # noqa: E402
    ASEIO,
    ASEBytesError,
    ConcurrentCommitError,
    DiskFullError,
    StoreCorruptedError,
    StoreLockedError,
    UnsafeStoreError,
    ZarrBackend,
)
from asebytes_nodes.backends._safety import StoreLock  # noqa: E402
from asebytes_nodes.backends._zarr import LOCK_NAME  # noqa: E402
from asebytes_nodes.backends._zarr_txn import seal  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402

V1_STORE = Path(__file__).parent.parent / "data" / "zarr_v1.zarr"


def _store(path: Path, n: int, v: int = 0, **options: Any) -> Path:
    with ASEIO(path, **options) as db:
        db.extend([versioned_frame(i, v) for i in range(n)])
    return path


def _record(path: Path) -> dict[str, Any]:
    return json.loads((path / "zarr.json").read_bytes())["attributes"]["asebytes_nodes"]


def _write_record(path: Path, meta: dict[str, Any], sealed: bool = True) -> None:
    document = json.loads((path / "zarr.json").read_bytes())
    document["attributes"]["asebytes_nodes"] = seal(meta) if sealed else meta
    (path / "zarr.json").write_text(json.dumps(document))


def _contents(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in sorted(files_below(path))}


# -- concurrency: writers ------------------------------------------------------------------------
def _extend_batches(path: str, first: int, batches: int, size: int) -> None:
    with ASEIO(path) as db:
        for b in range(batches):
            start = first + b * size
            db.extend([versioned_frame(i, 0) for i in range(start, start + size)])


@pytest.mark.parametrize("existing", [True, False])
def test_two_writer_processes_take_turns(tmp_path: Path, existing: bool) -> None:
    """Both batches land, whether the store exists or both processes create it at once."""
    import multiprocessing as mp

    path = _store(tmp_path / "w.zarr", 10) if existing else tmp_path / "w.zarr"
    ctx = mp.get_context("forkserver")
    procs = [ctx.Process(target=_extend_batches, args=(str(path), first, 8, 40)) for first in (1000, 2000)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with ASEIO(path, readonly=True) as db:
        seen = sorted(frame_version(atoms)[0] for atoms in db)
        assert db.backend.check() == []
    assert seen == [*range(10 if existing else 0), *range(1000, 1320), *range(2000, 2320)]


def test_a_held_lock_times_out_naming_the_store_and_holder(tmp_path: Path) -> None:
    path = _store(tmp_path / "l.zarr", 3)
    other = StoreLock(path / LOCK_NAME, store=str(path))
    db = ASEIO(path, lock_timeout=0.2)
    with other.exclusive(), pytest.raises(StoreLockedError) as caught:
        db.extend([versioned_frame(3)])
    assert str(path) in str(caught.value) and f"pid {os.getpid()}" in str(caught.value)
    db.extend([versioned_frame(3)])  # released: goes through
    assert len(db) == 4
    assert (path / LOCK_NAME).read_bytes() == b""  # empty between writes


def test_reading_creates_and_changes_no_file(tmp_path: Path) -> None:
    path = _store(tmp_path / "r.zarr", 20)
    (path / LOCK_NAME).unlink()
    before = _contents(path)
    with ASEIO(path, readonly=True) as db:
        db[:].to_list()
        assert db.backend.check() == []
    with ASEIO(path) as db:  # a writable handle that only reads
        db[3]
        db["calc.energy"].to_numpy()
    assert _contents(path) == before


# -- concurrency: readers during writes ----------------------------------------------------------
def _writer(path: str, rounds: int) -> None:
    with ASEIO(path) as db:
        for r in range(rounds):
            n = len(db)
            db.extend([versioned_frame(i, 0) for i in range(n, n + 30)])
            db[r] = versioned_frame(r, 1)  # a new atom count: per-atom columns rewritten
            db.update(r + 1, calc={"energy": float(r + 1)}, info={"version": 0})


def _reader(path: str, seconds: float, out: str) -> None:
    """Read every frame again and again; record how many reads were checked."""
    checked = 0
    deadline = time.monotonic() + seconds
    with ASEIO(path, readonly=True) as db:
        while time.monotonic() < deadline:
            for atoms in db[:].to_list():
                i, v = int(atoms.info["frame"]), int(atoms.info["version"])
                if v == 0 and atoms.calc.results["energy"] == float(i):  # an updated energy
                    expected = versioned_frame(i, 0)
                    assert np.array_equal(atoms.positions, expected.positions), f"frame {i} torn"
                else:
                    frame_version(atoms)
                checked += 1
    Path(out).write_text(str(checked))


def test_readers_during_writes_read_exact_frames(tmp_path: Path) -> None:
    import multiprocessing as mp

    path = _store(tmp_path / "c.zarr", 40, chunk_frames=8, shard_frames=16)
    ctx = mp.get_context("forkserver")
    readers = [
        ctx.Process(target=_reader, args=(str(path), 4.0, str(tmp_path / f"r{k}.txt"))) for k in range(2)
    ]
    writer = ctx.Process(target=_writer, args=(str(path), 10))
    for proc in [*readers, writer]:
        proc.start()
    for proc in [writer, *readers]:
        proc.join(120)
    assert writer.exitcode == 0
    assert [proc.exitcode for proc in readers] == [0, 0], "a reader failed: see its traceback above"
    assert all(int((tmp_path / f"r{k}.txt").read_text()) > 0 for k in range(2))
    with ASEIO(path, readonly=True) as db:
        assert len(db) == 40 + 10 * 30 and db.backend.check() == []


# -- object stores -------------------------------------------------------------------------------
def test_a_concurrent_commit_on_an_object_store_is_detected(s3: tuple[str, dict[str, Any]]) -> None:
    prefix, options = s3
    url = f"{prefix}/race.zarr"
    with ASEIO(url, storage_options=options) as db:
        db.extend([versioned_frame(i) for i in range(4)])
    a = ZarrBackend(url, storage_options=options)
    b = ASEIO(url, storage_options={**options, "skip_instance_cache": True})
    rows = ASEIO("memory://")
    rows.extend([versioned_frame(7, 1)])
    with a._writing():  # a's write starts, at the current generation
        b.update(1, calc={"energy": -5.0})  # another writer commits meanwhile
        with pytest.raises(ConcurrentCommitError, match="another writer committed"):
            a._rewrite(np.array([2]), [rows.backend.read_row(0)], [()])
    fresh = ASEIO(url, storage_options={**options, "skip_instance_cache": True}, readonly=True)
    assert fresh["calc.energy"].to_list()[1:3] == [-5.0, 2.0]  # b's commit kept, a's not made
    ASEIO(a).update(2, calc={"energy": -6.0})  # the next write starts from the new record
    assert fresh["calc.energy"].to_list()[1:3] == [-5.0, -6.0]


# -- full disk -----------------------------------------------------------------------------------
def _bulky(i: int, v: int = 0) -> Any:
    atoms = versioned_frame(i, v)
    rng = np.random.default_rng(i + 7 * v)
    atoms.arrays["noise"] = rng.random((len(atoms), 64))  # incompressible: fills the disk fast
    return atoms


def _unreferenced(path: Path) -> list[str]:
    meta = _record(path)
    used = {meta.get("n_atoms", "n_atoms"), *(spec["id"] for spec in meta["columns"].values())}
    return sorted(e.name for e in path.iterdir() if e.is_dir() and e.name not in used)


def test_a_full_disk_is_one_error_and_the_store_stays_committed() -> None:
    with small_disk(8) as disk:
        path = disk / "full.zarr"
        ballast = disk / "ballast.bin"
        ballast.write_bytes(b"\0" * (2 << 20))
        db = ASEIO(path)
        committed = 0
        with pytest.raises(DiskFullError) as caught:
            for _ in range(100):
                db.extend([_bulky(i) for i in range(committed, committed + 400)])
                committed += 400
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
        assert committed > 0
        assert not [p for p in files_below(path) if p.endswith(".partial")]
        assert _unreferenced(path) == []
        with pytest.raises(DiskFullError):  # a replacement that cannot fit either
            db[0 : committed // 2] = [_bulky(i, 1) for i in range(committed // 2)]
        assert not [p for p in files_below(path) if p.endswith(".partial")] and _unreferenced(path) == []
        with ASEIO(path, readonly=True) as check:
            assert [frame_version(a) for a in check] == [(i, 0) for i in range(committed)]
        ballast.unlink()
        db.extend([_bulky(i) for i in range(committed, committed + 10)])  # the same handle
        with ASEIO(path) as again:  # and a new one
            again.extend([_bulky(i) for i in range(committed + 10, committed + 20)])
            assert [frame_version(a)[0] for a in again] == list(range(committed + 20))
            assert again.backend.check() == []


# -- damage --------------------------------------------------------------------------------------
def _chunk_file(path: Path, key: str) -> Path:
    column = _record(path)["columns"][key]["id"]
    return sorted((path / column / "values" / "c").rglob("*"), key=lambda p: (p.is_file(), str(p)))[-1]


def test_a_flipped_bit_in_a_chunk_names_the_column_and_check_names_each_chunk(tmp_path: Path) -> None:
    path = _store(tmp_path / "d.zarr", 30)
    flip_bit(_chunk_file(path, "calc.forces"), 20)
    db = ASEIO(path, readonly=True)
    with pytest.raises(StoreCorruptedError, match="column 'calc.forces'"):
        db[3]
    flip_bit(_chunk_file(path, "calc.energy"), 20)
    with pytest.raises(StoreCorruptedError, match="column 'calc.energy'"):
        ASEIO(path, readonly=True)["calc.energy"].to_numpy()  # a new handle: nothing cached
    problems = ASEIO(path, readonly=True).backend.check()
    ids = [_record(path)["columns"][k]["id"] for k in ("calc.forces", "calc.energy")]
    assert len(problems) == 2
    for cid in ids:
        assert any(f"{path}/{cid}/values: shard 0 chunk 0: " in p and "checksum" in p for p in problems), cid


def _read_damaged(copies: list[str], out: str) -> None:
    """Child process: read each damaged copy; record 'exact' or the package error's class."""
    expected = [versioned_frame(i, i % 2) for i in range(24)]
    results = []
    for copy in copies:
        try:
            with ASEIO(copy, readonly=True) as db:
                got = db[:].to_list()
                energies = db["calc.energy"].to_numpy()
            assert len(got) == len(expected), f"{copy}: {len(got)} frames"
            for want, have in zip(expected, got, strict=True):
                assert_atoms_equal(want, have, copy)
            assert np.array_equal(energies, [a.calc.results["energy"] for a in expected])
            results.append("exact")
        except ASEBytesError as exc:
            results.append(type(exc).__name__)
    Path(out).write_text("\n".join(results))


def _damage_trials(tmp_path: Path, damage: str, per_file: int) -> None:
    source = tmp_path / "source.zarr"
    with ASEIO(source, chunk_frames=4, shard_frames=8) as db:
        db.extend([versioned_frame(i, i % 2) for i in range(24)])
        db[5] = versioned_frame(5, 1)  # a replaced frame: copy-on-write arrays and a retired list
    rng = random.Random(damage)
    copies = []
    for name in sorted(files_below(source)):
        size = (source / name).stat().st_size
        for offset in sorted({rng.randrange(size) for _ in range(per_file)} if size else ()):
            copy = copy_store(source, tmp_path / f"{len(copies)}.zarr")
            if damage == "flip":
                flip_bit(copy / name, offset, rng.randrange(8))
            else:
                truncate(copy / name, offset)
            copies.append(str(copy))
    out = tmp_path / "results.txt"
    assert run_in_child(_read_damaged, (copies, str(out))) == 0, "the reading process crashed or failed"
    results = out.read_text().split("\n")
    assert len(results) == len(copies) >= 40
    assert set(results) <= {"exact", "StoreCorruptedError", "UnsafeStoreError", "FormatVersionError"}
    assert "StoreCorruptedError" in results  # damage is seen (damage to unused bytes is harmless)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damage_anywhere_gives_exact_frames_or_a_package_error(tmp_path: Path, damage: str) -> None:
    _damage_trials(tmp_path, damage, per_file=1)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damage_at_many_offsets_gives_exact_frames_or_a_package_error(tmp_path: Path, damage: str) -> None:
    _damage_trials(tmp_path, damage, per_file=8)


# -- hostile records -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("id", "../victim"),
        ("id", "/tmp/victim"),
        ("id", "c1/../../victim"),
        ("n_atoms", "../victim"),
        ("retired", ["../victim"]),
    ],
)
@pytest.mark.parametrize("sealed", [True, False])
def test_a_record_naming_paths_outside_is_refused(
    tmp_path: Path, field: str, value: Any, sealed: bool
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    path = _store(tmp_path / "store" / "h.zarr", 5)
    meta = _record(path)
    if field == "id":
        meta["columns"]["calc.energy"]["id"] = value
    else:
        meta[field] = value
    if not sealed:  # a version-1 record: no checksum at all
        meta = {**meta, "version": 1}
    _write_record(path, {k: v for k, v in meta.items() if k != "crc"}, sealed)
    for readonly in (True, False):
        with pytest.raises(UnsafeStoreError, match="refused before reading or writing"):
            ASEIO(path, readonly=readonly)
    assert (victim / "keep.txt").read_text() == "mine"


def test_links_out_of_the_store_are_refused_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    path = _store(tmp_path / "k.zarr", 5)
    column = _record(path)["columns"]["calc.energy"]["id"]
    shutil.move(path / column, outside)
    os.symlink(outside, path / column)
    with pytest.raises(UnsafeStoreError, match="leads outside the store"):
        ASEIO(path)
    os.unlink(path / column)
    shutil.copytree(outside, path / column)
    os.symlink(outside, path / "c99")  # an unused name: collected as garbage, the link only
    with ASEIO(path) as db:
        db.extend([versioned_frame(5)])
    assert not (path / "c99").exists() and (outside / "zarr.json").exists()


# -- version 1 -----------------------------------------------------------------------------------
def test_a_version_1_store_opens_and_takes_every_write(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    frames[1].info["note"] = "v1"
    with ASEIO(V1_STORE, readonly=True) as db:
        assert db.backend.format_info()["version"] == 1
        for j, (want, got) in enumerate(zip(frames, db, strict=True)):
            assert_atoms_equal(want, got, f"v1 frame {j}")
    path = copy_store(V1_STORE, tmp_path / "v1.zarr")
    extra = make_frames("ethanol")
    with ASEIO(path) as db:
        db.extend(extra[:2])
        db[0] = extra[2]
        db[2:4] = extra[:2]
        db.update(4, info={"note": "now"})
        db.drop("info.note", [1])
        assert db.backend.format_info()["version"] == 2 and db.backend.check() == []
    frames[1].info.pop("note")
    frames[4].info["note"] = "now"
    expected = [extra[2], frames[1], *extra[:2], frames[4], *extra[:2]]
    with ASEIO(path, readonly=True) as db:
        for j, (want, got) in enumerate(zip(expected, db, strict=True)):
            assert_atoms_equal(want, got, f"frame {j}")
