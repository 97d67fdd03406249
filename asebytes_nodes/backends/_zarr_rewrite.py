"""Copy-on-write replacement of rows in a Zarr store: ``set_rows``, ``update_rows`` and
``drop_keys`` of :class:`~._zarr.ZarrBackend`.

A replacement never writes into an array the committed record names. Every column it
touches gets a new id (:meth:`CopyOnWrite._new_id`), whose arrays are the old ones with
the replaced rows swapped in; when atom counts change, a new atom-count array too. All
rows of one call are handled in one pass per array: rows between the first and last
replaced one are read once, patched, and written once, so ``db[20:60] = frames`` costs
about what one ``db[i] = atoms`` costs. The caller commits the record that points at the
new ids; until then the old arrays are what everyone reads. The arrays themselves are
built by :func:`._zarr_shards.copy_rows` (local Blosc stores: untouched shard files are
hard links) or, failing that, read whole and written anew through zarr.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ._base import MISSING
from ._zarr_shards import copy_rows, handles

__all__ = ["CopyOnWrite"]


class CopyOnWrite:
    """Mixin of :class:`~._zarr.ZarrBackend`: rows replaced through new arrays."""

    # provided by ZarrBackend
    _meta: dict[str, Any]
    _target: str
    _direct: Any
    _atom_offsets: Callable[[], np.ndarray]
    _byte_offsets: Callable[[dict[str, Any]], np.ndarray]
    _slab: Callable[..., np.ndarray]
    _write_range: Callable[..., None]
    _new_id: Callable[[str], str]
    _counts_name: Callable[[], str]
    _commit: Callable[..., None]
    _encode_rows: Callable[..., tuple[dict[str, Any], Any, np.ndarray | None]]

    def _rewrite(
        self,
        indices: np.ndarray,
        values: Sequence[dict[str, Any]],
        removed: Sequence[Collection[str]],
        counts: np.ndarray | None = None,
    ) -> None:
        """Rows ``indices`` (sorted, unique) get ``values[j]`` set and the keys ``removed[j]``
        taken out, and ``counts`` atoms (None: as they have); then one commit.

        Every value is checked and encoded before the first byte is written.
        """
        meta = self._meta
        n = meta["length"]
        offsets = self._atom_offsets()
        old_counts = offsets[indices + 1] - offsets[indices]
        new_counts = old_counts if counts is None else np.asarray(counts, np.int64)
        resized = not np.array_equal(old_counts, new_counts)
        columns = {k: dict(v) for k, v in meta["columns"].items()}
        keys = set(chain.from_iterable(values)) | {k for r in removed for k in r if k in columns}
        if resized:
            keys |= {k for k, spec in columns.items() if spec["kind"] == "atom"}
        label = [f"row {i}" for i in indices.tolist()].__getitem__
        plans = {}
        for key in sorted(keys):
            given = [v.get(key, MISSING) for v in values]
            setting = np.fromiter((v is not MISSING for v in given), bool, len(given))
            dropping = np.fromiter((key in r for r in removed), bool, len(given)) & ~setting
            old = columns.get(key)
            if old is None and not setting.any():
                continue
            spec, data, whole = self._encode_rows(key, old, given, new_counts, indices, dropping, label)
            plans[key] = (old, spec, setting, dropping, data, whole)

        changes: dict[str, Any] = {}
        retired = []
        all_counts = np.diff(offsets)
        if resized:
            all_counts[indices] = new_counts
            name = self._new_id("n")
            self._patch_rows(self._counts_name(), name, n, indices, new_counts, (), np.int64)
            retired.append(self._counts_name())
            changes.update(n_atoms=name, atoms=int(all_counts.sum()))
        new_offsets = np.concatenate([[0], np.cumsum(all_counts, dtype=np.int64)])
        for key, (old, spec, setting, dropping, data, whole) in plans.items():
            spec = dict(spec)
            if old is not None:
                retired.append(old["id"])
            if old is not None and spec["id"] == old["id"]:
                spec["id"] = self._new_id("c")
            if whole is not None:  # widened to an object column: every frame written anew
                self._write_flags(spec, whole)
                blob, sizes = data
                self._write_range(spec["id"] + "/sizes", 0, n, sizes, (), np.int64)
                bytes_ = np.frombuffer(blob, np.uint8)
                self._write_range(spec["id"] + "/values", 0, len(bytes_), bytes_, (), np.uint8, 256)
                spec["nbytes"] = len(bytes_)
            else:
                flags = self._flags(old, n)
                flags[indices[setting]] = True
                flags[indices[dropping]] = False
                self._write_flags(spec, flags)
                changed = setting | dropping
                self._write_values(old, spec, indices, changed, data, offsets, new_offsets, resized)
            columns[key] = spec
        self._commit(retired=retired, columns=columns, **changes)

    # -- columns -----------------------------------------------------------------------------
    def _flags(self, old: dict[str, Any] | None, n: int) -> np.ndarray:
        """The committed present flags of a column (all False for a new one), a private copy."""
        if old is None:
            return np.zeros(n, bool)
        if not old.get("present", True):
            return np.ones(n, bool)
        return self._slab(old["id"] + "/present", n, 0, n)

    def _write_flags(self, spec: dict[str, Any], flags: np.ndarray) -> None:
        """Set the column's count; write its flags only when some frame lacks it."""
        spec["count"] = int(flags.sum())
        spec["present"] = spec["count"] != len(flags)
        if spec["present"]:
            self._write_range(spec["id"] + "/present", 0, len(flags), flags, (), bool)

    def _write_values(
        self,
        old: dict[str, Any] | None,
        spec: dict[str, Any],
        indices: np.ndarray,
        changed: np.ndarray,
        data: Any,
        offsets: np.ndarray,
        new_offsets: np.ndarray,
        resized: bool,
    ) -> None:
        """The column's value arrays under its new id: rows ``indices[changed]`` replaced."""
        kind, n = spec["kind"], self._meta["length"]
        source = None if old is None else old["id"]
        new = spec["id"]
        if kind == "object":
            blob, sizes = data
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            everything = np.frombuffer(blob, np.uint8)
            spans = zip(bounds[:-1], bounds[1:], changed.tolist(), strict=True)
            pieces = [everything[a:b] for a, b, c in spans if c]
            rows = indices[changed]
            sizes_name = source and source + "/sizes"
            self._patch_rows(sizes_name, new + "/sizes", n, rows, sizes[changed], (), np.int64)
            old_bounds = self._byte_offsets(old) if old is not None else np.zeros(n + 1, np.int64)
            spec["nbytes"] = self._patch_ragged(
                source and source + "/values", new + "/values", old_bounds, rows, pieces, (), np.uint8, 256
            )
            return
        tail, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if kind == "atom":
            bounds = np.concatenate([[0], np.cumsum(self._counts_of(indices, new_offsets))])
            rows = indices[changed] if not resized else indices
            keep = changed if not resized else np.ones(len(indices), bool)
            pieces = [data[a:b] for a, b, k in zip(bounds[:-1], bounds[1:], keep.tolist(), strict=True) if k]
            scale = self._meta["atoms"] / max(n, 1)
            if old is None:  # a new column: zeros, the given pieces in place
                full = np.zeros((int(new_offsets[-1]), *tail), dtype)
                for i, piece in zip(rows.tolist(), pieces, strict=True):
                    full[new_offsets[i] : new_offsets[i + 1]] = piece
                self._write_range(new + "/values", 0, len(full), full, tail, dtype, scale)
            else:
                assert source is not None  # old["id"]
                values = source + "/values"
                self._patch_ragged(values, new + "/values", offsets, rows, pieces, tail, dtype, scale)
            return
        data = np.asarray(data, dtype).reshape(len(indices), *tail)
        values = source and source + "/values"
        self._patch_rows(values, new + "/values", n, indices[changed], data[changed], tail, dtype)

    @staticmethod
    def _counts_of(indices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return offsets[indices + 1] - offsets[indices]

    # -- arrays ------------------------------------------------------------------------------
    def _patch_rows(
        self,
        old: str | None,
        new: str,
        n: int,
        rows: np.ndarray,
        data: Any,
        tail: tuple[int, ...],
        dtype: Any,
    ) -> None:
        """Array ``new``: the ``n`` rows of ``old`` (zeros if None) with ``rows`` set to ``data``."""
        dtype = np.dtype(dtype)
        data = np.asarray(data, dtype).reshape(len(rows), *tail)
        if old is None:
            full = np.zeros((n, *tail), dtype)
            full[rows] = data
            self._write_range(new, 0, n, full, tail, dtype)
            return
        if not len(rows):
            self._derive(old, new, n, n, 0, data, tail, dtype, 1.0)
            return
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        slab = self._slab(old, n, lo, hi, False)  # only these rows: a replacement reads no more
        slab[rows - lo] = data
        self._derive(old, new, n, n, lo, slab, tail, dtype, 1.0)

    def _patch_ragged(
        self,
        old: str | None,
        new: str,
        bounds: np.ndarray,
        rows: np.ndarray,
        pieces: list[np.ndarray],
        tail: tuple[int, ...],
        dtype: Any,
        scale: float,
    ) -> int:
        """Array ``new``: the ragged array ``old`` (frame ``i`` at ``bounds[i]:bounds[i + 1]``)
        with the frames ``rows`` replaced by ``pieces``; returns its length."""
        dtype = np.dtype(dtype)
        total = int(bounds[-1])
        if old is None:
            empty = np.zeros((0, *tail), dtype)
            full = np.concatenate([empty, *(np.reshape(p, (-1, *tail)) for p in pieces)])
            self._write_range(new, 0, len(full), full, tail, dtype, scale)
            return len(full)
        if not len(rows):
            self._derive(old, new, total, total, 0, np.zeros((0, *tail), dtype), tail, dtype, scale)
            return total
        lo, hi = int(bounds[rows[0]]), int(bounds[rows[-1] + 1])
        slab = self._slab(old, total, lo, hi, False)
        parts, cursor = [], lo
        for i, piece in zip(rows.tolist(), pieces, strict=True):
            parts += [slab[cursor - lo : bounds[i] - lo], np.asarray(piece, dtype).reshape(-1, *tail)]
            cursor = int(bounds[i + 1])
        middle = np.concatenate(parts)
        if len(middle) == hi - lo:  # same size: the rows after keep their place
            self._derive(old, new, total, total, lo, middle, tail, dtype, scale)
            return total
        data = np.concatenate([middle, self._slab(old, total, hi, total, False)])
        self._derive(old, new, total, lo + len(data), lo, data, tail, dtype, scale)
        return lo + len(data)

    def _derive(
        self,
        old: str,
        new: str,
        extent: int,
        rows: int,
        start: int,
        data: np.ndarray,
        tail: tuple[int, ...],
        dtype: np.dtype[Any],
        scale: float,
    ) -> None:
        """Array ``new`` of ``rows`` rows: ``old``'s (``extent`` committed rows), with rows
        ``start:start + len(data)`` replaced by ``data``."""
        data = np.ascontiguousarray(data, dtype).reshape(-1, *tail)
        root = Path(self._target)
        direct = self._direct is not None and handles(dtype)
        if direct and copy_rows(root, old, new, rows, start, data, self._direct):
            return
        stop = start + len(data)
        full = np.zeros((rows, *tail), dtype)
        full[:start] = self._slab(old, extent, 0, start)
        if stop < rows:
            full[stop:] = self._slab(old, extent, stop, rows)
        full[start:stop] = data
        self._write_range(new, 0, rows, full, tail, dtype, scale)
