"""Each node's ``run`` in-process, the way ``zntrack run`` loads it, without git or DVC.

The graph is built (params.yaml, zntrack.json), then every node is loaded with
``from_rev(..., running=True)`` and run. Matrix: Load (frame range) -> Convert into each backend,
Convert from a path, Cache, run-time validation of a hand-edited params.yaml, and a backend
changed after the graph fixed the output's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
import zntrack
from ase import Atoms
from node_data import needs_h5md
from pydantic import ValidationError

from asebytes_nodes import ASEIO, StoreNotFoundError
from asebytes_nodes.backends import LMDBBackend
from asebytes_nodes.nodes import Cache, Convert, Load, Split, Subset
from asebytes_nodes.testing.frames import assert_atoms_equal


def run_all(*nodes: type[zntrack.Node]) -> None:
    """Load each node class by its default name, as ``zntrack run`` does, and run it."""
    for node in nodes:
        node.from_rev(node.__name__, running=True).run()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: list[Atoms]) -> Path:
    monkeypatch.chdir(tmp_path)
    with ASEIO("source.lmdb") as db:
        db.extend(frames)
    return tmp_path


@pytest.mark.parametrize("backend", ["lmdb", "zarr", pytest.param("h5md", marks=needs_h5md)])
def test_load_then_convert(project: Path, frames: list[Atoms], backend: str) -> None:
    with zntrack.Project() as graph:
        load = Load(source="source.lmdb", config={"frames": {"start": 2, "stop": 20, "step": 3}})
        Convert(data=load, config={"store": {"backend": backend}, "chunk_size": 4})
    graph.build()
    run_all(Load, Convert)
    out = zntrack.from_rev("Convert").frames
    assert len(out) == 6
    for j, i in enumerate(range(2, 20, 3)):
        assert_atoms_equal(out[j], frames[i], where=f"row {j}")
    assert out.backend.name == backend
    ignored = (project / "nodes" / "Load" / ".gitignore").read_text().split()
    sides = [f"/{side.name}" for side in LMDBBackend.side_files("frames.lmdb")]
    assert ignored == [*sides, "/.frames.*"]  # beside the output, and its temporary copies


def test_an_upstream_nodes_frames_attribute_as_data(project: Path, frames: list[Atoms]) -> None:
    """``Convert(data=load.frames)`` (the attribute, not the node) reads those frames; the run
    failed with ``'ASEIO' object has no attribute 'frames'``."""
    with zntrack.Project() as graph:
        load = Load(source="source.lmdb", config={"frames": {"stop": 5}})
        Convert(data=load.frames, config={"store": {"backend": "lmdb"}})
    graph.build()
    run_all(Load, Convert)
    out = zntrack.from_rev("Convert").frames
    assert len(out) == 5
    assert_atoms_equal(out[4], frames[4], where="row 4")


def test_a_missing_selection_says_what_to_run(project: Path) -> None:
    """A Subset without a store of its own whose selection.json is not there (not pulled): its
    frames and indices say to run dvc pull or dvc repro (a bare FileNotFoundError before)."""
    with zntrack.Project() as graph:
        Subset(data=Load(source="source.lmdb"), config={"indices": [0, 2]})
    graph.build()
    run_all(Load, Subset)
    assert zntrack.from_rev("Subset").indices.tolist() == [0, 2]
    (project / "nodes" / "Subset" / "selection.json").unlink()
    for attr in ("indices", "frames"):
        with pytest.raises(StoreNotFoundError, match=r"Subset: its output .*selection.json.*dvc pull"):
            getattr(zntrack.from_rev("Subset"), attr)


def test_convert_from_a_path_and_cache(project: Path, frames: list[Atoms]) -> None:
    with zntrack.Project() as graph:
        Convert(
            source="source.lmdb", config={"store": {"backend": "zarr", "options": {"compressor": "zstd"}}}
        )
        Cache(source="source.lmdb")
    graph.build()
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert stages["Convert"]["deps"] == stages["Cache"]["deps"] == ["source.lmdb"]
    run_all(Convert, Cache)
    for name in ("Convert", "Cache"):
        out = zntrack.from_rev(name).frames
        assert len(out) == len(frames)
        assert_atoms_equal(out[-1], frames[-1], where=name)


def edit_params(path: Path, node: str, change: dict[str, Any]) -> None:
    params = yaml.safe_load(path.read_text())
    params[node]["config"].update(change)
    path.write_text(yaml.safe_dump(params))


def test_run_validates_params_again(project: Path) -> None:
    with zntrack.Project() as graph:
        Convert(source="source.lmdb", config={"store": {"backend": "zarr"}})
    graph.build()
    edit_params(project / "params.yaml", "Convert", {"store": {"backend": "zarr", "options": {"clevel": 99}}})
    # a running stage exits with Pydantic's message (no traceback through ZnTrack's CLI)
    message = (
        r"Convert: invalid config in params.yaml\n1 validation error .*\nstore\.options\.clevel\n.*less than"
    )
    with pytest.raises(SystemExit, match=message) as failed:
        run_all(Convert)
    assert isinstance(failed.value.__cause__, ValidationError)
    # a backend changed in params.yaml only: one line naming the script that builds the graph,
    # before the old backend's options are checked against the new backend
    edit_params(project / "params.yaml", "Convert", {"store": {"backend": "lmdb", "options": {"clevel": 3}}})
    with pytest.raises(SystemExit) as failed:
        run_all(Convert)
    assert str(failed.value) == (
        "Convert: params.yaml asks for a lmdb store but the graph was built with nodes/Convert/frames.zarr; "
        "change it in the script that builds the graph and run that script again "
        "(output names are part of dvc.yaml)"
    )
    (project / "workflows").mkdir()
    (project / "workflows" / "pipeline.py").touch()  # this project's script is named when it exists
    with pytest.raises(SystemExit, match=r"change it in workflows/pipeline\.py and run that script again"):
        run_all(Convert)
    assert not (project / "nodes" / "Convert" / "frames.zarr").exists()


def test_cache_and_load_a_dataset_uri(project: Path, frames: list[Atoms]) -> None:
    """A Hub-style source (here a local parquet file): a parameter, not a DVC dependency."""
    pytest.importorskip("datasets")
    from asebytes_nodes.backends._arrow import write_parquet

    write_parquet(frames, project / "frames.parquet")
    options = {"split": "train", "cache_dir": str(project / "hf-cache")}
    source = f"hf://{project / 'frames.parquet'}"
    with zntrack.Project() as graph:
        Cache(source=source, config={"source_options": options})
        Load(
            source=source,
            config={
                "source_options": {"cache_dir": options["cache_dir"]},
                "split": "train",
                "frames": {"stop": 5},
                "store": {"backend": "zarr"},
            },
        )
    graph.build()
    assert "deps" not in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["Cache"]
    run_all(Cache, Load)
    # the cache_to scratch store is gone once the copy is complete, and would be git-ignored
    assert sorted(p.name for p in (project / "nodes" / "Cache").iterdir()) == [".gitignore", "frames.lmdb"]
    ignored = (project / "nodes" / "Cache" / ".gitignore").read_text().split()
    sides = [f"/{side.name}" for side in LMDBBackend.side_files("frames.lmdb")]
    scratch = [f"/{side.name}" for side in LMDBBackend.side_files(".download.lmdb")]
    assert ignored == [*sides, "/.frames.*", "/.download.lmdb", *scratch]
    cached, loaded = zntrack.from_rev("Cache").frames, zntrack.from_rev("Load").frames
    assert len(cached) == len(frames) and len(loaded) == 5
    assert_atoms_equal(cached[-1], frames[-1])
    assert_atoms_equal(loaded[4], frames[4])


def _with_groups(wanted: bool) -> list[str]:
    from asebytes_nodes.options import BACKEND_OPTIONS
    from asebytes_nodes.registry import list_backends

    return [b for b in BACKEND_OPTIONS if list_backends()[b].load().supports_groups == wanted]


@pytest.mark.parametrize("backend", _with_groups(True))
def test_convert_into_a_group(project: Path, frames: list[Atoms], backend: str) -> None:
    """``store.group`` writes the frames to that group; ``frames`` reads them back from it."""
    with zntrack.Project() as graph:
        Convert(source="source.lmdb", config={"store": {"backend": backend, "group": "train"}})
    graph.build()
    run_all(Convert)
    out = zntrack.from_rev("Convert").frames
    assert len(out) == len(frames)
    assert_atoms_equal(out[3], frames[3])
    assert ASEIO.list_groups(out.backend.location) == ["train"]


def test_group_is_checked_when_the_graph_is_built(project: Path) -> None:
    with pytest.raises(ValidationError, match=r"store\.group\n.*invalid group name '\.\.'"):
        with zntrack.Project():
            Convert(source="source.lmdb", config={"store": {"group": ".."}})
    for backend in _with_groups(False):
        with pytest.raises(ValidationError, match=f"the {backend} backend has no groups"):
            with zntrack.Project():
                Convert(source="source.lmdb", config={"store": {"backend": backend, "group": "a"}})


@needs_h5md
def test_particles_group_output_reads_back(project: Path, frames: list[Atoms]) -> None:
    """H5MD's ``particles_group`` option writes that group, and ``frames`` reads it (it looked in
    the default group 'atoms': StoreNotFoundError), for a Convert, a materialised Subset and a
    params.yaml edited by hand."""
    h5md = {"backend": "h5md", "options": {"particles_group": "pg"}}
    with zntrack.Project() as graph:
        convert = Convert(source="source.lmdb", config={"store": h5md})
        Subset(data=convert, config={"indices": [4, 1], "materialize": h5md})
    graph.build()
    run_all(Convert, Subset)
    out, subset = zntrack.from_rev("Convert").frames, zntrack.from_rev("Subset").frames
    assert ASEIO.list_groups(out.backend.location) == ["pg"]
    assert len(out) == len(frames)
    assert_atoms_equal(subset[0], frames[4])
    by_hand = {"backend": "h5md", "options": {"particles_group": "hand"}}
    edit_params(project / "params.yaml", "Convert", {"store": by_hand})
    run_all(Convert)
    assert len(zntrack.from_rev("Convert").frames) == len(frames)


def test_selection_errors_name_the_node_and_field(project: Path) -> None:
    """A row index out of range, or a row a Split would take twice (``-1`` and ``n - 1``), fails
    the stage with one line naming the node and ``indices``."""
    with zntrack.Project() as graph:
        load = Load(source="source.lmdb", config={"frames": {"stop": 3}})
        Subset(data=load, config={"indices": [0, 99]})
        Split(data=load, config={"indices": [2, -1, 0], "fractions": {"a": 0.5, "b": 0.5}})
    graph.build()
    run_all(Load)
    with pytest.raises(SystemExit, match=r"^Subset: indices: row index 99 is out of range for 3 rows"):
        run_all(Subset)
    with pytest.raises(SystemExit, match=r"^Split: indices name rows \[2\] more than once"):
        run_all(Split)
