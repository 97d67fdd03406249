"""The contract suite on the Zarr backend, plus its layout promises (ragged, few files, versions)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

zarr = pytest.importorskip("zarr")

from asebytes_nodes import ASEIO, FormatVersionError, ZarrBackend  # noqa: E402
from asebytes_nodes.backends._zarr_txn import seal  # noqa: E402
from asebytes_nodes.testing.contract import StoreFactory, WritableContract  # noqa: E402
from asebytes_nodes.testing.frames import make_frames  # noqa: E402
from asebytes_nodes.testing.properties import PropertyContract  # noqa: E402
from asebytes_nodes.testing.stateful import StatefulContract  # noqa: E402


class ZarrStore(StoreFactory):
    def __init__(self, path: Path, cache_bytes: int = 64 << 20, compressor: str = "lz4") -> None:
        self.path = path
        self.cache_bytes = cache_bytes
        self.compressor = compressor

    def seed(self, frames: list[Atoms]) -> None:
        with ASEIO(self.path, compressor=self.compressor) as db:
            db.extend(frames)

    def open(self, readonly: bool = False) -> ZarrBackend:
        return ZarrBackend(
            self.path, readonly=readonly, cache_bytes=self.cache_bytes, compressor=self.compressor
        )


class TestZarrContract(WritableContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ZarrStore(tmp_path / "frames.zarr")


class TestZarrContractUncached(WritableContract):
    """The same contract with the decoded-column cache off, so every read goes to zarr, and
    gzip, which only zarr writes: new arrays go through zarr's own writer, not ``_zarr_shards``."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreFactory:
        return ZarrStore(tmp_path / "frames.zarr", cache_bytes=0, compressor="gzip")


class TestZarrProperties(PropertyContract, StatefulContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], StoreFactory]:
        return lambda: ZarrStore(tmp_path / f"{uuid.uuid4().hex}.zarr")


def test_cached_reader_sees_in_place_updates_by_another_handle(tmp_path: Path) -> None:
    path = tmp_path / "u.zarr"
    frames = make_frames("ethanol")
    ASEIO(path).extend(frames)
    reader, writer = ASEIO(path, readonly=True), ASEIO(path)
    before = reader["calc.energy"].to_numpy()
    positions = reader[2].positions
    writer.update(2, calc={"energy": -1.0})
    writer[3] = frames[0]  # same length: only the generation in the record tells
    after = reader["calc.energy"].to_numpy()
    assert after[2] == -1.0 and after[3] == before[0]
    np.testing.assert_array_equal(reader[3].positions, frames[0].positions)
    np.testing.assert_array_equal(reader[2].positions, positions)


def test_values_never_share_memory_with_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "m.zarr"
    frames = make_frames("periodic_variable_n")
    ASEIO(path).extend(frames)
    db = ASEIO(path, readonly=True)
    first = db[1]
    first.positions[:] = 0.0
    energies = db["calc.energy"].to_numpy()
    energies[:] = 0.0
    ragged = db["arrays.positions"].to_ragged()
    ragged.values[:] = 0.0
    np.testing.assert_array_equal(db[1].positions, frames[1].positions)
    np.testing.assert_array_equal(db["calc.energy"].to_numpy(), [a.get_potential_energy() for a in frames])
    again = db["arrays.positions"].to_ragged().values
    np.testing.assert_array_equal(again[: len(frames[0])], frames[0].positions)


def test_cache_stays_within_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "b.zarr"
    ASEIO(path).extend(make_frames("periodic_variable_n") * 20)
    for budget in (4096, 1 << 20):
        backend = ZarrBackend(path, readonly=True, cache_bytes=budget)
        db = ASEIO(backend)
        db[:].to_list()
        db[[90, 3, 50, 3]].to_list()
        assert backend._cache.held <= budget
    assert backend._cache.held > 0


def test_random_reads_decode_only_the_chunks_they_need(tmp_path: Path) -> None:
    """Issue 17: a random row of a store larger than the cache decodes the inner chunks that
    hold it, not whole columns; a batch decodes each chunk it needs once."""
    path = tmp_path / "big.zarr"
    frames = make_frames("periodic_variable_n") * 60
    ASEIO(path, chunk_bytes=1024).extend(frames)
    backend = ZarrBackend(path, readonly=True, cache_bytes=16 << 10)
    db = ASEIO(backend)
    atoms = db[170]
    assert atoms == frames[170]
    first = backend._cache.decoded
    assert 0 < first <= 2 * len(backend.keys())  # a chunk or two per array, never whole columns
    batch = db[[5, 170, 6, 5]].to_batch(["arrays.positions", "calc.energy"])
    energies = [frames[i].get_potential_energy() for i in (5, 170, 6, 5)]
    np.testing.assert_array_equal(batch["calc.energy"], energies)
    assert backend._cache.held <= 16 << 10
    assert backend._group._opened is None  # reads of a local store never open zarr's group


