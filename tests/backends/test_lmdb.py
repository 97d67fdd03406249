"""The contract suite on the LMDB backend, plus what is specific to its file."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms
from ase.build import molecule

from asebytes_nodes import ASEIO, FormatVersionError, LMDBBackend, StoreCorruptedError
from asebytes_nodes.testing.contract import StoreFactory, WritableContract


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
