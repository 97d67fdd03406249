"""Training batches of a Zarr store as flat arrays: ``read_batch`` of :class:`~._zarr.ZarrBackend`.

A batch (see :mod:`asebytes_nodes.batch`) is gathered column by column with numpy: the atom
offsets give every requested frame's atom rows in one index array, and each array the keys need
is read once for the whole batch through :meth:`._zarr_chunks.ChunkCache.take` (the inner chunks
holding those rows, each decoded once, kept in the handle's cache). No per-frame Python work and
no ``Atoms``. Whatever this path does not cover (object columns, rows lacking a key, keys no
column holds) goes to the shared default built on ``read_rows``, which fills or names the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._keys import is_per_atom
from ._zarr_chunks import ragged_rows

__all__ = ["BatchReads"]


class BatchReads:
    """Mixin of :class:`~._zarr.ZarrBackend`: ``read_batch`` gathered with numpy."""

    # provided by ZarrBackend
    _meta: dict[str, Any]
    _cache: Any
    _guarded: Callable[[Callable[[], Any]], Any]
    _local: Callable[[str], Any]
    _take: Callable[[str, int, np.ndarray], np.ndarray]
    _atom_offsets: Callable[[], np.ndarray]
    _plans: tuple[Any, dict[tuple[str, ...], Any]] = (None, {})  # (record, plan per keys)

    def read_batch(
        self,
        indices: Sequence[int] | np.ndarray,
        keys: Sequence[str] | None = None,
        *,
        fill: Mapping[str, Any] | None = None,
        atoms: Any = None,
    ) -> dict[str, Any]:
        """Typed columns every row carries, gathered with numpy; anything else by the default."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx):
            batch = self._guarded(lambda: self._gathered_batch(idx, keys, atoms))
            if batch is not None:
                return batch
        return super().read_batch(idx, keys, fill=fill, atoms=atoms)  # type: ignore[misc]

    def _gathered_batch(
        self, idx: np.ndarray, keys: Sequence[str] | None, atoms: Any
    ) -> dict[str, Any] | None:
        plan = self._batch_plan(idx, keys)
        if plan is None:
            return None
        offsets = self._atom_offsets()
        starts, stops = offsets[idx], offsets[idx + 1]
        counts = stops - starts
        rows: np.ndarray | None = None
        batch: dict[str, Any] = {"n_atoms": counts}
        n = self._meta["length"]
        for key, name, per_atom, flags in plan:
            if flags is not None and not self._gather(flags, n, idx).all():
                return None  # some rows lack it: the default fills or names them
            if not per_atom:
                batch[key] = self._gather(name, n, idx)
                continue
            if rows is None:
                rows = _atom_rows(starts, stops, counts, atoms, idx, batch)
            batch[key] = self._gather(name, int(offsets[-1]), rows)
        if atoms is not None and rows is None:
            from ..batch import atom_gather

            batch["n_atoms"] = atom_gather(counts, atoms, idx)[1]
        return batch

    def _batch_plan(
        self, idx: np.ndarray, keys: Sequence[str] | None
    ) -> list[tuple[str, str, bool, str | None]] | None:
        """``(key, values array, per atom?, presence flags to check or None)`` for each key of
        a batch, or None when this path cannot serve it. Plans for given keys are kept for the
        record they were made from (a batch loop asks the same keys every time)."""
        columns = self._meta["columns"]
        if keys is None:
            wanted = [k for k in sorted(columns) if columns[k]["count"] and self._carried(columns[k], idx)]
            if any(columns[k]["kind"] == "object" for k in wanted):
                return None  # numeric or not is known only from the values: the default decides
            return self._plan_of(wanted)
        held = self._plans
        if held[0] is not self._meta:
            held = self._plans = (self._meta, {})
        key = tuple(keys)
        if key not in held[1]:
            held[1][key] = self._plan_of(list(dict.fromkeys(keys)))
        return held[1][key]

    def _plan_of(self, wanted: list[str]) -> list[tuple[str, str, bool, str | None]] | None:
        columns, n = self._meta["columns"], self._meta["length"]
        plan = []
        for key in wanted:
            spec = columns.get(key)
            if spec is None or not spec["count"] or spec["kind"] == "object" or 0 in spec["shape"]:
                return None
            if is_per_atom(key) != (spec["kind"] == "atom"):
                return None
            flags = None if spec["count"] == n else spec["id"] + "/present"
            plan.append((key, spec["id"] + "/values", spec["kind"] == "atom", flags))
        return plan

    def _carried(self, spec: dict[str, Any], idx: np.ndarray) -> bool:
        """Do all rows ``idx`` carry this column?"""
        n = self._meta["length"]
        return spec["count"] == n or bool(self._gather(spec["id"] + "/present", n, idx).all())

    def _gather(self, name: str, extent: int, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order, repeats) of array ``name``: a new array."""
        local = self._local(name)
        if local is not None:
            return self._cache.take(local, extent, index)
        frames, where = np.unique(index, return_inverse=True)
        return self._take(name, extent, frames)[where]


def _atom_rows(
    starts: np.ndarray,
    stops: np.ndarray,
    counts: np.ndarray,
    atoms: Any,
    idx: np.ndarray,
    batch: dict[str, Any],
) -> np.ndarray:
    """The row of every atom of the batch in the per-atom arrays (the ``atoms`` of each frame if
    given; their counts then replace ``batch["n_atoms"]``). Frames of one atom count: one
    broadcast sum, no per-atom bookkeeping."""
    first = int(counts[0])
    if atoms is None and not (counts != first).any():
        return (starts[:, None] + np.arange(first)).reshape(-1)
    rows = ragged_rows(starts, stops)[0]
    if atoms is not None:
        from ..batch import atom_gather

        gather, batch["n_atoms"] = atom_gather(counts, atoms, idx)
        rows = rows[gather]
    return rows
