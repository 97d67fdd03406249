"""The read-only contract on ASE files (extxyz, traj), plus their own promises.

Test matrix: the contract on ``.xyz`` and ``.traj`` files written by ``ase.io.write``;
extxyz dialects (VEC cells, CRLF, no final newline (read, with a warning), blank line, plain
xyz) and a
real libAtoms file against ``ase.io.read``; the offset cache (reuse, change, append,
unwritable folders); laziness of ``.traj``; damaged files; the ``ase.io`` fallback.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.trajectory import TrajectoryReader

from asebytes_nodes import ASEIO, BackendNotFoundError, ReadOnlyError, StoreCorruptedError, StoreNotFoundError
from asebytes_nodes.backends import _xyzindex
from asebytes_nodes.backends._asefile import ASEFileBackend, sniff
from asebytes_nodes.rows import atoms_to_dict
from asebytes_nodes.testing.contract import ReadableContract, StoreFactory
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "extxyz"


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default index cache folder, inside the test's own folder."""
    monkeypatch.setenv(_xyzindex.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def ase_frames(path: Path) -> list[Atoms]:
    """``ase.io.read(path, ":")``, with string columns as unicode arrays (as the backend returns them)."""
    frames = ase.io.read(path, ":")
    for atoms in frames:
        for name, value in atoms.arrays.items():
            if value.dtype == object:
                atoms.arrays[name] = value.astype(str)
    return frames


def assert_same_as_ase(path: Path, db: ASEIO) -> None:
    expected = ase_frames(path)
    assert len(db) == len(expected)
    for i, (a, b) in enumerate(zip(expected, db, strict=True)):
        assert_atoms_equal(a, b, f"{path.name}[{i}]")


class ASEFileStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, frames: list[Atoms]) -> None:
        ase.io.write(self.path, frames)

    def open(self, readonly: bool = False) -> ASEFileBackend:
        return ASEFileBackend(self.path, readonly=readonly)


class ASEContract(ReadableContract):
    """The contract, compared with what ``ase.io.read`` reads from the same file.

    extxyz keeps 8 decimals of per-atom values, JSON for lists and dicts, and numpy
    scalars for numbers; ``.traj`` drops custom per-atom arrays and results outside
    ASE's list. A reader can only return what the file holds, so every test's frames
    are replaced by ASE's own reading of the whole file (an independent parser).
    """

    suffix = ""

    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ASEFileStore(tmp_path / f"frames{self.suffix}")

    def reopen(self, store: StoreFactory, frames: list[Atoms]) -> ASEIO:
        db = super().reopen(store, frames)
        frames[:] = ase_frames(store.path)  # type: ignore[attr-defined]
        return db


class TestExtxyzContract(ASEContract):
    suffix = ".xyz"

    def test_scalar_column(self, store: StoreFactory) -> None:
        """The contract's version asserts Python ints for ``info.index``; ASE's extxyz reader
        (so ase.io.read too) gives np.int64 for integers of the comment line."""
        frames = make_frames("ethanol")
        db = self.reopen(store, frames)
        expected = [a.get_potential_energy() for a in frames]
        column = db["calc.energy"]
        np.testing.assert_array_equal(column.to_numpy(), expected)
        assert column.to_list() == list(column) == expected and column[-1] == expected[-1]
        assert column.to_dict() == {"calc.energy": expected}
        index = db["info.index"].to_list()
        assert index == [0, 1, 2, 3] and all(type(v) is np.int64 for v in index)


class TestTrajContract(ASEContract):
    suffix = ".traj"


@pytest.mark.parametrize("kind", ["periodic_variable_n", "constraints", "no_calculator", "empty_and_single"])
def test_traj_keeps_standard_frames_exactly(tmp_path: Path, kind: str) -> None:
    frames = make_frames(kind)
    ase.io.write(tmp_path / "f.traj", frames)
    for i, (a, b) in enumerate(zip(frames, ASEIO(tmp_path / "f.traj"), strict=True)):
        assert_atoms_equal(a, b, f"{kind}[{i}]")


