"""HuggingFace datasets converted into sharded datasets, partitioned by their Arrow shards (offline).

Matrix: a ``save_to_disk`` folder of 3 Arrow files (partitions never cross a file; a large
``shard_frames`` gives one dataset shard per file, a small one cuts each file), a shuffled
selection of it (row ranges), and a Hub-style folder of 3 parquet files read as a stream (one
dataset shard per stream shard, read by its own task); serial and Dask's synchronous scheduler.
Every dataset is built here; nothing uses the network.
"""

from __future__ import annotations

from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from asebytes_nodes import ASEIO, HFBackend  # noqa: E402
from asebytes_nodes.backends._arrow import write_parquet  # noqa: E402
from asebytes_nodes.shards import convert_sharded  # noqa: E402
from asebytes_nodes.testing.frames import FRAME_KINDS, assert_atoms_equal, make_frames  # noqa: E402


def frames() -> list:
    return [f for kind in sorted(FRAME_KINDS) for f in make_frames(kind)]


def assert_same(source: ASEIO, target: ASEIO) -> None:
    assert len(source) == len(target)
    for i, (expected, got) in enumerate(zip(source, target, strict=True)):
        assert_atoms_equal(expected, got, f"frame {i}")


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A ``save_to_disk`` folder of 3 Arrow files."""
    write_parquet(frames(), tmp_path / "all.parquet")
    data = datasets.Dataset.from_parquet(str(tmp_path / "all.parquet"), cache_dir=str(tmp_path / "cache"))
    data.save_to_disk(str(tmp_path / "saved"), num_shards=3)
    return tmp_path / "saved"


def test_partitions_follow_the_arrow_files(saved: Path, tmp_path: Path) -> None:
    source = HFBackend(f"hf://{saved}")
    sizes = source.arrow_shards()
    assert sizes is not None and len(sizes) == 3 and sum(sizes) == len(frames())
    convert_sharded(f"hf://{saved}", tmp_path / "whole", shard_frames=1000)
    whole = ASEIO(tmp_path / "whole")
    assert [s.rows for s in whole.backend.shards] == sizes  # one dataset shard per Arrow file
    assert_same(ASEIO(source), whole)
    convert_sharded(f"hf://{saved}", tmp_path / "cut", shard_frames=4, scheduler="synchronous")
    cut = ASEIO(tmp_path / "cut")
    expected = [min(4, size - lo) for size in sizes for lo in range(0, size, 4)]
    assert [s.rows for s in cut.backend.shards] == expected  # no shard crosses an Arrow file
    assert_same(ASEIO(source), cut)


def test_a_selection_is_cut_by_row_ranges(saved: Path, tmp_path: Path) -> None:
    shuffled = datasets.load_from_disk(str(saved)).shuffle(seed=3)
    source = HFBackend(shuffled)
    assert source.arrow_shards() is None
    convert_sharded(source, tmp_path / "out", shard_frames=5)
    out = ASEIO(tmp_path / "out")
    assert [s.rows for s in out.backend.shards][:-1] == [5] * (len(frames()) // 5)
    assert_same(ASEIO(source), out)


@pytest.mark.parametrize("scheduler", [None, "synchronous"])
def test_stream_by_its_shards(tmp_path: Path, scheduler: str | None) -> None:
    every = make_frames("periodic_variable_n") * 3  # one schema: the files are read as one stream
    cuts = [0, 5, 6, len(every)]
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    for k in range(3):
        write_parquet(every[cuts[k] : cuts[k + 1]], repo / f"train-{k:05d}-of-00003.parquet")
    uri = f"hf://{tmp_path / 'repo'}"
    stream = HFBackend(uri, split="train", streaming=True)
    assert stream.stream_shards() == 3
    convert_sharded(uri, tmp_path / "out", shard_frames=2, scheduler=scheduler,
                    source_options={"split": "train", "streaming": True})  # fmt: skip
    out = ASEIO(tmp_path / "out")
    assert [s.rows for s in out.backend.shards] == [5, 1, len(every) - 6]  # one per stream shard
    assert out.backend.format_info()["shard_frames"] == 2
    assert_same(ASEIO(HFBackend(uri, split="train")), out)
