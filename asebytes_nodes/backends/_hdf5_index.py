"""Chunks HDF5's index must find: a lost chunk is an error, never fill values (issue 12).

HDF5 reads a chunk its index does not find as the dataset's fill value, silently: a damaged key
of the chunk B-tree hides a chunk that iterating the index (``get_chunk_info``, even
``get_chunk_info_by_coord``) still lists, and no checksum is read. ``read_direct_chunk`` makes
the lookup every read makes and fails on such a chunk. :class:`ChunkGrid` does that lookup once
per chunk and handle (about 4 us a chunk plus a copy of its stored bytes; decoding a chunk
takes HDF5 over 50 us), for the backends to decide which of the chunks not found held data.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..indexing import distinct

__all__ = ["ChunkGrid"]


class ChunkGrid:
    """The chunk grid of one dataset chunked along its first (frame) axis, and which chunk rows
    HDF5's index was seen to find (``seen``, by chunk number along the first axis)."""

    def __init__(self, ds: Any) -> None:
        # h5py asks HDF5 at every look (ndim alone costs 5 us): each is read once, a cold
        # first frame of an H5MD store opens about ten grids
        self.shape, self.chunks = shape, chunks = tuple(ds.shape), tuple(ds.chunks)
        self.ds, self.step = ds, int(chunks[0])
        self.width = chunks[1] if len(shape) > 1 else 0
        grid = (range(0, n, c) for n, c in zip(shape[1:], chunks[1:], strict=True))
        self.across = list(itertools.product(*grid))  # chunk offsets along the other axes
        self.seen = np.zeros(-(-shape[0] // self.step), bool)

    def unseen(self, rows: np.ndarray) -> np.ndarray:
        """Sorted numbers of the chunks holding ``rows`` (any order) not looked up yet."""
        chunks = np.asarray(rows, np.int64) // self.step
        return distinct(chunks[~self.seen[chunks]])

    def unfound(self, chunks: np.ndarray) -> list[tuple[int, ...]]:
        """Offsets of the chunks numbered ``chunks`` along the first axis (each with every chunk
        across the other axes) that HDF5's index does not find."""
        step, read, missing = self.step, self.ds.id.read_direct_chunk, []
        for k in np.asarray(chunks).tolist():
            for rest in self.across:
                try:
                    read((k * step, *rest))
                except (RuntimeError, OSError, ValueError):  # "chunk storage is not allocated"
                    missing.append((k * step, *rest))
        return missing
