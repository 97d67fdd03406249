"""Several datasets in one Zarr store: ``ZarrBackend(path, group=name)`` (issue 13 item 11).

Matrix: the main dataset and two groups (``train``, ``test``) of one local store, written
with different frames and keys; replacements in one of them (copy-on-write, so the next
writer's garbage collection runs, with planted garbage to prove it) leave the others
byte for byte; read-only opens of a missing group, invalid names, pickling, ``ASEIO``
passing ``group=`` through, and a group symlinked out of the store.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest

pytest.importorskip("zarr")

from asebytes_nodes import ASEIO, InvalidDataError, StoreNotFoundError, UnsafeStoreError  # noqa: E402
from asebytes_nodes.backends._zarr import ZarrBackend  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402


def _digest(folder: Path) -> str:
    """Hash of every file's path and bytes under ``folder`` (the lock file aside)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".asebytes-lock":
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def _fill(store: Path) -> dict[str | None, list]:
    content = {
        None: make_frames("ethanol"),
        "train": make_frames("periodic_variable_n"),
        "test": make_frames("keys_on_some_frames"),
    }
    for group, frames in content.items():
        with ASEIO(store, group=group) if group else ASEIO(store) as db:
            db.extend(frames)
    return content


def _assert_holds(store: Path, group: str | None, frames: list) -> None:
    with ASEIO(store, readonly=True, group=group) if group else ASEIO(store, readonly=True) as db:
        assert len(db) == len(frames), group
        for i, (want, got) in enumerate(zip(frames, db, strict=True)):
            assert_atoms_equal(want, got, f"group {group} frame {i}")
        assert db.backend.check() == [], group


def test_groups_are_isolated_and_the_main_dataset_keeps_its_layout(tmp_path: Path) -> None:
    store = tmp_path / "frames.zarr"
    content = _fill(store)
    for group, frames in content.items():
        _assert_holds(store, group, frames)
    assert ZarrBackend.list_groups(store) == ["test", "train"]
    assert ASEIO.list_groups(store) == ["test", "train"]
    train = ZarrBackend(store, group="train", readonly=True)
    main = ZarrBackend(store, readonly=True)
    assert "info.smiles" in main.keys() and "info.smiles" not in train.keys()
    assert train.schema() != main.schema()
    assert (store / "groups" / "train" / "zarr.json").is_file()
    plain = tmp_path / "plain.zarr"
    with ASEIO(plain) as db:
        db.extend(content[None])
    top = {p.name for p in store.iterdir()} - {"groups"}
    assert top == {p.name for p in plain.iterdir()}  # without group=: today's layout, groups aside
    assert ZarrBackend.list_groups(plain) == []


@pytest.mark.parametrize("rewritten", [None, "train"])
def test_garbage_collection_never_touches_another_group(tmp_path: Path, rewritten: str | None) -> None:
    store = tmp_path / "frames.zarr"
    content = _fill(store)
    others = {g: _digest(store / "groups" / g) for g in ("train", "test") if g != rewritten}
    folder = store if rewritten is None else store / "groups" / rewritten
    (folder / "c999").mkdir()  # garbage a killed writer left: the next writer removes it
    (folder / "c999" / "zarr.json").write_text("{}")
    replacement = make_frames("periodic_variable_n")[4]
    with ASEIO(store, group=rewritten) if rewritten else ASEIO(store) as db:
        db[0] = replacement  # copy-on-write: the old arrays are retired...
        db.update(1, info={"tag": "relaxed"})  # ...and collected by the next write
        db.extend([replacement])
    assert not (folder / "c999").exists()
    frames = content[rewritten]
    frames[0] = replacement
    frames[1].info["tag"] = "relaxed"
    _assert_holds(store, rewritten, [*frames, replacement])
    for group, digest in others.items():
        assert _digest(store / "groups" / group) == digest, group
        _assert_holds(store, group, content[group])
    if rewritten is not None:
        _assert_holds(store, None, content[None])


def test_missing_and_invalid_groups(tmp_path: Path) -> None:
    store = tmp_path / "frames.zarr"
    _fill(store)
    with pytest.raises(StoreNotFoundError, match="'valid'.*'test', 'train'"):
        ZarrBackend(store, group="valid", readonly=True)
    with pytest.raises(StoreNotFoundError, match="'train'"):
        ZarrBackend(tmp_path / "missing.zarr", group="train", readonly=True)
    for bad in ("", "..", "a/b", "../x", "x y", 3):
        with pytest.raises(InvalidDataError, match="invalid group name"):
            ZarrBackend(store, group=bad)  # type: ignore[arg-type]
    assert ZarrBackend.list_groups(store) == ["test", "train"]


def test_a_group_only_store_then_its_main_dataset(tmp_path: Path) -> None:
    store = tmp_path / "frames.zarr"
    with ASEIO(store, group="only") as db:
        db.extend(make_frames("ethanol"))
    with ASEIO(store) as db:  # the main dataset of a store that has only groups so far
        assert len(db) == 0
        db.extend(make_frames("periodic_variable_n"))
    _assert_holds(store, "only", make_frames("ethanol"))
    _assert_holds(store, None, make_frames("periodic_variable_n"))


def test_pickling_keeps_the_group(tmp_path: Path) -> None:
    store = tmp_path / "frames.zarr"
    content = _fill(store)
    clone = pickle.loads(pickle.dumps(ASEIO(store, group="train")))
    assert len(clone) == len(content["train"])
    assert clone.backend.cache_record()["group"] == "train"
    assert "group" not in ZarrBackend(store).cache_record()


def test_a_group_linked_out_of_the_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "frames.zarr"
    _fill(store)
    outside = tmp_path / "outside.zarr"
    with ASEIO(outside) as db:
        db.extend(make_frames("ethanol"))
    (store / "groups" / "evil").symlink_to(outside)
    with pytest.raises(UnsafeStoreError, match="outside the store"):
        ZarrBackend(store, group="evil", readonly=True)
    assert "evil" not in ZarrBackend.list_groups(store)
