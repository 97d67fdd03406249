"""Reads of a Zarr store that never return wrong data: the checked half of :class:`~._zarr.ZarrBackend`.

- Every array is checked against the record when first opened (dtype, row shape, fill value,
  chunk-key separator: a damaged ``zarr.json`` could otherwise send reads to chunks that do not
  exist), and in local stores every shard file of a checksummed array must be there (zarr reads
  a missing or emptied shard file as zeros).
- A read that fails (a checksum mismatch, a codec error, an array deleted under it) or during
  which the record changed is repeated from the current record, up to ``_READ_ATTEMPTS`` times,
  the last time holding the writers' lock shared; then it is reported as damage naming the
  column and array. Readers take no lock otherwise.
- :meth:`CheckedReads.check` verifies every chunk of every committed array and reports each
  damaged one by array, shard and chunk, before checking the layout's invariants and every row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from zarr.codecs import Crc32cCodec

from ..errors import StoreCorruptedError
from ._zarr_shards import verify_array

__all__ = ["CheckedReads"]

_READ_ATTEMPTS = 5  # a read that meets a file being replaced is repeated, then reported as damage


class CheckedReads:
    """Mixin of :class:`~._zarr.ZarrBackend`: array checks, guarded reads, ``check()``."""

    # provided by ZarrBackend
    _meta: dict[str, Any]
    _target: str
    _remote: bool
    _lock: Any
    _cache: Any
    _group: Any
    _touched: bool
    _array: Callable[[str], Any]
    _refresh: Callable[[], None]
    _forget: Callable[[], None]
    _slab: Callable[..., np.ndarray]
    _atom_offsets: Callable[[], np.ndarray]
    _byte_offsets: Callable[[dict[str, Any]], np.ndarray]
    _counts_name: Callable[[], str]

    def _check_array(self, name: str, arr: Any) -> None:
        """Refuse an array whose document disagrees with the record: a damaged ``zarr.json``
        could otherwise send reads to chunks that do not exist (read as zeros)."""
        base, _, leaf = name.partition("/")
        spec = next((s for s in self._meta["columns"].values() if s["id"] == base), None)
        if leaf == "values" and spec is not None and spec["kind"] != "object":
            dtype, tail = np.dtype(spec["dtype"]), tuple(spec["shape"])
        else:
            dtype, tail = np.dtype({"present": bool, "values": np.uint8}.get(leaf, np.int64)), ()
        metadata = arr.metadata
        separator = getattr(metadata.chunk_key_encoding, "separator", "/")
        if arr.dtype != dtype or tuple(arr.shape[1:]) != tail or separator != "/" or arr.fill_value != 0:
            raise StoreCorruptedError(
                f"{self._target}: array {name!r} is {arr.dtype} {arr.shape} (fill {arr.fill_value!r}, "
                f"chunk keys {separator!r}) but the record says {dtype} (n, {', '.join(map(str, tail))}) "
                "filled with 0 under '/': its zarr.json is damaged. Restore the store from a copy"
            )
        inner = getattr(metadata.codecs[0], "codecs", ())
        if not self._remote and any(isinstance(c, Crc32cCodec) for c in inner):
            # zarr reads a missing or emptied shard file as zeros; version-2 arrays have every
            # shard written (write_empty_chunks), so a missing one is damage
            rows = self._extents().get(name, (0, dtype))[0]
            shard = arr.shards[0] if arr.shards else arr.chunks[0]
            index_bytes = 16 * (shard // arr.chunks[0]) + 4 if arr.shards else 1
            folder = Path(self._target) / name / "c"
            for s in range(-(-rows // shard)):
                path = folder.joinpath(str(s), *["0"] * len(tail))
                size = path.stat().st_size if path.is_file() else -1
                if size < index_bytes:
                    raise _ReadFailure(name) from StoreCorruptedError(
                        f"{path}: shard file {'missing' if size < 0 else 'cut short'}"
                    )

    def _read(self, name: str, select: Callable[[Any], np.ndarray]) -> np.ndarray:
        """``select(array)``, with any failure to decode reported as a :class:`_ReadFailure`."""
        arr = self._array(name)
        self._touched = True
        try:
            return select(arr)
        except Exception as exc:  # noqa: BLE001 - checksum, codec, missing file: retried, then reported
            raise _ReadFailure(name) from exc

    def _extents(self) -> dict[str, tuple[int, np.dtype[Any]]]:
        """Committed rows and dtype of every array the record uses."""
        n, atoms = self._meta["length"], self._meta["atoms"]
        out: dict[str, tuple[int, np.dtype[Any]]] = (
            {self._counts_name(): (n, np.dtype(np.int64))} if n else {}
        )
        for spec in self._meta["columns"].values():
            base, kind = spec["id"] + "/", spec["kind"]
            if spec.get("present", True):
                out[base + "present"] = (n, np.dtype(bool))
            if kind == "object":
                out[base + "sizes"] = (n, np.dtype(np.int64))
                out[base + "values"] = (spec["nbytes"], np.dtype(np.uint8))
            else:
                out[base + "values"] = (atoms if kind == "atom" else n, np.dtype(spec["dtype"]))
        return out

    def _verify_chunks(self) -> list[str]:
        """One problem per damaged chunk or shard of every committed array."""
        problems = []
        for name, (rows, dtype) in self._extents().items():
            found = None if self._remote else verify_array(Path(self._target), name, rows, dtype)
            if found is None:  # laid out by zarr: decode it whole, with zarr's own checks

                def head(a: Any, rows: int = rows) -> np.ndarray:
                    return a[:rows]

                try:
                    self._read(name, head)
                    found = []
                except (_ReadFailure, StoreCorruptedError) as exc:
                    found = [f"{name}: cannot be decoded ({_cause(exc)})"]
            problems += [f"{self._target}/{problem}" for problem in found]
        return problems

    def check(self) -> list[str]:
        """Every chunk's checksum, the layout's own invariants (array lengths, counts, offsets),
        then every row. Each damaged chunk is reported with its array, shard and chunk."""
        self._refresh()
        problems = self._verify_chunks()
        if problems:  # rows in damaged chunks cannot be read: report the damage itself
            return problems
        n, atoms, where = self._meta["length"], self._meta["atoms"], self._target
        counts = self._counts_name()

        def short(name: str, extent: int) -> bool:
            if name not in self._group:
                problems.append(f"{where}/{name}: array missing")
                return True
            if self._array(name).shape[0] < extent:
                problems.append(f"{where}/{name}: {self._array(name).shape[0]} rows, needs {extent}")
                return True
            return False

        if not short(counts, n) and int(self._slab(counts, n, 0, n).sum()) != atoms:
            problems.append(f"{where}/{counts}: sums to {int(self._atom_offsets()[-1])}, record says {atoms}")
        for key, spec in self._meta["columns"].items():
            base = f"{spec['id']}/"
            if not spec.get("present", True):
                if spec["count"] != n:
                    problems.append(f"column {key!r}: no present flags, but {spec['count']} of {n} frames")
            elif not short(base + "present", n):
                carried = int(self._slab(base + "present", n, 0, n).sum())
                if carried != spec["count"]:
                    problems.append(f"column {key!r}: {carried} frames flagged, record says {spec['count']}")
            if spec["kind"] == "object":
                if not short(base + "sizes", n) and int(self._byte_offsets(spec)[-1]) != spec["nbytes"]:
                    problems.append(f"column {key!r}: value sizes do not add up to {spec['nbytes']} bytes")
                short(base + "values", spec["nbytes"])
            else:
                short(base + "values", atoms if spec["kind"] == "atom" else n)
        return problems or super().check()  # type: ignore[misc]

    def _guarded(self, read: Callable[[], Any]) -> Any:
        """``read()`` against one committed record. Repeated when it met a file being replaced
        (a checksum mismatch) or the record changed under it (its arrays may be collected),
        the last time holding the writers' lock shared; reported as damage if it still fails."""
        for attempt in range(_READ_ATTEMPTS):
            last = attempt + 1 == _READ_ATTEMPTS
            with self._lock.shared() if last and self._lock is not None else nullcontext():
                if attempt:
                    self._forget()
                    self._refresh()
                generation, self._touched = self._meta.get("generation", 0), False
                decoded = self._cache.decoded
                try:
                    out = read()
                except _ReadFailure as failure:
                    if last:
                        raise self._damaged(failure) from failure.__cause__
                    time.sleep(0.0005 * 3**attempt)  # 20 ms in all: a writer's file replacement
                    continue
            if last or not (self._touched or self._cache.decoded != decoded):  # read nothing from files
                return out
            self._refresh()
            if self._meta.get("generation", 0) == generation:
                return out
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _damaged(self, failure: _ReadFailure) -> StoreCorruptedError:
        base = failure.name.partition("/")[0]
        key = next((k for k, spec in self._meta["columns"].items() if spec["id"] == base), None)
        what = f"column {key!r} (array {failure.name})" if key else f"array {failure.name}"
        return StoreCorruptedError(
            f"{self._target}: {what} cannot be read ({_cause(failure)}): its chunks are damaged or cut "
            "short, and a checksummed store never returns such data. check() lists every damaged "
            "chunk; restore the store from a copy"
        )


class _ReadFailure(Exception):
    """Array ``name`` could not be read (its cause says why); :meth:`ZarrBackend._guarded`
    decides whether that was a writer's file replacement or damage."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"
