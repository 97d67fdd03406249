"""Lazy row and column views over a backend.

A view holds the backend and an index array, never data. Indexing a view gives
another view (or one item); data is read only when iterated or converted, in
chunks of ``chunk_size`` rows per backend call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import batch as _batch
from .backends._base import stale_row_error
from .backends._keys import MISSING, is_per_atom
from .errors import MissingValueError, RaggedColumnError, StoreCorruptedError, UnknownKeyError
from .indexing import IndexArray, is_key_index, normalize_index, normalize_indices
from .progress import progress
from .rows import dict_to_atoms, gc_paused

if TYPE_CHECKING:
    from ase import Atoms

    from .backends._base import ReadableBackend

__all__ = ["ColumnView", "Ragged", "RowView", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 1024


def atoms_of_rows(rows: list[dict[str, Any]], indices: Any) -> list[Atoms]:
    """Atoms of ``rows`` (store rows ``indices``); a row that cannot become Atoms is named."""
    try:
        return [dict_to_atoms(row) for row in rows]
    except StoreCorruptedError:
        for i, row in zip(indices, rows, strict=True):  # the error path only: find the row
            try:
                dict_to_atoms(row)
            except StoreCorruptedError as exc:
                raise StoreCorruptedError(f"row {int(i)}: {exc}") from exc
        raise


class Ragged(NamedTuple):
    """A per-atom column of frames with different atom counts.

    ``values[offsets[i]:offsets[i + 1]]`` is frame ``i``'s array.
    """

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:  # number of frames, not of the tuple's fields
        return len(self.offsets) - 1

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i``'s array."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def check_keys(backend: ReadableBackend, keys: Sequence[str]) -> None:
    """Raise ``UnknownKeyError`` naming the first key no row carries, with the available ones."""
    available = backend.keys()
    known = set(available)
    for key in keys:
        if key not in known:
            shown = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
            raise UnknownKeyError(
                f"no row carries the key {key!r}; available keys: {shown or '(store is empty)'}"
            )


class _View:
    def __init__(self, backend: ReadableBackend, indices: IndexArray, owner: Any = None) -> None:
        self._backend = backend
        self._indices = indices
        self._owner = owner  # the ASEIO it came from, kept alive while the view is (see open_output)

    @property
    def indices(self) -> IndexArray:
        """Row numbers in the store that this view shows (a copy)."""
        return self._indices.copy()

    def __len__(self) -> int:
        return len(self._indices)

    def _live(self, rows: IndexArray) -> IndexArray:
        """``rows``, refused with ``RowIndexError`` if one is past the store's end (a view made
        before rows were deleted) when the backend deletes rows and does not check them itself."""
        backend = self._backend
        if backend.supports_delete and not backend.checks_rows:
            last, n = int(np.max(rows, initial=-1)), len(backend)
            if last >= n:
                raise stale_row_error(last, n, backend.location or "")
        return rows

    def _row(self, index: int | np.integer) -> int:
        """The store row of this view's row ``index`` (negative counts from the end), checked."""
        row = self._indices[normalize_index(index, len(self._indices))]
        return int(self._live(row))

    def _chunks(self, size: int) -> Iterator[IndexArray]:
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        indices = self._live(self._indices)
        for start in range(0, len(indices), size):
            yield indices[start : start + size]

    def _narrow(self, index: Any) -> IndexArray:
        return self._indices[normalize_indices(index, len(self._indices))]

    def _to_batch(self, keys: Any, fill: Any, atoms: Any) -> dict[str, Any]:
        size = max(DEFAULT_CHUNK_SIZE * 16, self._backend.read_batch_size)
        rows = self._live(self._indices)
        return _batch.read_batch(self._backend, rows, keys, fill=fill, atoms=atoms, chunk_size=size)

    def _batches(self, batch_size: int, keys: Any, **options: Any) -> Iterator[dict[str, Any]]:
        return _batch.iter_batches(self._backend, self._live(self._indices), batch_size, keys=keys, **options)