def test_extxyz_keeps_values_to_its_precision(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    ase.io.write(tmp_path / "f.xyz", frames)
    for a, b in zip(frames, ASEIO(tmp_path / "f.xyz"), strict=True):
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)
        np.testing.assert_allclose(b.cell.array, a.cell.array, rtol=1e-15)
        assert b.get_potential_energy() == a.get_potential_energy()
        assert b.pbc.tolist() == a.pbc.tolist()


def test_libatoms_file_matches_ase() -> None:
    path = REALDATA / "libatoms_extxyz_append.xyz"
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared real-data folder sits beside the repository")
    db = ASEIO(path)
    assert [len(atoms) for atoms in db] == [2, 4, 6]
    assert [atoms.pbc.tolist() for atoms in db] == [[True] * 3, [True, True, False], [True, False, False]]
    assert_same_as_ase(path, db)


def _periodic_text() -> str:
    buffer = io.StringIO()
    ase.io.write(buffer, make_frames("periodic_variable_n"), format="extxyz")
    return buffer.getvalue()


@pytest.mark.parametrize("dialect", ["vec_cell", "crlf", "no_final_newline", "blank_line_ends", "plain_xyz"])
def test_extxyz_dialects_match_ase(tmp_path: Path, dialect: str) -> None:
    path = tmp_path / "d.xyz"
    if dialect == "vec_cell":
        frames = make_frames("periodic_variable_n")
        for atoms in frames:
            atoms.pbc = True
        ase.io.write(path, frames, format="extxyz", vec_cell=True)
    else:
        text = {
            "crlf": _periodic_text().replace("\n", "\r\n"),
            "no_final_newline": _periodic_text().rstrip("\n"),
            "blank_line_ends": "1\n\nAr 0 0 0\n\n  \n3\nignored by ASE\n",
            "plain_xyz": "3\nwater, by hand\nO 0 0 0.1\nH 0.7 0 -0.5\nH -0.7 0 -0.5\n1\n\nNe 1 2 3\n",
        }[dialect]
        path.write_bytes(text.encode())
    if dialect == "no_final_newline":
        with pytest.warns(UserWarning, match="without a line end"):
            db = ASEIO(path)
    else:
        db = ASEIO(path)
    assert_same_as_ase(path, db)


def _cache_file(cache: Path) -> Path:
    [found] = (cache / "extxyz-index").glob("*.abnidx")
    return found


def test_index_cache_is_reused_until_the_file_changes(tmp_path: Path, cache_home: Path) -> None:
    path = tmp_path / "f.xyz"
    ase.io.write(path, make_frames("periodic_variable_n")[:3])
    assert len(ASEFileBackend(path)) == 3
    cached = _cache_file(cache_home)
    loaded = _xyzindex._load(cached, str(path))
    assert loaded is not None
    stamp, table = loaded
    _xyzindex._save(cached, str(path), stamp, table[[0, -1]])  # one frame spanning all bytes
    assert len(ASEFileBackend(path)) == 1  # the stamp matches: the cache is trusted as it is
    os.utime(path, ns=(stamp["mtime_ns"] + 10**9,) * 2)
    db = ASEIO(path)  # a new mtime: scanned again
    assert len(db) == 3
    assert_same_as_ase(path, db)
    assert len(_xyzindex._load(cached, str(path))[1]) == 4  # type: ignore[index]


def test_appended_frames_extend_the_cached_index(tmp_path: Path, cache_home: Path) -> None:
    path = tmp_path / "f.xyz"
    frames = make_frames("periodic_variable_n")
    ase.io.write(path, frames[:3])
    assert len(ASEIO(path)) == 3
    ase.io.write(path, frames[3:], append=True)
    db = ASEIO(path)
    assert len(db) == 5
    assert_same_as_ase(path, db)
    fd = os.open(path, os.O_RDONLY)
    try:
        full, _ = _xyzindex.build_index(fd, str(path), None)
    finally:
        os.close(fd)
    np.testing.assert_array_equal(_xyzindex._load(_cache_file(cache_home), str(path))[1], full)  # type: ignore[index]
    path.write_text("1\n\nHe 0 0 0\n")  # rewritten, shorter: scanned again
    assert [a.get_chemical_formula() for a in ASEIO(path)] == ["He"]


