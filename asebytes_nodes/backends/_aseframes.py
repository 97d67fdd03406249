"""Access paths of :mod:`._asefile`: what every path offers (:class:`Frames`), and extxyz
frames found by byte offset (:class:`ExtxyzFrames`), each parsed by ASE's own reader from its
bytes, or, for columns of per-frame values and atomic numbers, from its comment line and
species tokens alone (:mod:`._xyzcomment`)."""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase.io.extxyz import read_xyz

from ..errors import StoreCorruptedError
from ..progress import progress
from ..rows import atoms_to_dict
from ._xyzcomment import Parsed, comment_rows, comment_signature, fast_keys, parse_comment, species_numbers
from ._xyzindex import build_index, cache_dir, holds_stamped_bytes

__all__ = ["ExtxyzFrames", "Frames", "Indices", "row_of", "select"]

Indices = Sequence[int] | np.ndarray
_READ_BLOCK = 1 << 24  # most bytes read in one system call for consecutive extxyz frames
_RECENT = 4096  # parsed comment lines kept (info reads several columns of the same frames)
_HEAD_BYTES = 8192  # larger frames are read up to their comment line for per-frame values


class Frames(ABC):
    """One access path: frame count, rows, and signatures that decide a row's keys."""

    #: How frames are found, for ``format_info()``.
    access: ClassVar[str]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def rows(self, indices: Indices, keys: Sequence[str] | None) -> list[dict[str, Any]]:
        """New rows (owned by the caller) for ``indices``, restricted to ``keys`` if given."""

    @abstractmethod
    def signatures(self, indices: Indices) -> list[Hashable]:
        """For each frame, a hashable value; frames with equal signatures carry the same keys."""

    def close(self) -> None:  # noqa: B027 - only file-backed paths hold something to release
        """Release the file."""


def select(row: dict[str, Any], keys: Sequence[str] | None) -> dict[str, Any]:
    return row if keys is None else {k: row[k] for k in keys if k in row}


def row_of(atoms: Any, keys: Sequence[str] | None) -> dict[str, Any]:
    """The flat row of ``atoms`` (restricted to ``keys``), with string arrays made storable.

    ASE's readers return per-atom string columns as object arrays of ``str``; the flat
    data model keeps strings as fixed-width unicode arrays, which any backend can store.
    """
    row = select(atoms_to_dict(atoms), keys)
    for key, value in row.items():
        if (
            isinstance(value, np.ndarray)
            and value.dtype == object
            and all(type(x) is str for x in value.ravel().tolist())
        ):
            row[key] = value.astype(str)
    return row