class RowView(_View):
    """Rows of a store, read as ``Atoms`` on demand.

    ``view[i]`` is one ``Atoms``; ``view[a:b]``, ``view[[i, j]]`` and numpy arrays give
    another ``RowView``; ``view["calc.energy"]`` gives a :class:`ColumnView`.
    """

    def __getitem__(self, index: Any) -> Any:
        if is_key_index(index):
            keys = [index] if isinstance(index, str) else list(index)
            check_keys(self._backend, keys)
            return ColumnView(self._backend, self._indices, keys, isinstance(index, str), self._owner)
        if isinstance(index, (int, np.integer)):
            row = self._row(index)
            return atoms_of_rows([self._backend.read_row(row)], [row])[0]
        return RowView(self._backend, self._narrow(index), self._owner)

    def __iter__(self) -> Iterator[Atoms]:
        for chunk in self.chunked(self._backend.read_batch_size):
            yield from chunk

    def chunked(self, size: int = DEFAULT_CHUNK_SIZE) -> Iterator[list[Atoms]]:
        """Lists of up to ``size`` Atoms, each read with one backend call."""
        for chunk in self._chunks(size):
            with gc_paused():  # rows and Atoms are thousands of young objects: see gc_paused
                atoms = atoms_of_rows(self._backend.read_rows(chunk), chunk)
            yield atoms

    def to_list(self) -> list[Atoms]:
        """Every row as Atoms."""
        return [atoms for chunk in self.chunked(self._backend.read_batch_size) for atoms in chunk]

    def to_batch(
        self, keys: str | Sequence[str] | None = None, *, fill: Any = None, atoms: Any = None
    ) -> dict[str, Any]:
        """These rows as one batch of arrays, no Atoms built (format: :mod:`asebytes_nodes.batch`).

        ``keys=None`` takes every numeric key the rows share; ``fill`` (one value, or
        ``{key: value}``) stands in for rows lacking a key; ``atoms`` selects atoms per frame.
        """
        return self._to_batch(keys, fill, atoms)

    def batches(
        self,
        batch_size: int,
        *,
        keys: str | Sequence[str] | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        fill: Any = None,
        atoms: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """:meth:`to_batch` dicts of ``batch_size`` rows covering every row once (an epoch)."""
        return self._batches(
            batch_size, keys, shuffle=shuffle, seed=seed, drop_last=drop_last, fill=fill, atoms=atoms
        )

    def __repr__(self) -> str:
        return f"<RowView of {len(self)} rows from {self._backend!r}>"


class ColumnView(_View):
    """Values of one or several keys, read without building ``Atoms``.

    Rows that do not carry a key give ``None`` in :meth:`to_list`; :meth:`to_numpy`
    refuses them with an error naming the rows.
    """

    def __init__(
        self, backend: ReadableBackend, indices: IndexArray, keys: list[str], single: bool, owner: Any = None
    ) -> None:
        super().__init__(backend, indices, owner)
        self._keys = keys
        self._single = single

    @property
    def keys(self) -> list[str]:
        """The keys this view reads."""
        return list(self._keys)

    def __getitem__(self, index: Any) -> Any:
        if is_key_index(index):
            keys = [index] if isinstance(index, str) else list(index)
            return RowView(self._backend, self._indices, self._owner)[keys]
        if isinstance(index, (int, np.integer)):
            row = self._row(index)
            values = self._read(np.array([row]))
            return values[self._keys[0]][0] if self._single else _row_dict(values, 0)
        return ColumnView(self._backend, self._narrow(index), self._keys, self._single, self._owner)

    def _read(self, indices: IndexArray, stacked: bool = False) -> dict[str, Any]:
        """{key: values} for the given rows: a list with :data:`MISSING` for absent values,
        or a numpy array when the backend can read the column as one array. ``stacked``: the
        caller stacks the values, so a backend's ``read_column_array`` may give them stacked."""
        if len(self._keys) == 1:
            key = self._keys[0]
            array = self._backend.read_column_array(key, indices) if stacked else None
            return {key: self._backend.read_column(key, indices) if array is None else array}
        rows = self._backend.read_rows(indices, self._keys)
        return {k: [row.get(k, MISSING) for row in rows] for k in self._keys}

    def _read_all(self, stacked: bool = False) -> dict[str, Any]:
        if stacked and self._single:  # a column the backend gives as one array: one call, no copies
            array = self._backend.read_column_array(self._keys[0], self._live(self._indices))
            if array is not None:
                return {self._keys[0]: array}
            stacked = False  # the chunks would be refused the same way
        parts: dict[str, list[Any]] = {k: [] for k in self._keys}
        size, n = max(DEFAULT_CHUNK_SIZE * 16, self._backend.read_batch_size), len(self._indices)
        # one bar for all chunks (a backend's own bar would start again with each)
        with progress(n if n > size else 0, f"reading {', '.join(self._keys)}") as bar:
            for chunk in self._chunks(size):
                for key, values in self._read(chunk, stacked).items():
                    parts[key].append(values)
                bar.update(len(chunk))
        return {k: _join(p) for k, p in parts.items()}

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.chunked(DEFAULT_CHUNK_SIZE):
            yield from chunk

    def chunked(self, size: int = DEFAULT_CHUNK_SIZE, *, atoms: Any = None) -> Iterator[list[Any]]:
        """Lists of up to ``size`` values (dicts for several keys), one backend call each;
        ``atoms`` as in :meth:`to_list`."""
        return self._chunked(size, _batch.normalize_atoms(atoms))  # a bad selection: refused here

    def _chunked(self, size: int, selection: _batch.AtomSelection) -> Iterator[list[Any]]:
        for chunk in self._chunks(size):
            values = self._picked(self._read(chunk), selection, chunk)
            if self._single:
                yield [_none(v) for v in values[self._keys[0]]]
            else:
                yield [_row_dict(values, j) for j in range(len(chunk))]

    def to_list(self, *, atoms: Any = None) -> list[Any]:
        """Values (one key) or ``{key: value}`` dicts (several keys), ``None`` where missing;
        ``atoms`` keeps only those atoms (indices or a slice) of per-atom values."""
        values = self._read_picked(atoms)
        if self._single:
            return [_none(v) for v in values[self._keys[0]]]
        return [_row_dict(values, j) for j in range(len(self))]

    def to_dict(self, *, atoms: Any = None) -> dict[str, list[Any]]:
        """``{key: [values]}`` with ``None`` where a row lacks the key; ``atoms`` as in :meth:`to_list`."""
        return {k: [_none(v) for v in vs] for k, vs in self._read_picked(atoms).items()}

    def _read_picked(self, atoms: Any) -> dict[str, Any]:
        """Every value of this view, per-atom ones cut to ``atoms`` of each frame (None: all)."""
        selection = _batch.normalize_atoms(atoms)  # a bad selection is refused before reading
        return self._picked(self._read_all(), selection, self._indices)

    @staticmethod
    def _picked(values: dict[str, Any], selection: _batch.AtomSelection, rows: IndexArray) -> dict[str, Any]:
        """``values`` of store ``rows``, per-atom ones cut to ``selection`` of each frame (None: all)."""
        if selection is None:
            return values
        return {
            k: _batch.pick_atoms(vs, selection, rows) if is_per_atom(k) else vs for k, vs in values.items()
        }

    def to_batch(self, *, fill: Any = None, atoms: Any = None) -> dict[str, Any]:
        """This view's keys as one batch of arrays (see :meth:`RowView.to_batch`)."""
        return self._to_batch(self._keys, fill, atoms)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        fill: Any = None,
        atoms: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """:meth:`to_batch` dicts of ``batch_size`` rows covering every row once (an epoch)."""
        return self._batches(
            batch_size, self._keys, shuffle=shuffle, seed=seed, drop_last=drop_last, fill=fill, atoms=atoms
        )

    def to_numpy(self, *, atoms: Any = None) -> Any:
        """One stacked array (one key) or ``{key: array}`` (several keys).

        Per-atom values of frames with different atom counts cannot stack: use
        :meth:`to_ragged` for the concatenated values plus offsets. ``atoms`` keeps only those
        atoms (indices or a slice) of per-atom keys, read through :meth:`to_batch`.
        """
        if atoms is not None:
            return self._pick(_batch.columns_of_batch(self.to_batch(atoms=atoms), self._keys, ragged=False))
        values = self._read_all(stacked=True)
        arrays = {k: _stack(k, vs, self._indices) for k, vs in values.items()}
        return arrays[self._keys[0]] if self._single else arrays

    def to_ragged(self, *, atoms: Any = None) -> Any:
        """Per-atom values concatenated along the atom axis, plus ``offsets`` (length n + 1);
        ``atoms`` keeps only those atoms of every frame."""
        if atoms is not None:
            return self._pick(_batch.columns_of_batch(self.to_batch(atoms=atoms), self._keys, ragged=True))
        values = self._read_all()
        result = {k: _ragged(k, vs, self._indices) for k, vs in values.items()}
        return result[self._keys[0]] if self._single else result

    def _pick(self, result: dict[str, Any]) -> Any:
        return result[self._keys[0]] if self._single else result

    def __repr__(self) -> str:
        what = self._keys[0] if self._single else self._keys
        return f"<ColumnView {what!r} of {len(self)} rows from {self._backend!r}>"


def _join(parts: list[Any]) -> Any:
    """Chunks of one column as one list, or one array when every chunk is an array."""
    if len(parts) == 1 and isinstance(parts[0], np.ndarray):
        return parts[0]
    if parts and all(isinstance(p, np.ndarray) for p in parts):
        one = {p.dtype for p in parts}  # one dtype: kept as it is (numpy makes a big-endian one native)
        return np.concatenate(parts, dtype=one.pop() if len(one) == 1 else None)
    return list(chain.from_iterable(parts))


def _none(value: Any) -> Any:
    return None if value is MISSING else value


def _row_dict(values: dict[str, Any], j: int) -> dict[str, Any]:
    return {k: _none(vs[j]) for k, vs in values.items()}


def _check_present(key: str, values: Any, rows: IndexArray) -> None:
    if isinstance(values, np.ndarray):
        return
    missing = [int(rows[j]) for j, v in enumerate(values) if v is MISSING]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise MissingValueError(
            f"{len(missing)} rows do not carry {key!r} (rows {shown}); use to_list() to get None "
            "for them, or select the rows that have it"
        )


def _stack(key: str, values: Any, rows: IndexArray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if not values:
        return np.zeros(0)
    try:
        stacked = np.asarray(values)
    except ValueError:  # numpy refuses sequences of different shapes
        stacked = None
    if stacked is not None and stacked.dtype != object:
        return stacked  # a MISSING among the values would have made it an object array
    _check_present(key, values, rows)
    shapes = sorted({np.shape(v) for v in values})
    if is_per_atom(key) and len({s[1:] for s in shapes}) == 1:
        raise RaggedColumnError(
            f"{key!r} has different atom counts per frame (shapes {shapes[:3]} ...) and "
            "cannot stack into one array; use .to_ragged() for the concatenated values plus "
            "offsets, or .to_list() for one array per frame"
        )
    raise RaggedColumnError(
        f"{key!r} has values of different shapes or types ({shapes[:3]} ...); use .to_list()"
    )


def _ragged(key: str, values: Any, rows: IndexArray) -> Ragged:
    _check_present(key, values, rows)
    arrays = [np.asarray(v) for v in values]
    if any(a.ndim == 0 for a in arrays):
        raise RaggedColumnError(f"{key!r} holds scalars, which have no atom axis; use .to_numpy()")
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    if not arrays:
        return Ragged(np.zeros(0), offsets)
    try:
        flat = np.concatenate(arrays)
    except ValueError as exc:
        raise RaggedColumnError(f"{key!r}: per-atom shapes differ beyond the atom axis ({exc})") from exc
    return Ragged(flat, offsets)
