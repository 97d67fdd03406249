"""Tools for fault tests: kill a writer mid-operation, fill a disk, damage a file.

Everything here acts on real processes and real files:

- :func:`kill_during` runs an operation in a child process (forked from a clean
  ``forkserver``, so no thread of the test process is inherited) and sends ``SIGKILL``
  a given time after the operation started.
- :func:`small_disk` mounts a tmpfs of a few MiB (root only; tests skip otherwise).
- :func:`flip_bit` and :func:`truncate` damage a file in place.
- :func:`versioned_frame` builds frame ``i`` in version ``v``, so that a reader can tell
  exactly which version of each frame a store holds (:func:`frame_version`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

NAMES = ("H2O", "CH4", "NH3", "CO2", "C2H6", "CH3CH2OH")
CHILD_TIMEOUT = 60.0


def versioned_frame(i: int, v: int = 0) -> Atoms:
    """Frame ``i`` in version ``v``: atom count, positions, energy and forces depend on both."""
    atoms = molecule(NAMES[(i + v) % len(NAMES)])
    rng = np.random.default_rng(1000 * v + i)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    forces = rng.normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=float(i + 1000 * v), forces=forces)
    atoms.info["frame"] = i
    atoms.info["version"] = v
    return atoms


def frame_version(atoms: Atoms) -> tuple[int, int]:
    """``(i, v)`` of a frame read back, after checking it is exactly ``versioned_frame(i, v)``.

    Raises AssertionError naming what differs (a torn frame mixes two versions).
    """
    i, v = int(atoms.info["frame"]), int(atoms.info["version"])
    expected = versioned_frame(i, v)
    assert np.array_equal(atoms.numbers, expected.numbers), f"frame {i} v{v}: numbers differ"
    assert np.array_equal(atoms.positions, expected.positions), f"frame {i} v{v}: positions differ"
    assert atoms.calc is not None, f"frame {i} v{v}: no calculator"
    assert atoms.calc.results["energy"] == expected.calc.results["energy"], f"frame {i} v{v}: energy differs"
    assert np.array_equal(atoms.calc.results["forces"], expected.calc.results["forces"]), (
        f"frame {i} v{v}: forces differ"
    )
    return i, v


def _context() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "ase", "asebytes_nodes", "faultkit"])
    return ctx


def _child(op: Callable[..., Any], args: tuple[Any, ...], started: Any, finished: Any) -> None:
    started.set()
    op(*args)
    finished.set()
    time.sleep(CHILD_TIMEOUT)  # wait for the kill, which the parent always sends


@contextlib.contextmanager
def _operation(op: Callable[..., Any], args: tuple[Any, ...]) -> Iterator[tuple[Any, Any]]:
    """A child process running ``op(*args)`` (:func:`_child`), yielded once the operation has
    started, with the event it sets when done; the child is killed on the way out."""
    ctx = _context()
    started, finished = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_child, args=(op, args, started, finished))
    proc.start()
    try:
        if not started.wait(CHILD_TIMEOUT):
            raise RuntimeError("the child process did not start the operation")
        yield proc, finished
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def kill_during(op: Callable[..., Any], args: tuple[Any, ...], delay: float) -> bool:
    """Run ``op(*args)`` in a child process and SIGKILL it ``delay`` seconds after it starts.

    ``op`` must be a module-level function (it is pickled). Returns True when the kill
    landed before ``op`` returned (the trial tested a crash), False when it came too late.
    """
    with _operation(op, args) as (proc, finished):
        if delay > 0:
            time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(CHILD_TIMEOUT)
    if proc.exitcode not in (-signal.SIGKILL, None):
        raise RuntimeError(f"the child process failed before the kill (exit code {proc.exitcode})")
    return not finished.is_set()


def run_in_child(op: Callable[..., Any], args: tuple[Any, ...]) -> int | None:
    """Run ``op(*args)`` to its end in a child process; its exit code (negative: a signal)."""
    proc = _context().Process(target=op, args=args)
    proc.start()
    proc.join(CHILD_TIMEOUT)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
    return proc.exitcode


def child_seconds(op: Callable[..., Any], *args: Any) -> float:
    """Seconds ``op(*args)`` takes in a child process started as :func:`kill_during` starts one:
    the span to draw kill moments from. (Timed in the test process, a first call pays imports and
    first-touch costs the forkserver's children do not, so every kill could come too late.)"""
    with _operation(op, args) as (proc, finished):
        start = time.perf_counter()
        while not finished.wait(0.01):
            if not proc.is_alive() or time.perf_counter() - start > CHILD_TIMEOUT:
                raise RuntimeError(f"the operation did not finish in the child (exit code {proc.exitcode})")
        return time.perf_counter() - start


def kill_delay(rng: Any, duration: float, trial: int) -> float:
    """A kill moment for trial ``trial`` of an operation taking ``duration`` seconds: uniform over
    it, the first trial over its first quarter, so at least one kill lands mid-operation."""
    return rng.uniform(0, duration) * (0.25 if trial == 0 else 1.0)


def copy_store(src: Path, dst: Path) -> Path:
    """A copy of a store (file, folder, and side files named ``<name>*`` beside a file)."""
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        for side in src.parent.glob(src.name + "*"):
            shutil.copy2(side, dst.parent / (dst.name + side.name[len(src.name) :]))
    return dst


@contextlib.contextmanager
def small_disk(mebibytes: int = 8) -> Iterator[Path]:
    """A fresh tmpfs of ``mebibytes`` MiB, mounted for the duration (needs root)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("full-disk tests mount a small tmpfs and need root")
    where = Path(tempfile.mkdtemp(prefix="asebytes-small-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mebibytes}m", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill_disk(where: Path, keep_free: int = 0) -> Path:
    """Write a ballast file in ``where`` until only about ``keep_free`` bytes remain free."""
    ballast = where / "ballast.bin"
    stats = os.statvfs(where)
    free = stats.f_bavail * stats.f_frsize
    with open(ballast, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - keep_free))
    return ballast


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    """Invert one bit of ``path`` at byte ``offset``."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes."""
    os.truncate(path, size)


def files_below(path: Path) -> set[str]:
    """Relative names of every file below a folder (or the file and its side files)."""
    if path.is_dir():
        return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
    return {p.name for p in path.parent.glob(path.name + "*")}
