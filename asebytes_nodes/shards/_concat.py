"""Several stores read as one list: ``db1 + db2``, ``sum(stores)`` and the shards of a dataset.

A row is found by bisection (``np.searchsorted``) over the cumulative lengths of the
parts; a batch of rows is grouped by part, so each part gets one ``read_rows`` call,
and handed back in the order asked. Column reads concatenate the parts' columns, and a
training batch (``read_batch``) joins the parts' own batches, put back in the order asked
by index arithmetic (no per-frame Python). Parts are opened on first use (a sharded
dataset opens only the shards it reads).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..backends._base import MISSING, ColumnInfo, ReadableBackend
from ..backends._keys import is_per_atom
from ..errors import ReadOnlyError, RowIndexError, UnknownKeyError

if TYPE_CHECKING:
    from ..io import ASEIO

__all__ = ["ConcatBackend", "concat"]

#: Rows asked of one part: (part, their positions in the rows asked, their rows within the part).
_Group = tuple[int, np.ndarray, np.ndarray]


class ConcatBackend(ReadableBackend):
    """Read-only concatenation of readable backends, in order.

    >>> from asebytes_nodes import ASEIO
    >>> from ase.build import molecule
    >>> a, b = ASEIO("memory://"), ASEIO("memory://")
    >>> a.extend([molecule("H2O")]); b.extend([molecule("CH4"), molecule("NH3")])
    >>> both = a + b
    >>> len(both), both[1].get_chemical_formula()
    (3, 'CH4')
    """

    name: ClassVar[str] = "concat"
    #: Most parts kept open at once (None: no limit); the least recently used is closed first.
    max_open: int | None = None

    def __init__(self, parts: Sequence[ReadableBackend]) -> None:
        flat: list[ReadableBackend] = []
        for part in parts:  # (a + b) + c is one level, not a tree
            flat.extend(part._parts() if type(part) is ConcatBackend else [part])
        self._set_parts([len(p) for p in flat], [_given(p) for p in flat])

    def _set_parts(self, lengths: Sequence[int], openers: Sequence[Callable[[], ReadableBackend]]) -> None:
        self._openers = list(openers)
        self._handles: list[ReadableBackend | None] = [None] * len(openers)
        self._recent: dict[int, None] = {}  # open parts, least recently used first
        self._starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=self._starts[1:])

    def _parts(self) -> list[ReadableBackend]:
        return [self._part(p) for p in range(len(self._openers))]

    def _part(self, p: int) -> ReadableBackend:
        handle = self._handles[p]
        if handle is None:
            if self.max_open is not None and len(self._recent) >= self.max_open:
                oldest = next(iter(self._recent))  # file descriptors and maps are finite
                self._recent.pop(oldest)
                self._handles[oldest].close()  # type: ignore[union-attr]
                self._handles[oldest] = None
            handle = self._handles[p] = self._openers[p]()
        self._recent.pop(p, None)
        self._recent[p] = None
        return handle

    @property
    def part_starts(self) -> np.ndarray:
        """First dataset row of each part, then the total (cumulative lengths, for cutting work by part)."""
        return self._starts.copy()

    def _locate(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part, row within the part) of each dataset row."""
        idx = np.asarray(indices, dtype=np.int64)
        part = np.searchsorted(self._starts, idx, side="right") - 1
        return part, idx - self._starts[part]

    def _groups(self, indices: Sequence[int] | np.ndarray) -> tuple[list[_Group], np.ndarray | None]:
        """The rows asked, by part: ``(part, positions in indices, rows within the part)`` for each
        part touched, in part order, and ``order``, those positions one group after the other
        (None where that is the order asked: rows already in part order need no sorting)."""
        part, local = self._locate(indices)
        order = None
        at = np.arange(len(part))
        if len(part) > 1 and (part[1:] < part[:-1]).any():
            order = at = np.argsort(part, kind="stable")
            part, local = part[order], local[order]
        cuts = [0, *(np.flatnonzero(part[1:] != part[:-1]) + 1).tolist(), len(part)] if len(part) else [0]
        groups = [(int(part[lo]), at[lo:hi], local[lo:hi]) for lo, hi in itertools.pairwise(cuts)]
        return groups, order

    def __len__(self) -> int:
        return int(self._starts[-1])

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        out: list[Any] = [None] * len(indices)
        for p, positions, local in self._groups(indices)[0]:
            for j, row in zip(positions.tolist(), self._part(p).read_rows(local, keys), strict=True):
                out[j] = row
        return out

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        pieces = [
            (positions, self._part(p).read_column(key, local))
            for p, positions, local in self._groups(indices)[0]
        ]
        if len(pieces) == 1:
            return pieces[0][1]
        if pieces and all(isinstance(v, np.ndarray) for _, v in pieces):
            try:
                joined = np.concatenate([v for _, v in pieces])
            except ValueError:  # parts disagree on the trailing shape: per-row values then
                joined = None
            if joined is not None and all(v.dtype == joined.dtype for _, v in pieces):  # type: ignore[union-attr]
                out = np.empty_like(joined)
                out[np.concatenate([pos for pos, _ in pieces])] = joined
                return out
        values: list[Any] = [MISSING] * len(indices)
        for positions, part_values in pieces:
            for j, value in zip(positions.tolist(), list(part_values), strict=True):
                values[j] = value
        return values

    def read_batch(
        self,
        indices: np.ndarray,
        keys: Sequence[str] | None = None,
        *,
        fill: Mapping[str, Any] | None = None,
        atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any]:
        """Inherited; each part's own ``read_batch`` of its rows, joined and put in the order asked."""
        from ..batch import merge_batches, read_batch_default, shaped_fill

        groups, order = self._groups(indices)
        if fill:  # every part fills a key none of its rows carries in the dataset's form
            fill = shaped_fill(self, dict(fill))
        try:
            joint = self._joint_batch(groups, np.asarray(indices), keys, atoms)
            if joint is not None:
                return joint
            parts = [self._part(p).read_batch(local, keys, fill=fill, atoms=atoms) for p, _, local in groups]
        except (UnknownKeyError, RowIndexError):  # name the dataset's rows, not a part's
            return read_batch_default(self, np.asarray(indices), keys, fill=fill, atoms=atoms)
        batch = parts[0] if len(parts) == 1 else merge_batches(parts)
        return batch if order is None else _reorder(batch, order)

    def _joint_batch(
        self, groups: list[_Group], indices: np.ndarray, keys: Sequence[str] | None, atoms: Any
    ) -> dict[str, Any] | None:
        """The batch read at once by the parts' class (``read_batch_joint``) where the parts it
        touches are of one class and may be open together; None: part by part."""
        if len(groups) < 2 or (self.max_open is not None and len(groups) > self.max_open):
            return None
        stores = [self._part(p) for p, _, _ in groups]
        kind = type(stores[0])
        if any(type(store) is not kind for store in stores):
            return None
        joint = [(store, local, at) for store, (_, at, local) in zip(stores, groups, strict=True)]
        return kind.read_batch_joint(joint, indices, keys, atoms=atoms)

    def columns(self, index: int = 0) -> list[str]:
        part, local = self._locate([index])
        return self._part(int(part[0])).columns(int(local[0]))

    def _counts(self, p: int) -> dict[str, int]:
        """How many rows of part ``p`` carry each key."""
        return self._part(p).key_counts()

    def key_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for p in range(len(self._openers)):
            for key, count in self._counts(p).items():
                total[key] = total.get(key, 0) + count
        return dict(sorted(total.items()))

    def keys(self) -> list[str]:
        return list(self.key_counts())

    def schema(self) -> dict[str, ColumnInfo]:
        """Inherited; each key described by the first part that carries it."""
        result: dict[str, ColumnInfo] = {}
        for p in range(len(self._openers)):
            wanted = [k for k in self._counts(p) if k not in result]
            if wanted:
                described = self._part(p).schema()
                result.update({k: described[k] for k in wanted if k in described})
        return dict(sorted(result.items()))

    def _where(self, p: int) -> str:
        return f"part {p}"

    def check(self) -> list[str]:
        """Inherited; each part checks itself, its problems prefixed with the part and its first row."""
        problems: list[str] = []
        for p in range(len(self._openers)):
            prefix = f"{self._where(p)} (dataset rows from {int(self._starts[p])})"
            problems.extend(f"{prefix}: {problem}" for problem in self._part(p).check())
        return problems

    def format_info(self) -> dict[str, Any]:
        return {"format": "concatenation", "parts": len(self._openers)}

    def close(self) -> None:
        for p, handle in enumerate(self._handles):
            if handle is not None:
                handle.close()
                self._handles[p] = None  # an opener reopens it (or hands back the given instance)
        self._recent.clear()

    def cache_record(self) -> dict[str, Any]:
        """The parts' records, in order (a copy pickled to a worker gives the same)."""
        return {"backend": self.name, "parts": [part.cache_record() for part in self._parts()]}

    def __getstate__(self) -> dict[str, Any]:
        return {"parts": self._parts()}  # each part pickles itself (file stores by path)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["parts"])  # type: ignore[misc]

    def _check_writable(self) -> None:
        raise ReadOnlyError(
            "a concatenation of stores (db1 + db2) is read-only; write to one of its stores, or copy "
            "the frames into a new store: ASEIO('all.lmdb').extend(db1 + db2)"
        )


