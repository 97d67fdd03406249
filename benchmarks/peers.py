"""One small adapter per storage backend, all with the same interface.

Each adapter uses its backend's fastest *documented* way to do each operation,
so the numbers compare what a user would get, not what a backend could do with
private tricks. Lifecycle: ``write`` creates and closes the store; ``open``
makes a read handle that ``read_all``, ``read_indices`` and ``energies`` use;
``close`` releases it. A peer whose backend cannot run here (``skip_reason``) is
skipped and listed in the report.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.io import Trajectory

__all__ = ["PEERS", "Peer"]


class Peer(ABC):
    """A storage backend under test, bound to one store path."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    note: ClassVar[str] = ""
    is_ours: ClassVar[bool] = False  # errors of our own code stop the run instead of being noted
    requires: ClassVar[tuple[str, ...]] = ()  # modules the backend needs beyond the bench extra

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def skip_reason(cls) -> str | None:
        """Why the backend cannot run here (``None``: it can)."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        return f"not installed: {', '.join(missing)}" if missing else None

    @abstractmethod
    def write(self, frames: Sequence[Atoms]) -> None:
        """Create the store holding ``frames`` (in one call where the backend allows)."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Open a read handle (no-op for formats read by path)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the read handle."""

    @abstractmethod
    def read_all(self) -> list[Atoms]:
        """Every frame as ``Atoms``."""

    @abstractmethod
    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        """The frames at ``indices`` (0-based), in that order."""

    def energies(self) -> np.ndarray:
        """Every frame's energy; default: read all frames and ask each for it."""
        return np.array([atoms.get_potential_energy() for atoms in self.read_all()])

    def files(self) -> list[Path] | None:
        """Every file the store created, recursively (its folder holds nothing else); None: no disk."""
        return [p for p in self.path.parent.rglob("*") if p.is_file()]


class OursLMDB(Peer):
    """asebytes_nodes, LMDB backend."""

    name = "ours (LMDB)"
    suffix = ".lmdb"
    is_ours = True
    note = (
        "`ASEIO(path).extend`; `db[:].to_list()`; `list(db[idx])`; "
        "`db['calc.energy'].to_numpy()`"
    )

    def _target(self) -> str:
        return str(self.path)

    def write(self, frames: Sequence[Atoms]) -> None:
        from asebytes_nodes import ASEIO

        with ASEIO(self._target()) as db:
            db.extend(frames)

    def open(self) -> None:
        from asebytes_nodes import ASEIO

        self.db = ASEIO(self._target())

    def close(self) -> None:
        self.db.close()

    def read_all(self) -> list[Atoms]:
        return self.db[:].to_list()  # type: ignore[no-any-return]

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        return list(self.db[indices])

    def energies(self) -> np.ndarray:
        return self.db["calc.energy"].to_numpy()  # type: ignore[no-any-return]


class OursMemory(OursLMDB):
    """asebytes_nodes, in-memory backend: the codec and Atoms cost without any disk."""

    name = "ours (memory)"
    suffix = ""
    note = "same calls on `ASEIO('memory://')`; reference row, no file"

    def write(self, frames: Sequence[Atoms]) -> None:
        from asebytes_nodes import ASEIO

        self.db = ASEIO("memory://")  # kept open: closing would drop the data
        self.db.extend(frames)

    def open(self) -> None:
        pass

    def files(self) -> list[Path] | None:
        return None


class OursZarr(OursLMDB):
    """asebytes_nodes, Zarr backend (a ``.zarr`` folder; ``ASEIO`` picks it by suffix)."""

    name = "ours (Zarr)"
    suffix = ".zarr"
    requires = ("zarr",)
    note = "same calls as ours (LMDB) on a `.zarr` path"

    @classmethod
    def skip_reason(cls) -> str | None:
        import asebytes_nodes

        if not hasattr(asebytes_nodes, "ZarrBackend"):
            return "asebytes_nodes has no ZarrBackend yet"
        return super().skip_reason()


class OursH5MD(OursLMDB):
    """asebytes_nodes, H5MD backend (one HDF5 file; ``ASEIO`` picks it by suffix)."""

    name = "ours (H5MD)"
    suffix = ".h5"
    requires = ("h5py",)
    note = "same calls as ours (LMDB) on a `.h5` path (gzip, like znh5md's default)"


class AsebytesLMDB(Peer):
    """asebytes 0.3.3, LMDB backend (a folder holding one LMDB environment per group)."""

    name = "asebytes (LMDB)"
    suffix = ".lmdb"
    note = (
        "`ASEIO(LMDBObjectBackend(path)).extend`; `db[:].to_list()`; `db[idx_list].to_list()`; "
        "energies via `ObjectIO(backend)['calc.energy'].to_list()` "
        "(ASEIO's column view yields Atoms)"
    )

    def _backend(self) -> Any:
        from asebytes import LMDBObjectBackend

        return LMDBObjectBackend(str(self.path))

    @staticmethod
    def _release(backend: Any) -> None:
        backend.env.close()  # asebytes has no close(); the env must go before reopening

    def write(self, frames: Sequence[Atoms]) -> None:
        import asebytes

        backend = self._backend()
        asebytes.ASEIO(backend).extend(list(frames))
        self._release(backend)

    def open(self) -> None:
        import asebytes

        self.backend = self._backend()
        self.db = asebytes.ASEIO(self.backend)
        self.objects = asebytes.ObjectIO(self.backend)

    def close(self) -> None:
        self._release(self.backend)

    def read_all(self) -> list[Atoms]:
        return self.db[:].to_list()  # type: ignore[no-any-return]

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        return self.db[indices.tolist()].to_list()  # type: ignore[no-any-return]

    def energies(self) -> np.ndarray:
        return np.asarray(self.objects["calc.energy"].to_list())


