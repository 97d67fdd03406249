"""Backends own their edges: side files, removing a store, its size on disk; convert leaves no debris."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, MemoryBackend, MissingExtraError, UnsupportedOperationError, registry
from asebytes_nodes.transfer import convert


class SideBackend(MemoryBackend):
    side_suffixes: ClassVar[tuple[str, ...]] = ("-lock", ".journal")


def test_defaults_remove_and_measure_files_dirs_and_side_files(tmp_path: Path) -> None:
    single = tmp_path / "a.store"
    single.write_bytes(b"x" * 10)
    (tmp_path / "a.store-lock").write_bytes(b"y" * 3)
    assert SideBackend.side_files(single) == [tmp_path / "a.store-lock", tmp_path / "a.store.journal"]
    assert SideBackend.store_size(single) == 13
    assert MemoryBackend.store_size(single) == 10
    SideBackend.remove_store(str(single))
    assert list(tmp_path.iterdir()) == []

    folder = tmp_path / "b.store"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "c").write_bytes(b"z" * 7)
    (folder / "d").write_bytes(b"z" * 5)
    assert SideBackend.store_size(folder) == 12
    SideBackend.remove_store(folder)
    SideBackend.remove_store(folder)  # nothing left: no error
    assert SideBackend.store_size(folder) == 0
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnsupportedOperationError, match="s3://bucket/x"):
        SideBackend.remove_store("s3://bucket/x")


def _file_backends() -> list[Any]:
    found = []
    for entry in registry._BUILTIN:
        try:
            cls = entry.load()
        except MissingExtraError:
            continue
        if entry.extensions and cls.supports_write:
            found.append(pytest.param(entry, id=entry.name))
    return found


@pytest.mark.parametrize("entry", _file_backends())
def test_convert_and_remove_leave_nothing_behind(entry: Any, tmp_path: Path) -> None:
    cls = entry.load()
    dest = tmp_path / f"out{entry.extensions[0]}"
    source = ASEIO("memory://")
    source.extend([molecule("H2O"), molecule("H2O")])  # what every writable format holds
    assert convert(source, dest, destination_options={"backend": entry.name}) == 2
    with ASEIO(dest, backend=entry.name) as db:
        db.extend([molecule("H2O")])
    on_disk = {p.name for p in tmp_path.iterdir()}
    assert on_disk <= {dest.name, *(s.name for s in cls.side_files(dest))}, on_disk
    assert cls.store_size(dest) >= sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file())
    cls.remove_store(dest)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
def test_views_keep_the_store_they_came_from(tmp_path: Path, suffix: str) -> None:
    """A view outlives the ASEIO expression it came from: ``from_rev(...).frames["calc.energy"]``
    closed a copied output (and deleted its folder) when the ASEIO was collected, under the view."""
    import gc
    import weakref

    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for i in range(4):
        atoms = molecule("H2O")
        atoms.calc = SinglePointCalculator(atoms, energy=float(i))
        frames.append(atoms)
    ASEIO(tmp_path / f"s{suffix}").extend(frames)

    def opened() -> ASEIO:  # as open_output hands out another revision's copy
        db = ASEIO(tmp_path / f"s{suffix}", readonly=True)
        weakref.finalize(db, db.backend.close)
        return db

    column, rows, both = opened()["calc.energy"], opened()[1:3], opened()[::2][["calc.energy", "pbc"]]
    gc.collect()
    assert column.to_list() == [0.0, 1.0, 2.0, 3.0] and column[1:][0] == 1.0
    assert [a.get_potential_energy() for a in rows] == [1.0, 2.0]
    assert both.to_numpy()["calc.energy"].tolist() == [0.0, 2.0]


def test_convert_refuses_what_it_cannot_write_naming_the_destination(tmp_path: Path) -> None:
    from asebytes_nodes import BackendNotFoundError, InvalidDataError

    src = tmp_path / "s.lmdb"
    ASEIO(src).extend([molecule("H2O")] * 3)
    with pytest.raises(UnsupportedOperationError, match=r"out\.extxyz: the ase backend reads .* not write"):
        convert(src, tmp_path / "out.extxyz")
    with pytest.raises(BackendNotFoundError, match=r"'[^']*/out': no backend for the extension '\(none\)'"):
        convert(src, tmp_path / "out")
    for size in (0, -5, 2.5, True):
        with pytest.raises(InvalidDataError, match="chunk_size must be a whole number of frames"):
            convert(src, tmp_path / "c.lmdb", chunk_size=size)
    assert convert(src, tmp_path / "c.lmdb", chunk_size=np.int64(2)) == 3
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name or "out" in p.name]


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5", ".h5md"])
def test_a_new_store_makes_its_folders_on_first_write(tmp_path: Path, suffix: str) -> None:
    """Zarr made missing folders, LMDB called the store corrupted and H5MD raised about its lock file."""
    target = tmp_path / "new" / "deeper" / f"a{suffix}"
    db = ASEIO(target)
    assert not (tmp_path / "new").exists()  # opening makes nothing
    db.append(molecule("H2O"))
    assert ASEIO(target, readonly=True)[0].get_chemical_formula() == "H2O"
    out = tmp_path / "other" / f"b{suffix}"
    assert convert(target, out, show_progress=False) == 1
    assert len(ASEIO(out, readonly=True)) == 1


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5md"])
def test_an_empty_write_makes_an_empty_store(tmp_path: Path, suffix: str) -> None:
    """H5MD made no file for extend([]), so converting an empty selection over an existing store
    deleted the old store and then failed on the missing temporary file."""
    empty = tmp_path / f"e{suffix}"
    ASEIO(empty).extend([])
    assert len(ASEIO(empty, readonly=True)) == 0
    ASEIO(empty).append(molecule("H2O"))
    assert ASEIO(empty, readonly=True)[0].get_chemical_formula() == "H2O"
    out = tmp_path / f"out{suffix}"
    assert convert(empty, out, show_progress=False) == 1
    assert convert(empty, out, indices=[], overwrite=True, show_progress=False) == 0
    assert len(ASEIO(out, readonly=True)) == 0


@pytest.mark.parametrize(("suffix", "options"), [(".zarr", {"chunk_frames": 2}), (".zarr", {}), (".lmdb", {}),
                                                 (".h5md", {})])  # fmt: skip
def test_keys_first_written_past_the_first_chunk(
    tmp_path: Path, suffix: str, options: dict[str, Any]
) -> None:
    """Zarr wrote a column that first appears in a later append only from that row on: the chunks
    before it were missing and every read of the column called the store damaged."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from asebytes_nodes.testing.frames import assert_atoms_equal

    plain = [bulk("Cu", cubic=True) for _ in range(250)]
    late = bulk("Cu", cubic=True)
    late.new_array("q", np.arange(4.0))
    late.info.update(label="late", value=2.5, vector=np.ones(3))
    late.calc = SinglePointCalculator(late, energy=-1.0, forces=np.ones((4, 3)), stress=np.arange(6.0))
    path = tmp_path / f"s{suffix}"
    db = ASEIO(path, **options)
    db.extend(plain)
    db.append(late)
    again = ASEIO(path, readonly=True)
    assert again.backend.check() == []
    for expected, got in zip([*plain, late], again, strict=True):
        assert_atoms_equal(expected, got)
    assert again["calc.energy"].to_list() == [None] * 250 + [-1.0]
    assert again["info.label"].to_list()[-2:] == [None, "late"]


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5md", "memory"])
def test_a_column_of_0d_arrays_reads_as_its_rows_do(tmp_path: Path, suffix: str) -> None:
    """Zarr's column views gave numpy scalars where rows (and every other backend) give 0-d arrays."""
    db = ASEIO("memory://" if suffix == "memory" else tmp_path / f"s{suffix}")
    frames = [molecule("H2") for _ in range(3)]
    for k, atoms in enumerate(frames):
        atoms.info["v"] = np.array(float(k))
    db.extend(frames)
    column = db["info.v"]
    chunked = [v for chunk in column.chunked(2) for v in chunk]
    for got in (column.to_list(), [column[k] for k in range(3)], chunked):
        assert [type(v) for v in got] == [np.ndarray] * 3 and [v.shape for v in got] == [()] * 3
        assert [float(v) for v in got] == [0.0, 1.0, 2.0]
    assert type(db[1].info["v"]) is np.ndarray


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5md", "memory"])
def test_dropping_a_key_no_row_carries_names_it(tmp_path: Path, suffix: str) -> None:
    """drop("info.smile") (a typo) and drop("energy") did nothing and said nothing."""
    from asebytes_nodes import UnknownKeyError

    db = ASEIO("memory://" if suffix == "memory" else tmp_path / f"s{suffix}")
    frames = [molecule("CH4"), molecule("H2O")]
    frames[0].info["smiles"] = "C"
    db.extend(frames)
    for key in ("info.smile", "energy"):
        with pytest.raises(UnknownKeyError, match=f"no row carries the key '{key}'.*info.smiles"):
            db.drop(key)
    assert db["info.smiles"].to_list() == ["C", None]
    db.drop("info.smiles", [1])  # carried by another row: nothing to drop here, and no error
    db.drop("info.smiles")
    assert "info.smiles" not in db.backend.keys()


