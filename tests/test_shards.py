"""Sharded datasets and lazy concatenation: the read contract, appends, damaged and newer datasets.

Matrix: the read contract on a sharded LMDB dataset (rows spread over shards of 3 frames,
written by several extends) and on ``db1 + db2``; appends that top up the last shard;
a missing, truncated or swapped shard; a manifest of a newer layout; shards of Zarr.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from asebytes_nodes import ASEIO, FormatVersionError, ReadOnlyError, StoreCorruptedError, atoms_to_dict
from asebytes_nodes.codec import encode_row
from asebytes_nodes.shards import ConcatBackend, ShardedBackend
from asebytes_nodes.shards._manifest import MANIFEST
from asebytes_nodes.testing.contract import ReadableContract, StoreFactory
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames


class ShardedStore(StoreFactory):
    def __init__(self, path: Path, backend: str = "lmdb") -> None:
        self.path, self.backend = path, backend

    def seed(self, frames: list[Atoms]) -> None:
        db = ASEIO(self.path, backend="shards", shard_backend=self.backend, shard_frames=3)
        db.extend(frames[:4])  # then top up the half-full last shard
        db.extend(frames[4:])

    def open(self, readonly: bool = False) -> ShardedBackend:
        return ShardedBackend(self.path, readonly=readonly)


class TestShardedContract(ReadableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ShardedStore(tmp_path / "dataset")


class ConcatStore(StoreFactory):
    def __init__(self, path: Path) -> None:
        self.path = path

    def seed(self, frames: list[Atoms]) -> None:
        cuts = [0, len(frames) // 3, len(frames) // 2, len(frames)]  # a part may be empty
        for k in range(3):
            ASEIO(self.path / f"part{k}.lmdb").extend(frames[cuts[k] : cuts[k + 1]])

    def open(self, readonly: bool = False) -> ConcatBackend:
        return sum(ASEIO(self.path / f"part{k}.lmdb", readonly=True) for k in range(3)).backend


class TestConcatContract(ReadableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ConcatStore(tmp_path)


def test_concat_in_order_and_read_only(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    a, b = ASEIO(tmp_path / "a.lmdb"), ASEIO(tmp_path / "b.lmdb")
    a.extend(frames[:2])
    b.extend(frames[2:])
    both = sum([a, b])
    assert len(both) == len(frames)
    for i, (expected, got) in enumerate(zip(frames, both, strict=True)):
        assert_atoms_equal(expected, got, f"frame {i}")
    shuffled = [3, 0, 2, 1]
    assert [x.get_chemical_formula() for x in both[shuffled]] == [
        frames[i].get_chemical_formula() for i in shuffled
    ]
    assert len(a + b + a) == 2 * len(a) + len(b)
    with pytest.raises(ReadOnlyError, match="read-only"):
        both.append(molecule("H2O"))


def test_extend_tops_up_the_last_shard(tmp_path: Path) -> None:
    frames = make_frames("ethanol") * 4
    db = ASEIO(tmp_path / "ds", backend="shards", shard_frames=5)
    for k in range(0, len(frames), 3):
        db.extend(frames[k : k + 3])
    names = sorted(p.name for p in (tmp_path / "ds").iterdir())
    shards = [n for n in names if n.startswith("shard-") and not n.endswith(".natoms.npy")]
    assert [s.rows for s in db.backend.shards] == [5] * (len(frames) // 5) + (
        [len(frames) % 5] if len(frames) % 5 else []
    )
    assert shards == [s.file for s in db.backend.shards]  # replaced shard files are gone
    assert sorted(set(names) - set(shards)) == sorted(
        ["asebytes-shards.json", *(s.natoms_file for s in db.backend.shards)]
    )
    again = ASEIO(tmp_path / "ds")  # recognised by its manifest
    assert isinstance(again.backend, ShardedBackend)
    assert again.backend.natoms.tolist() == [len(f) for f in frames]
    assert np.allclose(again["calc.energy"].to_numpy(), [f.get_potential_energy() for f in frames])


@pytest.mark.parametrize("shard_backend", ["lmdb", "zarr", "h5md"])
def test_a_reader_keeps_its_snapshot_while_another_handle_appends(tmp_path: Path, shard_backend: str) -> None:
    """A handle opened before an append said the old last shard was missing and told the user to
    restore it: the append had replaced it with a topped-up file holding the same rows first."""
    frames = make_frames("periodic_variable_n") * 4
    ASEIO(tmp_path / "ds", backend="shards", shard_backend=shard_backend, shard_frames=8).extend(frames[:10])
    reader = ASEIO(tmp_path / "ds", readonly=True)
    assert_atoms_equal(frames[0], reader[0])
    for stop in (13, 20):  # twice: the file the reader knows and its first successor are both gone
        ASEIO(tmp_path / "ds").extend(frames[len(reader) if stop == 13 else 13 : stop])
        assert len(reader) == 10
        assert reader.backend.natoms.tolist() == [len(f) for f in frames[:10]]
        for expected, got in zip(frames[:10], reader, strict=True):
            assert_atoms_equal(expected, got)
        assert reader["calc.energy"].to_list() == [f.get_potential_energy() for f in frames[:10]]
    assert len(ASEIO(tmp_path / "ds", readonly=True)) == 20


def test_append_writes_only_the_new_atom_counts(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n") * 3
    db = ASEIO(tmp_path / "ds", backend="shards", shard_frames=4)
    db.extend(frames[:10])
    full = {
        s.natoms_file: (tmp_path / "ds" / s.natoms_file).stat().st_mtime_ns for s in db.backend.shards[:2]
    }
    db.extend(frames[10:])
    assert {n: (tmp_path / "ds" / n).stat().st_mtime_ns for n in full} == full  # full shards untouched
    assert ASEIO(tmp_path / "ds").backend.natoms.tolist() == [len(f) for f in frames]
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert [s["natoms"] for s in manifest["shards"]] == [s.natoms for s in db.backend.shards]
    (tmp_path / "ds" / db.backend.shards[1].natoms_file).unlink()
    with pytest.raises(StoreCorruptedError, match="atom counts of shard file shard-00001.n4"):
        len(ASEIO(tmp_path / "ds").backend.natoms)
    assert any("shard-00001.n4.natoms.npy: missing" in p for p in ShardedBackend(tmp_path / "ds").check())


def test_zarr_shards(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    frames = make_frames("periodic_variable_n")
    ShardedStore(tmp_path / "z", "zarr").seed(frames)
    db = ASEIO(tmp_path / "z")
    assert db.backend.format_info()["shard_backend"] == "zarr"
    for i, (expected, got) in enumerate(zip(frames, db, strict=True)):
        assert_atoms_equal(expected, got, f"frame {i}")
    assert db.backend.check() == []


def _dataset(tmp_path: Path) -> Path:
    frames = [molecule(n) for n in ("H2O", "CH4", "NH3", "CO2", "C2H6", "CH3CH2OH", "H2")]
    ShardedStore(tmp_path / "ds").seed(frames)
    return tmp_path / "ds"


def test_missing_and_truncated_shard_are_named(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    first, second = (folder / s.file for s in ShardedBackend(folder).shards[:2])
    second.unlink()
    db = ASEIO(folder)
    assert db[0].get_chemical_formula() == "H2O"  # untouched shards still read
    with pytest.raises(StoreCorruptedError, match=f"{second.name} \\(rows 3-5\\) is missing"):
        db[4]
    with open(first, "r+b") as f:
        f.truncate(first.stat().st_size // 2)
    with pytest.raises(StoreCorruptedError, match=f"{first.name} .* truncated or modified"):
        ASEIO(folder)[0]
    assert any(second.name in problem for problem in ShardedBackend(folder).check())


def test_newer_manifest_and_junk(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(FormatVersionError, match="version 99"):
        ASEIO(folder)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": 1}))
    with pytest.raises(FormatVersionError, match="version 1 was a development layout"):
        ASEIO(folder)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "frames": 1}))
    with pytest.raises(StoreCorruptedError, match="says 1 frames"):
        ASEIO(folder)


def test_refuses_rewrites_and_foreign_folders(tmp_path: Path) -> None:
    db = ASEIO(_dataset(tmp_path))
    with pytest.raises(Exception, match="cannot replace rows"):
        db[0] = molecule("H2O")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sharded dataset"):
        ASEIO(tmp_path / "other", backend="shards")


def test_batches_across_shards_match_the_atom_counts(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n") * 3
    ShardedStore(tmp_path / "ds").seed(frames)
    db = ASEIO(tmp_path / "ds", readonly=True)
    order = [7, 0, 5, 2, 8]
    batch = db[order].to_batch(["arrays.positions", "calc.energy"])
    assert batch["n_atoms"].tolist() == db.backend.natoms[order].tolist() == [len(frames[i]) for i in order]
    assert np.array_equal(batch["arrays.positions"], np.concatenate([frames[i].positions for i in order]))
    energies = [
        e for b in db[:].batches(4, keys=["calc.energy"], shuffle=True, seed=1) for e in b["calc.energy"]
    ]
    assert sorted(energies) == sorted(f.get_potential_energy() for f in frames)


def test_shard_bytes_sizes_shards_from_the_rows(tmp_path: Path) -> None:
    frames = make_frames("ethanol") * 40
    db = ASEIO(tmp_path / "ds", backend="shards", shard_bytes=20_000)
    db.extend(frames)
    cap = db.backend.format_info()["shard_frames"]
    assert 1 < cap < len(frames)
    assert all(s.rows == cap for s in db.backend.shards[:-1])
    assert cap == 20_000 // (
        len(encode_row(atoms_to_dict(frames[0]))) + 64
    )  # encoded size + per-row overhead


def test_at_most_max_open_shards_stay_open(tmp_path: Path) -> None:
    frames = make_frames("ethanol") * 12
    ShardedStore(tmp_path / "ds").seed(frames)
    db = ASEIO(ShardedBackend(tmp_path / "ds", readonly=True, max_open=2))
    order = np.random.default_rng(0).permutation(len(frames))
    energies = db[order]["calc.energy"].to_numpy()
    assert energies.tolist() == [frames[i].get_potential_energy() for i in order]
    assert sum(h is not None for h in db.backend._handles) <= 2


def test_to_batch_joins_the_shards_batches(tmp_path: Path) -> None:
    from asebytes_nodes.batch import read_batch_default

    frames = make_frames("periodic_variable_n") * 2 + make_frames("keys_on_some_frames")
    ShardedStore(tmp_path / "ds").seed(frames)
    backend = ShardedBackend(tmp_path / "ds", readonly=True)
    calls: list[int] = []
    for p in range(len(backend.shards)):  # count the shards' own batch reads
        shard = backend._part(p)
        shard.read_batch = lambda idx, *a, _f=shard.read_batch, **k: (
            calls.append(len(idx)) or _f(idx, *a, **k)
        )
    order = np.array([12, 0, 5, 2, 10, 1, 6, 13, 11])
    keys = ["arrays.positions", "calc.energy", "cell", "info.index"]
    for atoms in (None, np.array([0, -1]), slice(1, 3)):
        fill = {"calc.energy": 0.0, "info.index": -1}
        got = backend.read_batch(order, keys, fill=fill, atoms=atoms)
        want = read_batch_default(backend, order, keys, fill=fill, atoms=atoms)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
            assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype, key
    assert calls and len(calls) <= 3 * len({int(s) for s in backend._locate(order)[0]})
    with pytest.raises(KeyError, match=r"rows 11\)"):  # the dataset's row, not the shard's
        ASEIO(backend)[[0, 11]].to_batch(["calc.energy"])
    assert np.array_equal(ASEIO(backend)[[2, 0]].to_batch(None)["n_atoms"], [len(frames[2]), len(frames[0])])
