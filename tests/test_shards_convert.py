"""Conversion into sharded datasets, serial and on Dask's synchronous scheduler (fast, in-process).

Matrix: sources (extxyz by its byte-offset index, LMDB by row ranges, an in-memory backend)
x engines (serial loop, ``scheduler="synchronous"``) x shard backends (LMDB, Zarr); a bad frame
in one partition; a rerun after a failure keeps the finished shards; a SIGKILL mid-conversion.
The cluster tests (worker processes) are in ``test_dask_cluster.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import ase.io
import pytest
from ase.build import molecule
from faultkit import kill_during

from asebytes_nodes import ASEIO, MemoryBackend, PartitionError
from asebytes_nodes.shards import ShardedBackend, convert_sharded
from asebytes_nodes.shards._engines import SerialEngine
from asebytes_nodes.testing.frames import FRAME_KINDS, assert_atoms_equal, make_frames


def all_frames() -> list:
    return [f for kind in sorted(FRAME_KINDS) for f in make_frames(kind)]


def assert_same(source: ASEIO, target: ASEIO) -> None:
    assert len(source) == len(target)
    for i, (expected, got) in enumerate(zip(source, target, strict=True)):
        assert_atoms_equal(expected, got, f"frame {i}")


@pytest.mark.parametrize("scheduler", [None, "synchronous"])
def test_extxyz_to_shards(tmp_path: Path, scheduler: str | None) -> None:
    pytest.importorskip("dask") if scheduler else None
    source = tmp_path / "all.extxyz"
    ase.io.write(source, all_frames(), format="extxyz")
    count = convert_sharded(source, tmp_path / "out", shard_frames=4, scheduler=scheduler)
    db = ASEIO(tmp_path / "out")
    assert count == len(db) and isinstance(db.backend, ShardedBackend)
    assert_same(ASEIO(source), db)
    assert db.backend.natoms.tolist() == [len(a) for a in ASEIO(source)]
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["all.extxyz", "out"]  # no work folder left
    assert db.backend.check() == []


def test_extxyz_rewritten_after_indexing_is_refused(tmp_path: Path) -> None:
    """Tasks read byte ranges of the driver's index: a file rewritten since (same length, other
    values) fails the partition naming the file, rather than sharding the new bytes by old offsets."""
    source = tmp_path / "all.extxyz"
    ase.io.write(source, make_frames("ethanol"), format="extxyz")
    opened = ASEIO(source)
    original = source.read_bytes()
    at = original.rindex(b"1")  # a digit of the last frame's last atom line
    source.write_bytes(original[:at] + b"2" + original[at + 1 :])  # in place: same inode, same length
    with pytest.raises(PartitionError, match="all.extxyz.*rewritten or cut since it was opened"):
        convert_sharded(opened, tmp_path / "out", shard_frames=2)


def test_store_by_row_ranges_and_convert_entry(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    frames = all_frames()
    ASEIO(tmp_path / "src.lmdb").extend(frames)
    import asebytes_nodes

    asebytes_nodes.convert(tmp_path / "src.lmdb", tmp_path / "out", backend="zarr", shard_frames=5)
    db = ASEIO(tmp_path / "out")
    assert db.backend.format_info()["shard_backend"] == "zarr"
    assert [s.rows for s in db.backend.shards] == [5] * (len(frames) // 5) + [len(frames) % 5]
    assert_same(ASEIO(tmp_path / "src.lmdb"), db)
    with pytest.raises(FileExistsError):
        asebytes_nodes.convert(tmp_path / "src.lmdb", tmp_path / "out", shard_frames=5)


def test_bad_frame_names_the_range_and_leaves_no_dataset(tmp_path: Path) -> None:
    source = tmp_path / "bad.extxyz"
    ase.io.write(source, [molecule("H2O")] * 12, format="extxyz")
    lines = source.read_text().splitlines(keepends=True)
    lines[5 * 5 + 2] = "O  not-a-number 0.0 0.0\n"  # an atom line of frame 5
    source.write_text("".join(lines))
    with pytest.raises(PartitionError, match=r"source rows 4-7 \(partition 1\).*frame 5"):
        convert_sharded(source, tmp_path / "out", shard_frames=4)
    assert not (tmp_path / "out").exists()
    work = tmp_path / ".out.partial"
    assert not (work / "asebytes-shards.json").exists()


def test_rerun_keeps_finished_shards(tmp_path: Path) -> None:
    source = MemoryBackend()
    ASEIO(source).extend([molecule("CH4")] * 9)
    source.update_rows([7], [{"info.bad": object()}])  # cannot be encoded: partition 2 fails
    with pytest.raises(PartitionError, match="source rows 6-8"):
        convert_sharded(source, tmp_path / "out", shard_frames=3)
    work = tmp_path / ".out.partial"
    kept = {p.name: p.stat().st_mtime_ns for p in work.glob("shard-*")}
    assert len(kept) == 4 and len(list(work.glob(".convert-*.json"))) == 2  # 2 shards, their atom counts
    source.drop_keys([7], ["info.bad"])
    assert convert_sharded(source, tmp_path / "out", shard_frames=3) == 9
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard-*")}
    assert {k: after[k] for k in kept} == kept  # the finished shards were kept, not rewritten
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []


def test_a_failed_seal_names_the_range_and_the_rerun_completes(tmp_path: Path) -> None:
    source = MemoryBackend()
    ASEIO(source).extend([molecule("CH4")] * 9)
    work = tmp_path / ".out.partial"
    (work / ".convert-00001.json" / "x").mkdir(parents=True)  # partition 1's journal cannot be written
    with pytest.raises(PartitionError, match=r"source rows 3-5 \(partition 1\)"):
        convert_sharded(source, tmp_path / "out", shard_frames=3)
    assert not (tmp_path / "out").exists() and not (work / "asebytes-shards.json").exists()
    assert not list(work.glob(".tmp-*"))  # the later partition was sealed too, nothing half-done
    (work / ".convert-00001.json" / "x").rmdir()
    (work / ".convert-00001.json").rmdir()
    assert convert_sharded(source, tmp_path / "out", shard_frames=3) == 9
    assert len(ASEIO(tmp_path / "out")) == 9


def test_serial_engine_finishes_each_result_before_the_next_task() -> None:
    engine = SerialEngine(show_progress=False)
    events: list[str] = []

    def fn(t: int) -> int:
        events.append(f"fn {t}")
        return t + 1

    def then(x: int) -> int:
        events.append(f"then {x}")
        if x == 4:
            raise ValueError("then failed on 4")
        return 10 * x

    assert engine.map(fn, [0, 1, 2], desc="t", then=then) == [10, 20, 30]
    assert events == ["fn 0", "then 1", "fn 1", "then 2", "fn 2", "then 3"]
    events.clear()
    with pytest.raises(ValueError, match="then failed on 4"):
        engine.map(fn, [0, 3, 5], desc="t", then=then)
    assert events == ["fn 0", "then 1", "fn 3", "then 4"]  # no task runs after the failure


def _convert(source: str, target: str) -> None:
    convert_sharded(source, target, shard_frames=200)


def test_kill_during_convert_then_rerun(tmp_path: Path) -> None:
    source = tmp_path / "many.extxyz"
    ase.io.write(source, [molecule(n) for n in ("H2O", "CH4", "NH3", "C2H6")] * 500, format="extxyz")
    convert_sharded(source, tmp_path / "reference", shard_frames=200)
    if kill_during(_convert, (os.fspath(source), os.fspath(tmp_path / "out")), delay=0.5):
        assert not (tmp_path / "out").exists()  # the dataset appears only once complete
    convert_sharded(source, tmp_path / "out", shard_frames=200, overwrite=True)
    ref, got = (ShardedBackend(tmp_path / name, readonly=True) for name in ("reference", "out"))
    assert [(s.file, s.rows, s.keys) for s in got.shards] == [(s.file, s.rows, s.keys) for s in ref.shards]
    assert (got.natoms == ref.natoms).all()
    assert (
        ASEIO(got)["arrays.positions"].to_ragged().values == ASEIO(ref)["arrays.positions"].to_ragged().values
    ).all()


def test_dask_is_imported_only_when_used(tmp_path: Path) -> None:
    import subprocess
    import sys

    ase.io.write(tmp_path / "few.extxyz", [molecule("H2O")] * 5, format="extxyz")
    code = (
        "import sys; from asebytes_nodes import ASEIO, convert; "
        f"convert({str(tmp_path / 'few.extxyz')!r}, {str(tmp_path / 'out')!r}, shard_frames=2); "
        f"assert len(ASEIO({str(tmp_path / 'out')!r})) == 5; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')], 'dask imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