@pytest.mark.parametrize("how", ["read-only folders", "cache path under a file"])
def test_unwritable_folders_are_not_an_error(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "f.xyz"
    ase.io.write(path, make_frames("ethanol"))
    if how == "read-only folders":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders anyway; the other case covers it")
        cache = tmp_path / "ro-cache"
        cache.mkdir()
        for folder in (cache, data):
            folder.chmod(0o555)
    else:
        (tmp_path / "a-file").write_text("")
        cache = tmp_path / "a-file" / "cache"  # cannot be created, not even by root
    try:
        assert_same_as_ase(path, ASEIO(path, index_cache=cache))
        assert [p.name for p in data.iterdir()] == ["f.xyz"]
    finally:
        for folder in (cache, data):
            if folder.is_dir():
                folder.chmod(0o755)


def test_last_frame_of_a_traj_decodes_only_it(tmp_path: Path) -> None:
    path = tmp_path / "big.traj"
    frames = [make_frames("periodic_variable_n")[i % 5] for i in range(200)]
    ase.io.write(path, frames)
    with TrajectoryReader(str(path)) as traj:
        offsets = [int(o) for o in traj.backend._offsets]
    raw = bytearray(path.read_bytes())
    for offset in offsets[1:-1]:  # garble the JSON header of every item but the first and the last
        size = int(np.frombuffer(raw[offset : offset + 8], "<i8")[0])
        raw[offset + 8 : offset + 8 + size] = b"x" * size
    path.write_bytes(bytes(raw))
    db = ASEIO(path)
    assert len(db) == 200
    assert_atoms_equal(frames[-1], db[-1])
    assert_atoms_equal(frames[0], db[0])
    with pytest.raises(StoreCorruptedError, match=rf"{re.escape(str(path))}: frame 5 "):
        db[5]


def _frame_line(frames: list[Atoms], k: int) -> int:
    return sum(len(atoms) + 2 for atoms in frames[:k])


def test_damaged_extxyz_names_file_and_frame(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    path = tmp_path / "f.xyz"
    ase.io.write(path, frames)
    expected = ase_frames(path)
    lines = path.read_text().splitlines(keepends=True)
    name = re.escape(str(path))
    path.write_text("".join(lines[:-1]))
    with pytest.raises(StoreCorruptedError, match=rf"{name}: frame 4 .*truncated"):
        ASEIO(path)
    bad_count = list(lines)
    bad_count[_frame_line(frames, 2)] = "three\n"
    path.write_text("".join(bad_count))
    with pytest.raises(StoreCorruptedError, match=rf"{name}: frame 2 .*number of atoms.*'three"):
        ASEIO(path)
    bad_atom = list(lines)
    bad_atom[_frame_line(frames, 1) + 2] = "Cu 1.0 not-a-number 2.0 0 0 0\n"
    path.write_text("".join(bad_atom))
    db = ASEIO(path)
    with pytest.raises(StoreCorruptedError, match=rf"{name}: frame 1 \(byte \d+\) cannot be read as extxyz"):
        db[1]
    assert_atoms_equal(expected[0], db[0])
    assert_atoms_equal(expected[2], db[2])


def test_reads_use_the_index_of_the_file_as_opened(tmp_path: Path) -> None:
    path = tmp_path / "f.xyz"
    ase.io.write(path, make_frames("periodic_variable_n"))
    expected = ase_frames(path)
    db = ASEIO(path)
    with path.open("ab") as f:
        f.write(b"not a count line\n")
    chunks = list(db.chunked(2))  # read through the index: the new line is never scanned
    assert [len(c) for c in chunks] == [2, 2, 1]
    for a, b in zip(expected, [atoms for chunk in chunks for atoms in chunk], strict=True):
        assert_atoms_equal(a, b)
    with pytest.raises(StoreCorruptedError, match="number of atoms"):
        ASEIO(path)


def _energy_frames(e0: float, n: int) -> list[Atoms]:
    """``n`` frames whose energy and forces are both ``e0 + i`` (and the same text width for any ``e0``)."""
    frames = []
    for i in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.positions += e0
        atoms.calc = SinglePointCalculator(atoms, energy=e0 + i, forces=np.full((4, 3), e0 + i))
        frames.append(atoms)
    return frames


def _rewrite(path: Path, frames: list[Atoms], append: bool = False) -> None:
    """``ase.io.write`` into the same inode; the mtime is moved on if a coarse file system clock
    hid the change (a handle notices changes through the size or the mtime)."""
    before = os.stat(path)
    ase.io.write(path, frames, append=append)
    after = os.stat(path)
    assert after.st_ino == before.st_ino
    if after.st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1))


