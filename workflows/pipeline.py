"""Build the example pipeline: Load -> Convert (Zarr, LMDB, H5MD) -> Split -> Parts -> Benchmark.

    python workflows/pipeline.py      # from the repository root: writes dvc.yaml, params.yaml, zntrack.json
    dvc repro                         # runs it

The generated files are committed, so ``dvc repro`` on a fresh clone needs only this package
installed. The input, ``workflows/data/emt-md.extxyz``, is made by ``workflows/make_dataset.py``
and committed too. Run this script again after changing the graph here, or an output's backend
(output names are part of ``dvc.yaml``); change other parameters in ``params.yaml`` or with
``dvc exp run -S 'Split.config.seed=7'`` without rebuilding: the split is computed once, by the
Split node, so such a change moves Train, Validation and Test together and they stay disjoint.
"""

from __future__ import annotations

from typing import Any

import zntrack

from asebytes_nodes.nodes import Benchmark, Convert, Load, Part, Split

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

#: The split, computed once by the Split node; the Part nodes Train, Validation and Test read
#: their rows from it. The filter drops frames in which some atom feels more than 10 eV/Å.
SPLIT: dict[str, Any] = {
    "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
    "seed": 42,
    "filters": {"max_force": 10.0},
}

#: Part nodes by name: which part of SPLIT each reads; the training part is also copied to LMDB.
PARTS: dict[str, dict[str, Any]] = {
    "Train": {"part": "train", "materialize": {"backend": "lmdb"}},
    "Validation": {"part": "val"},
    "Test": {"part": "test"},
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


def build() -> zntrack.Project:
    """The project with every node of the example; call ``.build()`` on it to write the files."""
    with zntrack.Project() as project:
        load = Load(source=DATASET)
        stores = {
            name: Convert(data=load, name=name, config={"store": store}) for name, store in STORES.items()
        }
        split = Split(data=stores["ToZarr"], config=SPLIT)
        parts = {name: Part(split=split, name=name, config=config) for name, config in PARTS.items()}
        Benchmark(data=parts["Train"], config=BENCHMARK)
    return project


if __name__ == "__main__":
    build().build()
