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



# -- values a write would refuse are refused on reading, naming the column and the row ------------
BASE = {"positions": [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], "atomic_numbers": [[1, 1]], "energy": [1.5]}
CUBE = [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]


def refused(pattern: str) -> pytest.RaisesExc[InvalidDataError]:
    return pytest.raises(InvalidDataError, match=pattern)


def colabfit(tmp_path: Path, name: str, **columns: object) -> ASEIO:
    path = write(pa.table({**BASE, **columns}), tmp_path / f"{name}.parquet")
    return ASEIO("colabfit://" + path, split="train", cache_dir=tmp_path / "cache")


def test_volume_normalized_stress_needs_a_cell(tmp_path: Path) -> None:
    flag = "cauchy_stress_volume_normalized"
    stress = [[8.0, 0, 0], [0, 16.0, 0], [0, 0, 24.0]]
    two = {**{k: v * 2 for k, v in BASE.items()}, "cauchy_stress": [stress] * 2, flag: [False, True]}
    db = colabfit(tmp_path, "ok", **two, cell=[CUBE, CUBE])
    np.testing.assert_allclose(db[1].get_stress(), [1, 2, 3, 0, 0, 0])  # divided by the volume, 8
    null_cell = pa.array([CUBE, None], pa.list_(pa.list_(pa.float64())))
    with refused(rf"row 1: '{flag}' says .* but the row has no cell in 'cell'"):
        colabfit(tmp_path, "null", **two, cell=null_cell)[1]
    with refused(r"row 1: .*by the cell volume, but the dataset has no cell column"):
        list(colabfit(tmp_path, "none", **two))
    flat = [[2.0, 0, 0], [0, 2.0, 0], [0, 0, 0]]
    with refused(r"row 1: .* its cell in 'cell' has no volume"):
        colabfit(tmp_path, "zero", **two, cell=[CUBE, flat])["calc.stress"].to_list()
    for name, flags in (("int", [0, 1]), ("str", ["false", "true"])):
        with refused(rf"^column '{flag}' .* must hold booleans, but it is of Arrow"):
            colabfit(tmp_path, name, **{**two, flag: flags}, cell=[CUBE] * 2)[0]


def test_per_atom_results_must_have_ase_shapes(tmp_path: Path) -> None:
    db = colabfit(tmp_path, "f2", atomic_forces=[[[1.0, 2.0], [3.0, 4.0]]])
    message = (r"row 0: column 'atomic_forces' \(mapped to 'calc.forces'\) must hold numbers of shape "
               r"\(n_atoms, 3\), not \(2, 2\)")
    for read in (lambda: db[0], lambda: db["calc.forces"].to_list(), lambda: db.backend.read_rows([0])):
        with refused(message):
            read()
    with refused(r"'atomic_forces'.*\(n_atoms, 3\), but it is of Arrow type list<"):
        colabfit(tmp_path, "fs", atomic_forces=[[["1", "2", "3"], ["4", "5", "6"]]])[0]
    with refused(r"'atomic_forces'.*one entry per atom, but it is of Arrow type double"):
        colabfit(tmp_path, "f0", atomic_forces=[1.0])[0]
    mapping = ColumnMapping(numbers="atomic_numbers", calc={"energies": "e"})
    path = write(pa.table({**BASE, "e": [[0.5, 1.0]]}), tmp_path / "e.parquet")
    energies = ASEIO("hf://" + path, split="train", mapping=mapping, cache_dir=tmp_path / "c")
    assert energies[0].calc.results["energies"].tolist() == [0.5, 1.0]  # an (n_atoms,) result passes


def test_rows_without_per_atom_results_read_without_them(tmp_path: Path) -> None:
    """A structure without forces (null atomic_forces) was refused since the shape check, also when
    every row of a batch lacked them ("not (0, 0)")."""
    forces = pa.array([None, [[0, 0, 1.0], [0, 0, -1.0]]], pa.list_(pa.list_(pa.float64())))
    two = {k: v * 2 for k, v in BASE.items()}
    db = colabfit(tmp_path, "some", **two, atomic_forces=forces)
    assert "forces" not in db[0].calc.results and db[1].calc.results["forces"].shape == (2, 3)
    assert db["calc.forces"].to_list()[0] is None
    none = colabfit(tmp_path, "none", **two, atomic_forces=pa.array([None, None], forces.type))
    assert [a.calc is None or "forces" not in a.calc.results for a in none] == [True, True]


