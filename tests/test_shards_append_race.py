"""Readers of a sharded LMDB dataset while another process appends to it.

An append writes the topped-up last shard under a new name, replaces the manifest, then
deletes the shard it replaced. A reader that checked that shard's file just before the
deletion and opened it just after made LMDB create a new, empty file under its name (a
read-only handle's environment was opened for writing, with ``O_CREAT``): the dataset then
"held 0 rows" in that shard (1.4% of reader opens with 1-frame appends in a tight loop).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.backends import _lmdb_env
from asebytes_nodes.shards._manifest import MANIFEST
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames

pytest.importorskip("lmdb")

_APPENDER = """
import sys
from pathlib import Path
from asebytes_nodes import ASEIO
from asebytes_nodes.testing.frames import make_frames

folder, stop = Path(sys.argv[1]), Path(sys.argv[2])
frames = make_frames("ethanol")
db = ASEIO(folder)
i = 0
while not stop.exists():
    db.extend([frames[i % len(frames)]])
    i += 1
"""


def test_a_shard_deleted_as_a_reader_opens_it_is_read_from_its_successor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment between a reader's checks of a shard file and LMDB's open of it, when the
    append that replaced the shard deletes it: the reader must neither make the file anew
    nor call the dataset damaged."""
    frames = make_frames("ethanol")[:4]
    folder = tmp_path / "ds"
    ASEIO(folder, backend="shards", shard_backend="lmdb", shard_frames=8).extend(frames[:3])
    old = "shard-00000.n3.lmdb"
    before, shard = (folder / MANIFEST).read_bytes(), (folder / old).read_bytes()
    ASEIO(folder).extend(frames[3:])  # writes shard-00000.n4.lmdb, the manifest, deletes n3
    after = (folder / MANIFEST).read_bytes()
    # back to the append's state after its manifest, before its deletion, and a reader that
    # read the manifest before the append
    (folder / old).write_bytes(shard)
    (folder / MANIFEST).write_bytes(before)
    reader = ASEIO(folder, readonly=True)
    (folder / MANIFEST).write_bytes(after)
    checked = _lmdb_env.check_file

    def check_then_delete(path: Path, *fd: int | None) -> None:
        checked(path, *fd)
        if path.name == old:
            path.unlink()  # the append's deletion, just before LMDB opens the file

    monkeypatch.setattr(_lmdb_env, "check_file", check_then_delete)
    assert len(reader) == 3
    assert_atoms_equal(frames[2], reader[2])
    assert not (folder / old).exists()


def test_readers_opening_during_appends_of_another_process_see_every_shard(tmp_path: Path) -> None:
    """1-frame appends in a tight loop in another process; each read opens the dataset afresh
    and reads its length and last row (failed on about 1 in 70 opens)."""
    frames = make_frames("ethanol")
    folder, stop = tmp_path / "ds", tmp_path / "stop"
    ASEIO(folder, backend="shards", shard_backend="lmdb", shard_frames=50).extend(frames[:3])
    appender = subprocess.Popen([sys.executable, "-c", _APPENDER, str(folder), str(stop)])
    try:
        deadline = time.monotonic() + 60
        while len(ASEIO(folder, readonly=True)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)  # the appender has started
        start, opens = len(ASEIO(folder, readonly=True)), 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            db = ASEIO(folder, readonly=True)
            n = len(db)
            assert db[n - 1].get_chemical_formula() == "C2H6O"
            db.backend.close()
            opens += 1
    finally:
        stop.touch()
        appender.wait(timeout=60)
    assert appender.returncode == 0
    assert len(ASEIO(folder, readonly=True)) - start > 20, "the appender barely ran: the test proved nothing"
    assert opens > 100