class AsebytesZarr(AsebytesLMDB):
    """asebytes 0.3.3, Zarr backend: ragged columns (flat per-atom arrays + offsets), Blosc/LZ4."""

    name = "asebytes (Zarr)"
    suffix = ".zarr"
    requires = ("zarr",)
    note = (
        "same calls as asebytes (LMDB) on `RaggedColumnarBackend(path)` (what `ASEIO('x.zarr')` "
        "opens; the `ZarrBackend` of asebytes' README is not exported in 0.3.3); energies are "
        "one Zarr column read"
    )

    def _backend(self) -> Any:
        from asebytes import RaggedColumnarBackend

        return RaggedColumnarBackend(str(self.path))

    @staticmethod
    def _release(backend: Any) -> None:
        backend.close()


class ZnH5MD(Peer):
    """znh5md 0.4.8: one H5MD (HDF5) file, gzip-compressed and NaN-padded to the largest frame."""

    name = "znh5md"
    suffix = ".h5"
    requires = ("znh5md", "h5py")
    note = (
        "`znh5md.IO(path).extend(frames)`; `io[:]`; `io[sorted_unique_idx]` then reordered "
        "(h5py refuses unsorted or repeated indices); energies "
        "`h5py.File(path)['observables/atoms/potential_energy/value'][:]`"
    )

    def write(self, frames: Sequence[Atoms]) -> None:
        import znh5md

        znh5md.IO(self.path).extend(list(frames))

    def open(self) -> None:
        import znh5md

        self.io = znh5md.IO(self.path)

    def read_all(self) -> list[Atoms]:
        return self.io[:]

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        unique, inverse = np.unique(indices, return_inverse=True)
        picked = self.io[unique.tolist()]
        return [picked[i] for i in inverse]

    def energies(self) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            column = f[f"observables/{self.io.particles_group}/potential_energy/value"]
            return column[:]


class AseDB(Peer):
    """ASE database, SQLite file; all rows written in one transaction."""

    name = "ase.db (SQLite)"
    suffix = ".db"
    note = (
        "`with db: db.write(a, key_value_pairs=a.info)` per frame; `row.toatoms()` + info from "
        "key_value_pairs; `db.get(id=i+1)` per index; `[row.energy for row in db.select()]`"
    )

    def write(self, frames: Sequence[Atoms]) -> None:
        db = ase.db.connect(self.path)
        with db:
            for atoms in frames:
                db.write(atoms, key_value_pairs=atoms.info)

    def open(self) -> None:
        self.db = ase.db.connect(self.path)

    def close(self) -> None:
        getattr(self.db, "close", lambda: None)()

    @staticmethod
    def _atoms(row: Any) -> Atoms:
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        return atoms  # type: ignore[no-any-return]

    def read_all(self) -> list[Atoms]:
        return [self._atoms(row) for row in self.db.select()]

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        return [self._atoms(self.db.get(id=int(i) + 1)) for i in indices]

    def energies(self) -> np.ndarray:
        return np.array([row.energy for row in self.db.select()])


class AseLMDB(AseDB):
    """ASE database, LMDB file from ase-db-backends (``ase.db.connect`` picks it by suffix)."""

    name = "ase.db (.aselmdb)"
    suffix = ".aselmdb"
    note = "same calls as ase.db (SQLite); `with db:` commits and closes the env: reads reconnect"


class ExtXYZ(Peer):
    """Extended XYZ text file through ``ase.io``."""

    name = "extxyz"
    suffix = ".extxyz"
    note = (
        "`ase.io.write(path, frames)`; `ase.io.read(path, ':')`; `ase.io.read(path, i)` "
        "per index; energies from read-all"
    )

    def write(self, frames: Sequence[Atoms]) -> None:
        ase.io.write(self.path, list(frames), format="extxyz")

    def read_all(self) -> list[Atoms]:
        return ase.io.read(self.path, index=":", format="extxyz")  # type: ignore[no-any-return]

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        return [ase.io.read(self.path, index=int(i), format="extxyz") for i in indices]


class AseTrajectory(Peer):
    """ASE ``.traj`` (ulm) file, written frame by frame into one open file."""

    name = "ase .traj"
    suffix = ".traj"
    note = (
        "`Trajectory(path, 'w').write(a)` per frame; `list(traj)`; `traj[i]` per index; "
        "energies from read-all"
    )

    def write(self, frames: Sequence[Atoms]) -> None:
        with Trajectory(self.path, "w") as traj:
            for atoms in frames:
                traj.write(atoms)

    def open(self) -> None:
        self.traj = Trajectory(self.path)

    def close(self) -> None:
        self.traj.close()

    def read_all(self) -> list[Atoms]:
        return list(self.traj)

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        return [self.traj[int(i)] for i in indices]


PEERS: tuple[type[Peer], ...] = (
    OursLMDB,
    OursZarr,
    OursH5MD,
    OursMemory,
    AsebytesLMDB,
    AsebytesZarr,
    ZnH5MD,
    AseDB,
    AseLMDB,
    ExtXYZ,
    AseTrajectory,
)
