"""Build the example pipeline: Load -> Convert (Zarr, LMDB, H5MD) -> Subset (train/val/test) -> Benchmark.

    python workflows/pipeline.py      # from the repository root: writes dvc.yaml, params.yaml, zntrack.json
    dvc repro                         # runs it

The generated files are committed, so ``dvc repro`` on a fresh clone needs only this package
installed. The input, ``workflows/data/emt-md.extxyz``, is made by ``workflows/make_dataset.py``
and committed too. Run this script again after changing the graph here; change parameters in
``params.yaml`` (or with ``dvc exp run -S``) without rebuilding.
"""

from __future__ import annotations

from typing import Any

import zntrack

from asebytes_nodes.nodes import Benchmark, Convert, Load, Subset

DATASET = "workflows/data/emt-md.extxyz"

#: Output stores and their backend options, by node name.
STORES = {
    "ToZarr": {"backend": "zarr", "options": {"compressor": "zstd", "clevel": 5}},
    "ToLMDB": {"backend": "lmdb"},
    "ToH5MD": {
        "backend": "h5md",
        "options": {"author_name": "asebytes-nodes example", "compression": "gzip"},
    },
}

#: One split shared by the three Subset nodes. The parts are disjoint because they split the
#: same rows (same filters) with the same fractions and seed. The filter drops frames in
#: which some atom feels more than 10 eV/Å.
SPLIT: dict[str, Any] = {
    "split": {"fractions": {"train": 0.8, "val": 0.1, "test": 0.1}, "seed": 42},
    "filters": {"max_force": 10.0},
}

BENCHMARK = {
    "backends": {
        "lmdb": {"backend": "lmdb"},
        "zarr-lz4": {"backend": "zarr"},
        "zarr-zstd": {"backend": "zarr", "options": {"compressor": "zstd", "clevel": 5}},
        "h5md": {"backend": "h5md"},
    },
    "n_random": 200,
    "repeats": 3,
}


def part_of_split(part: str, materialize: bool) -> dict[str, Any]:
    """Subset config selecting ``part`` of SPLIT; the training part is also copied to LMDB."""
    config: dict[str, Any] = {**SPLIT, "split": {**SPLIT["split"], "part": part}}
    if materialize:
        config["materialize"] = {"backend": "lmdb"}
    return config


def build() -> zntrack.Project:
    """The project with every node of the example; call ``.build()`` on it to write the files."""
    with zntrack.Project() as project:
        load = Load(source=DATASET)
        stores = {
            name: Convert(data=load, name=name, config={"store": store}) for name, store in STORES.items()
        }
        zarr = stores["ToZarr"]
        subsets = {
            name: Subset(data=zarr, name=name, config=part_of_split(part, materialize=name == "Train"))
            for name, part in (("Train", "train"), ("Validation", "val"), ("Test", "test"))
        }
        Benchmark(data=subsets["Train"], config=BENCHMARK)
    return project


if __name__ == "__main__":
    build().build()
