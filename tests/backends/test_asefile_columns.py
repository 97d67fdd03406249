"""Columns of per-frame values (info, calc.energy, cell, pbc, ...) and atomic numbers of
extxyz files, read from comment lines and species tokens: the same values as ase.io.read."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.extxyz import _read_xyz_frame

from asebytes_nodes import ASEIO, StoreCorruptedError
from asebytes_nodes.backends import _xyzindex
from asebytes_nodes.backends._asefile import ASEFileBackend
from asebytes_nodes.backends._xyzcomment import comment_rows, fast_keys, parse_comment
from asebytes_nodes.rows import atoms_to_dict

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "extxyz"

# Comment lines ASE reads in different ways: quoting, escapes, flags, duplicates, numbers of
# every form, 3x3 keys, pbc and Lattice alone or together, results also named as columns.
# fmt: off
COMMENTS = [
    'a=1 b="x y" c', "a=1 'b'=2", "a = 1 b", "a=1 b\\ c=2", "k='v w' z={1 2} q=[3, 4]",
    "a=1 a=2 energy=-1.5", "energy=3 free_energy=2", 'energy="1.5"', "energy=1e3 uid=0042 UID=7",
    'stress="1 2 3 4 5 6 7 8 9" virial="1 0 0 0 1 0 0 0 1"', 'dipole="1 2 3" magmom=2',
    'Lattice="5 0 0 0 5 0 0 0 5" pbc="T F T"', 'Lattice="5 0 0 0 5 0 0 0 5.5"', 'pbc="F F F"', "pbc=T",
    'pbc=[T, F, T] Lattice="1 2 3 4 5 6 7 8 9.5"', "Properties=species:S:1:pos:R:3:energy:R:1 energy=2",
    "Properties=Z:I:1:pos:R:3 energy=2", "Properties=pos:R:3:species:S:1", 'json=_JSON {"a": [1, 2]}',
    "big=123456789012345678901 i19=1234567890123456789 neg=-.5 plus=+3 e=1.5E-3 t=true f=False s=hi",
    'mix="1 2.5" nan="1 nan" one="5" bl=[T, F] inf=inf tx="T x" n=1,2,3 q="" after=1', "", "   x=1   ",
    'arabic=٣ point=١.٥ list="1 ٢" wide=１２',
]
# fmt: on


def _atoms_lines(comment: str) -> str:
    if "Z:I:1" in comment:
        return "6 0 0 0\n8 1 1 1\n"
    if "pos:R:3:species" in comment:
        return "0 0 0 C\n1 1 1 o\n"
    if "energy:R:1" in comment:
        return "C 0 0 0 1.0\nO 1 1 1 2.0\n"
    return "cu 0 0 0\nH 1 1 1\n"


def _tricky_file(path: Path, newline: str = "\n") -> Path:
    text = "".join(f"2\n{c}\n{_atoms_lines(c)}" for c in COMMENTS)
    text += '0\nenergy=5 Lattice="3 0 0 0 3 0 0 0 3"\n'
    buffer = io.StringIO()
    cu = bulk("Cu", cubic=True)
    cu.calc = SinglePointCalculator(cu, energy=1.0, stress=np.arange(6.0))
    ase.io.write(buffer, [cu, molecule("H2O")], format="extxyz")
    si = bulk("Si")
    ase.io.write(buffer, [si], format="extxyz", vec_cell=True)  # VEC lines: read in full
    path.write_bytes((text + buffer.getvalue()).replace("\n", newline).encode())
    return path


def same(a: Any, b: Any) -> bool:
    """Equal values of the same type (arrays: same dtype and shape; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        kind = a.dtype.kind == "f"
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=kind)
    if isinstance(a, (float, np.floating)) and np.isnan(a):
        return bool(np.isnan(b))
    return repr(a) == repr(b) if isinstance(a, (list, dict)) else bool(a == b)


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_xyzindex.CACHE_ENV, str(tmp_path / "cache"))