def test_a_replaced_store_is_swapped_whole(tmp_path: Path) -> None:
    """convert(overwrite=True) deleted the old store and then moved the new one in: a kill during
    the delete left half of the old store (10 of 30 trials on a 14,000-file Zarr store). The old
    store is now swapped out whole, then deleted; a file store is replaced atomically."""
    from asebytes_nodes.backends._safety import put_in_place

    old, new = tmp_path / "old", tmp_path / "new"
    for folder, name in ((old, "a"), (new, "b")):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / name).write_text(name)
    aside = put_in_place(new, old)
    assert (old / "sub" / "b").read_text() == "b" and aside is not None
    assert (aside / "sub" / "a").read_text() == "a"  # the old store, whole, for the caller to delete
    source = tmp_path / "src.lmdb"
    ASEIO(source).extend([molecule("H2O")] * 3)
    for target in (tmp_path / "out.zarr", tmp_path / "out.lmdb"):
        ASEIO(target).extend([molecule("CH4")] * 5)
        assert convert(source, target, overwrite=True, show_progress=False) == 3
        assert [a.get_chemical_formula() for a in ASEIO(target, readonly=True)] == ["H2O"] * 3
    lmdb_to_zarr = tmp_path / "x.lmdb"
    ASEIO(lmdb_to_zarr).extend([molecule("CH4")])
    convert(source, lmdb_to_zarr, overwrite=True, backend="zarr", show_progress=False)
    assert len(ASEIO(lmdb_to_zarr, readonly=True, backend="zarr")) == 3
    assert not (tmp_path / "x.lmdb-lock").exists()  # the old backend's side file goes with it
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_killed_conversions_copy_is_removed_by_the_next(tmp_path: Path) -> None:
    """A killed convert left its hidden full-size copy (.out.partial-PID.lmdb) for good."""
    import subprocess

    source = tmp_path / "src.lmdb"
    ASEIO(source).extend([molecule("H2O")] * 2)
    dead = subprocess.Popen(["true"])  # a process that has ended: its pid names no running one
    dead.wait()
    leftover = tmp_path / f".out.partial-{dead.pid}.lmdb"
    ASEIO(leftover).extend([molecule("CH4")])
    idle = time.time() - 1000  # untouched for a while: a pid alone is not proof (PID namespaces)
    os.utime(leftover, (idle, idle))
    alive = subprocess.Popen(["sleep", "60"])  # another conversion still running: its copy stays
    try:
        running = tmp_path / f".out.partial-{alive.pid}.lmdb"
        ASEIO(running).extend([molecule("NH3")])
        assert convert(source, tmp_path / "out.lmdb", show_progress=False) == 2
        assert not leftover.exists() and not (tmp_path / f"{leftover.name}-lock").exists()
        assert len(ASEIO(running, readonly=True)) == 1
    finally:
        alive.kill()
        alive.wait()
