"""The work the nodes do, as plain functions that need neither git nor DVC.

Stores are written whole under a temporary name beside the target and moved into place at
the end (:mod:`asebytes_nodes.transfer`), so an interrupted stage never leaves a
half-written output under the final name. Data moves in chunks, never as one list.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zntrack

from ..io import ASEIO
from ..registry import list_backends, resolve_backend
from ..selection import SelectedRows
from ..shards import ConcatBackend
from ..transfer import convert

if TYPE_CHECKING:
    from ase import Atoms

    from ..backends._base import ReadableBackend
    from ._config import StoreSpec

__all__ = [
    "as_aseio",
    "fingerprint",
    "git_ignore",
    "iter_chunks",
    "keep_ignored",
    "write_sharded",
    "write_store",
]


def iter_chunks(frames: Any, size: int) -> Iterator[list[Atoms]]:
    """Lists of up to ``size`` Atoms from an ASEIO, a view or any iterable of Atoms."""
    chunked = getattr(frames, "chunked", None)
    if chunked is not None:
        yield from chunked(size)
        return
    iterator = iter(frames)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def frames_of(data: Any) -> Any:
    """The frames an upstream ``data`` dependency gives: a node's ``frames``, or the frames
    themselves when the graph passed a node's attribute (``Convert(data=load.frames)``)."""
    return data.frames if isinstance(data, zntrack.Node) else data


def as_aseio(frames: Any) -> ASEIO:
    """``frames`` itself if it is an ASEIO, else its Atoms copied into an in-memory store
    (for upstream nodes of other packages whose ``frames`` is a list)."""
    if isinstance(frames, ASEIO):
        return frames
    memory = ASEIO("memory://")
    for images in iter_chunks(frames, 1000):
        memory.extend(images)
    return memory


def git_ignore(path: Path, backend: str, *, itself: bool = False) -> None:
    """List the side files of the ``backend`` store at ``path`` (lock files, which opening a
    store may rewrite, and an undo journal), its temporary copies, and with ``itself`` the store
    too, in the ``.gitignore`` of its folder, where DVC lists its outputs: they stay outside
    what DVC and git track.

    The temporary copies are the hidden ``.frames.*`` beside ``frames.ext``: a conversion's
    ``.frames.partial-PID-HOST.ext`` (:mod:`asebytes_nodes.transfer`), a sharded write's
    ``.frames.ext.partial`` and a replaced store set aside; a stage killed by SIGKILL leaves
    them behind until its next run, and ``git add -A`` must not commit half a store."""
    ignore = path.parent / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    sides = list_backends()[backend].load().side_files(path)
    temporary = [] if itself else [f"/.{path.stem}.*"]  # a store ignored itself is not written by copy
    wanted = [f"/{p.name}" for p in ([path] if itself else []) + sides] + temporary
    if missing := [line for line in wanted if line not in lines]:
        ignore.write_text("\n".join([*lines, *missing]) + "\n")


def keep_ignored(path: Path) -> None:
    """Before a read opens the output store at ``path``, list its side files in the folder's
    ``.gitignore`` (:func:`git_ignore`) if they are missing: DVC writes that file alone when it
    restores an output from its run cache, and an LMDB read would then leave its lock file
    untracked. A folder that cannot be written is left as it is (nor will a lock file be made)."""
    entry = resolve_backend(path)
    ignore = path.parent / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    if all(f"/{side.name}" in lines for side in entry.load().side_files(path)):
        return
    with contextlib.suppress(OSError):
        git_ignore(path, entry.name)


def write_store(
    frames: Any,
    target: str | os.PathLike[str],
    store: StoreSpec,
    *,
    chunk_size: int = 1000,
    rows: Sequence[int] | np.ndarray | None = None,
) -> int:
    """Write ``frames`` (only ``rows`` of them, if given) into a new store at ``target``.

    ``frames`` is an ASEIO (copied as row dicts, without building ``Atoms``) or any iterable
    of Atoms. The store is complete before it replaces ``target``
    (:func:`asebytes_nodes.transfer.convert`). Returns the number of frames written.
    """
    group = {"group": store.group} if store.group is not None else {}
    return convert(
        as_aseio(frames),
        target,
        indices=rows,
        overwrite=True,
        destination_options={"backend": store.backend, **group, **store.options},
        chunk_size=chunk_size,
    )


def write_sharded(frames: ASEIO, target: str | os.PathLike[str], store: StoreSpec, config: Any) -> int:
    """Write ``frames`` as a sharded dataset of ``store.backend`` shards at ``target``, with the
    ``shards`` size, ``workers`` and ``scheduler`` of ``config``; the number of frames written."""
    from ..shards import convert_sharded, shard_size

    frames_per, nbytes = shard_size(config.shards) if config.shards else (None, None)
    return convert_sharded(
        frames, target, backend=store.backend, shard_frames=frames_per, shard_bytes=nbytes,
        workers=config.workers, scheduler=config.scheduler, overwrite=True, shard_options=store.options,
    )  # fmt: skip


def fingerprint(frames: ASEIO) -> str:
    """A digest that changes whenever the data behind ``frames`` changes.

    Local stores are hashed by content (file names and bytes, like DVC does); a selection
    combines its source's digest with its row numbers, a concatenation its parts' digests; a
    store without a location (frames copied into memory from an upstream node's list of Atoms)
    by its rows' encoded content; remote sources give their location and length, the best a
    reader can know without downloading them.
    """
    digest = hashlib.md5()
    backend = frames.backend
    if isinstance(backend, SelectedRows):
        digest.update(fingerprint(backend.source).encode())
        digest.update(backend.rows.tobytes())
        return digest.hexdigest()
    if type(backend) is ConcatBackend:  # db1 + db2: its parts' digests, each store by its files
        for part in backend._parts():
            digest.update(fingerprint(ASEIO(part)).encode())
        return digest.hexdigest()
    location = backend.location
    if location is None:
        _digest_rows(backend, digest)
        return digest.hexdigest()
    path = Path(location) if "://" not in location else None
    if path is None or not path.exists():
        digest.update(f"{type(backend).__name__}:{location}:{len(backend)}".encode())
        return digest.hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _digest_rows(backend: ReadableBackend, digest: Any, chunk_size: int = 1000) -> None:
    """Feed every row of ``backend`` to ``digest``, keys sorted, as the codec encodes it
    (msgpack, arrays as raw bytes with dtype and shape: a changed value, key or shape changes it)."""
    from ..codec import encode_row

    n = len(backend)
    digest.update(f"{n}:".encode())
    for start in range(0, n, chunk_size):
        rows = backend.read_rows(np.arange(start, min(start + chunk_size, n)))
        digest.update(b"".join(encode_row({k: row[k] for k in sorted(row)}) for row in rows))
