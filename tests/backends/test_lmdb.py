"""The contract suite on the LMDB backend, plus what is specific to its file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from asebytes_nodes import ASEIO, FormatVersionError, LMDBBackend, StoreCorruptedError
from asebytes_nodes.testing.contract import StoreFactory, WritableContract
from asebytes_nodes.testing.frames import make_frames
from asebytes_nodes.testing.properties import PropertyContract
from asebytes_nodes.testing.stateful import StatefulContract


class LMDBStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, frames: list[Atoms]) -> None:
        with ASEIO(self.path) as db:
            db.extend(frames)

    def open(self, readonly: bool = False) -> LMDBBackend:
        return LMDBBackend(self.path, readonly=readonly)


class TestLMDBContract(WritableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return LMDBStore(tmp_path / "frames.lmdb")


class TestLMDBProperties(PropertyContract, StatefulContract):
    refuses_storable_values = False

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], StoreFactory]:
        return lambda: LMDBStore(tmp_path / f"{uuid.uuid4().hex}.lmdb")


def test_single_file_and_pathlib(tmp_path: Path) -> None:
    path = tmp_path / "x.lmdb"
    with ASEIO(path) as db:
        db.append(molecule("H2O"))
    assert path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lmdb", "x.lmdb-lock"]
    assert len(ASEIO(f"lmdb://{path}")) == 1


def test_refuses_foreign_and_damaged_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.lmdb"
    junk.write_bytes(b"this is not lmdb" * 1000)
    with pytest.raises(StoreCorruptedError, match="junk.lmdb"):
        ASEIO(junk)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    import lmdb

    from asebytes_nodes.codec import encode_value

    path = tmp_path / "new.lmdb"
    ASEIO(path).close()
    env = lmdb.open(str(path), subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"m:format", encode_value({"format": "asebytes_nodes.lmdb", "version": 99}))
    env.close()
    with pytest.raises(FormatVersionError, match="version 99"):
        ASEIO(path)


def test_scalar_columns_follow_every_write(tmp_path: Path) -> None:
    """Scalar columns are also kept in blocks; they must agree with the rows after any write."""
    from ase.calculators.singlepoint import SinglePointCalculator

    def frame(energy: object, tag: object = None) -> Atoms:
        atoms = molecule("H2O")
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        if tag is not None:
            atoms.info["tag"] = tag
        return atoms

    db = ASEIO(tmp_path / "s.lmdb")
    db.extend([frame(float(i), i) for i in range(1100)])  # three blocks of 512 rows
    assert block_codes(db) == {"calc.energy": "f", "info.tag": "i"}
    db.update(600, calc={"energy": -1.0})
    del db[[0, 700]]
    db.insert(5, frame(99.0))
    db.drop("info.tag", [10])
    expected = [float(i) for i in range(1, 1100) if i != 700]
    expected[599] = -1.0
    expected.insert(5, 99.0)
    assert db["calc.energy"].to_list() == expected
    tags = db["info.tag"].to_list()
    assert tags[5] is None and tags[10] is None and tags[11] == 11 and type(tags[11]) is int
    db.append(frame(1.5, "text"))  # tag stops being one type: read from the rows
    assert db["info.tag"].to_list()[-1] == "text"
    assert block_codes(db) == {"calc.energy": "f"}
    assert db["info.tag"].to_list()[:12] == tags[:12]
    np.testing.assert_array_equal(db["calc.energy"].to_numpy()[:6], [*expected[:6]])
    assert db[[1099, 3]]["calc.energy"].to_list() == [1.5, expected[3]]


def block_codes(db: ASEIO) -> dict[str, str]:
    with db.backend._txn() as txn:  # type: ignore[attr-defined]
        return db.backend._book(txn).codes  # type: ignore[attr-defined]


def test_a_file_replaced_under_the_same_name_is_read_afresh(tmp_path: Path) -> None:
    path, other = tmp_path / "a.lmdb", tmp_path / "b.lmdb"
    ASEIO(path).extend(make_frames("ethanol")[:2])
    with ASEIO(other) as db:  # the new file is closed before it moves, as convert() does
        db.extend(make_frames("ethanol"))
    old = ASEIO(path, readonly=True)
    assert len(old) == 2
    os.replace(other, path)
    assert len(ASEIO(path, readonly=True)) == 4
    assert len(old) == 4  # handles follow the path, like every other backend


def test_a_scalar_column_without_a_block_is_read_from_its_rows() -> None:
    """A block not found (a damaged page hid it) leaves its rows to be read one by one, in a
    whole column (consecutive rows: the values one slice of the blocks), a run across it and a
    selection; the other blocks still serve theirs, and rows a block lacks stay MISSING."""
    from asebytes_nodes.backends._keys import MISSING
    from asebytes_nodes.backends._lmdb_blocks import BLOCK, block_key, read_scalar_column, scalar_array

    values = np.arange(3 * BLOCK) / 7
    flags = np.ones(3 * BLOCK, bool)
    flags[5] = False  # a row without the key
    part = [slice(b * BLOCK, (b + 1) * BLOCK) for b in range(3)]
    blocks = {block_key("e", b): flags[part[b]].tobytes() + values[part[b]].tobytes() for b in (0, 2)}
    asked: list[list[int]] = []

    def from_rows(rows: list[int]) -> list[float]:
        asked.append(rows)
        return [float(values[i]) for i in rows]

    expected = [MISSING if not f else float(v) for v, f in zip(values, flags, strict=True)]
    for rows in (np.arange(3 * BLOCK), np.arange(BLOCK - 2, BLOCK + 3), np.array([2 * BLOCK, BLOCK + 1, 3])):
        asked.clear()
        got = read_scalar_column(blocks.get, "e", "f", rows, from_rows, lambda rows: None)
        assert got == [expected[i] for i in rows.tolist()]
        assert asked == [[i for i in rows.tolist() if BLOCK <= i < 2 * BLOCK]]
    last = scalar_array(blocks.get, "e", "f", np.arange(2 * BLOCK, 3 * BLOCK))
    assert last is not None and last.tolist() == values[part[2]].tolist()
    assert scalar_array(blocks.get, "e", "f", np.arange(3 * BLOCK)) is None  # a row lacks it
