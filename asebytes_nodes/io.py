"""``ASEIO``: one list-like, lazy interface over any backend."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from .backends._base import ColumnInfo, ReadableBackend, WritableBackend
from .backends._keys import ATOM_COUNT_KEYS
from .errors import InvalidDataError, UnsupportedOperationError
from .indexing import is_key_index, normalize_index, normalize_indices
from .registry import open_backend, resolve_backend
from .rows import dict_to_atoms, rows_from_atoms
from .validation import validate_row
from .views import DEFAULT_CHUNK_SIZE, RowView, atoms_of_rows, check_keys

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["ASEIO"]


class ASEIO:
    """A list of ``ase.Atoms`` stored in a backend, read lazily.

    >>> from ase.build import molecule
    >>> db = ASEIO("memory://")
    >>> db.extend([molecule("H2O"), molecule("CH4")])
    >>> len(db), db[-1].get_chemical_formula()
    (2, 'CH4')
    >>> db["arrays.numbers"][0].tolist()
    [8, 1, 1]

    Parameters
    ----------
    target
        A path (``str`` or ``pathlib.Path``), a URI (``memory://``, ``lmdb://``...)
        or a backend instance. The backend is chosen by :func:`asebytes_nodes.registry.open_backend`.
    backend
        Name of a registered backend, to override the choice by extension.
    group
        One of several isolated datasets in the store (own length, keys and schema), for
        backends whose ``supports_groups`` is True (LMDB, Zarr, H5MD); see :meth:`list_groups`.
        Without it the store's default dataset is opened.
    readonly
        Open the store read-only: every write raises :class:`~asebytes_nodes.errors.ReadOnlyError`.
    cache_to
        A path (``"cache.lmdb"``) or writable backend that keeps every row once read from a
        slow source (a Hub dataset, a stream); see :mod:`asebytes_nodes.cache`. The result is
        read-only.
    **options
        Passed to the backend's constructor.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | ReadableBackend | None = None,
        *,
        backend: str | None = None,
        group: str | None = None,
        readonly: bool = False,
        cache_to: str | os.PathLike[str] | WritableBackend | None = None,
        **options: Any,
    ) -> None:
        if group is not None:
            options["group"] = group
        self._backend = open_backend(target, backend=backend, readonly=readonly, **options)
        if cache_to is not None:
            from .cache import CachedBackend

            self._backend = CachedBackend(self._backend, cache_to)

    @classmethod
    def list_groups(cls, target: str | os.PathLike[str], backend: str | None = None) -> list[str]:
        """Names of the groups in the store at ``target`` (``[]`` for backends without groups).

        >>> ASEIO.list_groups("memory://")
        []
        """
        return resolve_backend(target, backend).load().list_groups(os.fspath(target))

    @property
    def backend(self) -> ReadableBackend:
        """The backend instance this ASEIO reads and writes."""
        return self._backend

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._backend)

    def __getitem__(self, index: Any) -> Any:
        """``db[i]`` -> Atoms; ``db[a:b]``, ``db[[i, j]]``, ``db[array]`` -> RowView;
        ``db["calc.energy"]``, ``db[["calc.energy", "calc.forces"]]`` -> ColumnView."""
        if isinstance(index, (int, np.integer)):
            if index >= 0 and not self._backend.length_known():  # a stream without a count: read forward
                row, data = int(index), self._backend.read_row(int(index))
            else:
                row, data = self._backend.read_row_at(int(index))
            return atoms_of_rows([data], [row])[0]
        if is_key_index(index):
            return self[:][index]
        return RowView(self._backend, normalize_indices(index, len(self._backend)), self)

    def __iter__(self) -> Iterator[Atoms]:
        if not self._backend.length_known():
            return (dict_to_atoms(row) for row in self._backend.iter_rows())
        return iter(self[:])

    def chunked(self, size: int = DEFAULT_CHUNK_SIZE) -> Iterator[list[Atoms]]:
        """Lists of up to ``size`` Atoms, each read with one backend call."""
        return self[:].chunked(size)

    def batches(self, batch_size: int, **options: Any) -> Iterator[dict[str, Any]]:
        """Training batches of arrays covering every frame once; see :meth:`RowView.batches`
        (``keys``, ``shuffle``, ``seed``, ``drop_last``, ``fill``, ``atoms``)."""
        return self[:].batches(batch_size, **options)

    @property
    def columns(self) -> list[str]:
        """Every key carried by at least one row, sorted."""
        return self._backend.keys()

    def keys(self, index: int) -> list[str]:
        """Keys row ``index`` carries (negative indices count from the end), in the backend's order."""
        return self._backend.columns(normalize_index(index, len(self._backend)))

    @property
    def schema(self) -> dict[str, ColumnInfo]:
        """dtype and per-row shape of every key."""
        return self._backend.schema()

    # -- writing -----------------------------------------------------------------------------
    def _writable(self) -> WritableBackend:
        self._backend._check_writable()
        return self._backend  # type: ignore[return-value]

    def extend(self, images: Iterable[Atoms], *, show_progress: bool | None = None) -> None:
        """Append frames in one atomic write: a bad frame refuses the whole call.

        Thousands of frames show a progress bar on a terminal; ``show_progress``
        forces it on or off (see :mod:`asebytes_nodes.progress`).
        """
        from ase import Atoms

        if isinstance(images, Atoms):
            raise InvalidDataError(
                f"extend() takes an iterable of ase.Atoms, got one Atoms ({images.get_chemical_formula()}): "
                "use append(atoms) to add one frame, or extend([atoms])"
            )
        backend = self._writable()
        rows = rows_from_atoms(images, show_progress=show_progress)
        backend.extend(rows)  # also when empty: a write makes a new store

    def append(self, atoms: Atoms) -> None:
        """Append one frame."""
        self.extend([atoms])

    def insert(self, index: int, atoms: Atoms) -> None:
        """Insert one frame before ``index`` (list semantics: clipped to the ends)."""
        backend = self._writable()
        if not backend.supports_insert:
            backend.insert_rows(0, [])  # raises the backend's own clear error
        n = len(backend)
        index = int(index)
        index = min(max(index + n if index < 0 else index, 0), n)
        backend.insert_rows(index, rows_from_atoms([atoms], rows=[index]))

    def __setitem__(self, index: Any, value: Any) -> None:
        """``db[i] = atoms`` replaces a frame; ``db[a:b] = [atoms, ...]`` replaces several."""
        backend = self._writable()
        if isinstance(index, (int, np.integer)):
            row = normalize_index(index, len(backend))
            backend.set_rows([row], rows_from_atoms([value], rows=[row]))
            return
        if is_key_index(index):
            raise TypeError("assign whole frames (db[i] = atoms); use db.update(i, ...) for keys")
        rows_idx = normalize_indices(index, len(backend))
        if isinstance(value, Atoms):  # iterating it would give its Atom objects
            raise InvalidDataError(
                f"assign a list of Atoms to {len(rows_idx)} rows (db[a:b] = [atoms, ...]), not one Atoms"
            )
        frames = list(value)
        rows = rows_from_atoms(frames, rows=rows_idx.tolist() if len(frames) == len(rows_idx) else None)
        if len(rows) != len(rows_idx):
            raise InvalidDataError(
                f"cannot assign {len(rows)} frames to {len(rows_idx)} rows; the counts must match"
            )
        backend.set_rows(rows_idx, rows)

    def __delitem__(self, index: Any) -> None:
        backend = self._writable()
        if isinstance(index, (int, np.integer)):
            rows = [normalize_index(index, len(backend))]
        else:
            rows = list(normalize_indices(index, len(backend)))
        backend.delete_rows(rows)

    def update(
        self,
        index: int,
        *,
        calc: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        arrays: dict[str, Any] | None = None,
        **keys: Any,
    ) -> None:
        """Set some keys of one stored frame, keeping the others.

        >>> db.update(0, calc={"energy": -1.5}, info={"tag": "relaxed"})  # doctest: +SKIP

        ``cell``, ``pbc`` and ``constraints`` are passed as keywords. Per-atom values
        must match the frame's atom count.
        """
        backend = self._writable()
        row = normalize_index(index, len(backend))
        update: dict[str, Any] = {}
        for prefix, values in (("calc.", calc), ("info.", info), ("arrays.", arrays)):
            for name, value in (values or {}).items():
                update[prefix + name] = value
        for name, value in keys.items():
            update[name] = value
        if not update:
            return
        stored = backend.read_row(row, ["arrays.numbers", "arrays.positions"])
        n_atoms = len(next(iter(stored.values()))) if stored else None
        backend.update_rows([row], [validate_row(update, n_atoms=n_atoms, where=f"row {row}")])

    def drop(self, keys: str | Sequence[str], indices: Any = None) -> None:
        """Remove ``keys`` from the given rows (all rows if ``indices`` is None)."""
        backend = self._writable()
        keys = [keys] if isinstance(keys, str) else list(keys)
        rows = normalize_indices(slice(None) if indices is None else indices, len(backend))
        if not backend.supports_drop_keys:
            backend.drop_keys(rows, keys)  # raises the backend's own clear error
        if any(k in ATOM_COUNT_KEYS for k in keys):
            raise UnsupportedOperationError(
                "arrays.numbers and arrays.positions define the frame and cannot be dropped"
            )
        check_keys(backend, keys)  # a misspelt key is named, not silently dropped from no row
        backend.drop_keys(rows, keys)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend's files and handles."""
        self._backend.close()

    def __enter__(self) -> ASEIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __add__(self, other: Any) -> ASEIO:
        """``db1 + db2`` (and ``sum([db1, db2, ...])``): the frames of both, read lazily and read-only."""
        from .shards import concat

        return concat(self, other) if isinstance(other, (ASEIO, ReadableBackend)) else NotImplemented

    def __radd__(self, other: Any) -> ASEIO:
        return self if isinstance(other, int) and other == 0 else NotImplemented  # sum() starts at 0

    def __reduce__(self) -> tuple[Any, ...]:
        # The backend pickles itself (file backends by path, reopened on load).
        return (ASEIO, (self._backend,))

    def __repr__(self) -> str:
        return f"ASEIO({self._backend!r})"
