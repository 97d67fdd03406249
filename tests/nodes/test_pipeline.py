"""The nodes in a real pipeline: git, DVC and ZnTrack in a temporary repository.

One repository per module, reproduced once and tagged ``v1``; the tests then run in file order:
reading outputs (status stays clean), metrics and plots, a parameter change (only the affected
stage runs, ``from_rev`` still returns the tagged frames), a bad parameter through
``dvc exp run -S``, push / fresh clone / read from the remote, and last a change of the source
data that leaves the selected indices alone but still reaches the stages downstream.

Graph: Load (into Zarr) -> Pick (Subset by indices, no copy) -> Bench (Benchmark);
Load -> Split -> Train (a Part, materialised as LMDB) and Test (a Part, indices only). Six stages
keep the module near 40 s of CPU; Convert's ``run`` is exercised without DVC in
``test_nodes_run.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from node_data import mixed_frames

from asebytes_nodes import ASEIO, StoreNotFoundError
from asebytes_nodes.testing.frames import assert_atoms_equal

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

BUILD = """
import zntrack
from asebytes_nodes.nodes import Benchmark, Load, Part, Split, Subset

with zntrack.Project() as project:
    load = Load(source="data.lmdb",
                config={"store": {"backend": "zarr", "options": {"chunk_frames": 8, "shard_frames": 64}}})
    pick = Subset(data=load, name="Pick", config={"indices": [0, 2, 4]})
    split = Split(data=load, config={"fractions": {"train": 0.5, "test": 0.5}, "seed": 1})
    Part(split=split, name="Train", config={"part": "train", "materialize": {"backend": "lmdb"}})
    Part(split=split, name="Test", config={"part": "test"})
    Benchmark(data=pick, name="Bench",
              config={"backends": {"lmdb": {"backend": "lmdb"}, "zarr": {"backend": "zarr"}},
                      "n_random": 5, "repeats": 1})
project.build()
"""


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def ran_stages(output: str) -> list[str]:
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def write_source(path: Path, energy_shift: float = 0.0) -> list[Atoms]:
    frames = mixed_frames()[:24]
    for atoms in frames:
        atoms.calc.results["energy"] += energy_shift
    shutil.rmtree(path, ignore_errors=True)
    path.unlink(missing_ok=True)
    with ASEIO(path) as db:
        db.extend(frames)
    return frames


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with the graph built, reproduced, committed and tagged v1; remote configured first."""
    root = tmp_path_factory.mktemp("pipeline")
    repo = root / "repo"
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "git", "config", "user.email", "test@example.com")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "remote", "add", "-d", "local", str(root / "remote"))
    (repo / ".gitignore").write_text("/data.lmdb-lock\n")
    write_source(repo / "data.lmdb")
    (repo / "build.py").write_text(BUILD)
    run(repo, sys.executable, "build.py")
    done = run(repo, "dvc", "repro")
    assert ran_stages(done.stdout) == ["Bench", "Load", "Pick", "Split", "Test", "Train"]
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "v1")
    run(repo, "git", "tag", "v1")
    yield repo


@pytest.fixture
def in_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(repo)
    return repo


def test_outputs_read_back_and_reading_changes_nothing(in_repo: Path) -> None:
    import zntrack

    source = mixed_frames()[:24]
    frames = zntrack.from_rev("Load").frames
    assert len(frames) == 24 and frames.backend.name == "zarr"
    assert_atoms_equal(frames[5], source[5])
    pick = zntrack.from_rev("Pick")
    assert pick.indices.tolist() == [0, 2, 4]
    assert [a.info["i"] for a in pick.frames] == [0, 2, 4]
    train = zntrack.from_rev("Train")
    assert len(train.frames) == 12 and train.frames.backend.name == "lmdb"
    assert (
        train.frames["calc.energy"].to_numpy()
        == np.array([source[i].get_potential_energy() for i in train.indices])
    ).all()
    files = [p for p in (in_repo / "nodes" / "Load" / "frames.zarr").rglob("*") if p.is_file()]
    metadata = [p for p in files if p.name == "zarr.json"]
    assert len(files) - len(metadata) <= len(metadata)  # sharded: at most one data file per array
    assert "up to date" in run(in_repo, "dvc", "status").stdout
    assert run(in_repo, "git", "status", "--porcelain").stdout == ""  # LMDB lock files are ignored


