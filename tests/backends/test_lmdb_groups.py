"""LMDB groups: named databases in one file beside the main dataset (layout in ``_lmdb_groups``).

The shared behaviour (isolation, listing, read-only unknown group) is tested for every backend
in ``tests/test_groups.py``; here what is LMDB's own: the main dataset's keys unchanged, each
group's checksums and stamps checked on their own, a layout-1 file taking a group.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from faultkit import frame_version, versioned_frame
from test_lmdb_faults import flip_everywhere

from asebytes_nodes import ASEIO, InvalidDataError, LMDBBackend, StoreCorruptedError, StoreNotFoundError

lmdb = pytest.importorskip("lmdb")
DATA = Path(__file__).parent.parent / "data"  # stores written by layout-1 and layout-2 code


def main_keys(path: Path) -> list[bytes]:
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=4)
    with env.begin() as txn:
        keys = [bytes(k) for k in txn.cursor().iternext(values=False)]
    env.close()
    return keys


def three_datasets(path: Path) -> Path:
    with ASEIO(path) as db:
        db.extend([versioned_frame(i) for i in range(4)])
    for group, start in (("train", 10), ("test", 20)):
        with ASEIO(path, group=group) as db:
            db.extend([versioned_frame(i) for i in range(start, start + 3)])
    with ASEIO(path) as db:  # the main dataset written after the groups
        db.append(versioned_frame(4))
    return path


def test_main_dataset_keys_are_unchanged_without_groups(tmp_path: Path) -> None:
    path = tmp_path / "plain.lmdb"
    with ASEIO(path) as db:
        db.extend([versioned_frame(i) for i in range(3)])
    assert {k[:1] for k in main_keys(path)} == {b"c", b"m", b"r"}
    assert LMDBBackend.list_groups(path) == [] and LMDBBackend.list_groups(tmp_path / "none.lmdb") == []
    assert LMDBBackend.side_suffixes == ("-lock",) and LMDBBackend.supports_groups


def test_groups_reopen_isolated_with_their_own_checks(tmp_path: Path) -> None:
    path = three_datasets(tmp_path / "g.lmdb")
    assert ASEIO.list_groups(path) == ["test", "train"]
    expected = {None: range(5), "train": range(10, 13), "test": range(20, 23)}
    for group, rows in expected.items():
        with ASEIO(path, group=group, readonly=True) as db:
            assert [frame_version(a) for a in db] == [(i, 0) for i in rows]
            assert db["calc.energy"].to_list() == [float(i) for i in rows]
            assert db.backend.check() == []
            copy = pickle.loads(pickle.dumps(db.backend))
            assert len(copy) == len(rows) and copy.cache_record().get("group") == group
            copy.close()
    flip_everywhere(path, versioned_frame(11).positions.tobytes(), 5)
    with ASEIO(path, group="train", readonly=True) as db:
        assert len(problems := db.backend.check()) == 1 and "row 1 fails its checksum" in problems[0]
        with pytest.raises(StoreCorruptedError, match="row 1 fails"):
            db[1]
    for group in (None, "test"):
        with ASEIO(path, group=group, readonly=True) as db:
            assert db.backend.check() == []


def test_unknown_and_invalid_groups(tmp_path: Path) -> None:
    path = three_datasets(tmp_path / "g.lmdb")
    with pytest.raises(StoreNotFoundError, match=r"g.lmdb: no group 'nope'.*its groups: test, train"):
        LMDBBackend(path, group="nope", readonly=True)
    for name in ("", "a/b", "..", "g:x"):
        with pytest.raises(InvalidDataError, match="invalid group name"):
            LMDBBackend(path, group=name)
    groups_only = tmp_path / "only.lmdb"
    with ASEIO(groups_only, group="train") as db:
        db.append(versioned_frame(0))
    assert len(ASEIO(groups_only, readonly=True)) == 0  # no main dataset yet


def test_an_old_copy_of_a_groups_row_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.lmdb"
    with ASEIO(path, group="train") as db:
        db.extend([versioned_frame(i) for i in range(3)])
    env = lmdb.open(str(path), subdir=False, max_dbs=4)
    train = env.open_db(b"g:train")
    with env.begin() as txn:
        old = txn.get(b"m:length", db=train)
    env.close()
    with ASEIO(path, group="train") as db:
        db.append(versioned_frame(3))
    with ASEIO(path) as db:  # a later write elsewhere in the file does not make the group stale
        db.append(versioned_frame(0))
    with ASEIO(path, group="train", readonly=True) as db:
        assert len(db) == 4
    env = lmdb.open(str(path), subdir=False, max_dbs=4)
    train = env.open_db(b"g:train")
    with env.begin(write=True) as txn:
        txn.put(b"m:length", old, db=train)
    env.close()
    with pytest.raises(StoreCorruptedError, match="row count record was written by transaction"):
        ASEIO(path, group="train", readonly=True).backend.__len__()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_layout_store_takes_a_group(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.lmdb"
    shutil.copy(DATA / f"lmdb_v{version}.lmdb", path)
    with ASEIO(path, group="train") as db:
        db.append(versioned_frame(7))
        assert db.backend.format_info()["version"] == 3
    with ASEIO(path) as db:  # its main dataset keeps its layout, and its stamp stays current
        assert db.backend.format_info()["version"] == version
        db.append(versioned_frame(6))
        assert [frame_version(a) for a in db] == [(i, 0) for i in range(7)]
        assert db.backend.check() == []
    with ASEIO(path, group="train", readonly=True) as db:
        assert [frame_version(a) for a in db] == [(7, 0)] and db.backend.check() == []
    assert ASEIO.list_groups(path) == ["train"]
