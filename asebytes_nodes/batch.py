"""Training batches as flat numpy arrays, without building ``Atoms`` (issue 15).

A batch of rows ``indices`` is one dict:

* ``"n_atoms"``: atoms per frame, ``int64``, in the order of ``indices`` (repeats allowed);
* every per-frame key (``calc.energy``, ``cell``, ``info.*`` numbers...) stacked to
  ``(n_frames, ...)``;
* every per-atom key (``arrays.*`` and ASE's per-atom results such as ``calc.forces``)
  concatenated along atoms to ``(total_atoms, ...)``: frame ``i`` is
  ``values[offsets[i]:offsets[i + 1]]`` with ``offsets = [0, *cumsum(n_atoms)]``;
* non-numeric keys (strings, dicts, lists) as lists, one value per frame.

Values keep their stored dtypes (float64 stays float64). ``keys=None`` means every numeric key
all the rows carry. A requested key that some rows lack raises a ``KeyError`` naming the rows
unless ``fill`` gives a value for them (one value for every key, or ``{key: value}``); the fill
broadcasts to the key's per-frame (or per-atom) shape. ``atoms`` (integer indices, negative from
each frame's end, or a slice) keeps only those atoms of every frame in per-atom keys.

Backends produce batches through :meth:`ReadableBackend.read_batch`, whose default
(:func:`read_batch_default`) is built on ``read_rows``; a backend overrides it to decode
straight to arrays. :func:`assemble` and :func:`atom_gather` are the shared, vectorised
pieces such an override can reuse.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends._keys import MISSING, atom_counts, is_per_atom
from .errors import (
    InvalidDataError,
    MissingExtraError,
    RaggedColumnError,
    RowIndexError,
    StoreCorruptedError,
    UnknownKeyError,
)
from .validation import check_key

if TYPE_CHECKING:
    from .backends._base import ReadableBackend
    from .io import ASEIO
    from .views import RowView

__all__ = [
    "AtomSelection",
    "BatchDataset",
    "assemble",
    "atom_gather",
    "iter_batches",
    "merge_batches",
    "read_batch",
    "read_batch_default",
    "to_tensors",
]

#: What backends receive as ``atoms``: a 1-D ``int64`` array (negative counts from each
#: frame's end), a slice, or None for every atom.
AtomSelection = np.ndarray | slice | None

_NUMERIC_KINDS = frozenset("biufc")
_SCALARS = (bool, int, float, complex, np.bool_, np.number)


def is_numeric(value: Any) -> bool:
    """Does ``value`` go into a batch as an array (a number, or a numeric array)?"""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in _NUMERIC_KINDS
    return isinstance(value, _SCALARS)


# -- arguments -------------------------------------------------------------------------------------
_CHECKED: dict[tuple[Any, ...], tuple[str, ...]] = {}  # key lists seen (a batch loop repeats one)


def normalize_keys(keys: str | Sequence[str] | None) -> list[str] | None:
    """``None`` or a list of checked, distinct keys (a single key may be given as a string)."""
    if keys is None:
        return None
    given = (keys,) if isinstance(keys, str) else tuple(keys)
    checked = _CHECKED.get(given) if all(type(k) is str for k in given) else None
    if checked is None:
        for key in given:
            check_key(key)
        checked = tuple(dict.fromkeys(given))
        if len(_CHECKED) >= 256:
            _CHECKED.clear()
        _CHECKED[given] = checked
    return list(checked)


def normalize_fill(fill: Any, keys: list[str] | None) -> dict[str, Any]:
    """``{key: fill value}``: a mapping is taken as is, any other value fills every requested key."""
    if fill is None:
        return {}
    if isinstance(fill, Mapping):
        return dict(fill)
    return {key: fill for key in keys or ()}


def shaped_fill(backend: ReadableBackend, fills: dict[str, Any]) -> dict[str, Any]:
    """``fills`` with each value for a numeric key the store holds made an array of the key's
    stored shape (per frame; per atom for per-atom keys) and dtype (with the fill's): every part
    of a batch read from several stores or shards is then filled alike, also a part whose rows
    all lack the key (:class:`~asebytes_nodes.shards.ConcatBackend` calls it: one store's own
    read finds the form in its schema). Other values stay as given."""
    if not fills:
        return fills
    schema, out = backend.schema(), dict(fills)
    for key, value in fills.items():
        info = schema.get(key)
        if info is None or isinstance(value, (str, bytes)):
            continue
        dtype, shape = _stored_form(info)
        if dtype.kind not in _NUMERIC_KINDS or not is_numeric(value):
            continue
        try:
            out[key] = np.full(shape, value, dtype=np.result_type(dtype, value))
        except (ValueError, TypeError) as exc:
            raise InvalidDataError(
                f"fill value {value!r} for {key!r} does not fit its stored shape {shape} and dtype: {exc}"
            ) from exc
    return out


def normalize_atoms(atoms: Any) -> AtomSelection:
    """A slice, or a 1-D ``int64`` array of atom indices (negative counts from each frame's end)."""
    if atoms is None or isinstance(atoms, slice):
        return atoms
    arr = np.asarray(atoms)
    if arr.dtype == bool:
        raise TypeError("atoms= takes atom indices or a slice, not a boolean mask; use np.flatnonzero(mask)")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(
            f"atoms= takes a 1-D list of integer atom indices or a slice, got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.int64)


# -- atom selection --------------------------------------------------------------------------------
def atom_gather(
    counts: np.ndarray, atoms: np.ndarray | slice, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the selected atoms sit in per-atom values concatenated over frames of ``counts``
    atoms, and the new counts. Vectorised per distinct atom count (one pass for fixed topology).

    Raises ``RowIndexError`` naming the store ``rows`` whose frames are too small for an index.
    """
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    distinct, group = np.unique(counts, return_inverse=True)
    chosen = []
    for n in distinct.tolist():
        if isinstance(atoms, slice):
            local = np.arange(n, dtype=np.int64)[atoms]
        else:
            local = np.where(atoms < 0, atoms + n, atoms)
            bad = (local < 0) | (local >= n)
            if bad.any():
                raise _atom_index_error(int(atoms[np.argmax(bad)]), n, counts, rows)
        chosen.append(local)
    new_counts = np.array([len(c) for c in chosen], dtype=np.int64)[group.ravel()]
    new_starts = np.cumsum(new_counts) - new_counts
    gather = np.empty(int(new_counts.sum()), dtype=np.int64)
    for g, local in enumerate(chosen):
        frames = np.flatnonzero(group.ravel() == g)
        if len(local) and len(frames):
            dest = new_starts[frames][:, None] + np.arange(len(local))
            gather[dest.ravel()] = (starts[frames][:, None] + local).ravel()
    return gather, new_counts


def _atom_index_error(index: int, n: int, counts: np.ndarray, rows: np.ndarray) -> RowIndexError:
    short = (counts <= index) if index >= 0 else (counts < -index)  # every frame too small for it
    where = [int(r) for r in np.asarray(rows)[short][:10]]
    shown = ", ".join(map(str, where)) + (" ..." if short.sum() > 10 else "")
    spread = (
        f"; the frames here have {counts.min()} to {counts.max()} atoms"
        if counts.min() != counts.max()
        else ""
    )
    return RowIndexError(
        f"atom index {index} is out of range for rows {shown} (the smallest has {n} atoms){spread}: "
        "select atoms every frame has (atoms= is meant for fixed-topology data)"
    )


def pick_atoms(values: Sequence[Any], atoms: np.ndarray | slice, rows: np.ndarray) -> list[Any]:
    """Per-atom ``values`` of store ``rows`` (one each; MISSING kept) cut to the ``atoms`` of every
    frame, as :func:`atom_gather` selects them: the same indices, the same error naming the rows
    whose frames are too small. Column views' lists take atoms through it."""
    present = [j for j, value in enumerate(values) if value is not MISSING]
    arrays = [np.asarray(values[j]) for j in present]
    if isinstance(atoms, np.ndarray) and len(atoms) and arrays:
        counts = np.array([len(a) for a in arrays], dtype=np.int64)
        low, high = int(atoms.min()), int(atoms.max())
        small = counts[(counts <= high) | (counts < -low)]
        if len(small):
            n = int(small.min())
            index = next(i for i in atoms.tolist() if not -n <= i < n)
            raise _atom_index_error(index, n, counts, np.asarray(rows)[present])
    picked = list(values)
    for j, array in zip(present, arrays, strict=True):
        picked[j] = array[atoms]
    return picked


def _split_selection(gather: np.ndarray, counts: np.ndarray, new_counts: np.ndarray) -> list[np.ndarray]:
    """Per-frame local atom indices from a gather array (for per-atom values kept as lists)."""
    starts = np.cumsum(counts) - counts
    local = gather - np.repeat(starts, new_counts)
    return np.split(local, np.cumsum(new_counts)[:-1])


# -- assembly --------------------------------------------------------------------------------------
def assemble(
    rows: Sequence[Mapping[str, Any]],
    indices: np.ndarray,
    keys: Sequence[str] | None,
    *,
    fill: Mapping[str, Any],
    atoms: AtomSelection,
    shared: bool = False,
    backend: ReadableBackend | None = None,
) -> dict[str, Any]:
    """One batch from row dicts (store rows ``indices``, each carrying ``arrays.numbers``).

    One ``np.stack`` or ``np.concatenate`` per key. ``shared=True`` says the rows belong to a
    store (an in-memory backend): arrays are copied by the assembly anyway, list values are
    deep-copied here. A key none of the rows carries takes its dtype and shape from the schema
    of ``backend`` (every batch of an epoch alike), or from ``fill`` where the store has none.
    """
    counts = atom_counts(rows)
    if keys is None:
        keys = _shared_numeric_keys(rows)
    gather, new_counts = (None, counts) if atoms is None else atom_gather(counts, atoms, indices)
    batch: dict[str, Any] = {"n_atoms": new_counts}
    for key in keys:
        try:
            values, missing = [row[key] for row in rows], []
        except KeyError:  # some rows lack it: find them
            values = [row.get(key, MISSING) for row in rows]
            missing = [j for j, v in enumerate(values) if v is MISSING]
        present = next((v for v in values if v is not MISSING), MISSING)
        form = None
        if present is MISSING and backend is not None:  # no row here carries it: the store's form
            schema = backend.schema()
            info = schema.get(key)
            if info is None and key not in fill:
                known = ", ".join(sorted(schema))
                raise UnknownKeyError(f"no row carries the key {key!r}; available keys: {known}")
            form = None if info is None else _stored_form(info)
        if missing and key not in fill:
            raise _missing_error(key, [int(indices[j]) for j in missing], len(rows))
        per_atom = is_per_atom(key)
        if form is not None:  # the stored form decides, not the fill (strings and objects: a list)
            numeric = form[0].kind in _NUMERIC_KINDS
            present = np.zeros((1, *form[1]) if per_atom else form[1], form[0]) if numeric else None
        if present is MISSING:
            numeric = is_numeric(fill[key])
        else:  # every row's own value: 1 then "a" is a list, not the strings "1", "a"
            numeric = is_numeric(present) and all(is_numeric(v) for v in values if v is not MISSING)
        if not numeric:
            for j in missing:
                values[j] = copy.deepcopy(fill[key])
            if per_atom and gather is not None:
                picks = _split_selection(gather, counts, new_counts)
                values = [np.asarray(v)[p] for v, p in zip(values, picks, strict=True)]
            batch[key] = copy.deepcopy(values) if shared else values
            continue
        if missing:
            _fill_in(key, values, missing, fill[key], present, counts if per_atom else None)
        batch[key] = _join_atoms(key, values, counts, gather) if per_atom else _stack(key, values)
    return batch


def _shared_numeric_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    common = set(rows[0]).intersection(*rows[1:])
    return sorted(k for k in common if all(is_numeric(row[k]) for row in rows) and _stackable(k, rows))


def _stackable(key: str, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Do the rows' values of ``key`` join into one array: the same shape (per frame) or the
    same shape past the atom axis (per atom)? A per-frame array of another length in each
    frame is left out of the default keys rather than failing the batch."""
    skip = 1 if is_per_atom(key) else 0
    first = np.shape(rows[0][key])[skip:]
    return all(np.shape(row[key])[skip:] == first for row in rows)


def _missing_error(key: str, rows: list[int], total: int) -> UnknownKeyError:
    shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
    return UnknownKeyError(
        f"{len(rows)} of the {total} rows do not carry {key!r} (rows {shown}); pass fill= a value "
        f"for them (fill={{{key!r}: 0.0}} or one value for every key), or select rows that carry it"
    )


def _fill_in(
    key: str, values: list[Any], missing: list[int], fill: Any, present: Any, counts: np.ndarray | None
) -> None:
    """Put ``fill`` broadcast to the key's shape (per frame, or per atom of each frame) at ``missing``."""
    stored = np.asarray(fill if present is MISSING else present)  # no row carries it: the fill's own
    tail = stored.shape[1:] if counts is not None and present is not MISSING else stored.shape
    try:
        if isinstance(fill, (str, bytes)):  # np.result_type would read a string as a dtype name
            raise TypeError("a string cannot fill a numeric key")
        dtype = stored.dtype if present is MISSING else np.result_type(stored.dtype, fill)
        for j in missing:
            shape = tail if counts is None else (int(counts[j]), *tail)
            values[j] = np.full(shape, fill, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidDataError(
            f"fill value {fill!r} for {key!r} does not fit its stored shape {tail} and dtype: {exc}"
        ) from exc


def _stack(key: str, values: list[Any]) -> np.ndarray:
    try:
        stacked = np.array(values)  # as np.stack, and fast for Python scalars
        if stacked.dtype != object:
            return stacked
        raise ValueError("object array")
    except ValueError as exc:
        shapes = sorted({np.shape(v) for v in values})
        raise RaggedColumnError(
            f"{key!r} has values of different shapes ({shapes[:3]} ...) and cannot stack into one "
            "batch array; leave it out of keys= or read it with db[...][key].to_list()"
        ) from exc


def _join_atoms(key: str, values: list[Any], counts: np.ndarray, gather: np.ndarray | None) -> np.ndarray:
    try:
        joined = np.concatenate(values)
    except ValueError as exc:
        raise RaggedColumnError(f"{key!r}: per-atom shapes differ beyond the atom axis ({exc})") from exc
    if len(joined) != counts.sum():
        bad = [j for j, v in enumerate(values) if len(v) != counts[j]]
        raise StoreCorruptedError(f"{key!r} does not have one value per atom in batch positions {bad[:10]}")
    return joined if gather is None else joined[gather]


def empty_batch(backend: ReadableBackend, keys: list[str] | None, fill: Mapping[str, Any]) -> dict[str, Any]:
    """The batch of no rows: zero-length arrays of the keys' stored dtypes and shapes (from the schema)."""
    batch: dict[str, Any] = {"n_atoms": np.zeros(0, dtype=np.int64)}
    if not keys:
        return batch
    schema = backend.schema()
    for key in keys:
        info = schema.get(key)
        if info is None:
            if key not in fill:
                raise UnknownKeyError(f"no row carries the key {key!r}; pass fill= or leave it out of keys=")
            dtype, shape = np.asarray(fill[key]).dtype, np.shape(fill[key])
        else:
            dtype, shape = _stored_form(info)
        batch[key] = [] if dtype.kind not in _NUMERIC_KINDS else np.zeros((0, *shape), dtype=dtype)
    return batch


def _stored_form(info: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape per frame (per atom for per-atom keys) of a schema entry; object for
    strings, dicts and lists."""
    try:
        return np.dtype(info.dtype), tuple(info.shape[1:] if info.per_atom else info.shape)
    except TypeError:  # str, dict, list: a list
        return np.dtype(object), ()


def merge_batches(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches of consecutive row chunks as one batch (keys every part has)."""
    common = [k for k in parts[0] if all(k in p for p in parts[1:])]
    merged: dict[str, Any] = {}
    for key in common:
        chunks = [p[key] for p in parts]
        if isinstance(chunks[0], np.ndarray):
            merged[key] = np.concatenate(chunks)
        else:
            merged[key] = [v for chunk in chunks for v in chunk]
    return merged


def columns_of_batch(batch: Mapping[str, Any], keys: list[str], *, ragged: bool) -> dict[str, Any]:
    """Column-view results from a batch: per-atom keys as ``Ragged`` (``ragged=True``) or stacked
    to ``(n_frames, n_selected, ...)``; per-frame keys as arrays."""
    from .views import Ragged

    counts = batch["n_atoms"]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out: dict[str, Any] = {}
    for key in keys:
        values = batch[key]
        if not is_per_atom(key) or not isinstance(values, np.ndarray):
            if ragged:
                raise RaggedColumnError(f"{key!r} has no atom axis; use .to_numpy()")
            out[key] = values if isinstance(values, np.ndarray) else np.asarray(values)
        elif ragged:
            out[key] = Ragged(values, offsets)
        elif len(counts) and (counts != counts[0]).any():
            raise RaggedColumnError(
                f"{key!r}: the selected atoms number {counts.min()} to {counts.max()} per frame and "
                "cannot stack into one array; use .to_ragged(atoms=...)"
            )
        else:
            out[key] = values.reshape(len(counts), -1 if len(values) else 0, *values.shape[1:])
    return out


# -- entry points ----------------------------------------------------------------------------------
def read_batch_default(
    backend: ReadableBackend,
    indices: np.ndarray,
    keys: Sequence[str] | None = None,
    *,
    fill: Mapping[str, Any] | None = None,
    atoms: AtomSelection = None,
) -> dict[str, Any]:
    """The default ``read_batch``: one ``read_rows`` call, then :func:`assemble`."""
    wanted = None if keys is None else list(dict.fromkeys([*keys, "arrays.numbers"]))
    rows = backend.read_rows(indices, wanted)
    return assemble(rows, np.asarray(indices), keys, fill=fill or {}, atoms=atoms, backend=backend)


def read_batch(
    backend: ReadableBackend,
    indices: np.ndarray,
    keys: str | Sequence[str] | None = None,
    *,
    fill: Any = None,
    atoms: Any = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """A batch of checked row numbers ``indices``: arguments normalised, the backend's
    ``read_batch`` called once per chunk of ``chunk_size`` rows (all at once if None)."""
    keys = normalize_keys(keys)
    fills = normalize_fill(fill, keys)
    selection = normalize_atoms(atoms)
    if len(indices) == 0:
        return empty_batch(backend, keys, fills)
    size = chunk_size or len(indices)
    if len(indices) <= size:  # one call (a training batch): no slices
        return backend.read_batch(indices, keys, fill=fills, atoms=selection)
    parts = [
        backend.read_batch(indices[start : start + size], keys, fill=fills, atoms=selection)
        for start in range(0, len(indices), size)
    ]
    return parts[0] if len(parts) == 1 else merge_batches(parts)


def iter_batches(
    backend: ReadableBackend,
    indices: np.ndarray,
    batch_size: int,
    *,
    keys: str | Sequence[str] | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    fill: Any = None,
    atoms: Any = None,
) -> Iterator[dict[str, Any]]:
    """Batches of ``batch_size`` rows covering ``indices`` once (shuffled with ``seed`` if asked)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    keys, selection = normalize_keys(keys), normalize_atoms(atoms)
    fills = normalize_fill(fill, keys)
    order = np.random.default_rng(seed).permutation(indices) if shuffle else indices
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        part = order[start : start + batch_size]
        yield backend.read_batch(part, keys, fill=fills, atoms=selection)


# -- PyTorch ---------------------------------------------------------------------------------------
def to_tensors(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Numeric arrays of a batch as ``torch`` tensors sharing their memory (``torch.from_numpy``);
    read-only arrays are copied first; lists stay lists."""
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("to_tensors needs PyTorch: pip install torch") from exc
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in _NUMERIC_KINDS:
            if not value.flags.writeable or any(s < 0 or s % value.itemsize for s in value.strides):
                value = value.copy()  # torch takes neither, nor strides that split an item
            out[key] = torch.from_numpy(value)
        else:
            out[key] = value
    return out


class BatchDataset:
    """A map-style dataset whose items are whole batches, for ``torch.utils.data.DataLoader``.

    ``dataset[[i, j, k]]`` is the batch of those frames (tensors when ``tensors=True``). Use it
    with ``DataLoader(dataset, batch_size=None, sampler=BatchSampler(RandomSampler(dataset),
    batch_size=32, drop_last=False))``: each worker gets the store by pickling (or fork), and
    the backends reopen their files in the worker process.
    """

    def __init__(
        self,
        source: ASEIO | RowView,
        *,
        keys: str | Sequence[str] | None = None,
        fill: Any = None,
        atoms: Any = None,
        tensors: bool = True,
    ) -> None:
        from .io import ASEIO

        self.view = source[:] if isinstance(source, ASEIO) else source
        self.keys, self.fill, self.atoms, self.tensors = normalize_keys(keys), fill, atoms, tensors

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, indices: int | Sequence[int]) -> dict[str, Any]:
        index = [indices] if isinstance(indices, (int, np.integer)) else list(indices)
        batch = self.view[index].to_batch(self.keys, fill=self.fill, atoms=self.atoms)
        return to_tensors(batch) if self.tensors else batch
