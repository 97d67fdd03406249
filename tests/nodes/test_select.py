"""Subset selection without DVC: every rule checked against a per-frame reference on the Atoms.

Matrix: filters (atom count, elements, energy per atom, max force, key presence, all at once)
x stores (LMDB: row store with scalar blocks; Zarr: columnar arrays; memory); indices, slices,
samples and splits (Split's disjoint parts) on the filtered rows; error messages for impossible requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms

from asebytes_nodes import ASEIO, RowIndexError, UnknownKeyError, atoms_to_dict
from asebytes_nodes.nodes import SplitConfig, SubsetConfig
from asebytes_nodes.nodes._select import select_rows, split_rows


def _passes(atoms: Atoms, f: dict[str, Any]) -> bool:
    """The filters, decided frame by frame from the Atoms (the independent path)."""
    row = atoms_to_dict(atoms)
    n = len(atoms)
    if "n_atoms" in f and not f["n_atoms"].get("min", -1) <= n <= f["n_atoms"].get("max", 1e9):
        return False
    if "elements" in f and not set(atoms.get_chemical_symbols()) <= set(f["elements"]):
        return False
    if "energy_per_atom" in f:
        if "calc.energy" not in row or n == 0:
            return False
        epa = row["calc.energy"] / n
        if not f["energy_per_atom"].get("min", -1e9) <= epa <= f["energy_per_atom"].get("max", 1e9):
            return False
    if "max_force" in f:
        if "calc.forces" not in row:
            return False
        if n and np.linalg.norm(row["calc.forces"], axis=1).max() > f["max_force"]:
            return False
    return all(key in row for key in f.get("has_keys", ()))


FILTERS = [
    {"n_atoms": {"min": 4, "max": 8}},
    {"elements": ["Cu", "H", "O"]},
    {"energy_per_atom": {"min": -2.0, "max": 0.0}},
    {"max_force": 4.0},
    {"has_keys": ["calc.forces", "info.i"]},
    {"n_atoms": {"min": 1}, "elements": ["Cu", "Au"], "energy_per_atom": {"max": 0.5}, "max_force": 8.0},
]


@pytest.fixture(params=["lmdb", "zarr", "memory"])
def db(request: pytest.FixtureRequest, tmp_path: Path, frames: list[Atoms]) -> ASEIO:
    target = {"lmdb": tmp_path / "s.lmdb", "zarr": tmp_path / "s.zarr", "memory": "memory://"}[request.param]
    db = ASEIO(target)
    db.extend(frames)
    return db


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "+".join(f))
def test_filters_match_reference(db: ASEIO, frames: list[Atoms], filters: dict[str, Any]) -> None:
    expected = [i for i, atoms in enumerate(frames) if _passes(atoms, filters)]
    got = select_rows(db, SubsetConfig(filters=filters)).tolist()
    assert got == expected
    assert 0 < len(got) < len(frames)  # the filter really discriminates on this data


def test_rows_then_filters_then_split(store: ASEIO, frames: list[Atoms]) -> None:
    base = {"slice": {"start": 2, "stop": 30}, "filters": {"max_force": 6.0}}
    kept = [i for i in range(2, 30) if _passes(frames[i], base["filters"])]
    config = SplitConfig(**base, fractions={"a": 0.5, "b": 0.25, "c": 0.25}, seed=9)
    parts = split_rows(store, config)
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == kept  # disjoint parts that cover the filtered rows
    assert [len(p) for p in parts.values()] == [
        len(kept) // 2,
        3 * len(kept) // 4 - len(kept) // 2,
        len(kept) - 3 * len(kept) // 4,
    ]
    assert all((np.diff(p) > 0).all() for p in parts.values())
    assert split_rows(store, config)["a"].tolist() == parts["a"].tolist()
    # fractions below 1 in all leave rows out, never in two parts
    other = split_rows(store, SplitConfig(**base, fractions={"x": 0.3, "y": 0.3}, seed=1))
    assert not set(other["x"].tolist()) & set(other["y"].tolist())


def test_indices_keep_order_and_accept_negative(store: ASEIO) -> None:
    assert select_rows(store, SubsetConfig(indices=[5, -1, 0])).tolist() == [5, len(store) - 1, 0]
    with pytest.raises(RowIndexError, match="^indices: row index 999 is out of range"):
        select_rows(store, SubsetConfig(indices=[999]))


def test_samples_and_parts_keep_the_order_of_indices(store: ASEIO) -> None:
    """Explicit indices keep their order through a sample and a split (the docs said ascending)."""
    given = [20, 9, 17, 3, 12, 7, 1, 15]
    sample = select_rows(store, SubsetConfig(indices=given, sample={"n": 5, "seed": 4})).tolist()
    assert sample == [i for i in given if i in sample] and sample != sorted(sample)
    parts = split_rows(store, SplitConfig(indices=given, fractions={"a": 0.5, "b": 0.5}, seed=2))
    for rows in parts.values():
        assert rows.tolist() == [i for i in given if i in rows.tolist()]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == sorted(given)


def test_split_refuses_a_row_picked_twice(store: ASEIO) -> None:
    """``-1`` and ``n - 1`` name one row: a split would put it in two parts (train [0 1 9 1],
    test [2 3 9 0] before)."""
    config = SplitConfig(indices=[0, 1, len(store) - 1, -1, 2], fractions={"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match=rf"^indices name rows \[{len(store) - 1}\] more than once"):
        split_rows(store, config)


def test_seeded_sample(store: ASEIO) -> None:
    a = select_rows(store, SubsetConfig(sample={"n": 7, "seed": 1}))
    assert len(a) == 7 and len(set(a.tolist())) == 7 and (np.diff(a) > 0).all()
    assert a.tolist() == select_rows(store, SubsetConfig(sample={"n": 7, "seed": 1})).tolist()
    assert a.tolist() != select_rows(store, SubsetConfig(sample={"n": 7, "seed": 2})).tolist()
    half = select_rows(store, SubsetConfig(sample={"fraction": 0.5}))
    assert len(half) == len(store) // 2
    with pytest.raises(ValueError, match=r"sample.n is 500 but only \d+ frames remain"):
        select_rows(store, SubsetConfig(sample={"n": 500}))
    with pytest.raises(ValueError, match=r"sample.fraction 0.01 of the 5 frames .* is 0 frames"):
        select_rows(store, SubsetConfig(indices=[0, 1, 2, 3, 4], sample={"fraction": 0.01}))


def test_filter_on_a_key_no_frame_has(store: ASEIO) -> None:
    with pytest.raises(UnknownKeyError, match="no row carries the key 'info.nowhere'"):
        select_rows(store, SubsetConfig(filters={"has_keys": ["info.nowhere"]}))