def _assert_reads_refused(db: ASEIO, path: Path) -> None:
    """Every read path raises, naming the file: none mixes old and new bytes."""
    reads = [
        lambda: db[0],
        lambda: db["calc.energy"].to_numpy(),
        lambda: db[:].to_batch(["calc.energy"]),
        lambda: db[:].to_batch(["calc.forces"]),
        lambda: db.keys(1),
    ]
    for read in reads:
        with pytest.raises(StoreCorruptedError, match=rf"{re.escape(str(path))}: .*rewritten.*reopen it"):
            read()


@pytest.mark.parametrize("new_frames", [3, 5], ids=["same length", "longer"])
def test_a_file_rewritten_in_place_is_refused(tmp_path: Path, new_frames: int) -> None:
    path = tmp_path / "f.extxyz"
    ase.io.write(path, _energy_frames(1.0, 3))
    size = path.stat().st_size
    db = ASEIO(path)
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [1, 2, 3])  # comment lines kept
    _rewrite(path, _energy_frames(5.0, new_frames))  # not an append: the old bytes changed
    assert (path.stat().st_size == size) == (new_frames == 3)
    _assert_reads_refused(db, path)
    assert len(db) == 3
    np.testing.assert_array_equal(ASEIO(path)["calc.energy"].to_numpy(), 5.0 + np.arange(new_frames))


def test_appended_frames_keep_a_handle_valid(tmp_path: Path) -> None:
    path = tmp_path / "f.extxyz"
    ase.io.write(path, _energy_frames(1.0, 3))
    db = ASEIO(path)
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [1, 2, 3])
    _rewrite(path, _energy_frames(7.0, 2), append=True)
    assert len(db) == 3  # a snapshot of the file as opened
    batch = db[:].to_batch(["calc.energy", "calc.forces"])
    np.testing.assert_array_equal(batch["calc.energy"], [1, 2, 3])
    np.testing.assert_array_equal(batch["calc.forces"][::4, 0], [1, 2, 3])
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [1, 2, 3])
    assert db[2].get_potential_energy() == 3
    np.testing.assert_array_equal(ASEIO(path)["calc.energy"].to_numpy(), [1, 2, 3, 7, 8])
    _rewrite(path, _energy_frames(5.0, 5))  # then rewritten, longer still: refused after all
    _assert_reads_refused(db, path)


def test_a_rewrite_keeping_size_and_mtime_never_mixes_values(tmp_path: Path) -> None:
    path = tmp_path / "f.extxyz"
    ase.io.write(path, _energy_frames(1.0, 3))
    st = path.stat()
    db = ASEIO(path)
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [1, 2, 3])
    ase.io.write(path, _energy_frames(5.0, 3))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `rsync --inplace --times` leaves it
    assert path.stat().st_size == st.st_size
    # Not seen by the cheap check (same size and mtime), but one frame's values come from one version.
    forces = db[:].to_batch(["calc.forces"])["calc.forces"]  # read by ASE's reader: the new bytes
    np.testing.assert_array_equal(forces[::4, 0], [5, 6, 7])
    energy = db[:].to_batch(["calc.energy"])["calc.energy"]  # comment lines only: not the kept ones
    np.testing.assert_array_equal(energy, [5, 6, 7])
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [5, 6, 7])


