"""ZarrBackend on a remote fsspec store: ``s3://`` URLs against a local moto server.

Every test gets a fresh bucket on a moto server at 127.0.0.1 (the ``s3`` fixture of
tests/conftest.py, built on tests/s3server.py); nothing contacts the internet. Tests
skip without zarr, moto[server], s3fs or boto3, and the whole module skips until
``asebytes_nodes.ZarrBackend`` exists.

What is covered
---------------
* URI schemes s3, gs, gcs, az, abfs resolve to the Zarr backend (no I/O);
* 18 frames (ethanol with rich info and a calculator; periodic Cu with 1-3 atoms,
  each twice) written through one handle, read through a fresh read-only one, and
  the objects really are in the bucket;
* a second writer extends; the *first* handle sees the new frames. The second writer
  uses either the same storage options (fsspec hands both handles the same cached
  S3FileSystem) or ``skip_instance_cache=True`` (its own S3FileSystem with its own
  directory-listing cache, as another process would have);
* the ``calc.energy`` column as one array;
* ``db[i] = atoms`` (a different atom count) and ``db.update(i, info=...)``;
* pickling reopens the same remote store, in this process and in a spawned one;
* ``readonly=True`` on a missing remote path (or a missing bucket) raises
  StoreNotFoundError;
* a group written before the main dataset, both read back; a missing group read-only.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue as queue_module
import time
import traceback
from typing import Any

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("zarr")

import asebytes_nodes  # noqa: E402

if not hasattr(asebytes_nodes, "ZarrBackend"):
    pytest.skip("asebytes_nodes.ZarrBackend has not landed yet", allow_module_level=True)

from asebytes_nodes import ASEIO, ReadOnlyError, StoreNotFoundError, ZarrBackend  # noqa: E402
from asebytes_nodes.registry import resolve_backend  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402

S3 = tuple[str, dict[str, Any]]  # (url prefix "s3://<bucket>", storage_options)
CHILD_TIMEOUT = 60.0  # seconds; every wait on a child process is bounded


def frames() -> list[Atoms]:
    """18 frames: ethanol (4) and periodic Cu with variable atom counts (5), twice."""
    return [*make_frames("ethanol"), *make_frames("periodic_variable_n")] * 2


def energies(images: list[Atoms]) -> np.ndarray:
    return np.array([atoms.calc.results["energy"] for atoms in images], dtype=np.float64)


def assert_same_frames(expected: list[Atoms], db: ASEIO) -> None:
    """Every frame through one batched read, plus single-row reads at both ends and the middle.

    Not ``db[i]`` for every row: each single-row read of a remote store costs tens of
    requests (one per column array and shard index), ~0.5 s against moto.
    """
    assert len(db) == len(expected)
    for i, (atoms, got) in enumerate(zip(expected, db, strict=True)):
        assert_atoms_equal(atoms, got, f"iter[{i}]")
    for i in sorted({0, len(expected) // 2, len(expected) - 1}):
        assert_atoms_equal(expected[i], db[i], f"db[{i}]")


def bucket_listing(prefix: str, options: dict[str, Any], path: str = "") -> list[str]:
    """What is really in the bucket, through an s3fs instance with no cached listings."""
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True, use_listings_cache=False)
    bucket = prefix.removeprefix("s3://")
    return [p.removeprefix(bucket + "/") for p in fs.ls(f"{bucket}/{path}".rstrip("/"))]


# -- registry ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["s3", "gs", "gcs", "az", "abfs"])
def test_remote_schemes_resolve_to_zarr(scheme: str) -> None:
    assert resolve_backend(f"{scheme}://bucket/frames.zarr").load() is ZarrBackend


# -- round trip --------------------------------------------------------------------------------
def test_round_trip_through_a_fresh_handle(s3: S3) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    written = frames()
    with ASEIO(url, storage_options=options) as db:
        assert isinstance(db.backend, ZarrBackend)
        db.extend(written)
        assert len(db) == len(written)

    # In the bucket, not in a local directory named "s3:".
    assert bucket_listing(prefix, options) == ["frames.zarr"]
    assert "zarr.json" in [p.rsplit("/", 1)[-1] for p in bucket_listing(prefix, options, "frames.zarr")]

    with ASEIO(url, storage_options=options, readonly=True) as fresh:
        assert_same_frames(written, fresh)


@pytest.mark.parametrize("separate_fs", [False, True], ids=["same-options", "own-s3fs-instance"])
def test_second_extend_is_seen_by_the_first_handle(s3: S3, separate_fs: bool) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    written = frames()
    half = len(written) // 2

    first = ASEIO(url, storage_options=options)
    first.extend(written[:half])
    assert len(first) == half
    assert_atoms_equal(written[half - 1], first[-1], "first[-1] before")

    second_options = {**options, "skip_instance_cache": True} if separate_fs else options
    second = ASEIO(url, storage_options=second_options)
    assert len(second) == half
    second.extend(written[half:])
    assert len(second) == len(written)

    assert len(first) == len(written)
    assert_same_frames(written, first)
    np.testing.assert_array_equal(first["calc.energy"].to_numpy(), energies(written))


def test_energy_column(s3: S3) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    written = frames()
    with ASEIO(url, storage_options=options) as db:
        db.extend(written)
        column = db["calc.energy"].to_numpy()
    assert isinstance(column, np.ndarray) and column.dtype == np.float64
    np.testing.assert_array_equal(column, energies(written))

    with ASEIO(url, storage_options=options, readonly=True) as fresh:
        np.testing.assert_array_equal(fresh["calc.energy"].to_numpy(), energies(written))
        np.testing.assert_array_equal(fresh[3:9]["calc.energy"].to_numpy(), energies(written)[3:9])


def test_set_and_update_are_seen_by_a_fresh_handle(s3: S3) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    expected = frames()
    with ASEIO(url, storage_options=options) as db:
        db.extend(expected)
        replacement = make_frames("periodic_variable_n")[2]  # 3 atoms in place of ethanol's 9
        db[1] = replacement
        expected[1] = replacement
        db.update(0, info={"tag": "relaxed"})

    with ASEIO(url, storage_options=options, readonly=True) as fresh:
        assert len(fresh) == len(expected)
        got = list(fresh)
        assert got[0].info["tag"] == "relaxed"
        assert got[0].info["smiles"] == "CCO"  # the other keys are kept
        assert_atoms_equal(expected[1], fresh[1], "replaced frame")
        for i in range(1, len(expected)):  # the frames after the replaced one are untouched
            assert_atoms_equal(expected[i], got[i], f"fresh[{i}]")


# -- pickling ----------------------------------------------------------------------------------
def test_pickle_reopens_the_same_remote_store(s3: S3) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    written = frames()
    half = len(written) // 2
    db = ASEIO(url, storage_options=options)
    db.extend(written[:half])

    clone = pickle.loads(pickle.dumps(db))
    assert isinstance(clone.backend, ZarrBackend)
    assert_same_frames(written[:half], clone)

    clone.extend(written[half:])  # the same store, not a copy
    assert len(db) == len(written)
    assert_same_frames(written, db)

    readonly = pickle.loads(pickle.dumps(ASEIO(url, storage_options=options, readonly=True)))
    assert len(readonly) == len(written)
    with pytest.raises(ReadOnlyError):
        readonly.extend(written[:1])
    assert len(db) == len(written)


def _child(queue: Any, payload: bytes) -> None:
    """Spawned child: read through the pickled handle, then append 4 ethanol frames."""
    try:
        db = pickle.loads(payload)
        seen = (len(db), db["calc.energy"].to_numpy().tolist())
        db.extend(make_frames("ethanol"))
        queue.put(("ok", (*seen, len(db))))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def test_pickled_handle_in_a_spawned_process(s3: S3) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    written = frames()
    db = ASEIO(url, storage_options=options)
    db.extend(written)

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, pickle.dumps(db)))
    proc.start()
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        while True:
            try:
                status, result = queue.get(timeout=0.5)
                break
            except queue_module.Empty:
                if not proc.is_alive():  # died before reporting (e.g. while unpickling)
                    pytest.fail(f"the child process exited with code {proc.exitcode} and no report")
                if time.monotonic() > deadline:
                    pytest.fail(f"no report from the child process within {CHILD_TIMEOUT} s")
        proc.join(max(0.1, deadline - time.monotonic()))
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    assert status == "ok", f"child process failed:\n{result}"
    assert proc.exitcode == 0

    n_seen, child_energies, n_after = result
    assert n_seen == len(written)
    assert child_energies == energies(written).tolist()
    added = make_frames("ethanol")
    assert n_after == len(written) + len(added)
    assert_same_frames(written + added, db)  # the parent's handle sees the child's append


# -- missing stores ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["path", "bucket"])
def test_readonly_on_a_missing_remote_store(s3: S3, where: str) -> None:
    prefix, options = s3
    url = f"{prefix}/missing.zarr" if where == "path" else "s3://no-such-bucket-here/missing.zarr"
    with pytest.raises(StoreNotFoundError):
        ASEIO(url, storage_options=options, readonly=True)
    if where == "path":
        assert bucket_listing(prefix, options) == []  # a failed read-only open writes nothing



def test_a_writable_open_makes_nothing_until_the_first_write(s3: S3) -> None:
    """A read-write open of a mistyped name wrote its zarr.json into the bucket at once."""
    prefix, options = s3
    db = ASEIO(f"{prefix}/typo.zarr", storage_options=options)
    waiting = ASEIO(f"{prefix}/typo.zarr", storage_options=options)  # another handle, opened before
    assert len(db) == 0 and len(waiting) == 0 and bucket_listing(prefix, options) == []
    db.extend(make_frames("ethanol"))
    assert_same_frames(make_frames("ethanol"), ASEIO(f"{prefix}/typo.zarr", storage_options=options))
    assert_same_frames(make_frames("ethanol"), waiting)  # it stayed at 0 frames until it wrote


def test_files_of_other_formats_on_s3_are_refused(s3: S3, tmp_path: Any) -> None:
    """An extxyz object on S3 opened as an empty Zarr store (and one was made over it); .lmdb and
    .h5 names became Zarr stores; backend="lmdb" on a URL called the store corrupted."""
    import fsspec

    from asebytes_nodes import BackendNotFoundError, DestinationExistsError, InvalidDataError, convert

    prefix, options = s3
    fs = fsspec.filesystem("s3", **options)
    fs.pipe(f"{prefix[5:]}/data.extxyz", b"1\n\nH 0 0 0\n")
    fs.pipe(f"{prefix[5:]}/blob", b"not a store")
    for name, match in [("data.extxyz", "belong to the ase backend"), ("x.lmdb", "lmdb backend"),
                        ("x.h5", "h5md or mdtraj backend")]:  # fmt: skip
        with pytest.raises(BackendNotFoundError, match=match):
            ASEIO(f"{prefix}/{name}", storage_options=options)
    for readonly in (False, True):
        with pytest.raises(InvalidDataError, match="an object .* is stored at this key"):
            ASEIO(f"{prefix}/blob", storage_options=options, readonly=readonly)
    with pytest.raises(BackendNotFoundError, match="the lmdb backend opens local paths, not s3://"):
        ASEIO(f"{prefix}/y.lmdb", backend="lmdb")
    assert sorted(bucket_listing(prefix, options)) == ["blob", "data.extxyz"]
    source = tmp_path / "src.lmdb"
    ASEIO(source).extend(make_frames("ethanol"))
    url = f"{prefix}/c.zarr"
    convert(source, url, destination_options={"storage_options": options}, show_progress=False)
    with pytest.raises(DestinationExistsError, match="a URI is never replaced"):
        convert(source, url, overwrite=True, destination_options={"storage_options": options})
    with pytest.raises(InvalidDataError, match="writes a local folder of shards, not a URI"):
        convert(source, f"{prefix}/sharded", shard_frames=2)

# -- groups ------------------------------------------------------------------------------------
def test_groups_on_s3_are_isolated(s3: S3) -> None:
    prefix, options = s3
    url = f"{prefix}/frames.zarr"
    main, train = make_frames("ethanol"), make_frames("periodic_variable_n")
    with ASEIO(url, storage_options=options, group="train") as db:  # a group before the main dataset
        db.extend(train)
    with ASEIO(url, storage_options=options) as db:
        assert len(db) == 0
        db.extend(main)
    with ASEIO(url, storage_options=options, group="train", readonly=True) as db:
        assert_same_frames(train, db)
    with ASEIO(url, storage_options=options, readonly=True) as db:
        assert_same_frames(main, db)
    assert "frames.zarr/groups" in bucket_listing(prefix, options, "frames.zarr")
    with pytest.raises(StoreNotFoundError, match="'test'"):
        ASEIO(url, storage_options=options, group="test", readonly=True)