def _large_frames(path: Path) -> Path:
    """Frames past 8 KiB (read up to their comment line), beside small ones, with comment lines
    of up to 40 kB (read in growing steps) and a large frame with VEC lines (read whole)."""
    rng = np.random.default_rng(3)
    frames = []
    for k, n in enumerate((3, 160, 2, 320, 160, 1)):
        atoms = bulk("Cu", cubic=True).repeat((n, 1, 1))[: n * 4 - k]
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.info.update(step=k, note="x" * (3000 * k), weights=list(range(4000 * (k == 3))))
        atoms.calc = SinglePointCalculator(atoms, energy=-k - 0.5, forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    with path.open("a") as f:
        ase.io.write(f, [frames[1]], format="extxyz", vec_cell=True)
    return path


@pytest.mark.parametrize("case", ["tricky", "crlf", "libatoms", "written by ase", "large frames"])
def test_columns_equal_what_ase_reads(tmp_path: Path, case: str) -> None:
    if case == "large frames":
        path = _large_frames(tmp_path / "big.xyz")
    elif case == "libatoms":
        path = REALDATA / "libatoms_extxyz_append.xyz"
        if not path.exists():
            pytest.skip(f"{path} is absent: the shared real-data folder sits beside the repository")
    elif case == "written by ase":
        path = tmp_path / "w.xyz"
        frames = [bulk("NaCl", "rocksalt", 5.6) * (1, 1, k + 1) for k in range(5)]
        for k, atoms in enumerate(frames):
            atoms.info.update(config_type=["bulk", "md"][k % 2], step=k, weights=[k, 0.5])
            atoms.calc = SinglePointCalculator(atoms, energy=-k - 0.25, free_energy=k, stress=np.ones(6) * k)
        ase.io.write(path, frames)
    else:
        path = _tricky_file(tmp_path / "t.xyz", "\r\n" if case == "crlf" else "\n")
    expected = [atoms_to_dict(atoms) for atoms in ase.io.read(path, ":")]
    keys = sorted({key for row in expected for key in row if fast_keys([key])})
    db = ASEIO(path)
    for key in keys:
        column = db[key].to_list()
        for i, (row, value) in enumerate(zip(expected, column, strict=True)):
            assert same(row.get(key), value), f"{path.name} frame {i} {key}: {row.get(key)!r} != {value!r}"
    picks = [len(db) - 1, 0, len(db) // 2, 0]  # out of order, repeated: frames read one by one
    for i, row in zip(picks, db.backend.read_rows(picks, keys), strict=True):
        want = {k: v for k, v in expected[i].items() if k in keys}
        assert set(row) == set(want) and all(same(want[k], row[k]) for k in want), f"frame {i}"


def test_random_comment_lines_parse_as_ase_parses_them() -> None:
    """Lines made of tokens ASE treats specially: the values (or the refusal) are ASE's."""
    rng = random.Random(5)
    names = ["a", "energy", "stress", "Lattice", "pbc", "uid", "virial", "magmom", "dipole"]
    # fmt: off
    values = ["1", "-2", "1.5", "1e3", ".5", "T", "false", "x", '"1 2 3"', '"T F T"', "'a b'", "{1,2}",
              "[3, 4]", '""', '"1 2 3 4 5 6 7 8 9"', "nan", "12345678901234567890", "+07", "a\\ b", "'x=y'"]
    # fmt: on
    keys = ["cell", "pbc", *("info." + n for n in names)]
    keys += ["calc." + n for n in names if fast_keys(["calc." + n])]
    for _ in range(3000):
        line = " ".join(
            rng.choice([name, f"{name}={rng.choice(values)}", f"{name} = {rng.choice(values)}"])
            for name in rng.choices(names, k=rng.randint(0, 4))
        )
        try:
            want = atoms_to_dict(_read_xyz_frame(iter([line]), 0))
        except Exception:
            with pytest.raises(Exception):  # noqa: B017 - ASE raises several types
                comment_rows([parse_comment(line.strip())], keys)
            continue
        [got], whole, _ = comment_rows([parse_comment(line.strip())], keys)
        want = {k: v for k, v in want.items() if k in keys}
        assert not whole and set(got) == set(want), line
        assert all(same(want[k], got[k]) for k in want), line


def test_energy_column_reads_comment_lines_only(tmp_path: Path) -> None:
    """Atom lines a full read refuses do not stop a column of the comment line (the keys
    come from one full frame per layout: frame 0 here)."""
    path = tmp_path / "f.xyz"
    frame = '2\nenergy=-1.5 Lattice="2 0 0 0 2 0 0 0 2"\nH 0 0 {}\nHe 0 0 1\n'
    path.write_text(frame.format(0) + frame.format("zero") * 2)
    db = ASEIO(path)
    assert db["calc.energy"].to_list() == [-1.5] * 3
    assert db["arrays.numbers"].to_ragged().values.tolist() == [1, 2] * 3
    assert db["pbc"].to_numpy().all() and db["cell"].to_numpy()[:, 0, 0].tolist() == [2.0] * 3
    with pytest.raises(StoreCorruptedError, match="frame 1"):
        db[1]


def test_malformed_comment_values_name_the_frame(tmp_path: Path) -> None:
    path = tmp_path / "f.xyz"
    path.write_text('1\nenergy=1\nH 0 0 0\n1\nenergy=2 Lattice="1 2 3"\nH 0 0 0\n')
    with pytest.raises(StoreCorruptedError, match=r"f\.xyz: frame 1 .*comment line.*9-long"):
        ASEFileBackend(path).read_rows([0, 1], ["calc.energy"])
    with pytest.raises(StoreCorruptedError, match=r"f\.xyz: frame 1 .*9-long"):
        ASEIO(path)["calc.energy"].to_list()


def test_species_that_are_no_element_are_left_to_ase(tmp_path: Path) -> None:
    path = tmp_path / "f.xyz"
    path.write_text("1\n\n  H 0 0 0\n1\n\nXx 0 0 0\n")
    backend = ASEFileBackend(path)
    assert backend.read_rows([0], ["arrays.numbers"])[0]["arrays.numbers"].tolist() == [1]  # indented
    with pytest.raises(StoreCorruptedError, match="frame 1"):
        backend.read_rows([0, 1], ["arrays.numbers"])
