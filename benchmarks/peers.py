"""One small adapter per storage backend, all with the same interface.

Each adapter uses its backend's fastest *documented* way to do each operation,
so the numbers compare what a user would get, not what a backend could do with
private tricks. Lifecycle: ``write`` creates and closes the store; ``open``
makes a read handle that ``read_all``, ``read_indices`` and ``energies`` use;
``close`` releases it.
"""

from __future__ import annotations

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

    def __init__(self, path: Path) -> None:
        self.path = path

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

    def size_bytes(self) -> int | None:
        """Bytes of every file the store created (its folder holds nothing else)."""
        folder = self.path.parent
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


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

    def size_bytes(self) -> int | None:
        return None


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

    def write(self, frames: Sequence[Atoms]) -> None:
        import asebytes

        backend = self._backend()
        asebytes.ASEIO(backend).extend(list(frames))
        backend.env.close()  # asebytes has no close(); the env must go before reopening

    def open(self) -> None:
        import asebytes

        self.backend = self._backend()
        self.db = asebytes.ASEIO(self.backend)
        self.objects = asebytes.ObjectIO(self.backend)

    def close(self) -> None:
        self.backend.env.close()

    def read_all(self) -> list[Atoms]:
        return self.db[:].to_list()  # type: ignore[no-any-return]

    def read_indices(self, indices: np.ndarray) -> list[Atoms]:
        return self.db[indices.tolist()].to_list()  # type: ignore[no-any-return]

    def energies(self) -> np.ndarray:
        return np.asarray(self.objects["calc.energy"].to_list())


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
    OursMemory,
    AsebytesLMDB,
    AseDB,
    AseLMDB,
    ExtXYZ,
    AseTrajectory,
)
