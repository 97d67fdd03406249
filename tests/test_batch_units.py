"""The batch pieces on their own: a user backend that only has ``read_rows`` gets ``to_batch``;
chunked reads merge; the atom gather on mixed atom counts; the argument checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.backends._base import ReadableBackend
from asebytes_nodes.backends._keys import MISSING
from asebytes_nodes.batch import atom_gather, merge_batches, pick_atoms, read_batch
from asebytes_nodes.rows import atoms_to_dict
from asebytes_nodes.testing.batches import expected_batch, numeric_shared_keys
from asebytes_nodes.testing.frames import assert_values_equal, make_frames


class ListBackend(ReadableBackend):
    """The smallest user backend: a length and ``read_rows``; it counts its calls."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows, self.calls = rows, 0

    def __len__(self) -> int:
        return len(self.rows)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        self.calls += 1
        return [{k: v for k, v in self.rows[int(i)].items() if keys is None or k in keys} for i in indices]


def test_user_backend_inherits_to_batch_built_on_read_rows() -> None:
    frames = make_frames("periodic_variable_n")
    backend = ListBackend([atoms_to_dict(a) for a in frames])
    db = ASEIO(backend)
    order = [4, 1, 1, 0]
    got = db[order].to_batch()
    expected = expected_batch(frames, order, numeric_shared_keys(frames, order))
    assert list(got) == list(expected)
    for key in expected:
        assert_values_equal(expected[key], got[key], key)
    assert backend.calls == 1


def test_chunks_merge_into_one_batch() -> None:
    frames = make_frames("periodic_variable_n")
    backend = ListBackend([atoms_to_dict(a) for a in frames])
    indices = np.array([3, 0, 4, 2, 1])
    whole = read_batch(backend, indices, ["arrays.positions", "calc.energy", "pbc"])
    calls = backend.calls
    parts = read_batch(backend, indices, ["arrays.positions", "calc.energy", "pbc"], chunk_size=2)
    assert backend.calls - calls == 3
    for key in whole:
        assert_values_equal(whole[key], parts[key], key)
    merged = merge_batches(
        [{"n_atoms": np.array([1]), "a": [1], "b": np.zeros(1)}, {"n_atoms": np.array([2]), "a": [2]}]
    )
    assert list(merged) == ["n_atoms", "a"] and merged["a"] == [1, 2]


def test_atom_gather_mixed_counts() -> None:
    counts = np.array([3, 5, 3, 0])
    gather, new = atom_gather(counts, slice(1, 3), np.arange(4))
    assert new.tolist() == [2, 2, 2, 0]
    assert gather.tolist() == [1, 2, 4, 5, 9, 10]
    gather, new = atom_gather(counts[:3], np.array([-1, 0]), np.array([7, 8, 9]))
    assert new.tolist() == [2, 2, 2] and gather.tolist() == [2, 0, 7, 3, 10, 8]
    with pytest.raises(IndexError, match=r"atom index 4 .*rows 7, 9 \(the smallest has 3 atoms\); the"):
        atom_gather(counts[:3], np.array([4]), np.array([7, 8, 9]))
    with pytest.raises(IndexError, match=r"atom index 1 .*rows 1, 2 \(the smallest has 0 atoms\)"):
        atom_gather(np.array([2, 0, 1]), np.array([1]), np.array([0, 1, 2]))  # every frame too small


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"keys": ["energy"]}, KeyError, "flat namespace"),
        ({"atoms": [[0, 1]]}, TypeError, "1-D"),
        ({"atoms": [0.5]}, TypeError, "integer"),
    ],
)
def test_arguments_are_checked(kwargs: dict[str, Any], error: type, match: str) -> None:
    db = ASEIO("memory://")
    db.extend(make_frames("ethanol"))
    with pytest.raises(error, match=match):
        db[[0]].to_batch(**kwargs)


def test_pick_atoms_keeps_missing_values_and_names_small_frames() -> None:
    values = [np.arange(6).reshape(3, 2), MISSING, np.arange(10).reshape(5, 2)]
    picked = pick_atoms(values, np.array([-1, 0]), np.array([4, 5, 6]))
    assert picked[1] is MISSING
    assert picked[0].tolist() == [[4, 5], [0, 1]] and picked[2].tolist() == [[8, 9], [0, 1]]
    sliced = pick_atoms(values[::2], slice(1, 2), np.array([4, 6]))
    assert [p.tolist() for p in sliced] == [[[2, 3]], [[2, 3]]]
    with pytest.raises(IndexError, match=r"atom index 3 .*rows 4 \(the smallest has 3 atoms\); the frames"):
        pick_atoms(values, np.array([0, 3]), np.array([4, 5, 6]))
    with pytest.raises(IndexError, match=r"atom index -4 .*rows 4 \(the smallest has 3 atoms\)"):
        pick_atoms(values, np.array([-4]), np.array([4, 5, 6]))


