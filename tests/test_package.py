"""Package-level promises: a light import, lazy backends, errors under one root."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import asebytes_nodes
from asebytes_nodes import errors

HEAVY = ("zarr", "h5py", "lmdb", "datasets", "pydantic", "zntrack", "dvc", "torch", "msgpack")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_import_is_light() -> None:
    loaded = _modules_after("import asebytes_nodes")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert "ase" not in loaded and "numpy" not in loaded


def test_backends_import_only_when_used(tmp_path) -> None:
    loaded = _modules_after("from asebytes_nodes import ASEIO\nASEIO('memory://')")
    assert "lmdb" not in loaded and "zarr" not in loaded
    loaded = _modules_after(f"from asebytes_nodes import ASEIO\nASEIO({str(tmp_path / 'a.lmdb')!r})")
    assert "lmdb" in loaded


def test_reading_frames_without_constraints_imports_no_scipy(tmp_path) -> None:
    """ase.constraints imports scipy (about 1 s per process here): every DataLoader worker and CLI
    call would pay it. It is imported only for frames that carry constraints."""
    path = str(tmp_path / "a.lmdb")
    script = (
        "from ase import Atoms\nfrom ase.calculators.singlepoint import SinglePointCalculator\n"
        "from asebytes_nodes import ASEIO\n"
        "atoms = Atoms('H2O', positions=[[0, 0, 0], [0, 0, 1], [0, 1, 0]], cell=[3, 3, 3], pbc=True)\n"
        "atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=[[0.0, 0.0, 0.1]] * 3)\n"
        f"db = ASEIO({path!r})\ndb.extend([atoms])\nassert db[0].get_potential_energy() == -1.0\n"
        "list(db[:])\ndb[:].to_batch()"
    )
    loaded = _modules_after(script)
    assert "asebytes_nodes.rows" in loaded
    assert "scipy" not in loaded and "ase.constraints" not in loaded


@pytest.mark.parametrize("suffix", [".lmdb", ".zarr", ".h5"])
def test_reading_a_store_imports_no_numpy_ma(tmp_path, suffix: str) -> None:
    """numpy 2.4's ``np.unique`` imports ``numpy.ma`` on its first call (5-9 ms in a fresh
    process): a cold first frame of an H5MD store took twice as long. Reads use
    ``indexing.distinct``; a frame, random rows, a batch and a column import no ``numpy.ma``."""
    from ase.build import molecule

    path = str(tmp_path / f"a{suffix}")
    with asebytes_nodes.ASEIO(path) as db:
        db.extend([molecule("CH4"), molecule("H2O"), molecule("NH3")] * 1700)  # H5MD: 2 chunks of counts
    script = (
        f"from asebytes_nodes import ASEIO\ndb = ASEIO({path!r}, readonly=True)\ndb[0]\n"
        "list(db[[7, 2, 5099]])\ndb[[5, 1, 1, 4711]].to_batch()\ndb['arrays.numbers'].to_list()"
    )
    loaded = _modules_after(script)
    assert "asebytes_nodes.io" in loaded
    assert "numpy.ma" not in loaded


def test_public_names_resolve() -> None:
    for name in asebytes_nodes.__all__:
        assert getattr(asebytes_nodes, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        asebytes_nodes.nope  # noqa: B018


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.UnknownKeyError, KeyError),
        (errors.RowIndexError, IndexError),
        (errors.MissingExtraError, ImportError),
        (errors.InvalidDataError, ValueError),
        (errors.SerializationError, ValueError),
        (errors.UnsupportedOperationError, io.UnsupportedOperation),
        (errors.ReadOnlyError, io.UnsupportedOperation),
        (errors.StoreNotFoundError, FileNotFoundError),
        (errors.StoreCorruptedError, OSError),
        (errors.BackendNotFoundError, ValueError),
    ],
)
def test_errors_inherit_root_and_builtin(cls: type, builtin: type) -> None:
    assert issubclass(cls, errors.ASEBytesError) and issubclass(cls, builtin)
    assert getattr(asebytes_nodes, cls.__name__) is cls


def test_unknown_key_message_is_not_quoted_twice() -> None:
    assert str(errors.UnknownKeyError("no row carries 'x'")) == "no row carries 'x'"


def test_dependencies_cover_every_import() -> None:
    """msgpack is needed by every backend that stores objects (Zarr, H5MD, Arrow, LMDB), so it is a
    core dependency; _zarr_shards imports numcodecs and google_crc32c itself, so [zarr] lists them."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    found = [Requirement(r) for r in requires("asebytes-nodes") or []]
    core = {r.name for r in found if r.marker is None}
    assert {"msgpack", "numpy", "ase"} <= core
    zarr_extra = {r.name for r in found if r.marker is not None and r.marker.evaluate({"extra": "zarr"})}
    assert {"zarr", "numcodecs", "google-crc32c"} <= zarr_extra


def test_fast_atoms_match_ase_constructor() -> None:
    """``dict_to_atoms`` fills an Atoms' attributes directly (no constructor): a new ASE release
    that adds or renames an attribute must fail here, not in a user's hands."""
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    from asebytes_nodes import atoms_to_dict, dict_to_atoms

    public = Atoms("H2O", positions=np.eye(3), cell=4 * np.eye(3), pbc=[True, False, True])
    public.set_constraint(FixAtoms([0]))
    public.info["label"] = "water"
    public.calc = SinglePointCalculator(public, energy=-1.5, forces=np.ones((3, 3)))
    fast = dict_to_atoms(atoms_to_dict(public))
    assert sorted(vars(fast)) == sorted(vars(public))
    assert type(fast.cell) is type(public.cell) and sorted(vars(fast.cell)) == sorted(vars(public.cell))
    assert fast == public and fast.info == public.info
    assert sorted(vars(fast.calc)) == sorted(vars(public.calc))
    assert fast.calc.results.keys() == public.calc.results.keys()
    assert fast.calc.check_state(fast) == [] and fast.get_potential_energy() == -1.5
    fast.positions[0] += 0.1  # a moved atom invalidates the results, as with ASE's own
    assert fast.calc.check_state(fast) != []


def test_convert_is_the_function_in_any_import_order() -> None:
    """The Atoms-to-rows module is ``rows``: importing ``ASEIO`` first no longer makes the
    package attribute ``convert`` the module instead of the store-conversion function."""
    code = (
        "from asebytes_nodes import ASEIO\n"
        "import asebytes_nodes\n"
        "from asebytes_nodes import convert\n"
        "print(convert.__module__, convert.__name__, asebytes_nodes.convert is convert)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["asebytes_nodes.transfer", "convert", "True"]
