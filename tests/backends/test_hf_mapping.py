"""Column mappings on real parquet files: ColabFit and OPTIMADE schemas, custom mappings, errors.

Tables are written by pyarrow in the public schemas (``asebytes_nodes.testing.hf_tables``)
and read through ``datasets`` via ``colabfit://``, ``optimade://`` and ``hf://`` URIs.
Stress signs are checked against ASE's own EMT calculator on compressed and stretched copper.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

pytest.importorskip("datasets")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from asebytes_nodes import ASEIO, ColumnMapping, InvalidDataError, UnknownKeyError  # noqa: E402
from asebytes_nodes.backends._hf_mapping import COLABFIT, OPTIMADE  # noqa: E402
from asebytes_nodes.testing.hf_tables import colabfit_table, optimade_table  # noqa: E402


def emt_frames() -> list[Atoms]:
    """Copper compressed (ASE stress < 0), stretched (> 0), sheared, plus a molecule without cell."""
    frames = []
    for scale, shear in ((0.97, 0.0), (1.03, 0.0), (1.0, 0.04)):
        atoms = bulk("Cu", "fcc", a=3.6 * scale, cubic=True).repeat((1, 1, 2))
        atoms.set_cell(atoms.cell.array + shear * np.triu(np.ones((3, 3)), 1), scale_atoms=True)
        atoms.rattle(0.02, seed=len(frames))
        atoms.calc = EMT()
        atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    water = molecule("H2O")
    water.calc = EMT()
    water.get_potential_energy()
    frames.append(water)  # no stress: a null in the stress column
    return frames


def write(table: pa.Table, path: Path) -> str:
    pq.write_table(table, path)
    return str(path)


def test_colabfit_schema(tmp_path: Path) -> None:
    frames = emt_frames()
    normalized = [False, True, False, False]
    uri = "colabfit://" + write(colabfit_table(frames, normalized), tmp_path / "cf.parquet")
    db = ASEIO(uri, split="train", cache_dir=tmp_path / "cache")
    assert db.backend.mapping == COLABFIT
    assert frames[0].get_stress()[:3].max() < 0 < frames[1].get_stress()[:3].min()
    for i, (expected, got) in enumerate(zip(frames, db, strict=True)):
        np.testing.assert_array_equal(got.numbers, expected.numbers)
        np.testing.assert_array_equal(got.positions, expected.positions)
        np.testing.assert_array_equal(got.cell.array, expected.cell.array)
        assert got.pbc.tolist() == expected.pbc.tolist()
        assert got.get_potential_energy() == expected.get_potential_energy()
        np.testing.assert_array_equal(got.get_forces(), expected.get_forces())
        assert got.info["configuration_id"] == f"CO_{i}"
        assert got.info["names"] == [f"frame {i}", "test"] and got.info["nsites"] == len(expected)
        assert got.info["last_modified"] == "2025-04-16 16:54:34.000000"
        assert "cauchy_stress_volume_normalized" not in got.info and "positions" not in got.info
    for i in range(3):  # same sign and value as ASE, also where ColabFit stored stress x volume
        np.testing.assert_allclose(db[i].get_stress(), frames[i].get_stress(), rtol=1e-12, atol=1e-15)
    assert "stress" not in db[3].calc.results
    assert db.backend.check() == []  # every row passes the checks a write would make


def test_optimade_schema(tmp_path: Path) -> None:
    frames = emt_frames()[:3]
    frames[2].pbc = [True, True, False]
    frames[2].get_stress()  # EMT recomputes for the new boundary conditions
    uri = "optimade://" + write(optimade_table(frames), tmp_path / "lemat.parquet")
    db = ASEIO(uri, split="train", cache_dir=tmp_path / "cache")
    assert db.backend.mapping == OPTIMADE
    for expected, got in zip(frames, db, strict=True):
        np.testing.assert_array_equal(got.numbers, expected.numbers)
        np.testing.assert_array_equal(got.positions, expected.positions)
        assert got.pbc.tolist() == expected.pbc.tolist()
        np.testing.assert_allclose(got.get_stress(), expected.get_stress(), rtol=1e-12, atol=1e-15)
        assert got.info["immutable_id"].startswith("agm") and got.info["functional"] == "pbe"
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [a.get_potential_energy() for a in frames])


def test_custom_mapping_and_unmapped_columns(tmp_path: Path) -> None:
    table = pa.table({
        "R": pa.array([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]], [[1.0, 0.0, 0.0]]]),
        "Z": pa.array([[1, 1], [2]], pa.list_(pa.int8())),
        "E": pa.array([-1.1, None]),
        "q": pa.array([[0.1, -0.1], [0.0]]),
        "tag": ["h2", "he"],
        "skip": [1, 2],
    })
    mapping = ColumnMapping(positions="R", numbers="Z", calc={"energy": "E"},
                            arrays={"charges": "q"}, exclude=("skip",))
    db = ASEIO("hf://" + write(table, tmp_path / "x.parquet"), split="train", mapping=mapping,
               cache_dir=tmp_path / "cache")
    assert db.columns == ["arrays.charges", "arrays.numbers", "arrays.positions", "calc.energy", "info.tag"]
    first, second = db[0], db[1]
    assert first.get_chemical_formula() == "H2" and first.get_potential_energy() == -1.1
    np.testing.assert_array_equal(first.arrays["charges"], [0.1, -0.1])
    assert second.calc is None and second.info == {"tag": "he"}
    assert db["calc.energy"].to_list() == [-1.1, None]
    assert pickle.loads(pickle.dumps(db))[0].info == {"tag": "h2"}
    as_dict = ASEIO("hf://" + str(tmp_path / "x.parquet"), split="train", mapping=mapping.to_dict(),
                    cache_dir=tmp_path / "cache")
    assert as_dict.backend.mapping == mapping and hash(as_dict.backend.mapping) == hash(mapping)


def test_missing_column_lists_available_ones(tmp_path: Path) -> None:
    path = write(pa.table({"pos": [[[0.0, 0.0, 0.0]]], "Z": [[1]]}), tmp_path / "m.parquet")
    db = ASEIO("hf://" + path, split="train", cache_dir=tmp_path / "cache",
               mapping=ColumnMapping(positions="pos", numbers="Z"))  # cell and pbc: read where present
    assert db[0].get_chemical_symbols() == ["H"] and not db[0].pbc.any()
    with pytest.raises(UnknownKeyError, match=r"'arrays.positions' from column 'positions'.*columns: pos, Z"):
        ASEIO("hf://" + path, split="train", cache_dir=tmp_path / "cache")
    with pytest.raises(UnknownKeyError, match=r"'calc.energy' from column 'E'.*available columns: pos, Z"):
        ASEIO("hf://" + path, split="train", cache_dir=tmp_path / "cache",
              mapping=ColumnMapping(positions="pos", numbers="Z", calc={"energy": "E"}))


def test_bad_values_name_the_row(tmp_path: Path) -> None:
    table = pa.table({
        "positions": [[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]],
        "numbers": [["H"], ["H", "Xx"]],
        "forces": [[[0.0, 0.0, 1.0]], [[0.0, 0.0, 1.0]]],
    })
    mapping = ColumnMapping(calc={"forces": "forces"})
    db = ASEIO("hf://" + write(table, tmp_path / "b.parquet"), split="train", mapping=mapping,
               cache_dir=tmp_path / "cache")
    assert db[0].get_chemical_symbols() == ["H"]
    with pytest.raises(InvalidDataError, match="unknown chemical symbol 'Xx'"):
        db[1]
    good = mapping.to_dict()
    db = ASEIO("hf://" + write(table.set_column(1, "numbers", pa.array([["H"], ["H", "H"]])),
                               tmp_path / "c.parquet"),
               split="train", mapping=good, cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidDataError, match=r"row 1: column 'forces'.*1 entries.*2 atoms"):
        db[1]


def test_array2d_feature_columns() -> None:
    """``datasets``' fixed-shape features are Arrow extension types; their storage is read."""
    import datasets

    features = datasets.Features({
        "positions": datasets.Array2D(shape=(None, 3), dtype="float32"),
        "numbers": datasets.List(datasets.Value("int64")),
        "forces": datasets.Array2D(shape=(None, 3), dtype="float64"),
    })
    positions = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 3), np.float32)]
    data = datasets.Dataset.from_dict(
        {"positions": positions, "numbers": [[1, 8], [2]], "forces": [np.eye(3)[:2], np.zeros((1, 3))]},
        features=features,
    )
    db = ASEIO(data, mapping=ColumnMapping(calc={"forces": "forces"}))
    np.testing.assert_array_equal(db[0].positions, positions[0])
    assert db[0].positions.dtype == np.float64
    np.testing.assert_array_equal(db[0].get_forces(), np.eye(3)[:2])
    assert db[1].get_chemical_symbols() == ["He"]