class ExtxyzFrames(Frames):
    """Frames located by byte offset, each parsed by ASE's extxyz reader from its own bytes.

    The handle is a snapshot of the file as indexed: appended bytes are ignored, and any other
    change of the indexed bytes (a rewrite in place) makes every read raise instead of mixing
    old and new values.
    """

    access = "byte offset of every frame, from one scan"

    def __init__(self, path: Path, index_cache: bool | str | os.PathLike[str]) -> None:
        self._path = path
        # (comment line, parsed) of the frames read last; a line is reused only for the same text
        self._recent: dict[int, tuple[str | None, Parsed]] = {}
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._table, self._stamp = build_index(self._fd, os.fspath(path), cache_dir(index_cache))
        except BaseException:
            self.close()
            raise
        self._seen = (self._stamp["size"], self._stamp["mtime_ns"])  # last (size, mtime) that matched

    def __len__(self) -> int:
        return len(self._table) - 1

    def _check(self) -> None:
        """Raise if the bytes this handle indexed changed (appending is fine): one ``fstat`` per
        read; the stamp's hashes are compared only when the size or mtime moved."""
        st = os.fstat(self._fd)
        now = (st.st_size, st.st_mtime_ns)
        if now == self._seen:
            return
        if not holds_stamped_bytes(self._fd, self._stamp, st.st_size):
            raise StoreCorruptedError(
                f"{self._path}: the file was rewritten or cut since it was opened (only appended "
                "frames keep a handle valid); reopen it"
            )
        self._seen = now

    def _groups(
        self, idx: np.ndarray, heads: bool = False
    ) -> Iterator[tuple[bytes, list[tuple[int, int, int, int]]]]:
        """(bytes, [(position in idx, frame, start, stop in those bytes)]) in the order asked;
        frames adjacent in the file share one read. With ``heads``, a frame of more than
        :data:`_HEAD_BYTES` comes alone as its count and comment lines (what its per-frame values
        need; the atom lines are most of a large frame's bytes). The file is checked before the
        first read and after the last, so bytes read while it was rewritten are never returned."""
        self._check()
        lo = self._table[idx, 0].tolist()
        hi = self._table[idx + 1, 0].tolist()
        j = 0
        while j < len(lo):
            if heads and hi[j] - lo[j] > _HEAD_BYTES:
                blob = self._head(lo[j], hi[j])
                yield blob, [(j, int(idx[j]), 0, len(blob))]
                j += 1
                continue
            k = j + 1
            while k < len(lo) and lo[k] == hi[k - 1] and hi[k] - lo[j] <= _READ_BLOCK:
                if heads and hi[k] - lo[k] > _HEAD_BYTES:
                    break
                k += 1
            yield self._bytes(lo[j], hi[k - 1]), [
                (m, int(idx[m]), lo[m] - lo[j], hi[m] - lo[j]) for m in range(j, k)
            ]
            j = k
        self._check()

    def _bytes(self, lo: int, hi: int) -> bytes:
        blob = os.pread(self._fd, hi - lo, lo)
        if len(blob) != hi - lo:
            raise StoreCorruptedError(f"{self._path}: the file is shorter than when it was opened; reopen it")
        return blob

    def _head(self, lo: int, hi: int) -> bytes:
        """The frame at bytes ``lo:hi`` up to the end of its comment line (or whole)."""
        size = _HEAD_BYTES // 4
        while True:
            blob = self._bytes(lo, min(hi, lo + size))
            first = blob.find(b"\n")
            if (first >= 0 and blob.find(b"\n", first + 1) >= 0) or lo + size >= hi:
                return blob
            size *= 4

    def _corrupt(self, i: int, what: str, exc: Exception) -> StoreCorruptedError:
        """The error for frame ``i``; a file rewritten during the read raises that instead."""
        self._check()
        return StoreCorruptedError(
            f"{self._path}: frame {i} (byte {int(self._table[i, 0])}) cannot be read as {what}: "
            f"{type(exc).__name__}: {exc}"
        )

    def _parse(self, i: int, frame: bytes) -> Any:
        try:
            return next(read_xyz(io.StringIO(frame.decode()), 0))
        except Exception as exc:  # ASE raises many types on malformed text
            raise self._corrupt(i, "extxyz", exc) from exc

    def _comment(self, i: int, blob: bytes, start: int, stop: int) -> str | None:
        """Frame ``i``'s stripped comment line; None when ASE keeps it whole (VEC lines follow)."""
        if self._table[i, 2]:
            return None
        begin = blob.find(b"\n", start, stop) + 1
        end = blob.find(b"\n", begin, stop)
        try:
            return blob[begin : stop if end < 0 else end].decode().strip()
        except UnicodeDecodeError as exc:
            raise self._corrupt(i, "an extxyz comment line", exc) from exc

    def _parsed(self, i: int, blob: bytes, start: int, stop: int) -> Parsed:
        """Frame ``i``'s parsed comment line, kept for the next column read of the same frames;
        reused only while the line reads the same, so it never outlives the bytes it came from."""
        comment = self._comment(i, blob, start, stop)
        kept = self._recent.get(i)
        if kept is not None and kept[0] == comment:
            return kept[1]
        try:
            parsed = parse_comment(comment)
        except Exception as exc:  # ASE raises many types on malformed text
            raise self._corrupt(i, "an extxyz comment line", exc) from exc
        if len(self._recent) >= _RECENT:
            self._recent = {}
        self._recent[i] = (comment, parsed)
        return parsed

    def rows(self, indices: Indices, keys: Sequence[str] | None) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        found: list[dict[str, Any]] = [{}] * len(idx)
        fast = fast_keys(keys)
        heads = fast and keys is not None and "arrays.numbers" not in keys  # comment lines suffice
        with progress(len(idx), f"reading {self._path.name}") as bar:
            for blob, group in self._groups(idx, heads):
                whole = self._fast_rows(blob, group, keys, found) if fast else group
                for m, i, start, stop in whole:  # (with heads: the whole frame read again)
                    frame = self._bytes(*self._table[[i, i + 1], 0].tolist()) if heads else blob[start:stop]
                    found[m] = row_of(self._parse(i, frame), keys)
                bar.update(len(group))
        return found

    def _fast_rows(
        self,
        blob: bytes,
        group: list[tuple[int, int, int, int]],
        keys: Any,
        found: list[dict[str, Any]],
    ) -> list[tuple[int, int, int, int]]:
        """Fill ``found`` from comment lines (and species tokens); the frames left for the full reader."""
        parsed = [self._parsed(i, blob, start, stop) for _, i, start, stop in group]
        try:
            rows, whole, species = comment_rows(parsed, keys)
        except Exception:  # ASE raises many types on malformed values: find the frame
            for (_, i, _, _), one in zip(group, parsed, strict=True):
                try:
                    comment_rows([one], keys)
                except Exception as exc:
                    raise self._corrupt(i, "an extxyz comment line", exc) from exc
            raise
        if "arrays.numbers" in keys:
            starts = np.array([group[j][2] for j in species], dtype=np.int64)
            numbers = species_numbers(blob, starts, self._table[[group[j][1] for j in species], 1])
            if numbers is None:
                numbers, species = [], []
            for j, value in zip(species, numbers, strict=True):
                rows[j]["arrays.numbers"] = value
            whole = sorted(set(range(len(group))) - set(species) | set(whole))
        for (m, _, _, _), row in zip(group, rows, strict=True):
            found[m] = row
        return [group[j] for j in whole]

    def signatures(self, indices: Indices) -> list[Hashable]:
        # A frame's keys follow from its comment line's keys, its Properties and whether it
        # has atoms (ASE's reader turns a 3-column move_mask into one constraint per atom).
        found: list[Hashable] = []
        for blob, group in self._groups(np.asarray(indices, dtype=np.int64), heads=True):
            for _, i, start, stop in group:
                comment = self._comment(i, blob, start, stop)
                if comment is None:  # the comment line is kept as info["comment"], not parsed
                    found.append(("VEC",))
                    continue
                try:
                    found.append(comment_signature(comment, int(self._table[i, 1]) > 0))
                except Exception as exc:  # ASE raises many types on malformed text
                    raise self._corrupt(i, "an extxyz comment line", exc) from exc
        return found

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1  # a later read fails instead of reading a reused descriptor
