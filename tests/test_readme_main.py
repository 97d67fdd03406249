"""The README's main command, `dvc repro`, on a fresh clone of the committed repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from asebytes_nodes import ASEIO

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("dvc") is None or not (ROOT / ".git").exists(),
    reason="needs the dvc command and a git checkout of the project",
)


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "ASEBYTES_NODES_PROGRESS": "0"}
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_dvc_repro_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(ROOT), str(clone))
    _run(clone, "dvc", "repro")
    table = (clone / "nodes" / "Benchmark" / "benchmark.md").read_text()
    for label in ("lmdb", "zarr"):
        assert f"| {label}" in table
    metrics = json.loads(_run(clone, "dvc", "metrics", "show", "--json").stdout)
    assert metrics, "dvc metrics show printed nothing"
    with ASEIO(clone / "nodes" / "Train" / "frames.lmdb", readonly=True) as train:
        assert 0 < len(train) < 500 and train[0].get_potential_energy() == train["calc.energy"].to_list()[0]
    assert "up to date" in _run(clone, "dvc", "status").stdout
    _run(clone, "dvc", "plots", "show")  # writes dvc_plots/, which git ignores
    assert "dvc_plots" not in _run(clone, "git", "status", "--porcelain").stdout
