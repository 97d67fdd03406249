"""What a stage leaves for git and the terminal, in a real repository (git, DVC, ZnTrack).

A stage that fails on the data prints one line naming the stage (Convert, Load, Cache,
Benchmark as Subset and Split do); a stage killed mid-write leaves its hidden temporary copy
git-ignored; an LMDB output that DVC restored from its run cache (with a ``.gitignore``
DVC wrote alone) is read without leaving an untracked lock file beside it.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from node_data import needs_h5md
from test_pipeline import run

from asebytes_nodes import ASEIO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

# row 6 has float32 positions: LMDB keeps them, H5MD refuses one column of two dtypes; no frame has
# the energy Benchmark measures
BUILD = """
import zntrack
from asebytes_nodes.nodes import Benchmark, Cache, Convert, Load

h5md = {"store": {"backend": "h5md"}}
with zntrack.Project() as project:
    load = Load(source="data/mixed.lmdb")
    Convert(data=load, name="ToH5", config={**h5md, "chunk_size": 4})
    Load(source="data/mixed.lmdb", name="LoadH5", config=h5md)
    Cache(source="data/mixed.lmdb", name="CacheH5", config=h5md)
    Benchmark(data=load, name="Bench", config={"backends": {"h5": {"backend": "h5md"}}, "repeats": 1})
project.build()
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with the graph built and committed, and Load reproduced."""
    repo = tmp_path_factory.mktemp("housekeeping")
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "git", "config", "user.email", "test@example.com")
    run(repo, "dvc", "init", "-q")
    frames = [molecule("H2O") for _ in range(10)]
    frames[6].arrays["positions"] = frames[6].positions.astype(np.float32)
    (repo / "data").mkdir()
    with ASEIO(repo / "data" / "mixed.lmdb") as db:
        db.extend(frames)
    (repo / "data" / ".gitignore").write_text("/mixed.lmdb-lock\n")
    (repo / "build.py").write_text(BUILD)
    run(repo, sys.executable, "build.py")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "graph")
    run(repo, "dvc", "repro", "-s", "Load")
    yield repo


def untracked(repo: Path) -> list[str]:
    return run(repo, "git", "status", "--porcelain", "-uall").stdout.splitlines()


@needs_h5md
@pytest.mark.parametrize(
    ("stage", "cause"),
    [("ToH5", "float32"), ("LoadH5", "float32"), ("CacheH5", "float32"), ("Bench", "'calc.energy'")],
)
def test_a_stage_failing_on_the_data_says_so_in_one_line(repo: Path, stage: str, cause: str) -> None:
    done = run(repo, "dvc", "repro", "-s", stage, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if line.startswith(f"{stage}: ")]
    assert cause in line


def test_a_killed_stage_s_temporary_copies_are_git_ignored(repo: Path) -> None:
    node = repo / "nodes" / "Load"
    # what SIGKILL leaves: a conversion's copy (and its lock file), a sharded write's work folder,
    # a replaced store set aside
    for name in [".frames.partial-4242-host.lmdb", ".frames.partial-4242-host.lmdb-lock"]:
        (node / name).write_bytes(b"half")
    (node / ".frames.lmdb.partial").mkdir()
    (node / ".frames.lmdb.partial" / "shard-0.lmdb").write_bytes(b"half")
    (node / ".frames.lmdb.replaced-4242").write_bytes(b"old")
    assert [line for line in untracked(repo) if "nodes/Load/" in line] == ["?? nodes/Load/.gitignore"]
    for name in [".frames.partial-4242-host.lmdb", ".frames.lmdb.partial", ".frames.lmdb.replaced-4242"]:
        shutil.rmtree(node / name) if (node / name).is_dir() else (node / name).unlink()
    (node / ".frames.partial-4242-host.lmdb-lock").unlink()


def test_an_output_restored_from_the_run_cache_reads_without_untracked_files(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zntrack

    run(repo, "git", "add", "dvc.lock", "nodes/Load/.gitignore")
    run(repo, "git", "commit", "-qm", "Load")
    run(repo, "git", "tag", "v1")
    shutil.rmtree(repo / "nodes" / "Load")  # a clean checkout of the outputs
    restored = run(repo, "dvc", "repro", "-s", "Load")
    assert "Stage 'Load' is cached" in restored.stdout
    monkeypatch.chdir(repo)
    frames = zntrack.from_rev("Load").frames
    assert len(frames) == 10 and frames[5].positions.tolist() == molecule("H2O").positions.tolist()
    assert len(zntrack.from_rev("Load", rev="v1").frames) == 10
    assert [line for line in untracked(repo) if "lock" in line] == []
    assert "/frames.lmdb-lock" in (repo / "nodes" / "Load" / ".gitignore").read_text().split()
    assert "up to date" in run(repo, "dvc", "status", "Load").stdout
