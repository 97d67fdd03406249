"""The PyTorch recipe: a map-style dataset of whole batches under DataLoader workers, and to_tensors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.batch import BatchDataset, to_tensors
from asebytes_nodes.testing.frames import make_frames

torch = pytest.importorskip("torch")
from torch.utils.data import BatchSampler, DataLoader, RandomSampler  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "train.lmdb"
    with ASEIO(path) as db:
        db.extend(make_frames("periodic_variable_n") * 6)  # 30 frames, 1-3 atoms each
    return path


def test_dataloader_with_two_workers_covers_the_epoch(store: Path) -> None:
    db = ASEIO(store, readonly=True)
    dataset = BatchDataset(db, keys=["calc.energy", "arrays.positions", "calc.forces"])
    sampler = BatchSampler(
        RandomSampler(dataset, generator=torch.Generator().manual_seed(0)), 4, drop_last=False
    )
    loader = DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=2)
    energies, atoms_seen = [], 0
    for batch in loader:
        assert batch["n_atoms"].dtype == torch.int64
        assert batch["calc.energy"].dtype == torch.float64
        assert batch["arrays.positions"].shape == (int(batch["n_atoms"].sum()), 3)
        energies.extend(batch["calc.energy"].tolist())
        atoms_seen += int(batch["n_atoms"].sum())
    expected = db["calc.energy"].to_numpy()
    assert sorted(energies) == sorted(expected.tolist())
    assert atoms_seen == sum(len(a) for a in db)


def test_dataset_items_and_pickle(store: Path) -> None:
    db = ASEIO(store, readonly=True)
    dataset = BatchDataset(db[::2], keys="calc.energy", tensors=False)
    assert len(dataset) == 15
    item = dataset[[1, 0, 1]]
    np.testing.assert_array_equal(item["calc.energy"], db[[2, 0, 2]]["calc.energy"].to_numpy())
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone[3]["calc.energy"], db[[6]]["calc.energy"].to_numpy())


def test_to_tensors_shares_memory_where_it_can() -> None:
    batch = {"n_atoms": np.array([2, 1]), "x": np.arange(6.0).reshape(3, 2), "names": ["a", "b"]}
    frozen = np.arange(3, dtype=np.float32)
    frozen.flags.writeable = False
    batch["frozen"] = frozen
    tensors = to_tensors(batch)
    tensors["x"][0, 0] = 42.0
    assert batch["x"][0, 0] == 42.0  # no copy
    assert tensors["names"] == ["a", "b"]
    assert tensors["frozen"].dtype == torch.float32 and tensors["frozen"].tolist() == [0, 1, 2]
    assert tensors["n_atoms"].dtype == torch.int64
    record = np.zeros(1, [("energy", "<f8"), ("cell", "<f8", (3, 3)), ("pbc", "?", (3,)), ("n", "<i2")])
    record["cell"] = np.eye(3)  # a lone row's field: its stride (83 bytes) splits float64 items
    tensor = to_tensors({"cell": record["cell"]})["cell"]
    assert tensor.tolist() == [np.eye(3).tolist()]


def test_the_readme_recipe_runs_with_spawned_workers(store: Path) -> None:
    """The README's recipe as a script, workers started by spawn (macOS and Windows): without
    its ``__main__`` guard each worker ran the script again and died."""
    import re
    import subprocess
    import sys

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```python notest\n(from torch\.utils\.data import .*?)```", readme, re.S)
    assert block is not None
    script = store.parent / "recipe.py"
    script.write_text(
        "import multiprocessing\nmultiprocessing.set_start_method('spawn', force=True)\n"
        + block.group(1)
        + "    print('epoch of', len(dataset), 'frames done')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=store.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch of 30 frames done" in done.stdout