def _reorder(batch: dict[str, Any], order: np.ndarray) -> dict[str, Any]:
    """A batch whose frame ``i`` belongs at position ``order[i]``, put in that order: per-frame
    values by index, per-atom ones by atom ranges (one take per key)."""
    take = np.empty_like(order)
    take[order] = np.arange(len(order))
    counts = batch["n_atoms"]
    ends = np.cumsum(counts)
    new_counts = counts[take]
    new_ends = np.cumsum(new_counts)
    atom_take = np.repeat(ends[take] - new_ends, new_counts) + np.arange(int(new_ends[-1]), dtype=np.int64)
    out: dict[str, Any] = {}
    for key, values in batch.items():
        if not isinstance(values, np.ndarray):
            out[key] = [values[j] for j in take.tolist()]
        elif key != "n_atoms" and is_per_atom(key):
            out[key] = values[atom_take]
        else:
            out[key] = values[take]
    return out


def _given(backend: ReadableBackend) -> Callable[[], ReadableBackend]:
    def opener() -> ReadableBackend:
        return backend

    return opener


def concat(*stores: Any) -> ASEIO:
    """Stores (``ASEIO`` or backends) read as one lazy, read-only ``ASEIO``: what ``db1 + db2`` gives."""
    from ..io import ASEIO

    return ASEIO(ConcatBackend([s.backend if isinstance(s, ASEIO) else s for s in stores]))
