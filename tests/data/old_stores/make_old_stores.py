"""Write the stores of tests/test_old_stores.py with an older asebytes-nodes (kept to document them).

Run with the old version first on the path, from the repository root:
    git worktree add /tmp/old4c5 4c5e883
    PYTHONPATH=/tmp/old4c5 python tests/data/old_stores/make_old_stores.py 4c5e883
    git worktree remove /tmp/old4c5
Each store gets the same frames; ``<rev>.json`` holds the rows that version reads back, with
types kept (a tagged encoding: see ``encode``), which today's code must read bit for bit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixCartesian

import asebytes_nodes
from asebytes_nodes import ASEIO
from asebytes_nodes.rows import atoms_to_dict

HERE = Path(__file__).parent


def frames() -> list[Atoms]:
    water = molecule("H2O", cell=[4.0, 5.0, 6.0], pbc=True)
    water.info.update(step=3, temp=300.5, label="water", meta={"a": [1, 2], "b": "x"}, vec=np.arange(3.0))
    water.arrays["charges_custom"] = np.array([-0.8, 0.4, 0.4])
    water.calc = SinglePointCalculator(
        water, energy=-14.25, forces=np.arange(9.0).reshape(3, 3) / 7, stress=np.arange(6.0) / 3
    )
    water.set_constraint(FixAtoms([0]))
    methane = molecule("CH4")
    methane.positions += 0.1
    methane.info.update(step=4, temp=float("nan"), vec=np.array([1.0, 2.0, 3.5]))
    methane.arrays["charges_custom"] = np.linspace(-1, 1, 5)
    methane.calc = SinglePointCalculator(methane, energy=-24.0625, forces=np.full((5, 3), 0.1))
    methane.set_constraint(FixCartesian(1, mask=[True, False, True]))
    copper = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 3.6, pbc=True)
    copper.info["step"] = 5
    ammonia = molecule("NH3")
    ammonia.info.update(label="ammonia", step=6)
    ammonia.calc = SinglePointCalculator(ammonia, energy=1e-300)
    return [water, methane, copper, ammonia]


def encode(value: Any) -> Any:
    """A JSON value that keeps Python and numpy types (floats round-trip exactly through repr)."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.dtype.str, "shape": list(value.shape), "data": value.ravel().tolist()}
    if isinstance(value, np.generic):
        return {"scalar": value.dtype.str, "value": value.item()}
    if isinstance(value, dict):
        return {"dict": [[key, encode(v)] for key, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [encode(v) for v in value]}
    return {type(value).__name__: value}


def main(rev: str) -> None:
    images = frames()
    stores = {"lmdb": f"{rev}.lmdb", "zarr": f"{rev}.zarr", "h5md": f"{rev}.h5"}
    expected: dict[str, Any] = {"revision": rev, "version": asebytes_nodes.__version__, "stores": {}}
    for backend, name in stores.items():
        with ASEIO(HERE / name, backend=backend) as db:
            db.extend(images)
        with ASEIO(HERE / name, backend=backend, readonly=True) as db:
            rows = [atoms_to_dict(atoms) for atoms in db]
            expected["stores"][name] = {
                "backend": backend,
                "format": db.backend.format_info(),
                "rows": [{key: encode(v) for key, v in row.items()} for row in rows],
            }
    (HERE / f"{rev}.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
