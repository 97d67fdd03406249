"""The direct writer of new Zarr arrays writes exactly what zarr writes (compressor, then a crc32c of
each chunk), and zarr reads it; copies share unchanged shard files; damage is found chunk by chunk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

zarr = pytest.importorskip("zarr")

from zarr.codecs import BloscCodec, Crc32cCodec  # noqa: E402

from asebytes_nodes import ASEIO, StoreCorruptedError  # noqa: E402
from asebytes_nodes.backends._zarr_shards import (  # noqa: E402
    chunk_codec,
    handles,
    paying,
    write_new_array,
    write_rows,
)
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402

# (rows, start, chunk rows, shard rows): one shard, rows before start, a single row, several
# shards with a partial last chunk, and a write that starts in the last chunk
GEOMETRIES = [(10, 0, 4, 8), (10, 3, 4, 8), (1, 0, 4, 8), (100, 50, 7, 21), (17, 16, 4, 4)]


def _data(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    if dtype == "?":
        return np.ones(shape, bool)  # no all-fill chunk: zarr would skip writing it
    return np.random.default_rng(seed).integers(1, 100, shape).astype(dtype)


def _zarr_written(
    root: Path, name: str, rows: int, start: int, data: np.ndarray, chunk: int, shard: int, cname
):
    group = zarr.open_group(root, mode="w")
    tail = data.shape[1:]
    arr = group.create_array(
        name,
        shape=(rows, *tail),
        chunks=(chunk, *tail),
        shards=(shard, *tail),
        dtype=data.dtype,
        compressors=[BloscCodec(cname=cname, clevel=5, shuffle="shuffle"), Crc32cCodec()]
        if cname
        else [Crc32cCodec()],
        fill_value=np.zeros((), data.dtype)[()],
    )
    arr[start:rows] = data


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_files(theirs_root: Path, ours_root: Path) -> None:
    """Same file names; same bytes, or the same JSON document (zarr's whitespace may differ)."""
    theirs, ours = _files(theirs_root), _files(ours_root)
    assert sorted(ours) == sorted(theirs)
    for name, content in theirs.items():
        if name.endswith("zarr.json"):
            assert json.loads(ours[name]) == json.loads(content), name
        else:
            assert ours[name] == content, name


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("cname", ["lz4", "zstd", None])
@pytest.mark.parametrize("tail", [(), (3,), (3, 3)])
@pytest.mark.parametrize("dtype", ["f8", "f4", "i8", "u1", "?", "c16"])
def test_same_files_as_zarr(tmp_path: Path, dtype: str, tail: tuple[int, ...], cname, geometry) -> None:
    rows, start, chunk, shard = geometry
    data = _data(dtype, (rows - start, *tail))
    _zarr_written(tmp_path / "zarr.zarr", "c1/values", rows, start, data, chunk, shard, cname)
    zarr.open_group(tmp_path / "ours.zarr", mode="w")
    write_new_array(
        tmp_path / "ours.zarr", "c1/values", rows, start, data, chunk, shard, chunk_codec(cname, 5)
    )

    _assert_same_files(tmp_path / "zarr.zarr", tmp_path / "ours.zarr")
    back = zarr.open_array(tmp_path / "ours.zarr", path="c1/values", mode="r")[:]
    np.testing.assert_array_equal(back[start:], data)
    assert not back[:start].any()


# (first rows, total rows, chunk rows, shard rows): appends inside a chunk, at a chunk
# boundary, across shards, and into a shard whose first chunks are complete
APPENDS = [(5, 10, 4, 8), (8, 20, 4, 8), (3, 4, 4, 8), (30, 100, 7, 21), (22, 23, 4, 12)]


@pytest.mark.parametrize("geometry", APPENDS)
@pytest.mark.parametrize("cname", ["lz4", None])
@pytest.mark.parametrize("tail", [(), (3,)])
@pytest.mark.parametrize("dtype", ["f8", "u1", "?"])
def test_appends_give_the_same_files_as_zarr(
    tmp_path: Path, dtype: str, tail: tuple[int, ...], cname, geometry
) -> None:
    first, rows, chunk, shard = geometry
    head, rest = _data(dtype, (first, *tail), 1), _data(dtype, (rows - first, *tail), 2)
    _zarr_written(tmp_path / "zarr.zarr", "v", first, 0, head, chunk, shard, cname)
    arr = zarr.open_array(tmp_path / "zarr.zarr", path="v", mode="r+")
    arr.resize((rows, *tail))
    arr[first:] = rest
    zarr.open_group(tmp_path / "ours.zarr", mode="w")
    write_new_array(tmp_path / "ours.zarr", "v", first, 0, head, chunk, shard, chunk_codec(cname, 5))
    assert write_rows(tmp_path / "ours.zarr", "v", rows, first, rest, chunk_codec(cname, 5))

    _assert_same_files(tmp_path / "zarr.zarr", tmp_path / "ours.zarr")
    back = zarr.open_array(tmp_path / "ours.zarr", path="v", mode="r")[:]
    np.testing.assert_array_equal(back, np.concatenate([head, rest]))


def test_rewriting_from_a_row_keeps_earlier_rows_and_drops_shards_past_the_end(tmp_path: Path) -> None:
    root, codec = tmp_path / "s.zarr", chunk_codec("lz4", 5)
    zarr.open_group(root, mode="w")
    write_new_array(root, "v", 40, 0, np.arange(40.0), 4, 8, codec)  # 5 shards
    assert write_rows(root, "v", 14, 10, np.full(4, -1.0), codec)  # an uncommitted tail cut back
    expected = np.concatenate([np.arange(10.0), np.full(4, -1.0)])
    np.testing.assert_array_equal(zarr.open_array(root, path="v", mode="r")[:], expected)
    assert sorted(p.name for p in (root / "v" / "c").iterdir()) == ["0", "1"]
    assert not list(root.rglob("*.partial"))


def test_rows_of_arrays_laid_out_otherwise_are_left_to_zarr(tmp_path: Path) -> None:
    root = tmp_path / "s.zarr"
    group = zarr.open_group(root, mode="w")
    group.create_array(
        "gz", shape=(4,), chunks=(2,), shards=(4,), dtype="f8", compressors=zarr.codecs.GzipCodec()
    )
    write_new_array(root, "f8", 4, 0, np.arange(4.0), 2, 4, chunk_codec("lz4", 5))
    before = _files(root)
    assert not write_rows(root, "gz", 6, 4, np.ones(2), chunk_codec("lz4", 5))  # another codec
    assert not write_rows(root, "f8", 6, 4, np.ones(2, "f4"), chunk_codec("lz4", 5))  # another dtype
    assert not write_rows(root, "f8", 6, 4, np.ones(2), chunk_codec("zstd", 5))  # another compressor
    assert not write_rows(root, "absent", 6, 4, np.ones(2), chunk_codec("lz4", 5))
    assert _files(root) == before


def test_a_damaged_shard_index_is_reported_not_overwritten(tmp_path: Path) -> None:
    root, codec = tmp_path / "s.zarr", chunk_codec("lz4", 5)
    zarr.open_group(root, mode="w")
    write_new_array(root, "v", 6, 0, np.arange(6.0), 4, 8, codec)
    shard = root / "v" / "c" / "0"
    damaged = bytearray(shard.read_bytes())
    damaged[-10] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    with pytest.raises(StoreCorruptedError, match="checksum"):
        write_rows(root, "v", 8, 6, np.ones(2), codec)
    assert shard.read_bytes() == bytes(damaged)


def test_zero_chunks_are_kept_with_their_sign(tmp_path: Path) -> None:
    data = np.array([[-0.0, 0.0, -0.0]] * 9)
    zarr.open_group(tmp_path / "s.zarr", mode="w")
    write_new_array(tmp_path / "s.zarr", "v", 9, 0, data, 4, 8, chunk_codec("lz4", 5))
    back = zarr.open_array(tmp_path / "s.zarr", path="v", mode="r")[:]
    np.testing.assert_array_equal(np.signbit(back), np.signbit(data))


def test_leftover_of_an_interrupted_write_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "s.zarr"
    zarr.open_group(root, mode="w")
    write_new_array(root, "v", 40, 0, np.arange(40.0), 4, 8, chunk_codec("lz4", 5))
    write_new_array(root, "v", 5, 0, np.arange(5.0) + 100, 4, 8, chunk_codec("lz4", 5))
    assert sorted(p.name for p in (root / "v" / "c").iterdir()) == ["0"]  # no stale shards 1..4
    np.testing.assert_array_equal(zarr.open_array(root, path="v", mode="r")[:], np.arange(5.0) + 100)


def test_only_what_zarr_names_plainly_is_handled() -> None:
    assert chunk_codec("gzip", 5) is None and chunk_codec("zstd-raw", 3) is None
    assert chunk_codec(None, 5) is not None and chunk_codec("blosclz", 1) is not None
    assert handles(np.dtype("<f8")) and handles(np.dtype("?"))
    assert not handles(np.dtype(">f8")) and not handles(np.dtype("U3")) and not handles(np.dtype("O"))


def test_direct_and_zarr_written_stores_hold_the_same_frames(tmp_path: Path) -> None:
    """lz4 stores get new arrays from this module, gzip stores from zarr: same frames back."""
    frames = (
        make_frames("keys_on_some_frames") + make_frames("periodic_variable_n") + make_frames("constraints")
    )
    extra = molecule("CO")
    extra.info["only_here"] = 1.5
    extra.arrays["only_here_too"] = np.array([1.0, -0.0])
    for compressor in ("lz4", "gzip"):
        path = tmp_path / f"{compressor}.zarr"
        with ASEIO(str(path), compressor=compressor) as db:
            db.extend(frames[:4])
            db.extend(frames[4:])  # appends to existing arrays go through zarr in both stores
            db[1] = extra  # new columns on an existing store: created by the same path
        with ASEIO(str(path)) as db:
            expected = [frames[0], extra, *frames[2:]]
            for j, (got, want) in enumerate(zip(db[:].to_list(), expected, strict=True)):
                assert_atoms_equal(want, got, f"{compressor} frame {j}")


def test_group_documents_written_directly_are_zarrs(tmp_path: Path) -> None:
    """A new store's group document and each commit's are the bytes zarr writes for the same
    attributes; zarr reads the record, and attributes set through zarr survive a commit."""
    path = tmp_path / "s.zarr"
    frames = make_frames("keys_on_some_frames")
    with ASEIO(str(path)) as db:
        db.extend([])  # a new store: its document only
        for step in range(2):
            raw = (path / "zarr.json").read_bytes()
            attributes = json.loads(raw)["attributes"]
            theirs = zarr.open_group(tmp_path / f"zarr{step}.zarr", mode="w", attributes=attributes)
            assert (tmp_path / f"zarr{step}.zarr/zarr.json").read_bytes() == raw
            assert zarr.open_group(path, mode="r").attrs.asdict() == theirs.attrs.asdict()
            zarr.open_group(path, mode="a").attrs["mine"] = [1, "two"]
            db.extend(frames)
        assert json.loads((path / "zarr.json").read_bytes())["attributes"]["mine"] == [1, "two"]
    with ASEIO(str(path), readonly=True) as db:
        assert len(db) == 2 * len(frames)
        for j, (got, want) in enumerate(zip(db[:].to_list(), frames + frames, strict=True)):
            assert_atoms_equal(want, got, f"frame {j}")


def _stages(root: Path, name: str) -> list[str]:
    document = json.loads((root / name / "zarr.json").read_text())
    return [stage["name"] for stage in document["codecs"][0]["configuration"]["codecs"]]


def test_a_compressor_that_does_not_pay_is_left_out_and_appends_stay_direct(tmp_path: Path) -> None:
    """Random floats (lz4 saves under 10%) are stored without Blosc, small atomic numbers with
    it; appends to either are written here (not left to zarr), and zarr reads both back."""
    root, codec = tmp_path / "p.zarr", chunk_codec("lz4", 5)
    zarr.open_group(root, mode="w")
    rng = np.random.default_rng(3)
    floats, numbers = rng.normal(size=(4000, 3)), rng.integers(1, 90, 4000)
    write_new_array(root, "pos", 4000, 0, floats, 341, 2728, codec)
    write_new_array(root, "num", 4000, 0, numbers, 1024, 4096, codec)
    assert _stages(root, "pos") == ["bytes", "crc32c"]
    assert _stages(root, "num") == ["bytes", "blosc", "crc32c"]
    more = rng.normal(size=(500, 3))
    assert write_rows(root, "pos", 4500, 4000, more, codec)  # the array's own codec: direct
    assert write_rows(root, "num", 4500, 4000, numbers[:500], codec)
    np.testing.assert_array_equal(
        zarr.open_array(root, path="pos", mode="r")[:], np.concatenate([floats, more])
    )
    np.testing.assert_array_equal(
        zarr.open_array(root, path="num", mode="r")[:], np.concatenate([numbers, numbers[:500]])
    )
    assert not write_rows(
        root, "num", 4600, 4500, numbers[:100], chunk_codec("zstd", 5)
    )  # another compressor


def test_too_little_data_to_judge_keeps_the_compressor(tmp_path: Path) -> None:
    root = tmp_path / "s.zarr"
    zarr.open_group(root, mode="w")
    noise = np.random.default_rng(4).normal(size=(100, 3))  # 2.4 KB: below the 16 KiB probe
    write_new_array(root, "v", 100, 0, noise, 341, 2728, chunk_codec("lz4", 5))
    assert _stages(root, "v") == ["bytes", "blosc", "crc32c"]
    assert paying(chunk_codec(None, 5), np.random.default_rng(5).normal(size=(4000, 3))).cname is None


def test_compress_all_keeps_the_compressor_on_every_new_array(tmp_path: Path) -> None:
    """By default random positions are stored without Blosc (it saves under 10%);
    ``compress_all=True`` keeps it there too: a smaller store with the same frames, also after
    the handle is pickled (a DataLoader worker's copy writes as its parent would)."""
    import pickle

    from asebytes_nodes import ZarrBackend

    rng = np.random.default_rng(8)
    frames = [molecule("CH3CH2OH") for _ in range(300)]  # 65 kB of positions: enough to judge
    for atoms in frames:
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    stages, sizes = {}, {}
    for compress_all in (False, True):
        root = tmp_path / f"{compress_all}.zarr"
        backend = ZarrBackend(root, compress_all=compress_all)
        backend = pickle.loads(pickle.dumps(backend))
        db = ASEIO(backend)
        db.extend(frames)
        array = backend._meta["columns"]["arrays.positions"]["id"] + "/values"
        stages[compress_all] = _stages(root, array)
        sizes[compress_all] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        for j, (got, want) in enumerate(zip(ASEIO(root, readonly=True)[:].to_list(), frames, strict=True)):
            assert_atoms_equal(want, got, f"frame {j}")
    assert stages == {False: ["bytes", "crc32c"], True: ["bytes", "blosc", "crc32c"]}
    assert sizes[True] < sizes[False]
