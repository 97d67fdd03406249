"""Writing one shard: a new store under a temporary name, moved into place when complete.

Rows go to the shard backend in chunks of :data:`CHUNK_ROWS`, whatever the caller's
batches, so the same rows always give the same bytes (an LMDB shard written by one
worker or by eight is byte-identical, and DVC stores it once). Writing is two steps:
:func:`write_store` fills the store (the rows' work), :func:`seal` hashes, syncs and
renames it (file work only).
"""

from __future__ import annotations

import inspect
import itertools
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends._base import ReadableBackend
from ..backends._keys import atom_count
from ..codec import encode_row
from ..indexing import distinct
from ..registry import resolve_backend
from ._manifest import TEMP_PREFIX, ShardEntry, digest, natoms_name, save_natoms, shard_name, sync_folder

__all__ = [
    "CHUNK_ROWS",
    "DEFAULT_SHARD_BYTES",
    "backend_class",
    "frames_per_shard",
    "WrittenStore",
    "remove_path",
    "seal",
    "shard_size",
    "write_shard",
    "write_store",
]

#: Rows per ``extend`` of a shard store; fixed, so shards do not depend on how rows arrive.
CHUNK_ROWS = 1000
#: Target shard size when no ``shard_frames`` is given: DVC handles 10-1,000 files of 64 MiB-1 GiB well.
DEFAULT_SHARD_BYTES = 128 << 20
_UNITS = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
_ROW_OVERHEAD = 64  # bytes a store adds per row on top of the encoded row, roughly
_SAMPLE = 256


def backend_class(name: str) -> tuple[type[ReadableBackend], str]:
    """The backend class registered as ``name`` and the extension its shard files get."""
    entry = resolve_backend("", name)
    return entry.load(), (entry.extensions[0] if entry.extensions else "")


def shard_size(size: int | str) -> tuple[int | None, int | None]:
    """``(shard_frames, shard_bytes)`` of a size: frames (``100000``) or bytes with a unit (``"128MiB"``)."""
    text = str(size).strip()
    number = text.rstrip("KkMmGgIiBb")
    unit = text[len(number) :].lower()
    if not number.isdigit() or int(number) < 1 or (unit and unit not in _UNITS):
        raise ValueError(
            f"shard size {size!r}: give frames per shard (100000) or bytes with a unit "
            f"({', '.join(_UNITS)}: 128MiB)"
        )
    return (None, int(number) * _UNITS[unit]) if unit else (int(number), None)