def test_metrics_and_plots(in_repo: Path) -> None:
    metrics = yaml.safe_load(run(in_repo, "dvc", "metrics", "show", "--json").stdout)
    (workspace,) = metrics.values()
    bench = workspace["data"]["nodes/Bench/metrics.json"]["data"]
    assert bench["frames"] == 3 and bench["lmdb"]["read_all"] > 0 and bench["zarr"]["size"] > 0
    # the readable form the docs give: one file, the five measures per store, three digits
    shown = run(in_repo, "dvc", "metrics", "show", "nodes/Bench/metrics.json").stdout
    assert "node-meta" not in shown and len(shown.splitlines()[0].split()) == 2 + 2 * 5
    assert all(v == float(f"{v:.3g}") for store in ("lmdb", "zarr") for v in bench[store].values())
    assert (in_repo / "nodes" / "Bench" / "write.csv").read_text().startswith("store,frames/s\n")
    plots = yaml.safe_load(run(in_repo, "dvc", "plots", "show", "--json").stdout)["data"]
    assert {"Bench_write", "Bench_read_all", "Bench_random", "Bench_column", "Bench_size"} <= set(plots)
    assert (in_repo / "nodes" / "Bench" / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert "| zarr |" in (in_repo / "nodes" / "Bench" / "benchmark.md").read_text()


def test_split_parameter_moves_every_part(in_repo: Path) -> None:
    """The docs' ``dvc exp run -S`` on the split: every part re-runs, and the parts stay disjoint."""
    import zntrack

    before = zntrack.from_rev("Train").indices
    done = run(in_repo, "dvc", "exp", "run", "-S", "Split.config.seed=2")
    assert ran_stages(done.stdout) == ["Split", "Test", "Train"]
    run(in_repo, "git", "add", "-A")
    run(in_repo, "git", "commit", "-qm", "split with seed 2")
    after, test = zntrack.from_rev("Train"), zntrack.from_rev("Test")
    assert not set(after.indices.tolist()) & set(test.indices.tolist())
    assert sorted(after.indices.tolist() + test.indices.tolist()) == list(range(24))
    assert after.indices.tolist() != before.tolist()
    assert [a.info["i"] for a in after.frames] == after.indices.tolist()
    old = zntrack.from_rev("Train", rev="v1")
    assert old.indices.tolist() == before.tolist()
    assert [a.info["i"] for a in old.frames] == before.tolist()
    assert old.frames is old.frames  # one copy of the old output while it is in use
    column = zntrack.from_rev("Train", rev="v1").frames["info.i"]  # node and store gone, the view not
    import gc

    gc.collect()
    assert column.to_list() == before.tolist()
    assert [a.info["i"] for a in zntrack.from_rev("Pick", rev="v1").frames] == [
        0,
        2,
        4,
    ]  # read through Load@v1


def test_bad_param_fails_cleanly(in_repo: Path) -> None:
    done = run(in_repo, "dvc", "exp", "run", "-S", "Pick.config.chunk_size=0", check=False)
    assert done.returncode != 0
    assert (
        "Pick: invalid config in params.yaml\n1 validation error for SubsetConfig\nchunk_size\n"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
    run(in_repo, "git", "checkout", "params.yaml")
    run(in_repo, "dvc", "checkout", "-f")  # DVC removed the outputs; zntrack had rewritten node-meta.json
    assert "up to date" in run(in_repo, "dvc", "status").stdout


def test_push_clone_and_read_from_the_remote(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zntrack

    run(repo, "dvc", "push", "-A")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    monkeypatch.chdir(clone)
    with pytest.raises(
        StoreNotFoundError, match=r"Train: its output .*frames.lmdb is not in this workspace; run `dvc pull"
    ):
        len(zntrack.from_rev("Train").frames)
    run(clone, "dvc", "remote", "modify", "--local", "local", "url", str(tmp_path / "nowhere"))
    with pytest.raises(StoreNotFoundError, match=r"at revision v1 .*run `dvc fetch -T`"):
        len(zntrack.from_rev("Pick", rev="v1").frames)
    (clone / ".dvc" / "config.local").unlink()
    old = zntrack.from_rev("Pick", rev="v1")  # no local cache: DVC fetches from the remote
    assert [a.info["i"] for a in old.frames] == [0, 2, 4]
    run(clone, "dvc", "pull", "-q")
    train = zntrack.from_rev("Train")
    assert [a.info["i"] for a in train.frames] == train.indices.tolist()
    assert "up to date" in run(clone, "dvc", "status").stdout


def test_upstream_data_change_reaches_downstream_stages(in_repo: Path) -> None:
    write_source(in_repo / "data.lmdb", energy_shift=1.0)
    done = run(in_repo, "dvc", "repro", "Pick")
    assert ran_stages(done.stdout) == ["Load", "Pick"]
    import zntrack

    assert zntrack.from_rev("Pick").indices.tolist() == [0, 2, 4]  # the same rows ...
    status = run(in_repo, "dvc", "status", "Bench").stdout
    assert "nodes/Pick/selection.json" in status  # ... but Bench sees new data behind them