def test_small_per_frame_rows_take_as_many_frames_per_chunk_as_scalars(tmp_path: Path) -> None:
    """Per-frame arrays of rows over 8 bytes (cell, stress) get chunks of as many frames as a
    scalar column (up to 8 x chunk_bytes); scalars, atom counts, flags and per-atom arrays keep
    chunk_bytes; ``chunk_frames`` sets them all as before. Random rows read back."""
    frames = make_frames("periodic_variable_n") * 30
    frames[3].info["tag"] = 1.5  # a column some frames lack: presence flags
    path = tmp_path / "default.zarr"
    ASEIO(path, chunk_bytes=1024).extend(frames)
    ids = {key: spec["id"] for key, spec in ZarrBackend(path, readonly=True)._meta["columns"].items()}

    def rows_per_chunk(store: Path, name: str) -> int:
        sharding = json.loads((store / name / "zarr.json").read_text())["codecs"][0]
        return int(sharding["configuration"]["chunk_shape"][0])  # inner chunks

    assert rows_per_chunk(path, f"{ids['cell']}/values") == 8 * 1024 // 72  # 113 frames, not 14
    assert rows_per_chunk(path, f"{ids['calc.stress']}/values") == 1024 // 8  # as many as the energy's
    assert rows_per_chunk(path, f"{ids['calc.energy']}/values") == 1024 // 8
    assert rows_per_chunk(path, f"{ids['info.tag']}/present") == 1024
    assert rows_per_chunk(path, "n_atoms") == 1024 // 8
    assert rows_per_chunk(path, f"{ids['arrays.positions']}/values") == 1024 // 24  # per atom
    chosen = tmp_path / "frames.zarr"
    ASEIO(chosen, chunk_frames=4).extend(frames)
    assert rows_per_chunk(chosen, f"{ids['cell']}/values") == 4
    db = ASEIO(path, readonly=True)
    for i in (0, 57, 13, 89, 3):
        assert db[i] == frames[i]


def test_batches_gathered_with_numpy_equal_the_default_path(tmp_path: Path) -> None:
    from asebytes_nodes.batch import read_batch_default

    path = tmp_path / "b.zarr"
    ASEIO(path, chunk_frames=3).extend(make_frames("periodic_variable_n") * 4)
    backend = ZarrBackend(path, readonly=True, cache_bytes=2048)  # chunks evicted as it reads
    keys = ["arrays.positions", "arrays.numbers", "calc.energy", "calc.forces", "cell"]
    for atoms in (None, np.array([0, -1]), slice(1, 3)):
        idx = np.array([7, 0, 7, 3, 11, 2])
        fast = backend.read_batch(idx, keys, atoms=atoms)
        default = read_batch_default(backend, idx, keys, atoms=atoms)
        assert fast.keys() == default.keys()
        for key, value in fast.items():
            assert value.dtype == default[key].dtype and value.shape == default[key].shape, key
            np.testing.assert_array_equal(value, default[key])


