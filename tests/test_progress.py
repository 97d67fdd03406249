"""Progress bars: drawn when asked or on a terminal, silent otherwise, and never in the way."""

from __future__ import annotations

from typing import Any

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
