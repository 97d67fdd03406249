"""Readers for the training benchmark: one adapter per store, the same operations on each.

Every reader opens its store in ``__init__`` (so a cold measurement can time the open) and offers
the operations the training benchmark times (``OPS``):

* ``first``: frame 0 as ``Atoms``;
* ``random``: the frames at ``indices`` as ``Atoms``, in one call where the library has one;
* ``getitem``: the same frames one ``db[i]`` at a time (issue 17's random reads);
* ``energy``: every frame's energy as a numpy array;
* ``batches``: shuffled training batches (``indices`` split into batches of 32) as flat arrays:
  our ``db[idx].to_batch(BATCH_KEYS)`` against atompack-db's ``get_molecules_flat``;
* ``read_all``: every frame as ``Atoms``, 1,000 at a time (nothing kept).

Each operation returns a number that depends on what was read (a checksum), so a reader that
returns wrong data shows in the report and nothing can be skipped as dead code. Libraries are
imported by :func:`preload` (untimed in a cold measurement), never inside an operation.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "BATCH_KEYS",
    "BATCH_SIZE",
    "OPS",
    "READERS",
    "Reader",
    "batch_indices",
    "preload",
]

BATCH_SIZE = 32
#: What a potential trains on: positions, species, energy and forces (issue 15's comparison).
BATCH_KEYS = ("arrays.positions", "arrays.numbers", "calc.energy", "calc.forces")
OPS = ("first", "random", "getitem", "energy", "batches", "read_all")
_CHUNK = 1000


def batch_indices(n_rows: int, n_batches: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Shuffled batches of ``BATCH_SIZE`` rows (a full epoch, or its first ``n_batches``)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    batches = [order[i : i + BATCH_SIZE] for i in range(0, n_rows, BATCH_SIZE)]
    return batches if n_batches is None else batches[:n_batches]


def _energies(frames: Sequence[Any]) -> float:
    return float(sum(atoms.get_potential_energy() for atoms in frames))


class Reader:
    """One open store; subclasses implement the operations their library supports."""

    kind: ClassVar[str]
    modules: ClassVar[tuple[str, ...]]  # imported before any timing

    def __init__(self, path: Path) -> None:
        self.path = path

    def first(self) -> float:
        return _energies(self._frames([0]))

    def random(self, indices: np.ndarray) -> float:
        return _energies(self._frames(indices.tolist()))

    def getitem(self, indices: np.ndarray) -> float:
        raise NotImplementedError(f"{self.kind}: no getitem measurement")

    def _frames(self, indices: list[int]) -> list[Any]:
        raise NotImplementedError

    def energy(self) -> float:
        raise NotImplementedError

    def batches(self, batches: Sequence[np.ndarray]) -> float:
        raise NotImplementedError(f"{self.kind}: no batch reader")

    def read_all(self) -> float:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the store."""


class Ours(Reader):
    """asebytes_nodes, any backend ``ASEIO`` picks by suffix, opened read-only."""

    modules = (
        "asebytes_nodes",
        "asebytes_nodes:ASEIO",  # the package exports it lazily: its first lookup imports it
        "asebytes_nodes.batch",
        "asebytes_nodes.backends._lmdb",
        "asebytes_nodes.backends._zarr",
        "asebytes_nodes.backends.h5md",
        "lmdb",
        "zarr",
        "h5py",
    )

    def __init__(self, path: Path) -> None:
        from asebytes_nodes import ASEIO

        super().__init__(path)
        self.db = ASEIO(path, readonly=True)

    def _frames(self, indices: list[int]) -> list[Any]:
        return list(self.db[indices])

    def first(self) -> float:
        return float(self.db[0].get_potential_energy())

    def getitem(self, indices: np.ndarray) -> float:
        db = self.db
        return float(sum(db[i].get_potential_energy() for i in indices.tolist()))

    def energy(self) -> float:
        return float(self.db["calc.energy"].to_numpy().sum())

    def batches(self, batches: Sequence[np.ndarray]) -> float:
        db, keys, total = self.db, list(BATCH_KEYS), 0.0
        for idx in batches:
            total += float(db[idx].to_batch(keys)["calc.energy"].sum())
        return total

    def read_all(self) -> float:
        return float(sum(_energies(chunk) for chunk in self.db[:].chunked(_CHUNK)))

    def close(self) -> None:
        self.db.close()