def test_column_lists_select_atoms_and_keep_none_for_rows_lacking_a_key() -> None:
    frames = make_frames("ethanol")[:3]
    frames[1].set_array("tag", np.arange(len(frames[1])))
    db = ASEIO("memory://")
    db.extend(frames)
    first, tagged, last = db["arrays.tag"].to_list(atoms=[0, -1])
    assert first is None and last is None
    assert tagged.tolist() == [0, len(frames[1]) - 1]
    assert db[["arrays.tag", "calc.energy"]].to_dict(atoms=[2])["calc.energy"] == db["calc.energy"].to_list()
    with pytest.raises(TypeError, match="boolean mask"):
        db["arrays.positions"].to_list(atoms=np.ones(len(frames[0]), bool))


def test_fill_is_shaped_alike_across_stores_and_shards(tmp_path: Path) -> None:
    """A fill for rows of several stores (``a + b``) or shards, where one part's rows all lack
    the key, takes the key's stored shape and dtype in every part (it was the fill's own shape
    there, and the parts could not be joined)."""
    from ase.build import bulk, molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    from asebytes_nodes import convert

    plain = molecule("H2O")
    plain.calc = SinglePointCalculator(plain, energy=1.0)
    stressed = bulk("Cu", cubic=True)
    stressed.calc = SinglePointCalculator(stressed, energy=2.0, stress=np.arange(6.0))
    ASEIO(tmp_path / "a.lmdb").extend([plain, plain])
    ASEIO(tmp_path / "b.lmdb").extend([stressed])
    ASEIO(tmp_path / "src.lmdb").extend([plain, plain, stressed])
    convert(tmp_path / "src.lmdb", tmp_path / "sh", shard_frames=2)
    for db in (ASEIO(tmp_path / "a.lmdb") + ASEIO(tmp_path / "b.lmdb"), ASEIO(tmp_path / "sh")):
        for fill in (0, {"calc.stress": 0}):
            got = db[[2, 0]].to_batch(["calc.energy", "calc.stress"], fill=fill)["calc.stress"]
            assert got.dtype == np.float64 and got.tolist() == [list(range(6)), [0.0] * 6]
        lone = db[[0, 1]].to_batch(["calc.stress"], fill=0)["calc.stress"]  # no row carries it
        assert lone.shape == (2, 6) and lone.dtype == np.float64
        shapes = {b["calc.stress"].shape for b in db.batches(2, keys=["calc.stress"], fill=0)}
        assert shapes == {(2, 6), (1, 6)}


@pytest.mark.parametrize("target", ["memory://", "x.lmdb", "x.zarr", "x.h5", "x.extxyz"])
def test_a_key_of_numbers_and_text_is_a_list(tmp_path: Path, target: str) -> None:
    """info.tag 1 in one frame, "a" in the next: to_batch() left it out on LMDB and H5MD but
    gave the strings "1", "a" on memory, Zarr and ASE files, and every backend gave them for
    keys=["info.tag"]. Default keys leave it out; asked for, it is the rows' own values."""
    import ase.io
    from ase.build import molecule

    frames = [molecule("H2O"), molecule("H2O"), molecule("NH3")]
    for atoms, tag in zip(frames, (1, "a", 2.5), strict=True):
        atoms.info["tag"] = tag
    if target.endswith(".extxyz"):
        ase.io.write(tmp_path / target, frames)
        db = ASEIO(tmp_path / target)
    else:
        db = ASEIO(target if "://" in target else tmp_path / target)
        db.extend(frames)
    assert "info.tag" not in db[:].to_batch()
    assert db[[2, 1, 0]].to_batch(["info.tag"])["info.tag"] == [2.5, "a", 1]
    assert db[[0, 2]].to_batch(["info.tag"])["info.tag"].tolist() == [1.0, 2.5]  # numbers only: an array


@pytest.mark.parametrize("target", ["memory://", "x.lmdb", "x.zarr", "x.h5"])
def test_default_keys_leave_out_values_of_other_shapes(tmp_path: Path, target: str) -> None:
    """A per-frame array of another length in each frame, or a number in some frames and an
    array in others, failed to_batch() and batches() with default keys (RaggedColumnError,
    depending on the shuffle); such a key is left out, and asked for it is still an error."""
    from ase.build import molecule

    from asebytes_nodes import RaggedColumnError

    frames = [molecule("H2O") for _ in range(4)]
    for i, atoms in enumerate(frames):
        atoms.info["ragged"] = np.arange(i + 1.0)
        atoms.info["either"] = np.ones(3) if i % 2 else 2.0
    db = ASEIO(target if "://" in target else tmp_path / target)
    db.extend(frames)
    batch = db[:].to_batch()
    assert "info.ragged" not in batch and "info.either" not in batch and batch["cell"].shape == (4, 3, 3)
    assert db[[1, 3]].to_batch()["info.either"].tolist() == [[1.0] * 3] * 2  # these rows share a shape
    assert sum(len(b["n_atoms"]) for b in db.batches(2, shuffle=True, seed=1)) == 4
    with pytest.raises(RaggedColumnError, match="info.ragged"):
        db[:].to_batch(["info.ragged"])
