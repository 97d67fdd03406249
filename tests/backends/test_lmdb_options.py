"""LMDB environment options passed through ``ASEIO`` (issue 13, item 13).

Matrix: ``max_readers``, ``sync``, ``readahead`` and ``lock`` take effect (read back from
LMDB's own ``env.flags()``/``max_readers()``), survive pickling, and are validated; ``lock=False``
opens a read-only store in a read-only folder without a lock file; an unknown option names the
backend's options.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from ase.build import molecule

pytest.importorskip("lmdb")

from asebytes_nodes import ASEIO, InvalidDataError  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "x.lmdb"
    with ASEIO(path) as db:
        db.extend([molecule("H2O"), molecule("CH4")])
    return path


def test_options_reach_lmdb(tmp_path: Path) -> None:
    # max_readers is fixed by whoever creates LMDB's lock file: a new store here
    with ASEIO(tmp_path / "new.lmdb", max_readers=7, sync=False, readahead=False) as db:
        db.extend([molecule("H2O"), molecule("CH4"), molecule("NH3")])  # the first write opens LMDB
        env = db.backend._shared.env
        flags = env.flags()
        assert env.max_readers() == 7 and flags["sync"] is False and flags["readahead"] is False
        again = pickle.loads(pickle.dumps(db))
        assert again.backend._shared.env.flags()["readahead"] is False and len(again) == 3


def test_lock_false_reads_a_store_in_a_read_only_folder(store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    os.replace(store, folder / "x.lmdb")
    os.chmod(folder, 0o555)
    try:
        with ASEIO(folder / "x.lmdb", readonly=True, lock=False) as db:
            assert [a.get_chemical_formula() for a in db] == ["H2O", "CH4"]
            assert db.backend._shared.env.flags()["lock"] is False
        assert sorted(p.name for p in folder.iterdir()) == ["x.lmdb"]
    finally:
        os.chmod(folder, 0o755)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_readers": 0}, "max_readers must be a positive int"),
        ({"sync": "yes"}, "sync must be True or False"),
        ({"readahead": 1}, "readahead must be True or False"),
        ({"lock": "no"}, "lock must be True, False or None"),
        ({"lock": False}, "lock=False is for read-only stores"),
    ],
)
def test_bad_options_are_refused(store: Path, options: dict, message: str) -> None:
    with pytest.raises(InvalidDataError, match=message):
        ASEIO(store, **options)


def test_unknown_option_lists_the_backend_options(store: Path) -> None:
    expected = r"the lmdb backend has no option 'max_reader'; its options are .*max_readers"
    with pytest.raises(TypeError, match=expected):
        ASEIO(store, max_reader=8)


def test_handles_of_one_process_must_agree(store: Path) -> None:
    with ASEIO(store, readonly=True, readahead=False), pytest.raises(InvalidDataError, match="already open"):
        ASEIO(store, readonly=True)
