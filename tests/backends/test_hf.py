"""The read-only contract suite on the HuggingFace backend, plus its mappings, sources and streams.

Test matrix: the contract's frame kinds through the flat parquet layout, read (a) as a
downloaded dataset (``hf://file.parquet``) and (b) as a stream (a ``save_to_disk`` folder
opened with ``streaming=True``); ColabFit and OPTIMADE schemas written as parquet by
pyarrow and read through ``colabfit://`` / ``optimade://``; in-memory ``Dataset``,
``IterableDataset`` and ``DatasetDict`` objects. Nothing is mocked and nothing uses the network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms

datasets = pytest.importorskip("datasets")

from asebytes_nodes import HFBackend  # noqa: E402
from asebytes_nodes.backends._arrow import write_parquet  # noqa: E402
from asebytes_nodes.testing.contract import ReadableContract, StoreFactory  # noqa: E402


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
