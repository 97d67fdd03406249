"""Messages a new user meets (issue 18 item 8): each says what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path

import ase.io
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, BackendNotFoundError, InvalidDataError, RowIndexError
from asebytes_nodes.cli import main


def test_random_bytes_named_h5_are_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(BackendNotFoundError, match=r"x\.h5: not an HDF5 file") as info:
        ASEIO(path)
    assert "backend=" not in str(info.value)  # no backend reads random bytes


@pytest.mark.parametrize("suffix", [".h5", ".h5md", ".hdf5"])
def test_an_empty_hdf5_file_becomes_a_new_store(tmp_path: Path, suffix: str) -> None:
    """A NamedTemporaryFile-style empty file is a new store: empty on read, written from scratch."""
    path = tmp_path / f"new{suffix}"
    path.touch()
    assert len(ASEIO(path)) == 0
    assert path.stat().st_size == 0  # reading made nothing
    frames = [molecule("H2O"), molecule("CH4")]
    ASEIO(path).extend(frames)
    back = ASEIO(path)
    assert type(back.backend).__name__ == "H5MDBackend"
    assert [a.get_chemical_formula() for a in back[:]] == ["H2O", "CH4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"new{suffix}", f"new{suffix}.lock"]


@pytest.mark.parametrize(
    ("name", "meant"), [("data.zar", ".zarr"), ("data.lmbd", ".lmdb"), ("d.xyzz", ".xyz")]
)
def test_a_misspelt_extension_gets_a_suggestion(tmp_path: Path, name: str, meant: str) -> None:
    with pytest.raises(BackendNotFoundError, match=rf"did you mean '\{meant}'\?"):
        ASEIO(tmp_path / name)
    with pytest.raises(BackendNotFoundError) as info:
        ASEIO(tmp_path / "data.foo")
    assert "did you mean" not in str(info.value)


def test_extend_with_one_atoms_suggests_append() -> None:
    db = ASEIO("memory://")
    with pytest.raises(InvalidDataError, match=r"one Atoms \(H2O\): use append\(atoms\)"):
        db.extend(molecule("H2O"))
    assert len(db) == 0


def test_index_errors_name_an_empty_store_and_count_one_row() -> None:
    db = ASEIO("memory://")
    for index in (0, -1, [0]):
        with pytest.raises(RowIndexError, match=r"the store is empty \(0 rows\)$"):
            db[index]
    db.append(molecule("H2O"))
    with pytest.raises(RowIndexError, match=r"for 1 row \(valid: -1 to 0\)"):
        db[3]


def test_cli_counts_one_frame_and_prints_no_missing_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.xyz"
    ase.io.write(path, molecule("H2O"))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "backend   ase (format extxyz)\n" in out and "None" not in out
    assert "on 1 frame\n" in out
    assert main(["validate", str(path)]) == 0
    assert "ok (1 frame, ase backend)" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
def test_bad_frames_are_named_by_the_row_they_would_replace(tmp_path: Path, suffix: str) -> None:
    import numpy as np

    db = ASEIO(tmp_path / f"s{suffix}")
    db.extend([molecule("H2O")] * 5)
    bad = molecule("H2O")
    bad.arrays["foo"] = np.ones(2)  # 2 rows for 3 atoms
    with pytest.raises(InvalidDataError, match=r"^row 3: 'arrays\.foo' has 2 rows"):
        db[3] = bad
    with pytest.raises(InvalidDataError, match=r"^row 4: 'arrays\.foo'"):
        db[-1] = bad
    with pytest.raises(InvalidDataError, match=r"^row 2: 'arrays\.foo'"):
        db[1:3] = [molecule("H2O"), bad]
    with pytest.raises(InvalidDataError, match=r"^frame 1: 'arrays\.foo'"):
        db.extend([molecule("H2O"), bad])  # a new frame has no row yet: its place in the call
    keyed = molecule("H2O")
    keyed.info[5] = "five"  # str(5) would come back as "5", or collide with an "5" key
    with pytest.raises(InvalidDataError, match=r"^frame 0: atoms\.info key 5 is of type int.*'5'"):
        db.extend([keyed])
    assert len(db) == 5 and all(set(a.arrays) == {"numbers", "positions"} for a in db)


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
@pytest.mark.parametrize("size", [-1, "64MiB", 1.5, True])
def test_cache_bytes_must_be_bytes(tmp_path: Path, suffix: str, size: object) -> None:
    with pytest.raises(InvalidDataError, match=r"s\.\w+: cache_bytes must be a whole number.*64 << 20"):
        ASEIO(tmp_path / f"s{suffix}", cache_bytes=size)
    assert len(ASEIO(tmp_path / f"s{suffix}", cache_bytes=0)) == 0  # 0: no cache


def test_update_takes_constraint_objects_and_mistakes_are_named(tmp_path: Path) -> None:
    """update(constraints=[FixAtoms(...)]) was refused as "got list"; db[2.0] said "an array of dtype
    float64"; db[0:2] = atoms (one Atoms) said "expected ase.Atoms, got Atom"."""
    from ase.constraints import FixAtoms

    db = ASEIO(tmp_path / "s.lmdb")
    db.extend([molecule("H2O"), molecule("CH4")])
    db.update(0, constraints=[FixAtoms([0])])
    assert [c.todict() for c in db[0].constraints] == [FixAtoms([0]).todict()]
    with pytest.raises(InvalidDataError, match="got a list holding str"):
        db.update(1, constraints=["FixAtoms"])
    with pytest.raises(TypeError, match="row indices must be integers, got float 2.0"):
        db[2.0]  # type: ignore[index]
    with pytest.raises(InvalidDataError, match=r"assign a list of Atoms to 2 rows"):
        db[0:2] = molecule("H2")
    assert db[1].get_chemical_formula() == "CH4"
