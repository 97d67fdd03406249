"""A read-only open never makes a file: LMDB opens for writing with O_CREAT, so a store deleted
between our look at the path and LMDB's open was made anew, empty, and read as "0 rows"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO
from asebytes_nodes.backends import _lmdb_env
from asebytes_nodes.errors import StoreNotFoundError


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "a.lmdb"
    with ASEIO(path) as db:  # closed: the read-only handle below opens the file itself
        db.extend([molecule("H2O")] * 3)
    return path


def _before_lmdb_opens(monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """Run ``act()`` once, right after the file is checked and before LMDB opens it."""
    check = _lmdb_env.check_file
    done: list[bool] = []

    def check_then_act(path: Path, *fd: int | None) -> None:
        check(path, *fd)
        if not done:
            done.append(True)
            act()

    monkeypatch.setattr(_lmdb_env, "check_file", check_then_act)


def _remove(path: Path) -> None:
    path.unlink()
    Path(f"{path}-lock").unlink(missing_ok=True)


def test_a_store_deleted_while_opened_read_only_is_not_made_anew(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _before_lmdb_opens(monkeypatch, lambda: _remove(store))
    with pytest.raises(StoreNotFoundError, match="a.lmdb"):
        ASEIO(store, readonly=True)
    assert not store.exists()  # no empty store left for the next reader to count 0 rows in


def test_a_store_replaced_while_opened_read_only_is_read_new(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "b.lmdb"
    with ASEIO(other) as db:
        db.extend([molecule("CH4")] * 5)
    _before_lmdb_opens(monkeypatch, lambda: os.replace(other, store))
    with ASEIO(store, readonly=True) as db:
        assert len(db) == 5 and db[0].get_chemical_formula() == "CH4"


HOLDER = """
import sys, time, lmdb
env = lmdb.open(sys.argv[1], subdir=False, max_dbs=8)
print("open", flush=True)
sys.stdin.readline()
"""


def test_a_new_file_another_process_has_open_is_left_alone(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store deleted and made anew in place by a writer: the new file is the writer's, kept."""
    holders: list[subprocess.Popen[str]] = []

    def recreate() -> None:
        _remove(store)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"

    _before_lmdb_opens(monkeypatch, recreate)
    try:
        with ASEIO(store, readonly=True) as db:
            assert len(db) == 0  # a store being made: nothing in it yet
        assert store.exists()
    finally:
        for holder in holders:
            holder.communicate("\n", timeout=30)
