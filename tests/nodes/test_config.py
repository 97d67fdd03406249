"""Node configuration: Pydantic models, their messages, and what a node keeps in params.yaml.

Matrix: one bad value per model (each message must name the field), backend options checked per
backend, models and plain dicts accepted alike, rejection when the graph is built.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml
import zntrack
from pydantic import BaseModel, ValidationError

from asebytes_nodes.nodes import (
    BenchmarkConfig,
    Convert,
    ConvertConfig,
    LoadConfig,
    Part,
    PartConfig,
    Split,
    SplitConfig,
    StoreSpec,
    Subset,
    SubsetConfig,
    ZarrOptions,
)

BAD: list[tuple[type[BaseModel], dict[str, Any], str]] = [
    (ConvertConfig, {"store": {"backend": "sqlite"}}, r"store\.backend\n.*'lmdb', 'zarr' or 'h5md'"),
    (
        ConvertConfig,
        {"store": {"backend": "zarr", "options": {"clevel": 12}}},
        r"store\.options\n.*clevel 12 is above 9",
    ),
    (
        ConvertConfig,
        {"store": {"backend": "zarr", "options": {"compresor": "lz4"}}},
        r"compresor\n.*Extra inputs",
    ),
    (
        ConvertConfig,
        {"store": {"backend": "lmdb", "options": {"compressor": "lz4"}}},
        r"compressor\n.*Extra inputs",
    ),
    (
        ConvertConfig,
        {"store": {"backend": "h5md", "options": {"compression": "zstd"}}},
        r"compression\n.*'gzip' or 'lzf'",
    ),
    (ConvertConfig, {"chunk_size": 0}, r"chunk_size\n.*greater than 0"),
    (LoadConfig, {"frames": {"step": -1}}, r"frames\.step\n.*greater than 0"),
    (SplitConfig, {"fractions": {"train": 0.8, "test": 0.3}}, r"\nfractions\n.*fractions sum to 1\.1"),
    (SplitConfig, {"fractions": {}}, r"\nfractions\n.*fractions must name at least one part"),
    (SplitConfig, {"indices": [0, 3, 0, 1, 3]}, r"\nindices\n.*rows \[0, 3\] are listed more than once"),
    (PartConfig, {}, r"part\n.*Field required"),
    (SubsetConfig, {"split": {"fractions": {"train": 1.0}}}, r"a Subset does not split: one Split node"),
    (SubsetConfig, {"sample": {"n": 3, "fraction": 0.5}}, r"sample\n.*exactly one of n and fraction"),
    (
        SubsetConfig,
        {"filters": {"elements": ["Cu", "Xx"]}},
        r"filters\.elements\n.*unknown chemical symbols \['Xx'\]",
    ),
    (
        SubsetConfig,
        {"filters": {"energy_per_atom": {"min": 1, "max": 0}}},
        r"energy_per_atom\n.*min \(1\.0\) is greater",
    ),
    (
        SubsetConfig,
        {"filters": {"has_keys": ["energy"]}},
        r"filters\.has_keys\n.*'energy' is not in the flat namespace",
    ),
    (SubsetConfig, {"filters": {"max_force": -1}}, r"filters\.max_force\n.*greater than 0"),
    (SubsetConfig, {"indices": [1], "slice": {"stop": 3}}, r"either indices or slice"),
    (BenchmarkConfig, {"backends": {}}, r"backends\n.*at least 1 item"),
    (BenchmarkConfig, {"repeats": "many"}, r"repeats\n.*valid integer"),
    (BenchmarkConfig, {"column": "energy"}, r"\ncolumn\n.*'energy' is not in the flat namespace"),
    (
        ConvertConfig,
        {"store": {"backend": "h5md", "group": "a", "options": {"particles_group": "b"}}},
        r"store\.options\n.*particles_group 'b' and group 'a' both name the H5MD particle group",
    ),
    (
        ConvertConfig,
        {"store": {"backend": "h5md", "options": {"particles_group": "a b"}}},
        r"store\.group\n.*\(group, or options\.particles_group\): invalid group name 'a b'",
    ),
    (
        ConvertConfig,
        {"store": {"backend": "zarr", "options": {"particles_group": "a"}}},
        r"store\.options\.particles_group\n.*Extra inputs",
    ),
]


@pytest.mark.parametrize(("model", "value", "message"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_value_names_the_field(model: type[BaseModel], value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(value)


def test_store_options_keep_only_what_was_set() -> None:
    spec = StoreSpec(backend="zarr", options={"compressor": "zstd", "chunk_frames": 64})
    assert spec.options == {"compressor": "zstd", "chunk_frames": 64}
    assert StoreSpec(
        backend="zarr", options=ZarrOptions(clevel=3).model_dump(exclude_unset=True)
    ).options == {"clevel": 3}


def test_particles_group_is_the_group() -> None:
    """H5MD's particles_group option is that backend's name for ``group``: moved there, so a node
    reads its frames from the group it wrote (``frames`` looked in the default group before)."""
    for group in (None, "pg"):
        spec = StoreSpec(backend="h5md", group=group, options={"particles_group": "pg"})
        assert (spec.group, spec.options) == ("pg", {})
    assert StoreSpec(backend="h5md", options={"particles_group": None, "timestep": 2.0}).model_dump() == {
        "backend": "h5md",
        "group": None,
        "options": {"timestep": 2.0},
    }


def test_params_are_plain_values_and_models_are_accepted(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with zntrack.Project() as project:
        a = Convert(source="in.lmdb", name="A", config=ConvertConfig(store=StoreSpec(backend="zarr")))
        Subset(data=a, name="B", config={"filters": {"elements": ["Cu"]}, "materialize": {"backend": "lmdb"}})
    project.build()
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["A"]["config"] == {
        "chunk_size": 1000,
        "store": {"backend": "zarr", "options": {}, "group": None},
        "shards": None,
        "workers": 1,
        "scheduler": None,
    }
    assert params["B"]["config"]["filters"]["elements"] == ["Cu"]
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert stages["A"]["outs"] == ["nodes/A/frames.zarr"]
    assert stages["B"]["outs"] == ["nodes/B/frames.lmdb", "nodes/B/selection.json"]
    assert stages["B"]["deps"] == ["nodes/A/frames.zarr"]
    assert stages["B"]["cmd"] == "zntrack run asebytes_nodes.nodes.subset.Subset --name B"


def test_split_parts_depend_on_one_split(tmp_path: Any, monkeypatch: Any) -> None:
    """One Split node, its parts as Part nodes: a split parameter moves every part at once."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"PartC: part 'c' is not one of the split's \['a', 'b'\]"):
        with zntrack.Project():
            split = Split(data=Convert(source="in.lmdb"), config={"fractions": {"a": 0.5, "b": 0.5}})
            Part(split=split, name="PartC", config={"part": "c"})
    with zntrack.Project() as project:
        split = Split(data=Convert(source="in.lmdb", name="A"), config={"fractions": {"a": 0.5, "b": 0.5}})
        Part(split=split, name="PartA", config={"part": "a", "materialize": {"backend": "lmdb"}})
        Part(split=split, name="PartB", config={"part": "b"})
    project.build()
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert stages["Split"]["outs"] == ["nodes/Split/split.json"]
    assert stages["PartA"]["deps"] == stages["PartB"]["deps"] == ["nodes/Split/split.json"]
    assert stages["PartA"]["outs"] == ["nodes/PartA/frames.lmdb", "nodes/PartA/selection.json"]


def test_bad_config_fails_when_the_graph_is_built(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match=r"fractions\.train\n.*valid number"):
        with zntrack.Project():
            Split(data=None, config={"fractions": {"train": "most"}})
    with pytest.raises(ValueError, match="give exactly one of data"):
        with zntrack.Project():
            Convert(config={})
    assert not (tmp_path / "params.yaml").exists()


def test_importing_the_package_stays_light() -> None:
    """Every DVC stage imports asebytes_nodes.nodes: it must not pull in the heavy libraries."""
    heavy = "{'zntrack', 'pydantic', 'dvc', 'zarr', 'lmdb', 'h5py', 'matplotlib'}"
    code = f"import sys, asebytes_nodes.nodes as n; n.__dir__(); print(sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
