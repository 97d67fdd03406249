"""The read-only contract suite on the HuggingFace backend, plus its mappings, sources and streams.

Test matrix: the contract's frame kinds through the flat parquet layout, read (a) as a
downloaded dataset (``hf://file.parquet``) and (b) as a stream (a ``save_to_disk`` folder
opened with ``streaming=True``); ColabFit and OPTIMADE schemas written as parquet by
pyarrow and read through ``colabfit://`` / ``optimade://``; in-memory ``Dataset``,
``IterableDataset`` and ``DatasetDict`` objects. Nothing is mocked and nothing uses the network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

datasets = pytest.importorskip("datasets")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from asebytes_nodes import (  # noqa: E402
    ASEIO,
    FormatVersionError,
    HFBackend,
    SerializationError,
    StoreCorruptedError,
    UnknownKeyError,
    UnsupportedOperationError,
    atoms_to_dict,
)
from asebytes_nodes.backends._arrow import LAYOUT_COLUMN, write_parquet  # noqa: E402
from asebytes_nodes.backends._hf import accepts  # noqa: E402
from asebytes_nodes.testing.contract import ReadableContract, StoreFactory  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402


class ParquetStore(StoreFactory):
    """Frames written as flat-layout parquet, read back through ``datasets.load_dataset``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seeded = 0

    def seed(self, frames: list[Atoms]) -> None:
        self.seeded += 1  # a new file per seed: datasets caches by file
        write_parquet(frames, self.path)

    @property
    def path(self) -> Path:
        return self.folder / f"frames{self.seeded}.parquet"

    def open(self, readonly: bool = False) -> HFBackend:
        return HFBackend(f"hf://{self.path}", split="train", cache_dir=self.folder / "cache")


class StreamStore(ParquetStore):
    """The same frames as a Hub-style folder (data file plus a README with split info), streamed."""

    def seed(self, frames: list[Atoms]) -> None:
        super().seed(frames)
        hub_folder(self.path, self.repo, len(frames))

    @property
    def repo(self) -> Path:
        return self.folder / f"repo{self.seeded}"

    def open(self, readonly: bool = False) -> HFBackend:
        return HFBackend(f"hf://{self.repo}", split="train", streaming=True)


def hub_folder(parquet: Path, repo: Path, rows: int | None) -> None:
    """Lay out ``parquet`` like a Hub dataset repository; ``rows`` goes into the card's split info."""
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train-00000-of-00001.parquet").write_bytes(parquet.read_bytes())
    if rows is not None:
        (repo / "README.md").write_text(
            "---\ndataset_info:\n  splits:\n  - name: train\n    num_bytes: 0\n"
            f"    num_examples: {rows}\n---\n"
        )