class OursLMDB(Ours):
    kind = "ours (LMDB)"


class OursZarr(Ours):
    kind = "ours (Zarr)"


class OursH5MD(Ours):
    kind = "ours (H5MD)"


class AsebytesLMDB(Reader):
    """asebytes 0.3.3 LMDB, read-only; energies through ``ObjectIO`` (its column views yield Atoms)."""

    kind = "asebytes (LMDB)"
    modules = ("asebytes", "lmdb")

    def __init__(self, path: Path) -> None:
        import asebytes

        super().__init__(path)
        self.backend = asebytes.LMDBObjectBackend(str(path), readonly=True)
        self.db = asebytes.ASEIO(self.backend)

    def _frames(self, indices: list[int]) -> list[Any]:
        return self.db[indices].to_list()  # type: ignore[no-any-return]

    def first(self) -> float:
        return float(self.db[0].get_potential_energy())

    def getitem(self, indices: np.ndarray) -> float:
        db = self.db
        return float(sum(db[i].get_potential_energy() for i in indices.tolist()))

    def energy(self) -> float:
        import asebytes

        return float(np.sum(asebytes.ObjectIO(self.backend)["calc.energy"].to_list()))

    def read_all(self) -> float:
        return _energies(self.db[:].to_list())

    def close(self) -> None:
        self.backend.env.close()


class ZnH5MD(Reader):
    """znh5md 0.4.8; h5py refuses unsorted indices, so random reads go sorted and are reordered."""

    kind = "znh5md"
    modules = ("znh5md", "h5py")

    def __init__(self, path: Path) -> None:
        import znh5md

        super().__init__(path)
        self.io = znh5md.IO(path)

    def _frames(self, indices: list[int]) -> list[Any]:
        unique, inverse = np.unique(indices, return_inverse=True)
        picked = self.io[unique.tolist()]
        return [picked[i] for i in inverse]

    def first(self) -> float:
        return float(self.io[0].get_potential_energy())

    def energy(self) -> float:
        import h5py

        with h5py.File(self.path, "r") as f:
            return float(f[f"observables/{self.io.particles_group}/potential_energy/value"][:].sum())

    def read_all(self) -> float:
        return _energies(self.io[:])


class Atompack(Reader):
    """atompack-db 0.4.1: memory-mapped, read-only; positions and forces stored as float32."""

    kind = "atompack"
    modules = ("atompack",)

    def __init__(self, path: Path) -> None:
        import atompack

        super().__init__(path)
        self.db = atompack.Database.open(str(path))

    def _frames(self, indices: list[int]) -> list[Any]:
        import atompack

        return atompack.to_ase_batch(self.db, indices)  # type: ignore[no-any-return]

    def getitem(self, indices: np.ndarray) -> float:
        import atompack

        db = self.db
        return float(
            sum(atompack.to_ase(db.get_molecule(i)).get_potential_energy() for i in indices.tolist())
        )

    def energy(self) -> float:
        # No column read: the flat batch of every frame is the fastest documented way.
        return float(self.db.get_molecules_flat(list(range(len(self.db))))["energy"].sum())

    def batches(self, batches: Sequence[np.ndarray]) -> float:
        db, total = self.db, 0.0
        for idx in batches:
            total += float(db.get_molecules_flat(idx.tolist())["energy"].sum())
        return total

    def read_all(self) -> float:
        n = len(self.db)
        return float(
            sum(_energies(self._frames(list(range(i, min(i + _CHUNK, n))))) for i in range(0, n, _CHUNK))
        )


READERS: dict[str, type[Reader]] = {
    cls.kind: cls for cls in (OursLMDB, OursZarr, OursH5MD, AsebytesLMDB, ZnH5MD, Atompack)
}


def preload(kind: str) -> None:
    """Import everything ``kind`` reads with (kept out of every timed region). ``module:name``
    also resolves a name the module exports lazily, as a program's own import line does."""
    for entry in READERS[kind].modules:
        name, _, attr = entry.partition(":")
        module = importlib.import_module(name)
        if attr:
            getattr(module, attr)