def test_present_flags_only_for_columns_some_frames_lack(tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    db = ASEIO(path)
    db.extend(make_frames("ethanol"))
    group = zarr.open_group(str(path), mode="r")
    spec = group.attrs["asebytes_nodes"]["columns"]
    names = [name for name, _ in group.members(max_depth=None)]
    assert any(name.endswith("/values") for name in names)
    assert not any(name.endswith("/present") for name in names)
    assert all(column["present"] is False for column in spec.values())
    db.extend(make_frames("no_calculator"))  # frames without calc.energy
    db.drop("info.index", [1])
    group = zarr.open_group(str(path), mode="r")
    energy = group.attrs["asebytes_nodes"]["columns"]["calc.energy"]
    np.testing.assert_array_equal(group[energy["id"] + "/present"][:], [True] * 4 + [False] * 2)
    assert ASEIO(path, readonly=True)["calc.energy"].to_list()[4:] == [None, None]
    assert ASEIO(path, readonly=True)["info.index"].to_list()[:4] == [0, None, 2, 3]


def test_ragged_without_padding(tmp_path: Path) -> None:
    frames = make_frames("periodic_variable_n")
    db = ASEIO(tmp_path / "r.zarr")
    db.extend(frames)
    group = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    spec = group.attrs["asebytes_nodes"]["columns"]["arrays.positions"]
    assert group[spec["id"] + "/values"].shape == (sum(len(a) for a in frames), 3)
    np.testing.assert_array_equal(group["n_atoms"][:], [len(a) for a in frames])


def test_a_value_of_another_type_turns_the_column_into_an_object_column(tmp_path: Path) -> None:
    """Issue 20: never converted; the column is rewritten as msgpack values, every frame exact."""
    frames = make_frames("ethanol")
    db = ASEIO(tmp_path / "c.zarr")
    db.extend(frames[:2])
    other = make_frames("ethanol")[2]
    other.info["index"] = "two"  # stored as int
    db.extend([frames[3], other])
    again = ASEIO(tmp_path / "c.zarr", readonly=True)
    assert again["info.index"].to_list() == [0, 1, 3, "two"]
    columns = zarr.open_group(str(tmp_path / "c.zarr"), mode="r").attrs["asebytes_nodes"]["columns"]
    assert columns["info.index"]["kind"] == "object" and columns["calc.energy"]["kind"] == "scalar"
    assert ZarrBackend(tmp_path / "c.zarr", readonly=True).check() == []


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.zarr"
    ASEIO(path).extend(make_frames("ethanol")[:1])
    group = zarr.open_group(str(path), mode="a")
    meta = dict(group.attrs["asebytes_nodes"])
    group.attrs["asebytes_nodes"] = {**meta, "version": 99}
    with pytest.raises(FormatVersionError, match="version 99"):
        ASEIO(path)


def test_check_reports_a_record_that_disagrees_with_the_arrays(tmp_path: Path) -> None:
    path = tmp_path / "k.zarr"
    ASEIO(path).extend(make_frames("ethanol"))
    assert ZarrBackend(path, readonly=True).check() == []
    group = zarr.open_group(str(path), mode="a")
    meta = dict(group.attrs["asebytes_nodes"])
    meta["atoms"] += 1
    meta["columns"]["calc.energy"]["count"] = 3
    group.attrs["asebytes_nodes"] = seal(meta)  # a consistent record that disagrees with the arrays
    problems = ZarrBackend(path, readonly=True).check()
    assert any("n_atoms" in p and "record says" in p for p in problems)
    assert any("'calc.energy'" in p and "no present flags, but 3 of 4 frames" in p for p in problems)


def test_python_and_numpy_scalars_keep_their_types(tmp_path: Path) -> None:
    db = ASEIO(tmp_path / "s.zarr")
    frames = make_frames("ethanol")
    for atoms in frames:
        atoms.calc.results["energy"] = np.float64(atoms.calc.results["energy"])  # as EMT returns it
    db.extend(frames)
    db.update(1, calc={"energy": -1.5})
    db.extend([make_frames("ethanol")[0]])  # a Python float this time
    db.update(2, calc={"energy": 3})
    energies = ASEIO(tmp_path / "s.zarr", readonly=True)["calc.energy"].to_list()
    assert energies[1:3] == [-1.5, 3] and len(energies) == 5  # issue 19: each frame keeps its type
    assert [type(e) for e in energies] == [np.float64, float, int, np.float64, float]


def test_version_1_columns_of_empty_rows_and_0d_arrays_read_and_grow(tmp_path: Path) -> None:
    """Issue 19: version-1 code stored (0, 3), (n, 0) and 0-d values in typed columns, then failed
    every read (ZeroDivisionError) or gave numpy scalars; they read exactly and take new frames."""
    import shutil

    path = tmp_path / "old.zarr"
    shutil.copytree(Path(__file__).parent.parent / "data" / "zarr_v1_empty_rows.zarr", path)
    db = ASEIO(path)
    new = Atoms("H", info={"e": np.zeros((0, 3)), "z": np.array(7, np.uint8)})
    new.arrays["t"] = np.zeros((1, 0), np.int32)
    db.extend([new])
    got = list(ASEIO(path, readonly=True))
    assert all(type(a.info["z"]) is np.ndarray and a.info["z"].shape == () for a in got)
    assert [int(a.info["z"]) for a in got] == [5, 6, 7]
    assert all(a.info["z"].dtype == np.uint8 and a.info["e"].shape == (0, 3) for a in got)
    assert [a.arrays["t"].shape for a in got] == [(2, 0), (3, 0), (1, 0)]
    assert all(a.arrays["t"].dtype == np.int32 for a in got)
    assert ZarrBackend(path, readonly=True).check() == []


@pytest.mark.parametrize("blocked", ["zarr", "numcodecs"])
def test_without_the_extra_the_error_names_the_install(blocked: str) -> None:
    """Every module the backend needs, its own shard writer's included, fails as MissingExtraError."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from asebytes_nodes.errors import MissingExtraError\n"
        "try:\n"
        "    import asebytes_nodes.backends._zarr\n"
        "except MissingExtraError as exc:\n"
        "    print('MissingExtraError:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "asebytes-nodes[zarr]"' in out.stdout
