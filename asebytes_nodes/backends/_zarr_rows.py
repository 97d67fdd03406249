"""Rows and columns of a Zarr store as the row model wants them: ``read_rows`` and
``read_column`` of :class:`~._zarr.ZarrBackend` (through its guarded reads).

Each column is read for a request's frames at once (sorted, unique): per-frame and scalar
columns gathered from their arrays, per-atom ones cut from one slab or one gather of the
concatenated array, objects decoded from their bytes. A single row (``db[i]``) takes each
column's slab directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..codec import decode_value
from ._base import MISSING
from ._columns import expand_rows, expand_values, sorted_unique, type_code_dtype

__all__ = ["RowReads"]


class RowReads:
    """Mixin of :class:`~._zarr.ZarrBackend`: rows and columns read from its arrays."""

    # provided by ZarrBackend
    _meta: dict[str, Any]
    _slab: Callable[[str, int, int, int], np.ndarray]
    _take: Callable[[str, int, np.ndarray], np.ndarray]
    _take_ragged: Callable[[str, np.ndarray, np.ndarray], list[np.ndarray]]
    _atom_offsets: Callable[[], np.ndarray]
    _byte_offsets: Callable[[dict[str, Any]], np.ndarray]

    def _read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return []
        if idx.size == 1:
            return [self._read_one(int(idx[0]), keys)]
        frames, where = sorted_unique(idx)
        wanted = (
            self._meta["columns"]
            if keys is None
            else {k: self._meta["columns"][k] for k in keys if k in self._meta["columns"]}
        )
        rows: list[dict[str, Any]] = [{} for _ in frames]
        for key, spec in wanted.items():
            if not spec["count"]:
                continue
            values, present = self._read_values(spec, frames)
            for j in np.flatnonzero(present).tolist():
                rows[j][key] = values[j]
        return expand_rows(rows, where)

    def _read_one(self, i: int, keys: Sequence[str] | None) -> dict[str, Any]:
        """Row ``i`` (``db[i]``): each column's value read as one slab of its array, without
        the index arrays and per-frame lists a request of many rows needs (about half of a
        warm random row's time). Values as :meth:`_read_values` gives them."""
        columns, length = self._meta["columns"], self._meta["length"]
        wanted = columns.items() if keys is None else ((k, columns[k]) for k in keys if k in columns)
        row: dict[str, Any] = {}
        for key, spec in wanted:
            count, base, kind = spec["count"], spec["id"], spec["kind"]
            if not count or (count != length and not self._slab(base + "/present", length, i, i + 1)[0]):
                continue
            if kind in ("frame", "atom") and 0 in spec["shape"]:
                row[key] = self._empty_values(spec, np.array([i]))[0]
            elif kind == "atom":
                atoms = self._atom_offsets()
                row[key] = self._slab(base + "/values", int(atoms[-1]), int(atoms[i]), int(atoms[i + 1]))
            elif kind == "frame":
                value = self._slab(base + "/values", length, i, i + 1)
                row[key] = value[0] if spec["shape"] else value.reshape(())
            elif kind == "scalar":
                value = self._slab(base + "/values", length, i, i + 1)
                row[key] = value.tolist()[0] if spec["type"] in ("f", "i", "b") else value[0]
            else:
                offsets = self._byte_offsets(spec)
                blob = self._slab(base + "/values", int(offsets[-1]), int(offsets[i]), int(offsets[i + 1]))
                row[key] = decode_value(blob.tobytes())
        return row

    def _read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        spec = self._meta["columns"].get(key)
        idx = np.asarray(indices, dtype=np.int64)
        if spec is None or not spec["count"]:
            return [MISSING] * len(idx)
        frames, where = sorted_unique(idx)
        values, present = self._read_values(spec, frames)
        if spec["kind"] == "frame" and present.all() and spec["shape"]:  # 0-d arrays stay a list of them
            stacked = np.asarray(values)  # one stacked array, no per-frame objects
            return stacked if where is None else stacked[where]
        if not present.all():
            values = [v if p else MISSING for v, p in zip(values, present.tolist(), strict=True)]
        return expand_values(values, where)

    def _read_column_array(self, key: str, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """``np.asarray(read_column(key, indices))`` of a scalar column every row carries, taken
        from its array with no Python value per row (an energy column of 100,000 frames was
        100,000 floats, then an array of them); None for any other column."""
        spec = self._meta["columns"].get(key)
        idx = np.asarray(indices, dtype=np.int64)
        length = self._meta["length"]
        if spec is None or spec["kind"] != "scalar" or spec["count"] != length or not idx.size:
            return None
        frames, where = sorted_unique(idx)
        values = self._take(spec["id"] + "/values", length, frames)
        values = values.astype(type_code_dtype(spec["type"]), copy=False)  # the dtype numpy gives the values
        return values if where is None else values[where]

    def _read_values(self, spec: dict[str, Any], frames: np.ndarray) -> tuple[Any, np.ndarray]:
        """Values of one column at sorted unique ``frames``, and which frames carry it."""
        base, length = spec["id"], self._meta["length"]
        n = len(frames)
        present = (
            np.ones(n, bool) if spec["count"] == length else self._take(base + "/present", length, frames)
        )
        kind = spec["kind"]
        if kind == "scalar":
            values = self._take(base + "/values", length, frames)
            return (values.tolist() if spec["type"] in ("f", "i", "b") else list(values)), present
        if kind in ("frame", "atom") and 0 in spec["shape"]:  # written before issue 19: no data to read
            return self._empty_values(spec, frames), present
        if kind == "frame":
            values = self._take(base + "/values", length, frames)
            if not spec["shape"]:  # 0-d arrays stay 0-d arrays, not the numpy scalars iteration gives
                return [v.reshape(()) for v in values[:, None]], present
            return values, present
        if kind == "atom":
            offsets = self._atom_offsets()
            return self._take_ragged(base + "/values", offsets, frames), present
        offsets = self._byte_offsets(spec)
        blobs = self._take_ragged(base + "/values", offsets, frames)
        return [
            decode_value(b.tobytes()) if p else None for b, p in zip(blobs, present, strict=True)
        ], present

    def _empty_values(self, spec: dict[str, Any], frames: np.ndarray) -> list[np.ndarray]:
        """Values of a column whose rows hold no element (a zero-length axis): zarr cannot read
        its empty chunk grid, and nothing needs reading. Stores written now keep such values in
        object columns; this reads the typed columns of older stores."""
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if spec["kind"] == "frame":
            return [np.zeros(shape, dtype) for _ in frames.tolist()]
        offsets = self._atom_offsets()
        return [np.zeros((int(offsets[i + 1] - offsets[i]), *shape), dtype) for i in frames.tolist()]
