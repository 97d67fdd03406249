"""A conversion ended by SIGTERM or ``kill -9`` must not leave its hidden full-size copy for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO
from asebytes_nodes.transfer import convert

# A conversion that reads its source slowly and says when each chunk is read.
CHILD = """
import sys, time
from asebytes_nodes import ASEIO
from asebytes_nodes.transfer import convert
src = ASEIO(sys.argv[1], readonly=True)
read = src.backend.read_rows
def slow(rows, *args, **kwargs):
    print("chunk", flush=True)
    time.sleep(0.05)
    return read(rows, *args, **kwargs)
src.backend.read_rows = slow
try:
    convert(src, sys.argv[2], chunk_size=5, show_progress=False)
finally:
    print("unwound", flush=True)
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src.lmdb"
    ASEIO(path).extend([molecule("H2O")] * 400)
    return path


def _interrupted(source: Path, target: Path, how: signal.Signals) -> subprocess.Popen[str]:
    """A child converting ``source`` to ``target``, sent ``how`` once it wrote two chunks."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(source), str(target)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for _ in range(3):  # the third read starts after two chunks were written to the copy
        assert child.stdout.readline() == "chunk\n"
    assert [p for p in target.parent.iterdir() if ".partial-" in p.name]  # the copy is there
    child.send_signal(how)
    child.wait(timeout=60)
    child.stdout.close()
    return child


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_sigterm_removes_the_copy_and_still_ends_the_process(source: Path) -> None:
    """SIGTERM (DVC, SLURM, kill) ended Python without its finally blocks: the copy stayed."""
    child = _interrupted(source, source.parent / "out.lmdb", signal.SIGTERM)
    assert child.returncode == -signal.SIGTERM  # ended by the signal, as without the cleanup
    assert _partials(source.parent) == []
    assert not (source.parent / "out.lmdb").exists()


def test_the_next_conversion_into_the_folder_removes_a_killed_ones_copy(source: Path) -> None:
    """kill -9 left .a.partial-PID...; a conversion to another name (b.lmdb) kept it for good."""
    child = _interrupted(source, source.parent / "a.lmdb", signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
    (leftover,) = [name for name in _partials(source.parent) if name.endswith(".lmdb")]
    assert len(ASEIO(source.parent / leftover, readonly=True)) >= 10  # a valid store, not a finished one
    assert convert(source, source.parent / "b.lmdb", show_progress=False) == 400
    assert leftover in _partials(source.parent)  # touched just now: perhaps a conversion in another
    quarter_ago = time.time() - 1000  # PID namespace (its pid means nothing here), still writing
    os.utime(source.parent / leftover, (quarter_ago, quarter_ago))
    assert convert(source, source.parent / "c.lmdb", show_progress=False) == 400
    assert _partials(source.parent) == []


def test_copies_it_cannot_judge_are_kept_and_reported(source: Path, tmp_path: Path) -> None:
    """Another host's copy (its pid means nothing here) is never removed; an idle one is reported."""
    foreign = tmp_path / ".a.partial-1-elsewhere.lmdb"
    busy = tmp_path / ".c.partial-1-elsewhere.lmdb"
    for path in (foreign, busy):
        ASEIO(path).extend([molecule("CH4")])
    hours_ago = time.time() - 7200
    os.utime(foreign, (hours_ago, hours_ago))
    with pytest.warns(RuntimeWarning) as caught:
        convert(source, tmp_path / "b.lmdb", show_progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and str(foreign) in messages[0] and "elsewhere" in messages[0]
    assert f"{foreign.stat().st_size:,} bytes" in messages[0]
    assert len(ASEIO(foreign, readonly=True)) == len(ASEIO(busy, readonly=True)) == 1


def test_a_running_conversions_copy_of_another_name_is_kept(source: Path, tmp_path: Path) -> None:
    """A killed conversion's copy, renamed to carry the pid of a running process, stays."""
    child = _interrupted(source, tmp_path / "a.lmdb", signal.SIGKILL)
    alive = subprocess.Popen(["sleep", "60"])
    try:
        for old in tmp_path.glob(f".a.partial-{child.pid}*"):
            old.rename(tmp_path / old.name.replace(f"-{child.pid}", f"-{alive.pid}"))
        kept = _partials(tmp_path)  # the copy and its -lock file
        convert(source, tmp_path / "b.lmdb", show_progress=False)
        assert _partials(tmp_path) == kept and len(kept) == 2
    finally:
        alive.kill()
        alive.wait()


def test_sigterm_handling_is_scoped_to_the_main_threads_conversion(source: Path, tmp_path: Path) -> None:
    """The previous SIGTERM handler comes back; a program's own handler and other threads are left alone."""
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    convert(source, tmp_path / "a.lmdb", show_progress=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def own(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        convert(source, tmp_path / "b.lmdb", show_progress=False)
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(convert(source, tmp_path / "c.lmdb")))
    worker.start()
    worker.join()
    assert done == [400] and _partials(tmp_path) == []