def frames_per_shard(sample: list[dict[str, Any]], shard_bytes: int) -> int:
    """Rows per shard so that a shard of rows like ``sample`` holds about ``shard_bytes``."""
    if not sample:
        return 1
    per_row = sum(len(encode_row(row)) for row in sample) / len(sample) + _ROW_OVERHEAD
    return max(1, int(shard_bytes // per_row))


def sample_rows(backend: ReadableBackend, start: int, stop: int) -> list[dict[str, Any]]:
    """Up to 256 rows spread evenly over ``start:stop`` (to size shards)."""
    if stop <= start:
        return []
    picks = distinct(np.linspace(start, stop - 1, num=min(_SAMPLE, stop - start)).astype(np.int64))
    return backend.read_rows(picks)


def read_range(backend: ReadableBackend, start: int, stop: int) -> Iterator[dict[str, Any]]:
    """Rows ``start:stop`` of ``backend``, read in batches."""
    step = max(CHUNK_ROWS, backend.read_batch_size)
    for lo in range(start, stop, step):
        yield from backend.read_rows(np.arange(lo, min(lo + step, stop)))


@dataclass(frozen=True)
class WrittenStore:
    """A shard store complete under its temporary name (closed, lock files removed), not yet in place."""

    folder: Path
    tmp: Path
    extension: str
    natoms: np.ndarray  # uint32, one per row
    keys: dict[str, int]  # how many rows carry each key


def write_store(
    folder: Path, rows: Iterable[dict[str, Any]], backend: str, options: dict[str, Any]
) -> WrittenStore:
    """Write ``rows`` into a new ``backend`` store under a ``.tmp-`` name in ``folder``.

    :func:`seal` puts it in place; a failure here or there leaves only temporary files,
    which the next writer deletes.
    """
    cls, extension = backend_class(backend)
    tmp = folder / f"{TEMP_PREFIX}{secrets.token_hex(6)}{extension}"
    counts: Counter[str] = Counter()
    natoms: list[int] = []
    with _removed_on_error(tmp):
        scratch = {**_scratch_options(cls), **options}
        store = cls(os.fspath(tmp), readonly=False, **scratch)
        try:
            iterator = iter(rows)
            while chunk := list(itertools.islice(iterator, CHUNK_ROWS)):
                store.extend(chunk)  # type: ignore[attr-defined]
                counts.update(itertools.chain.from_iterable(chunk))  # the rows' keys, in one C loop
                natoms += map(atom_count, chunk)
                del chunk  # freed before the next rows are read (one batch of rows alive at a time)
        finally:
            store.close()
        for side in folder.glob(f"{tmp.name}?*"):  # lock files beside the store (LMDB's -lock ...)
            remove_path(side)
    return WrittenStore(
        folder, tmp, extension, np.asarray(natoms, dtype=np.uint32), dict(sorted(counts.items()))
    )


def seal(written: WrittenStore, index: int) -> ShardEntry:
    """Hash a written store, sync it and rename it into place as shard ``index`` (after its
    atom-count file); its manifest entry."""
    folder, tmp = written.folder, written.tmp
    with _removed_on_error(tmp):
        # hashed first, while its pages are the dirty ones just written: once synced, they are clean
        # and the kernel may drop them (a 200,000-frame conversion as 10 LMDB shards, 2 alternating
        # runs: 170.7 s with the sync first, 167.1 s hashed first; single-store convert 167.4 s)
        size, sha = digest(tmp)
        _sync_tree(tmp)
        final = folder / shard_name(index, len(written.natoms), written.extension)
        natoms_sha = save_natoms(folder / f"{tmp.name}.natoms.npy", written.natoms)
        os.replace(folder / f"{tmp.name}.natoms.npy", folder / natoms_name(final.name))
        remove_path(final)  # an unreferenced leftover of an interrupted write
        os.replace(tmp, final)
        sync_folder(folder)
    return ShardEntry(final.name, len(written.natoms), size, sha, written.keys, natoms_sha)


def write_shard(
    folder: Path, index: int, rows: Iterable[dict[str, Any]], backend: str, options: dict[str, Any]
) -> ShardEntry:
    """Write ``rows`` as shard ``index`` of ``folder`` with its atom-count file; its manifest entry."""
    return seal(write_store(folder, rows, backend, options), index)


@contextmanager
def _removed_on_error(tmp: Path) -> Iterator[None]:
    """On any failure, delete the store ``tmp`` and every file named after it, then re-raise."""
    try:
        yield
    except BaseException:
        for leftover in tmp.parent.glob(f"{tmp.name}*"):
            remove_path(leftover)
        raise


def _scratch_options(cls: type[ReadableBackend]) -> dict[str, Any]:
    """Options of a shard store while it has its temporary name: no fsync per commit (LMDB's
    ``sync``) where the backend offers it, since the whole file is synced once before its rename
    and a crash before that leaves only a temporary file (on 20,000-frame LMDB shards: 20 flushes
    of about 5 MiB each replaced by one)."""
    return {"sync": False} if "sync" in inspect.signature(cls).parameters else {}


def _sync_tree(path: Path) -> None:
    """``fsync`` a store's file, or every file and folder of a folder store (Zarr writes without
    syncing), so that the rename that follows never names data still only in memory."""
    for item in [*sorted(path.rglob("*")), path] if path.is_dir() else [path]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_path(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
