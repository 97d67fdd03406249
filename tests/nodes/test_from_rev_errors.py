"""Issue 18 item 4: ``from_rev`` failures that a fresh clone meets say what ``remote=`` and
``rev=`` mean instead of DVC's bare ``CloneError: SCM error`` (real git repositories)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from asebytes_nodes import PipelineSourceError
from asebytes_nodes.nodes import from_rev


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"],
        cwd=tmp_path,
        check=True,
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_dvc_remote_name_as_remote_says_what_remote_means(repo: Path) -> None:
    with pytest.raises(
        PipelineSourceError, match=r"remote= names a git repository.*not a DVC remote"
    ) as info:
        from_rev("Train", remote="store", rev="v1")
    assert "dvc remote add" in str(info.value)
    assert type(info.value.__cause__).__name__ == "CloneError"


def test_an_unknown_revision_is_named(repo: Path) -> None:
    with pytest.raises(PipelineSourceError, match=r"has no revision 'nope'.*git fetch --tags"):
        from_rev("Train", rev="nope")
