"""H5MD ``extend([])`` into a particle group the file does not hold yet makes that group's 0-frame
store, as LMDB and Zarr do: it did nothing once the file existed, so the group could not be opened
read-only, and a node whose empty selection went to an H5MD ``particles_group`` could not read its
own output.

Matrix: an existing file (default store plus one group) or a new file; the empty store then read,
checked, written to (periodic frames: the box takes their boundary) and written to again empty;
a failing empty write rolled back; the conversion a node runs for an empty selection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from asebytes_nodes import ASEIO, StoreNotFoundError  # noqa: E402
from asebytes_nodes.backends.h5md import H5MDBackend, _writer  # noqa: E402
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames  # noqa: E402
from asebytes_nodes.transfer import convert  # noqa: E402


def _snapshot(path: Path, skip: str = "") -> dict[str, Any]:
    """Every object of the file (but those whose path contains ``skip``): attributes, and a
    dataset's dtype, shape and bytes."""
    found: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if skip and skip in name.split("/"):
            return
        attrs = {k: repr(v) for k, v in obj.attrs.items()}
        data = (str(obj.dtype), obj.shape, repr(obj[()])) if isinstance(obj, h5py.Dataset) else None
        found[name] = (attrs, data)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def _layout(path: Path, group: str) -> set[str]:
    """The paths of ``group``'s store, with the group's name taken out."""
    names: set[str] = set()

    def visit(name: str) -> None:
        parts = name.split("/")
        if group in parts:
            names.add("/".join("<g>" if part == group else part for part in parts))

    with h5py.File(path, "r") as f:
        f.visit(visit)
    return names


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    path = tmp_path / "x.h5"
    ASEIO(path).extend(make_frames("ethanol"))
    ASEIO(path, group="a").extend(make_frames("no_calculator"))
    return path


def test_empty_extend_makes_the_missing_group(existing: Path, tmp_path: Path) -> None:
    before = _snapshot(existing)
    ASEIO(existing, group="b").extend([])
    assert H5MDBackend.list_groups(existing) == ["a", "b"]
    assert _snapshot(existing, skip="b") == before  # the other stores, their frames and tables
    fresh = tmp_path / "fresh.h5"
    ASEIO(fresh, group="b").extend([])  # the 0-frame store a new file gets
    assert _layout(existing, "b") == _layout(fresh, "b") and "particles/<g>/box" in _layout(fresh, "b")
    for path in (existing, fresh):
        backend = H5MDBackend(path, group="b", readonly=True)
        assert len(backend) == 0 and backend.keys() == [] and backend.check() == []
        backend.close()
    with pytest.raises(StoreNotFoundError, match=r"x\.h5 has no particle group 'c'; it has: a, atoms, b"):
        ASEIO(existing, group="c", readonly=True)


def test_the_empty_store_takes_frames(existing: Path) -> None:
    ASEIO(existing, group="b").extend([])
    frames = make_frames("periodic_variable_n")
    ASEIO(existing, group="b").extend(frames[:2])
    ASEIO(existing, group="b").extend(frames[2:])
    after = _snapshot(existing)
    ASEIO(existing, group="b").extend([])  # the store exists now: nothing changes
    assert _snapshot(existing) == after
    backend = H5MDBackend(existing, group="b", readonly=True)
    assert backend.check() == []
    backend.close()
    with h5py.File(existing, "r") as f:  # the box an empty write made has the first frame's boundary
        boundary = [b.decode() if isinstance(b, bytes) else b for b in f["particles/b/box"].attrs["boundary"]]
        assert boundary == ["periodic" if p else "none" for p in frames[0].pbc] != ["none"] * 3
        assert np.array_equal(f["parameters/asebytes_nodes/b/step"][()], np.arange(len(frames)))
    db = ASEIO(existing, group="b", readonly=True)
    assert len(db) == len(frames)
    for atoms, expected in zip(db, frames, strict=True):
        assert_atoms_equal(expected, atoms)
    assert len(ASEIO(existing, readonly=True)) == len(make_frames("ethanol"))


def test_a_failed_empty_write_leaves_the_file(existing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 0-frame store is written through the undo journal like any write: all or nothing."""
    data = existing.read_bytes()

    def fail(self: Any) -> None:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(_writer._Writer, "commit", fail)
    with pytest.raises(RuntimeError, match="killed before the commit"):
        ASEIO(existing, group="b").extend([])
    assert existing.read_bytes() == data
    assert H5MDBackend.list_groups(existing) == ["a"]


def test_an_empty_selection_converted_into_a_group(tmp_path: Path) -> None:
    """What a node with an empty selection and an H5MD ``particles_group`` output runs."""
    source = tmp_path / "s.h5"
    ASEIO(source).extend(make_frames("ethanol"))
    out = tmp_path / "out.h5md"
    options = {"backend": "h5md", "particles_group": "pg"}
    assert convert(source, out, indices=[], destination_options=options, show_progress=False) == 0
    assert H5MDBackend.list_groups(out) == ["pg"]
    assert len(ASEIO(out, group="pg", readonly=True)) == 0
