"""Opening an H5MD store cold (issue 15 item 3): the registry's sniff hands its HDF5 handle to
the backend and lets it go after, the hostile-file check at open walks links only, and a dataset
pointing outside the file is still refused before its data are read or written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import ASEIO, UnsafeStoreError
from asebytes_nodes.registry import resolve_backend

h5py = pytest.importorskip("h5py")


def _store(path: Path, n: int = 4) -> Path:
    frames = []
    for i in range(n):
        atoms = molecule("H2O")
        atoms.calc = SinglePointCalculator(atoms, energy=float(i))
        frames.append(atoms)
    with ASEIO(path) as db:
        db.extend(frames)
    return path


def test_a_sniff_outside_an_open_keeps_no_handle(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.h5")
    assert resolve_backend(path).name == "h5md"
    with h5py.File(path, "a") as f:  # fails while a read-only handle of this process is open
        f.attrs["touched"] = 1


def test_the_sniffed_handle_serves_the_store_and_goes_with_it(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.h5")
    with ASEIO(path, readonly=True) as db:
        assert db["calc.energy"].to_numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    with h5py.File(path, "a") as f:
        f.attrs["touched"] = 1


def _virtual_energy(path: Path, outside: Path) -> None:
    with h5py.File(path, "a") as f:
        name = "observables/atoms/energy/value"
        data = f[name][()]
        del f[name]
        with h5py.File(outside, "w") as o:
            o["data"] = data + 1
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype, maxshape=(None,))
        layout[...] = h5py.VirtualSource(str(outside), "data", shape=data.shape)
        f.create_virtual_dataset(name, layout)


def test_a_virtual_column_is_refused_when_first_read(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.h5")
    _virtual_energy(path, tmp_path / "outside.h5")
    with ASEIO(path, readonly=True) as db:
        assert len(db) == 4  # opening reads neither the column nor the other file
        with pytest.raises(UnsafeStoreError, match="energy/value' is a virtual dataset"):
            db["calc.energy"].to_numpy()


def test_a_write_checks_every_dataset_first(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.h5")
    _virtual_energy(path, tmp_path / "outside.h5")
    before = (tmp_path / "outside.h5").read_bytes()
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=9.0)
    with ASEIO(path) as db, pytest.raises(UnsafeStoreError, match="virtual dataset"):
        db.extend([atoms])
    assert (tmp_path / "outside.h5").read_bytes() == before
    with h5py.File(path, "r") as f:
        assert np.asarray(f["parameters/asebytes_nodes/atoms/n_atoms"]).shape == (4,)


def test_links_are_checked_along_each_path_opened(tmp_path: Path) -> None:
    """Opening a store of ours walks no links: each path is checked as first opened. A soft link
    on it that leads through an external link, or in circles, is refused; a link elsewhere in
    the file that the store never opens is not followed."""
    path = _store(tmp_path / "s.h5")
    with h5py.File(path, "a") as f:
        f["elsewhere"] = h5py.ExternalLink("/etc/passwd", "/data")
        f["loop"] = h5py.SoftLink("/loop")
    with ASEIO(path, readonly=True) as db:
        assert db["calc.energy"].to_numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
    name = "observables/atoms/energy"
    for target, problem in ((f"/elsewhere/{name}", "external link"), ("/loop", "soft link")):
        with h5py.File(path, "a") as f:
            if "moved" not in f:
                f.move(name, "moved")
            else:
                del f[name]
            f[name] = h5py.SoftLink(target)
        with ASEIO(path, readonly=True) as db, pytest.raises(UnsafeStoreError, match=problem):
            db["calc.energy"].to_numpy()
