"""The column model (``backends/_columns.py``) and key model (``backends/_keys.py``) on their own:
inference per format, the one conflict message, schema entries, the row helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, ColumnTypeError, InvalidDataError
from asebytes_nodes.backends._columns import (
    Column,
    ColumnInfo,
    Typed,
    check,
    describe_value,
    expand_rows,
    first_value,
    infer,
    scalar_type_code,
    sorted_unique,
    take,
    type_code_dtype,
)
from asebytes_nodes.backends._keys import MISSING, atom_count, atom_counts, is_per_atom

ZARR, H5MD = Typed(), Typed(kinds="biuf", strings=True, zero_d=False, any_byte_order=True)
THREE = np.array([3, 3])


def test_per_atom_is_the_key_model_not_the_shape() -> None:
    assert is_per_atom("arrays.foo") and is_per_atom("calc.born_effective_charges")
    assert not is_per_atom("calc.dipole") and not is_per_atom("info.forces") and not is_per_atom("cell")
    dipole = describe_value("calc.dipole", np.zeros(3))
    assert dipole == ColumnInfo("float64", (3,), False)
    assert describe_value("calc.charges", np.zeros(3)) == ColumnInfo("float64", (-1,), True)
    assert describe_value("info.n", 3) == ColumnInfo("int", (), False)
    assert describe_value("info.x", np.float32(1)) == ColumnInfo("float32", (), False)


def test_atom_counts() -> None:
    rows = [{"arrays.numbers": np.ones(2)}, {"arrays.positions": np.ones((4, 3))}, {"cell": 1}]
    assert atom_counts(rows).tolist() == [2, 4, 0] and atom_count({}, None) is None


@pytest.mark.parametrize(
    ("key", "values", "zarr", "h5md"),
    [
        (
            "calc.dipole",
            [np.zeros(3), np.ones(3)],
            Column("frame", "<f8", (3,)),
            Column("frame", "<f8", (3,)),
        ),
        ("calc.charges", [np.zeros(3), np.ones(3)], Column("atom", "<f8", ()), Column("atom", "<f8", ())),
        ("info.x", [1.0, 2.0], Column("scalar", "<f8", (), "f"), Column("scalar", "<f8", (), "f")),
        ("info.z", [np.complex128(1)] * 2, Column("scalar", "<c16", (), "n<c16"), Column("object")),
        ("info.s", ["a", "b"], Column("object"), Column("string", "str")),
        ("info.s", ["a\0", "b"], Column("object"), Column("object")),
        ("info.d", [np.zeros(()), np.ones(())], Column("frame", "<f8", ()), Column("object")),
        ("info.e", [np.zeros((2, 0))] * 2, Column("object"), Column("object")),
        ("info.b", [np.zeros(3, ">f8")] * 2, Column("object"), Column("frame", ">f8", (3,))),
        ("arrays.q", [np.zeros(2), np.zeros(3)], Column("object"), Column("object")),  # not 3 atoms
        ("info.m", [1.0, 2], Column("object"), Column("object")),
    ],
)
def test_infer_per_format(key: str, values: list, zarr: Column, h5md: Column) -> None:
    assert infer(key, values, THREE, ZARR) == zarr
    assert infer(key, values, THREE, H5MD) == h5md


def test_check_names_key_frame_and_stored_type() -> None:
    scalar = Column("scalar", "<f8", (), "f")
    check("calc.energy", scalar, [1.0, MISSING, 2.0], THREE, "frame {}".format)
    with pytest.raises(ColumnTypeError, match=r"frame 2: column 'calc.energy' stores .*'f'.*type int") as err:
        check("calc.energy", scalar, [1.0, MISSING, 2], np.array([3, 3, 3]), "frame {}".format)
    assert isinstance(err.value, InvalidDataError)
    atom = Column("atom", "<f8", (3,))
    check("calc.forces", atom, [np.zeros((3, 3)), MISSING], np.array([3, 5]), "row {}".format)
    with pytest.raises(
        ColumnTypeError,
        match=r"row 1: .*per-atom arrays of dtype <f8 and shape \(n_atoms, 3\).*"
        r"dtype float64, shape \(4, 3\)",
    ):
        check("calc.forces", atom, [MISSING, np.zeros((4, 3))], np.array([3, 5]), "row {}".format)
    with pytest.raises(ColumnTypeError, match="a string with a NUL"):
        check("info.s", Column("string", "str"), ["a", "b\0"], THREE, str)
    check("info.o", Column("object"), [object()], THREE, str)


def test_scalar_type_codes() -> None:
    assert scalar_type_code([1.0, 2.0]) == "f" and scalar_type_code([True]) == "b"
    assert scalar_type_code([1, 2**63]) is None and scalar_type_code([np.int32(1)]) == "n<i4"
    assert type_code_dtype("i") == np.int64 and type_code_dtype("n<f4") == np.float32
    assert Column("scalar", "<i8", (), "i").info("info.n", list) == describe_value("info.n", 7)


def test_row_helpers() -> None:
    frames, where = sorted_unique(np.array([4, 1, 4]))
    assert frames.tolist() == [1, 4] and where is not None and where.tolist() == [1, 0, 1]
    assert sorted_unique(np.array([1, 2]))[1] is None
    rows = [{"a": np.zeros(1)}, {"a": np.ones(1)}]
    out = expand_rows(rows, where)
    assert out[0] is rows[1] and out[2] is not rows[1] and out[2]["a"] is not rows[1]["a"]
    data = np.arange(100) * 10
    reads: list = []

    def read(selection: object) -> np.ndarray:
        reads.append(selection)
        return data[selection]

    assert take(read, np.array([7, 3, 7]), 8).tolist() == [70, 30, 70] and reads == [slice(3, 8)]
    assert take(read, np.array([0, 99]), 1 << 30).tolist() == [0, 990] and reads[-1].tolist() == [0, 99]
    assert first_value(lambda r: [MISSING if i < 1500 else i for i in r.tolist()], 2000) == 1500


@pytest.mark.parametrize("target", ["x.lmdb", "x.zarr", "x.h5"])
def test_schema_agrees_with_memory(tmp_path: Path, target: str) -> None:
    """Values each format keeps in a different kind of column (complex, 0-d, big-endian, NUL
    strings, numpy scalars, ints beyond int64, ragged per-frame arrays) describe alike."""
    frames = []
    for k in range(2):
        atoms = molecule("H2O")
        atoms.info.update(
            z=np.array([1 + 2j, 3j]),
            zero_d=np.array(k * 1.5),
            big=np.arange(3, dtype=">f8"),
            nul=f"a\0{k}",
            f32=np.float32(k),
            huge=2**64 - 1 - k,
            ragged=np.zeros(k + 1),
            items={"a": [1, 2]},
            flag=bool(k),
        )
        atoms.arrays["q"] = np.arange(3, dtype=np.int32) + k
        frames.append(atoms)
    memory = ASEIO("memory://")
    memory.extend(frames)
    ASEIO(tmp_path / target).extend(frames)
    assert ASEIO(tmp_path / target, readonly=True).schema == memory.schema
