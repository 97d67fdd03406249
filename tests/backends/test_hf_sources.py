"""Hub-style sources read offline: ColabFit repository ids, streams without a row count,
all-null cell and pbc columns, and ``db.keys(i)``.

Every dataset is built here (pyarrow tables, ``datasets`` objects); nothing uses the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

datasets = pytest.importorskip("datasets")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from asebytes_nodes import ASEIO, ColumnMapping, HFBackend, RowIndexError, UnsupportedOperationError  # noqa: E402
from asebytes_nodes.backends._arrow import write_parquet  # noqa: E402
from asebytes_nodes.backends._hf import hub_repository  # noqa: E402


@pytest.mark.parametrize(
    ("uri", "repo"),
    [
        ("colabfit://MD22_Ac_Ala3_NHMe", "colabfit/MD22_Ac_Ala3_NHMe"),
        ("colabfit://someone/MD22", "someone/MD22"),
        ("hf://user/data", "user/data"),
        ("optimade://org/structures", "org/structures"),
    ],
)
def test_hub_repository_of_uri(uri: str, repo: str) -> None:
    assert hub_repository(uri) == repo


def stream_without_count(tmp_path: Path, n: int) -> object:
    frames = [molecule("H2O") for _ in range(n)]
    for i, atoms in enumerate(frames):
        atoms.info["k"] = i
        atoms.positions += i
    write_parquet(frames, tmp_path / "f.parquet")
    stream = datasets.Dataset.from_parquet(str(tmp_path / "f.parquet")).to_iterable_dataset()
    assert not stream.info.splits  # no split info: the length is unknown
    return stream


def test_stream_without_row_count_iterates_and_indexes(tmp_path: Path) -> None:
    db = ASEIO(HFBackend(stream_without_count(tmp_path, 7), batch_size=3))
    with pytest.raises(UnsupportedOperationError, match="unknown until it has been read to its end"):
        len(db)
    assert db[4].info["k"] == 4  # reads forward
    assert db[1].info["k"] == 1  # restarts to go back
    np.testing.assert_array_equal(db[2].positions, molecule("H2O").positions + 2)
    assert [a.info["k"] for a in db] == list(range(7))
    assert len(db) == 7  # known once the stream has been read to its end
    assert db[-1].info["k"] == 6


def test_stream_without_row_count_past_the_end(tmp_path: Path) -> None:
    db = ASEIO(HFBackend(stream_without_count(tmp_path, 4), batch_size=3))
    with pytest.raises(RowIndexError, match="past the end of the stream, which holds 4 rows"):
        db[9]
    assert len(db) == 4


def test_all_null_cell_and_pbc_columns(tmp_path: Path) -> None:
    water = molecule("H2O")
    table = pa.table(
        {
            "positions": pa.array([water.positions.tolist()] * 3),
            "numbers": pa.array([water.numbers.tolist()] * 3),
            "cell": pa.nulls(3),
            "pbc": pa.nulls(3),
        }
    )
    assert pa.types.is_null(table.schema.field("cell").type)
    pq.write_table(table, tmp_path / "molecules.parquet")
    db = ASEIO(f"hf://{tmp_path / 'molecules.parquet'}", split="train", mapping=ColumnMapping(),
               cache_dir=tmp_path / "cache")
    for atoms in db:
        np.testing.assert_array_equal(atoms.cell.array, np.zeros((3, 3)))
        assert not atoms.pbc.any()
        np.testing.assert_array_equal(atoms.positions, water.positions)
    assert db["cell"].to_numpy().shape == (3, 3, 3)


def test_null_rows_of_a_cell_column_are_zero_cells(tmp_path: Path) -> None:
    water = molecule("H2O")
    cell = [[5.0, 0, 0, 0, 5.0, 0, 0, 0, 5.0], None]
    table = pa.table(
        {
            "positions": pa.array([water.positions.tolist()] * 2),
            "numbers": pa.array([water.numbers.tolist()] * 2),
            "cell": pa.array(cell, type=pa.list_(pa.float64())),
            "pbc": pa.array([[True, True, True], None]),
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    db = ASEIO(f"hf://{tmp_path / 'm.parquet'}", split="train", mapping=ColumnMapping(),
               cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(db[0].cell.array, 5.0 * np.eye(3))
    assert db[0].pbc.all()
    np.testing.assert_array_equal(db[1].cell.array, np.zeros((3, 3)))
    assert not db[1].pbc.any()


def test_keys_of_one_row() -> None:
    db = ASEIO("memory://")
    plain, tagged = molecule("H2O"), molecule("CH4")
    tagged.info["label"] = "methane"
    db.extend([plain, tagged])
    assert "info.label" in db.keys(1)
    assert "info.label" in db.keys(-1)
    assert "info.label" not in db.keys(0)
    assert "arrays.positions" in db.keys(0)
    with pytest.raises(IndexError):
        db.keys(2)


def test_stream_without_row_count_through_a_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache.lmdb"
    stream = stream_without_count(tmp_path, 6)
    db = ASEIO(HFBackend(stream, batch_size=4), cache_to=cache)
    assert db[3].info["k"] == 3  # read forward, kept in the cache
    assert [a.info["k"] for a in db] == list(range(6))
    with pytest.raises(RowIndexError):
        db[8]
    again = ASEIO(HFBackend(stream), cache_to=cache)
    assert again[5].info["k"] == 5  # served by the cache, filled by the first handle
    assert len(ASEIO(cache, readonly=True)) == 7  # the header row and six frames
