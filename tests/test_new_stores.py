"""Opening a path where no store exists creates nothing until the first write (issue 18 item 2).

Matrix: every registered writable backend that keeps its store at a path (one case per
extension, plus folder-only backends such as shards), each opened by a typo-like path:

* writable open: no file, folder or side file (LMDB's ``-lock``, HDF5's ``.lock``/``-journal``)
  appears; ``len`` is 0, reads see an empty store, pickling reopens it, and still nothing is on disk;
* ``readonly=True``: :class:`StoreNotFoundError`, nothing on disk;
* the first write makes the store; a handle opened before it appends after those rows;
* an empty write (converting an empty selection) makes an empty store;
* groups (backends with ``supports_groups``): opening a group of a missing store makes nothing;
* HDF5: reading a file makes no ``.lock``, nor does a write refused on another program's file.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest
from ase.build import molecule
from faultkit import fill_disk, small_disk

from asebytes_nodes import ASEIO, DiskFullError, StoreNotFoundError, UnsupportedOperationError
from asebytes_nodes.errors import MissingExtraError
from asebytes_nodes.registry import BackendEntry, list_backends
from asebytes_nodes.transfer import convert


def _cases() -> list[object]:
    cases = []
    for entry in list_backends().values():
        names = entry.extensions or ((".store",) if entry.fallback else ())
        for extension in names:
            cases.append(pytest.param(entry, extension, id=f"{entry.name}-{extension}"))
    return cases


def _empty_write_cases() -> list[object]:
    # MDTraj makes its file only with rows (its file needs a topology, which comes with a frame)
    mdtraj = pytest.mark.xfail(reason="an empty MDTraj write makes no file yet", strict=True)
    return [
        pytest.param(*case.values, id=case.id, marks=mdtraj if case.values[0].name == "mdtraj" else ())
        for case in _cases()
    ]


def _writable(entry: BackendEntry) -> type:
    try:
        cls = entry.load()
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    if not cls.supports_write:
        pytest.skip(f"{entry.name} is read-only")
    return cls


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("entry", "extension"), _cases())
def test_missing_store_made_by_first_write(entry: BackendEntry, extension: str, tmp_path: Path) -> None:
    _writable(entry)
    path = tmp_path / f"typo{extension}"
    db = ASEIO(path, backend=entry.name)
    later = ASEIO(path, backend=entry.name)  # opened before the store exists
    assert len(db) == 0 and db.columns == [] and list(db) == [] and len(db[:]) == 0
    with pytest.raises(IndexError):
        db[0]
    assert len(pickle.loads(pickle.dumps(db))) == 0
    with pytest.raises(StoreNotFoundError):
        ASEIO(path, backend=entry.name, readonly=True)
    assert _listing(tmp_path) == [], "opening or reading a missing store left files behind"

    db.extend([molecule("H2O"), molecule("H2O")])
    assert path.exists() and len(db) == 2
    later.extend([molecule("H2O")])  # a handle opened before the store existed appends to it
    with ASEIO(path, backend=entry.name, readonly=True) as again:
        assert [a.get_chemical_formula() for a in again] == ["H2O"] * 3
    db.close()
    later.close()


@pytest.mark.parametrize(("entry", "extension"), _empty_write_cases())
def test_an_empty_write_makes_an_empty_store(entry: BackendEntry, extension: str, tmp_path: Path) -> None:
    """``extend([])`` is a write: converting an empty selection gives an empty store."""
    _writable(entry)
    out = tmp_path / f"empty{extension}"
    assert convert(ASEIO("memory://"), out, destination_options={"backend": entry.name}) == 0
    ASEIO(tmp_path / f"also{extension}", backend=entry.name).extend([])
    for path in (out, tmp_path / f"also{extension}"):
        with ASEIO(path, backend=entry.name, readonly=True) as db:
            assert len(db) == 0


@pytest.mark.parametrize(("entry", "extension"), _cases())
def test_group_of_missing_store_makes_nothing(entry: BackendEntry, extension: str, tmp_path: Path) -> None:
    if not _writable(entry).supports_groups:
        pytest.skip(f"{entry.name} has no groups")
    path = tmp_path / f"typo{extension}"
    db = ASEIO(path, backend=entry.name, group="train")
    assert len(db) == 0
    assert _listing(tmp_path) == []
    db.close()


def test_the_listing_sees_side_files(tmp_path: Path) -> None:
    """The check above would catch a lock file beside the store (not only the store itself)."""
    (tmp_path / "typo.lmdb-lock").touch()
    assert _listing(tmp_path) == ["typo.lmdb-lock"]
    os.remove(tmp_path / "typo.lmdb-lock")


REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.mark.parametrize("backend", ["h5md", "mdtraj"])
def test_reading_an_hdf5_file_makes_no_lock_file(backend: str, tmp_path: Path) -> None:
    """HDF5 readers take ``<file>.lock`` shared only if a writer made it: reading a file without
    one (another program's, or ours copied without its side files) leaves none behind."""
    path = tmp_path / "frames.h5"
    ASEIO(path, backend=backend).extend([molecule("H2O")] * 3)
    for side in ("frames.h5.lock", "frames.h5-journal"):
        (tmp_path / side).unlink(missing_ok=True)
    for readonly in (True, False):
        with ASEIO(path, backend=backend, readonly=readonly) as db:
            assert len(db) == 3 and db[2].get_chemical_formula() == "H2O" and db.columns
            assert db.backend.check() == []
    assert _listing(tmp_path) == ["frames.h5"]


def test_a_refused_write_to_another_programs_file_makes_no_lock_file(tmp_path: Path) -> None:
    source = REALDATA / "h5md" / "mdanalysis_test.h5md"
    if not source.exists():
        pytest.skip(f"{source} is absent (real third-party files live in ../shared/realdata/)")
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes())
    db = ASEIO(path)
    with pytest.raises(UnsupportedOperationError, match="written by another program"):
        db.extend([db[0]])
    assert _listing(tmp_path) == [source.name]


@pytest.mark.parametrize("spare", [0, 3000])
@pytest.mark.parametrize(("entry", "extension"), _cases())
def test_a_new_store_on_a_full_disk_is_one_error(entry: BackendEntry, extension: str, spare: int) -> None:
    """The first write of a new store on a full disk raises DiskFullError naming the store (not a
    raw OSError from whichever file the store makes first); once space is freed it works."""
    _writable(entry)
    with small_disk(2) as disk:
        path = disk / f"new{extension}"
        ballast = fill_disk(disk, keep_free=spare)
        frames = [molecule("CH3CH2OH") for _ in range(2000)]
        with pytest.raises(DiskFullError) as caught:
            ASEIO(path, backend=entry.name).extend(frames)
        assert caught.value.errno == errno.ENOSPC and str(path) in str(caught.value)
        ballast.unlink()
        with ASEIO(path, backend=entry.name) as db:
            assert len(db) == 0
            db.extend(frames[:3])
        with ASEIO(path, backend=entry.name, readonly=True) as db:
            assert [a.get_chemical_formula() for a in db] == ["C2H6O"] * 3
