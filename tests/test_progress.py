"""Progress bars: drawn when asked or on a terminal, silent otherwise, and never in the way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import ase.io
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO
from asebytes_nodes.progress import ENV_VAR, progress, progress_enabled, set_progress


@pytest.fixture(autouse=True)
def automatic() -> Any:
    set_progress(None)
    yield
    set_progress(None)


def test_setting_then_environment_then_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert progress_enabled() is False  # pytest captures stderr: not a terminal
    monkeypatch.setenv(ENV_VAR, "1")
    assert progress_enabled() is True
    set_progress(False)
    assert progress_enabled() is False
    set_progress(None)
    monkeypatch.setenv(ENV_VAR, "0")
    assert progress_enabled() is False


def test_extend_draws_a_bar_with_rate_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    db = ASEIO("memory://")
    db.extend([molecule("H2O")] * 3000, show_progress=True)
    err = capsys.readouterr().err
    assert "preparing frames" in err and "/3.00k" in err and "frames/s" in err
    db.extend([molecule("H2O")] * 3000)
    assert capsys.readouterr().err == ""
    assert len(db) == 6000


def test_small_operations_stay_silent_even_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    with progress(10, "tiny") as bar:
        bar.update(10)
    with progress(50_000, "large") as bar:
        bar.update(50_000)
    err = capsys.readouterr().err
    assert "tiny" not in err and "large" in err


DRAW_50K = (
    "from asebytes_nodes.progress import progress\n"
    "with progress(50_000, 'drawing') as bar:\n    bar.update(50_000)\n"
)


def _drawn_on_terminal(
    columns: int, env_columns: str | None = None, code: str = DRAW_50K, rows: int = 24
) -> str:
    """What a fresh process running ``code`` draws on a pseudo-terminal that reports
    ``columns`` columns and ``rows`` rows (0: some CI runners and ``docker exec`` sessions)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "COLUMNS")}
    if env_columns is not None:
        env["COLUMNS"] = env_columns
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.parametrize("rows", [24, 0])
@pytest.mark.parametrize(("columns", "env_columns"), [(0, None), (0, "0"), (0, "120"), (100, None)])
def test_bars_draw_on_a_terminal_that_reports_no_width(
    columns: int, env_columns: str | None, rows: int
) -> None:
    """tqdm alone gives a 0-column terminal a 1-character bar and cuts the line's end, and draws
    no bar at all on one that reports 0 rows (``script``'s pty, docker exec)."""
    drawn = _drawn_on_terminal(columns, env_columns, rows=rows)
    bar = re.search(r"drawing: +0%\|( *)\| 0\.00/50\.0k \[[^\r]*\]", drawn)
    assert bar is not None and len(bar.group(1)) >= 20, repr(drawn)
    width = {None: 80, "0": 80, "120": 120}[env_columns] if columns == 0 else 100
    assert width - 2 <= len(bar.group(0)) <= width, repr(drawn)


def test_indexing_info_validate_and_column_reads_draw_bars(tmp_path: Path) -> None:
    path = tmp_path / "many.xyz"
    path.write_text('1\nenergy=-1.5 Lattice="2 0 0 0 2 0 0 0 2"\nH 0 0 0\n' * 6000)
    traj = tmp_path / "many.traj"
    ase.io.write(traj, ase.io.read(path, ":"))
    code = (
        "from asebytes_nodes import ASEIO\n"
        "from asebytes_nodes.backends import _xyzindex\n"
        "from asebytes_nodes.cli import main\n"
        "_xyzindex._BAR_BYTES = 0\n"  # the file is small: draw its indexing bar anyway
        f"main(['info', {str(path)!r}])\n"
        f"main(['validate', {str(path)!r}])\n"
        f"ASEIO({str(path)!r}, index_cache=False)['arrays.positions'].to_list()\n"
        f"ASEIO({str(traj)!r})['calc.energy'].to_list()\n"
    )
    drawn = _drawn_on_terminal(100, code=code)
    for bar in ("indexing many.xyz", "reading the keys of many.xyz", "reading frames", "checking many.xyz"):
        assert f"{bar}:" in drawn, (bar, drawn)
    assert "reading many.xyz:" in drawn  # a column of 6,000 frames parsed in full
    assert "reading many.traj:" in drawn


def test_a_column_read_in_chunks_draws_one_bar(tmp_path: Path) -> None:
    """A column of more frames than one read takes (16,384) draws one bar for the whole read,
    not one per chunk starting again from 0."""
    path = tmp_path / "long.xyz"
    path.write_text('1\nenergy=-1.5 Lattice="2 0 0 0 2 0 0 0 2"\nH 0 0 0\n' * 40_000)
    code = (
        "from asebytes_nodes import ASEIO\n"
        f"values = ASEIO({str(path)!r}, index_cache=False)['calc.energy'].to_list()\n"
        "assert values == [-1.5] * 40_000\n"
    )
    drawn = _drawn_on_terminal(100, code=code)
    assert "reading calc.energy:" in drawn, drawn
    assert "reading long.xyz:" not in drawn  # the chunks' own bars stay silent inside it


def test_a_sharded_conversion_draws_a_bar_in_frames(tmp_path: Path) -> None:
    """convert --shards drew nothing for as long as it ran: its bar counted partitions (a few)
    and bars start at 5,000 units. It counts the frames now."""
    path = tmp_path / "many.xyz"
    path.write_text('1\nenergy=-1.5 Lattice="2 0 0 0 2 0 0 0 2"\nH 0 0 0\n' * 6000)
    code = (
        "from asebytes_nodes.cli import main\n"
        f"main(['convert', {str(path)!r}, {str(tmp_path / 'out')!r}, '--shards', '2000'])\n"
    )
    drawn = _drawn_on_terminal(100, code=code)
    assert re.search(r"converting to out: +100%\|[^|]*\| 6\.00k/6\.00k \[", drawn), drawn
    assert len(ASEIO(tmp_path / "out")) == 6000
