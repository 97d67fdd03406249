"""The Convert node with a sharded output on 2 Dask workers, in a real ``dvc repro``, then ``from_rev``.

One stage (Convert from a tracked extxyz, ``shards: 7, workers: 2``) in a temporary git + DVC
repository: the output is one folder (one DVC output) read back through ``from_rev`` at the tag,
frame by frame equal to the source; the Pydantic config refuses a bad shard size at build time.
Without DVC: a Subset of a sharded Convert whose filters run on Dask (one task per shard) and
whose ``materialize`` writes a sharded dataset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.testing.frames import FRAME_KINDS, assert_atoms_equal, make_frames

pytest.importorskip("zntrack")
pytest.importorskip("distributed")
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

BUILD = """
import zntrack
from asebytes_nodes.nodes import Convert

with zntrack.Project() as project:
    Convert(source="data.extxyz", config={"store": {"backend": "lmdb"}, "shards": 7, "workers": 2})
project.build()
"""


def run(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_sharded_convert_in_dvc_repro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [f for kind in sorted(FRAME_KINDS) for f in make_frames(kind)]
    repo = tmp_path / "repo"
    repo.mkdir()
    for command in (
        ("git", "init", "-q", "-b", "main"),
        ("git", "config", "user.name", "test"),
        ("git", "config", "user.email", "test@example.com"),
        ("dvc", "init", "-q"),
    ):
        run(repo, *command)
    ase.io.write(repo / "data.extxyz", frames, format="extxyz")
    (repo / "build.py").write_text(BUILD)
    run(repo, sys.executable, "build.py")
    run(repo, "dvc", "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "v1")
    run(repo, "git", "tag", "v1")
    monkeypatch.chdir(repo)
    import zntrack

    out = zntrack.from_rev("Convert", rev="v1").frames
    assert out.backend.name == "shards" and len(out.backend.shards) == -(-len(frames) // 7)
    source = ASEIO(repo / "data.extxyz")
    for i, (expected, got) in enumerate(zip(source, out, strict=True)):
        assert_atoms_equal(expected, got, f"frame {i}")
    assert "modified" not in run(repo, "dvc", "status")


def test_bad_shard_size_refused_at_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from asebytes_nodes.nodes._config import ConvertConfig

    with pytest.raises(ValidationError, match="shard size '12 apples'"):
        ConvertConfig.model_validate({"shards": "12 apples", "workers": 2})
    assert ConvertConfig.model_validate({"shards": "64MiB"}).sharded


def test_subset_filters_per_shard_on_dask_and_materializes_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import zntrack

    from asebytes_nodes.nodes import Convert, Subset
    from asebytes_nodes.nodes._config import Filters
    from asebytes_nodes.nodes._select import _pieces, filter_rows

    frames = [f for kind in sorted(FRAME_KINDS) for f in make_frames(kind)] * 2
    monkeypatch.chdir(tmp_path)
    ASEIO("source.lmdb").extend(frames)
    with zntrack.Project() as graph:
        sharded = Convert(source="source.lmdb", config={"shards": 5})
        Subset(
            data=sharded,
            config={
                "filters": {"n_atoms": {"min": 2}, "has_keys": ["calc.energy"]},
                "materialize": {"backend": "lmdb"},
                "shards": 4,
                "scheduler": "synchronous",  # Dask's in-process scheduler: the same tasks, no cluster
            },
        )
    graph.build()
    for node in (Convert, Subset):
        node.from_rev(node.__name__, running=True).run()
    source = zntrack.from_rev("Convert").frames
    want = [i for i, a in enumerate(frames) if len(a) >= 2 and "energy" in getattr(a.calc, "results", {})]
    subset = zntrack.from_rev("Subset")
    assert subset.indices.tolist() == want
    out = subset.frames
    assert out.backend.name == "shards" and [s.rows for s in out.backend.shards][:-1] == [4] * (
        len(want) // 4
    )
    for j, i in enumerate(want):
        assert_atoms_equal(frames[i], out[j], f"subset row {j} (source row {i})")
    rows = np.arange(len(source))
    pieces = _pieces(source.backend, rows)
    assert [len(p) for p in pieces] == [s.rows for s in source.backend.shards]  # one task per shard
    filters = Filters.model_validate({"n_atoms": {"min": 2}})
    assert np.array_equal(
        filter_rows(source.backend, rows, filters, 7, scheduler="synchronous"),
        filter_rows(source.backend, rows, filters, 7),
    )