class TestHFContract(ReadableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ParquetStore(tmp_path)


class TestHFStreamContract(ReadableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return StreamStore(tmp_path)


@pytest.fixture
def ten(tmp_path: Path) -> tuple[list[Atoms], Path]:
    frames = make_frames("periodic_variable_n") + make_frames("ethanol") + make_frames("no_calculator")
    path = tmp_path / "ten.parquet"
    write_parquet(frames[:10], path)
    return frames[:10], path


def test_splits_are_required_and_listed(ten: tuple[list[Atoms], Path], tmp_path: Path) -> None:
    frames, path = ten
    repo = tmp_path / "repo"
    hub_folder(path, repo, None)
    (repo / "data" / "test-00000-of-00001.parquet").write_bytes(path.read_bytes())
    with pytest.raises(UnknownKeyError, match=r"holds the splits 'train', 'test'; choose one with split="):
        ASEIO(f"hf://{repo}", cache_dir=tmp_path / "cache")
    with pytest.raises(UnknownKeyError, match=r"no split 'valid'; its splits are 'train', 'test'"):
        ASEIO(f"hf://{repo}", split="valid", cache_dir=tmp_path / "cache")
    data = datasets.load_dataset(str(repo), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UnknownKeyError, match="DatasetDict holds the splits 'train', 'test'"):
        ASEIO(data)
    assert_atoms_equal(frames[7], ASEIO(data, split="test")[7])
    data.save_to_disk(str(tmp_path / "saved"))
    assert_atoms_equal(frames[2], ASEIO(f"hf://{tmp_path / 'saved'}", split="train")[2])
    arrow = next((tmp_path / "saved" / "train").glob("*.arrow"))  # one Arrow file, read on its own
    assert_atoms_equal(frames[4], ASEIO(f"hf://{arrow}", split="train", cache_dir=tmp_path / "cache")[4])
    (tmp_path / "frames.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UnsupportedOperationError, match=r"cannot read .csv files; give a .parquet or .arrow"):
        ASEIO(f"hf://{tmp_path / 'frames.csv'}", split="train")


def test_the_only_split_is_the_default(ten: tuple[list[Atoms], Path], tmp_path: Path) -> None:
    """A parquet file is one split, ``train``: read as with ``split="train"``, caches included."""
    frames, path = ten
    db = ASEIO(f"hf://{path}", cache_dir=tmp_path / "cache")
    assert_atoms_equal(frames[3], db[3])
    named = ASEIO(f"hf://{path}", split="train", cache_dir=tmp_path / "cache")
    assert db.backend.cache_record() == named.backend.cache_record() and "split='train'" in repr(db.backend)
    only = datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(tmp_path / "cache"))
    assert_atoms_equal(frames[5], ASEIO(only)[5])  # a DatasetDict of one split
    cached = ASEIO(f"hf://{path}", cache_dir=tmp_path / "cache", cache_to=tmp_path / "c.lmdb")
    assert_atoms_equal(frames[1], cached[1])
    assert_atoms_equal(frames[2], ASEIO(f"hf://{path}", split="train", cache_to=tmp_path / "c.lmdb")[2])


def test_in_memory_datasets(ten: tuple[list[Atoms], Path], tmp_path: Path) -> None:
    frames, path = ten
    data = datasets.load_dataset("parquet", data_files=str(path), split="train",
                                 cache_dir=str(tmp_path / "c"))
    assert accepts(data) and not accepts({"a": 1}) and not accepts(path)
    db = ASEIO(data)  # the registry offers the object to each backend's accepts()
    assert isinstance(db.backend, HFBackend) and len(db) == 10
    picked = ASEIO(data.select([9, 2, 5]))  # an indices mapping over the Arrow table
    assert picked.columns == sorted({k for i in (9, 2, 5) for k in atoms_to_dict(frames[i])})
    for a, b in zip([frames[9], frames[2], frames[5]], picked, strict=True):
        assert_atoms_equal(a, b)
    stream = ASEIO(data.to_iterable_dataset())  # no split info: the length is unknown
    with pytest.raises(UnsupportedOperationError, match="length of the stream dataset is unknown"):
        len(stream)


def test_accepts_leaves_datasets_unimported() -> None:
    code = (
        "import sys; from asebytes_nodes.backends._hf import accepts; "
        "assert not accepts(object()) and not accepts('hf://x'); assert 'datasets' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stream_reads_backwards_and_checks_its_length(ten: tuple[list[Atoms], Path], tmp_path: Path) -> None:
    frames, path = ten
    hub_folder(path, tmp_path / "ok", 10)
    db = ASEIO(f"hf://{tmp_path / 'ok'}", split="train", streaming=True, batch_size=3)
    for i in (7, 1, 8, 0, 9, 3, 3):
        assert_atoms_equal(frames[i], db[i], f"row {i}")
    for a, b in zip([frames[i] for i in (6, 2, 6, 9)], db[[6, 2, 6, 9]], strict=True):
        assert_atoms_equal(a, b)
    assert db["calc.energy"][2:5].to_list() == [a.get_potential_energy() for a in frames[2:5]]
    hub_folder(path, tmp_path / "long", 12)
    with pytest.raises(StoreCorruptedError, match="ended after 10 rows, but its split info claims 12"):
        ASEIO(f"hf://{tmp_path / 'long'}", split="train", streaming=True, batch_size=3)[11]
    hub_folder(path, tmp_path / "short", 8)
    with pytest.raises(StoreCorruptedError, match="more rows than the 8 its split info claims"):
        list(ASEIO(f"hf://{tmp_path / 'short'}", split="train", streaming=True, batch_size=3))


def test_column_view_reads_one_arrow_column(ten: tuple[list[Atoms], Path], tmp_path: Path) -> None:
    frames, path = ten
    db = ASEIO(f"hf://{path}", split="train", cache_dir=tmp_path / "cache")
    energies = db[:9]["calc.energy"].to_numpy()  # frame 9 has no calculator
    np.testing.assert_array_equal(energies, [a.get_potential_energy() for a in frames[:9]])
    assert list(db.backend._views) == [("calc.energy",)]  # the only columns queried from the dataset
    chunks = list(db[::-1].chunked(4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert_atoms_equal(frames[0], chunks[-1][-1])


def test_flat_layout_version_and_bad_frames(ten: tuple[list[Atoms], Path], tmp_path: Path) -> None:
    frames, path = ten
    db = ASEIO(f"hf://{path}", split="train", cache_dir=tmp_path / "cache")
    assert db.backend.format_info() == {"format": "asebytes_nodes.flat-parquet", "version": 1}
    table = pq.read_table(path)
    newer = table.set_column(table.schema.get_field_index(LAYOUT_COLUMN), LAYOUT_COLUMN,
                             pa.array(np.full(len(table), 2, np.int8)))
    pq.write_table(newer, tmp_path / "newer.parquet")
    with pytest.raises(FormatVersionError, match="flat parquet layout version 2"):
        ASEIO(f"hf://{tmp_path / 'newer.parquet'}", split="train", cache_dir=tmp_path / "cache")
    bad = make_frames("ethanol")
    bad[2].info["obj"] = object()
    with pytest.raises(SerializationError, match="frame 2: key 'info.obj'"):
        write_parquet(bad, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