# Comment lines that look alike but carry different keys (quoting, escapes, flags, spacing).
_COMMENTS = [
    'a=1 b="x y" c',
    'a=1 b="x" y',
    'a=1 b2="x y" c',
    "a=1 'b'=2",
    "a = 1 b",
    "a=1 b\\ c=2",
    "k='v w' z={1 2} q=[3, 4]",
    "k='v w' z={1 2}q",
    "a=1 a=2 energy=-1.5",
    "energy=1.0 x",
    "Properties=species:S:1:pos:R:3:forces:R:3 energy=2",
    "Properties=species:S:1:pos:R:3 e=2",
    "",
]


@pytest.mark.parametrize("case", [".xyz", ".traj", "comment lines"])
def test_keys_and_columns_match_full_rows(tmp_path: Path, case: str) -> None:
    if case == "comment lines":
        path = tmp_path / "comments.xyz"
        atom = {True: "H 0 0 0 0.5 0.5 0.5\n", False: "H 0 0 0\n"}
        path.write_text("".join(f"1\n{c}\n{atom[':forces' in c]}" for c in _COMMENTS * 2))
    else:
        path = tmp_path / f"mixed{case}"
        kinds = ("keys_on_some_frames", "constraints", "empty_and_single", "ethanol")
        ase.io.write(path, [atoms for kind in kinds for atoms in make_frames(kind)])
    rows = [atoms_to_dict(atoms) for atoms in ase_frames(path)]
    backend = ASEFileBackend(path)
    assert backend.keys() == sorted({key for row in rows for key in row})
    for i, row in enumerate(rows):
        assert sorted(backend.columns(i)) == sorted(row), f"frame {i}"
    assert backend.key_counts() == dict(sorted(Counter(key for row in rows for key in row).items()))


def test_writes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.xyz"
    frames = make_frames("ethanol")
    ase.io.write(path, frames)
    before = path.read_bytes()
    db = ASEIO(path)  # readonly=False is accepted; the file still cannot be written
    assert not db.backend.supports_write
    attempts = [
        lambda: db.extend(frames),
        lambda: db.append(frames[0]),
        lambda: db.__setitem__(0, frames[1]),
        lambda: db.update(0, info={"a": 1}),
        lambda: db.__delitem__(0),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyError, match=r"f\.xyz \(extxyz\) is read through ase\.io.*writable store"):
            attempt()
    assert path.read_bytes() == before


def test_other_formats_go_through_ase_io(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    for atoms in frames:
        atoms.pbc = True
    for name, fmt in (("crystal.cif", "cif"), ("frames.xyz.gz", "extxyz")):
        path = tmp_path / name
        ase.io.write(path, frames)
        assert sniff(path)
        db = ASEIO(path)  # no extension claims it: the registry asks the ASE sniffer
        assert db.backend.format_info() == {"format": fmt, "access": "ase.io.read of the whole file at open"}
        assert_same_as_ase(path, db)
        first = db[0]
        first.positions += 1.0
        first.info["changed"] = True
        assert_atoms_equal(ase_frames(path)[0], db[0])


@pytest.mark.parametrize("name", ["empty.xyz", "empty.traj"])
def test_empty_files_hold_no_frames(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    db = ASEIO(tmp_path / name)
    assert len(db) == 0 and db.columns == [] and list(db) == []


def test_files_ase_cannot_read_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello world\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    for path in (notes, tmp_path / "blob.bin", tmp_path / "missing.cif", tmp_path):
        assert sniff(path) is False
    with pytest.raises(BackendNotFoundError, match="notes.txt"):
        ASEIO(notes)
    with pytest.raises(BackendNotFoundError, match=r"ase\.io does not recognise.*format="):
        ASEFileBackend(notes)
    with pytest.raises(BackendNotFoundError, match=r"'nope'.*extxyz"):
        ASEFileBackend(notes, format="nope")
    with pytest.raises(StoreNotFoundError, match="missing.xyz"):
        ASEIO(tmp_path / "missing.xyz")
    (tmp_path / "bad.traj").write_bytes(b"not a ULM file" * 10)
    with pytest.raises(StoreCorruptedError, match=r"bad\.traj: cannot be read as an ASE trajectory"):
        ASEIO(tmp_path / "bad.traj")
