"""Stores written by an earlier version open with today's code and read back the same values.

The fixtures in ``tests/data/old_stores`` were written by commit 4c5e883 (LMDB, Zarr and H5MD,
each at format layout 2) with ``make_old_stores.py`` there; ``4c5e883.json`` holds the rows that
version read back, types kept. Frames: variable atom counts, ``info`` of every common kind (int,
float, NaN, str, dict, array), a custom per-atom array, energy, forces and stress, constraints.
Each store is copied first, so opening it never touches the committed files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asebytes_nodes import ASEIO, MissingExtraError
from asebytes_nodes.rows import atoms_to_dict
from asebytes_nodes.testing.frames import assert_values_equal

DATA = Path(__file__).parent / "data" / "old_stores"
REVISIONS = sorted(p.stem for p in DATA.glob("*.json"))


def decode(value: dict[str, Any]) -> Any:
    """The inverse of ``make_old_stores.encode``."""
    if "ndarray" in value:
        return np.array(value["data"], dtype=value["ndarray"]).reshape(value["shape"])
    if "scalar" in value:
        return np.dtype(value["scalar"]).type(value["value"])
    ((tag, data),) = value.items()
    if tag == "dict":
        return {key: decode(v) for key, v in data}
    if tag in ("list", "tuple"):
        items = [decode(v) for v in data]
        return items if tag == "list" else tuple(items)
    return data


def _cases() -> list[Any]:
    cases = []
    for rev in REVISIONS:
        for name, store in json.loads((DATA / f"{rev}.json").read_text())["stores"].items():
            cases.append(pytest.param(name, store, id=name))
    return cases


@pytest.mark.parametrize(("name", "expected"), _cases())
def test_old_store_reads_the_same(name: str, expected: dict[str, Any], tmp_path: Path) -> None:
    source = DATA / name
    copy = tmp_path / name
    if source.is_dir():
        shutil.copytree(source, copy)
    else:
        shutil.copyfile(source, copy)
    try:
        db = ASEIO(copy, backend=expected["backend"], readonly=True)
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    with db:
        assert {k: db.backend.format_info().get(k) for k in ("format", "version")} == {
            k: expected["format"][k] for k in ("format", "version")
        }
        rows = [{key: decode(v) for key, v in row.items()} for row in expected["rows"]]
        assert len(db) == len(rows)
        for i, (want, atoms) in enumerate(zip(rows, db, strict=True)):
            got = atoms_to_dict(atoms)
            assert_values_equal(
                {k: want[k] for k in sorted(want)}, {k: got[k] for k in sorted(got)}, f"row {i}"
            )
        energies = [row.get("calc.energy") for row in rows]
        assert db["calc.energy"].to_list() == energies
        assert db.backend.check() == []
