"""``SelectedRows``: chosen rows of another store, read in place (a wrapper backend, like
:class:`~asebytes_nodes.cache.CachedBackend`).

>>> from asebytes_nodes import ASEIO
>>> from asebytes_nodes.testing.frames import make_frames
>>> db = ASEIO("memory://")
>>> db.extend(make_frames("no_calculator"))
>>> picked = ASEIO(SelectedRows(db, [1, 0]))
>>> len(picked), picked[0].info == db[1].info
(2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .backends._base import ColumnInfo, ReadableBackend

if TYPE_CHECKING:
    from .io import ASEIO

__all__ = ["SelectedRows"]


class SelectedRows(ReadableBackend):
    """Read-only rows ``rows`` of another store, in that order: a subset without a copy.

    ``keys()`` and ``schema()`` describe the whole source store, which may carry keys that
    none of the selected rows has.
    """

    name: ClassVar[str] = "selection"

    def __init__(self, source: ASEIO, rows: Sequence[int] | np.ndarray) -> None:
        self.source = source  # holds the source's handle (and any temporary copy) open
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self, index: int = 0) -> list[str]:
        return self.source.backend.columns(int(self.rows[index]))

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return self.source.backend.read_rows(self.rows[np.asarray(indices, dtype=np.int64)], keys)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        return self.source.backend.read_column(key, self.rows[np.asarray(indices, dtype=np.int64)])

    def keys(self) -> list[str]:
        return self.source.backend.keys()

    def schema(self) -> dict[str, ColumnInfo]:
        return self.source.backend.schema()

    @property
    def location(self) -> str | None:
        return self.source.backend.location

    def close(self) -> None:
        self.source.close()
