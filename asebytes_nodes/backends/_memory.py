"""In-memory backend for tests and scratch work.

Layout: a Python list of row dicts, owned by the instance (no module-level
state, so two instances never see each other's rows). Rows are deep-copied on
the way in and on the way out, so callers never share memory with the store.
Pickling copies the rows (a spawned worker gets its own copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..registry import builtin
from ._base import WritableBackend, stale_row_error
from ._columns import copy_row

__all__ = ["MemoryBackend"]


class MemoryBackend(WritableBackend):
    """Rows kept in a list in this process.

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO(MemoryBackend())
    >>> len(db)
    0
    """

    name: ClassVar[str] = "memory"
    extensions: ClassVar[tuple[str, ...]] = builtin("memory").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("memory").schemes
    supports_insert: ClassVar[bool] = True
    supports_delete: ClassVar[bool] = True
    supports_drop_keys: ClassVar[bool] = True
    checks_rows: ClassVar[bool] = True

    def __init__(self, target: str | None = None, *, readonly: bool = False) -> None:
        self._rows: list[dict[str, Any]] = []
        self.readonly = readonly

    def __len__(self) -> int:
        return len(self._rows)

    def columns(self, index: int = 0) -> list[str]:
        return list(self._rows[index])

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        picked = self._picked(indices)
        if keys is None:
            return [copy_row(row) for row in picked]
        return [copy_row({k: row[k] for k in keys if k in row}) for row in picked]

    def _picked(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """The stored rows ``indices``; a row past the end (a view made before rows were deleted)
        is a :class:`RowIndexError` naming it."""
        rows = np.asarray(indices, dtype=np.int64).tolist()
        try:
            return [self._rows[i] for i in rows]
        except IndexError:
            raise stale_row_error(max(rows), len(self._rows)) from None

    def read_batch(
        self, indices: np.ndarray, keys: Sequence[str] | None = None, *,
        fill: Mapping[str, Any] | None = None, atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any]:
        """Assembled straight from the stored rows (no per-row copy: the assembly copies)."""
        from ..batch import assemble

        rows = self._picked(indices)
        idx = np.asarray(indices)
        return assemble(rows, idx, keys, fill=fill or {}, atoms=atoms, shared=True, backend=self)

    def keys(self) -> list[str]:
        found: set[str] = set()
        for row in self._rows:
            found.update(row)
        return sorted(found)

    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        self._rows.extend([copy_row(r) for r in rows])

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        new = [copy_row(r) for r in rows]
        for i, row in zip(indices, new, strict=True):
            self._rows[int(i)] = row

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        new = [copy_row(u) for u in updates]
        for i, update in zip(indices, new, strict=True):
            self._rows[int(i)].update(update)

    def insert_rows(self, index: int, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        self._rows[index:index] = [copy_row(r) for r in rows]

    def delete_rows(self, indices: Sequence[int] | np.ndarray) -> None:
        self._check_writable()
        drop = {int(i) for i in indices}
        self._rows[:] = [row for i, row in enumerate(self._rows) if i not in drop]

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        for i in indices:
            for key in keys:
                self._rows[int(i)].pop(key, None)
