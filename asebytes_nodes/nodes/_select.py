"""Row selection for Subset and Split: indices, slices, filters, samples, splits.

Filters read only the columns they need, ``chunk_size`` rows at a time, and decide each chunk
with numpy over all its frames at once. With ``workers > 1`` or a ``scheduler`` they run on
Dask (:mod:`asebytes_nodes.shards`): one task per shard of a sharded or concatenated store,
else per block of :data:`BLOCK_ROWS` rows, each opening the store in its worker; the rows
kept do not depend on the number of workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends._base import MISSING
from ..errors import InvalidDataError, RowIndexError
from ..indexing import IndexArray, distinct, normalize_indices
from ..views import check_keys

if TYPE_CHECKING:
    from ..backends._base import ReadableBackend
    from ..io import ASEIO
    from ._config import Filters, SplitConfig, SubsetConfig

__all__ = ["BLOCK_ROWS", "filter_rows", "pick_rows", "select_rows", "split_rows"]

#: Rows per Dask filter task when the store is not made of shards.
BLOCK_ROWS = 100_000


def pick_rows(
    frames: ASEIO, config: SubsetConfig | SplitConfig, *, workers: int = 1, scheduler: str | None = None
) -> IndexArray:
    """Row numbers of ``frames`` given by ``indices`` (in their order) or ``slice`` (ascending), else
    every row, that pass ``filters`` (on Dask with ``workers > 1`` or a ``scheduler``)."""
    n = len(frames)
    if config.indices is not None:
        try:
            rows = normalize_indices(config.indices, n)
        except RowIndexError as exc:
            raise RowIndexError(f"indices: {exc}; indices are row numbers of the upstream frames") from None
    elif config.slice is not None:
        rows = normalize_indices(config.slice.to_slice(), n)
        if n and not len(rows):
            raise RowIndexError(config.slice.picks_none(n))
    else:
        rows = np.arange(n, dtype=np.int64)
    return filter_rows(frames.backend, rows, config.filters, config.chunk_size, workers, scheduler)


def select_rows(
    frames: ASEIO, config: SubsetConfig, *, workers: int = 1, scheduler: str | None = None
) -> IndexArray:
    """Row numbers of ``frames`` that a Subset picks: :func:`pick_rows`, then its sample (in the
    order :func:`pick_rows` gives them). A sample that would be empty is refused."""
    rows = pick_rows(frames, config, workers=workers, scheduler=scheduler)
    sample = config.sample
    if sample is None:
        return rows
    if sample.n is not None and sample.n > len(rows):
        raise InvalidDataError(
            f"sample.n is {sample.n} but only {len(rows)} frames remain after indices/slice and "
            "filters; lower sample.n or use sample.fraction"
        )
    want = sample.n if sample.n is not None else int((sample.fraction or 0) * len(rows))
    if want == 0:
        raise InvalidDataError(
            f"sample.fraction {sample.fraction} of the {len(rows)} frames that remain after indices/slice "
            "and filters is 0 frames; raise sample.fraction or use sample.n"
        )
    picked = np.random.default_rng(sample.seed).choice(len(rows), want, replace=False)
    return rows[np.sort(picked)]


def split_rows(frames: ASEIO, config: SplitConfig) -> dict[str, IndexArray]:
    """The picked rows cut into disjoint parts, by name: a seeded shuffle cut by fraction in
    alphabetical order of the names (an order that survives ``params.yaml``, which sorts keys).
    Each part keeps the order :func:`pick_rows` gives. A row picked twice (``indices`` naming it
    twice, or as ``-1`` and ``n - 1``) is refused: it could land in two parts."""
    rows = pick_rows(frames, config)
    repeated = _repeated(rows)
    if len(repeated):
        raise InvalidDataError(
            f"indices name rows {repeated.tolist()} more than once (negative indices counted from the "
            f"end of the {len(frames)} upstream frames); a split takes each row once, so its parts "
            "stay disjoint: list each row once"
        )
    order = np.random.default_rng(config.seed).permutation(len(rows))
    names = sorted(config.fractions)
    bounds = np.floor(np.cumsum([config.fractions[k] for k in names]) * len(rows) + 1e-9).astype(int)
    starts = np.concatenate([[0], bounds[:-1]])
    return {k: rows[np.sort(order[a:b])] for k, a, b in zip(names, starts, bounds, strict=True)}


def _repeated(rows: IndexArray) -> IndexArray:
    """The row numbers that occur more than once in ``rows``, ascending."""
    ordered = np.sort(rows)
    return distinct(ordered[1:][ordered[1:] == ordered[:-1]])


def filter_rows(
    backend: ReadableBackend,
    rows: IndexArray,
    filters: Filters,
    chunk_size: int,
    workers: int = 1,
    scheduler: str | None = None,
) -> IndexArray:
    """The ``rows`` whose frames pass every filter (frames lacking a filtered value fail it)."""
    needed = [key for key, on in _FILTER_KEYS.items() if on(filters)] + list(filters.has_keys or ())
    if not needed:
        return rows
    check_keys(backend, needed)
    if workers > 1 or scheduler is not None:
        from contextlib import closing

        from ..shards._engines import engine_for

        tasks = [(backend, piece, filters, chunk_size) for piece in _pieces(backend, rows)]
        with closing(engine_for(workers, scheduler, imports=[__name__, type(backend).__module__])) as engine:
            kept = engine.map(_filter_task, tasks, desc="filtering")
        return np.concatenate(kept) if kept else rows[:0]
    return _filter(backend, rows, filters, chunk_size)


def _pieces(backend: ReadableBackend, rows: IndexArray) -> list[IndexArray]:
    """``rows`` cut at the shards of a sharded or concatenated store, else into blocks of
    :data:`BLOCK_ROWS` (order kept)."""
    starts = getattr(backend, "part_starts", None)
    if starts is not None:
        part = np.searchsorted(starts, rows, side="right")
        cuts = np.flatnonzero(np.diff(part)) + 1
    else:
        cuts = np.arange(BLOCK_ROWS, len(rows), BLOCK_ROWS)
    return [piece for piece in np.split(rows, cuts) if len(piece)]


def _filter_task(task: tuple[ReadableBackend, IndexArray, Filters, int]) -> IndexArray:
    """One Dask task: the rows of one piece that pass (the store opened in the worker)."""
    return _filter(*task)


def _filter(backend: ReadableBackend, rows: IndexArray, filters: Filters, chunk_size: int) -> IndexArray:
    allowed = None
    if filters.elements is not None:
        from ase.data import atomic_numbers

        allowed = np.array([atomic_numbers[s] for s in filters.elements])
    keep = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        keep[start : start + len(chunk)] = _passes(backend, chunk, filters, allowed)
    return rows[keep]


_FILTER_KEYS = {
    "arrays.numbers": lambda f: f.n_atoms or f.elements is not None or f.energy_per_atom,
    "calc.energy": lambda f: f.energy_per_atom,
    "calc.forces": lambda f: f.max_force is not None,
}


def _passes(backend: ReadableBackend, rows: IndexArray, f: Filters, allowed: np.ndarray | None) -> np.ndarray:
    ok = np.ones(len(rows), dtype=bool)
    if f.n_atoms or allowed is not None or f.energy_per_atom:
        _, numbers, counts = _ragged(backend.read_column("arrays.numbers", rows))
        if f.n_atoms:
            ok &= _within(counts.astype(float), f.n_atoms.min, f.n_atoms.max)
        if allowed is not None:
            frame_of_atom = np.repeat(np.arange(len(rows)), counts)
            foreign = np.bincount(frame_of_atom, weights=~np.isin(numbers, allowed), minlength=len(rows))
            ok &= foreign == 0
        if f.energy_per_atom:
            energy = _scalars(backend.read_column("calc.energy", rows))
            with np.errstate(divide="ignore", invalid="ignore"):
                ok &= _within(energy / counts, f.energy_per_atom.min, f.energy_per_atom.max)
    if f.max_force is not None:
        present, forces, counts = _ragged(backend.read_column("calc.forces", rows))
        norms = np.linalg.norm(forces.reshape(-1, 3), axis=1)
        worst = np.zeros(len(rows))
        filled = counts > 0
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        if norms.size:
            worst[filled] = np.maximum.reduceat(norms, starts[filled])
        ok &= present & (worst <= f.max_force)
    for key in f.has_keys or ():
        present, _, _ = _ragged(backend.read_column(key, rows), flatten=False)
        ok &= present
    return ok


def _within(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """``low <= value <= high`` with open ends; NaN never passes."""
    ok = ~np.isnan(values)
    if low is not None:
        ok &= values >= low
    if high is not None:
        ok &= values <= high
    return ok


def _scalars(values: list[Any] | np.ndarray) -> np.ndarray:
    """A float array, NaN where a row lacks the value."""
    if isinstance(values, np.ndarray):
        return values.astype(float)
    return np.array([np.nan if v is MISSING else float(v) for v in values])


def _ragged(
    values: list[Any] | np.ndarray, flatten: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(present, concatenated per-atom values, atoms per row)`` of one column read."""
    if isinstance(values, np.ndarray):
        n = len(values)
        width = values.shape[1] if values.ndim > 1 else 0
        flat = values.reshape(n * width, *values.shape[2:]) if flatten and width else values
        return np.ones(n, dtype=bool), flat, np.full(n, width)
    present = np.array([v is not MISSING for v in values], dtype=bool)
    if not flatten:
        return present, np.zeros(0), np.zeros(len(values), dtype=int)
    arrays = [np.asarray(v) for v in values if v is not MISSING]
    counts = np.zeros(len(values), dtype=int)
    counts[present] = [len(a) for a in arrays]
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    return present, flat, counts