def test_wrong_arrow_types_name_the_column(tmp_path: Path) -> None:
    atoms = colabfit(tmp_path, "pbc", pbc=[True], cell=[CUBE])[0]
    assert atoms.pbc.tolist() == [True] * 3  # one flag per row stands for all three, as ASE's pbc=True
    cases = {
        "cell": (["2 0 0 0 2 0 0 0 2"], "lists of 9 numbers in every row, but it is of Arrow type string"),
        "positions": (["0 0 0 1 0 0"], "lists of 3 numbers per atom, but it is of Arrow type string"),
        "atomic_numbers": (
            [1], "lists of atomic numbers or of chemical symbols, but it is of Arrow type int64"
        ),
    }
    for column, (values, what) in cases.items():
        with refused(rf"^column '{column}' \(mapped to .*\) must hold {what}; fix"):
            colabfit(tmp_path, column, **{column: values})[0]


def test_bad_values_name_their_row_not_the_batch(tmp_path: Path) -> None:
    n = 100
    cells, forces, symbols = [CUBE] * n, [[[0.0, 0.0, 1.0]]] * n, [["H"]] * n
    cells[57], forces[61], symbols[83] = CUBE[:2], [[0.0, 1.0]], ["Xx"]  # 6 numbers, 2 components, no element
    table = {"positions": [[[0.0, 0.0, 0.0]]] * n, "atomic_numbers": [["H"]] * n, "energy": [1.0] * n}
    path = write(pa.table({**table, "cell": cells, "atomic_forces": forces}), tmp_path / "r.parquet")
    db = ASEIO("colabfit://" + path, split="train", cache_dir=tmp_path / "cache")
    for read in (lambda: list(db), lambda: db["cell"].to_list(), lambda: db[50:60].to_list()):
        with refused(r"^row 57: column 'cell' .* 9 numbers in every row, not 6"):
            read()
    with refused(r"^row 61: column 'atomic_forces'"):
        db["calc.forces"].to_list()
    path = write(pa.table({**table, "atomic_numbers": symbols}), tmp_path / "s.parquet")
    db = ASEIO("colabfit://" + path, split="train", cache_dir=tmp_path / "cache")
    with refused(r"^row 83: column 'atomic_numbers': unknown chemical symbol 'Xx'"):
        list(db)


def test_column_reads_check_the_atom_count_like_rows(tmp_path: Path) -> None:
    db = colabfit(tmp_path, "n", atomic_forces=[[[1.0, 2.0, 3.0]]])
    message = r"^row 0: column 'atomic_forces' \(read as 'calc.forces'\) has 1 entries, but the frame has 2"
    for read in (lambda: db[0], lambda: db["calc.forces"].to_list(), lambda: db[:].to_batch(["calc.forces"])):
        with refused(message):
            read()


def test_optimade_null_lattice_vectors_are_zero_vectors(tmp_path: Path) -> None:
    def slab(name: str, third: list[float | None]) -> ASEIO:
        table = pa.table({
            "cartesian_site_positions": [[[0.0, 0, 0], [1.0, 0, 0]]], "species_at_sites": [["Si", "O"]],
            "lattice_vectors": [[[3.0, 0, 0], [0, 4.0, 0], third]], "dimension_types": [[1, 1, 0]],
        })
        path = write(table, tmp_path / f"{name}.parquet")
        return ASEIO("optimade://" + path, split="train", cache_dir=tmp_path / "cache")

    atoms = slab("slab", [None, None, None])[0]  # OPTIMADE: the vector of a non-periodic direction
    assert atoms.cell.tolist() == [[3, 0, 0], [0, 4, 0], [0, 0, 0]]
    assert atoms.pbc.tolist() == [True, True, False]
    with refused(r"row 0: column 'lattice_vectors'.*null as a whole, not in part"):
        slab("part", [None, 1.0, None])[0]
