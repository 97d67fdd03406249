"""Converting a store into a sharded dataset, one shard per partition, serially or on Dask.

The source is cut into partitions of ``shard_frames`` rows (the cut depends on the
source and ``shard_frames`` only, never on the number of workers). Each task reads its
own rows: an extxyz file by its rows of the byte-offset index (:mod:`.._xyzindex`),
sent with the task and parsed in the worker; a downloaded HuggingFace dataset by row
ranges that never cross its Arrow files (each file cut into pieces of ``shard_frames``),
a HuggingFace stream by its shards (data files; one dataset shard each, whatever
``shard_frames``: a stream cannot be entered in the middle); chosen rows of a store
(:class:`~asebytes_nodes.selection.SelectedRows`) by the row numbers of the partition
only, sent with the task; any other store by row range, opened in the worker (by path,
or from the pickled backend). Each task writes its shard under a
temporary name (:func:`write_partition`), then hashes, syncs and renames it and records it
in a journal file (:func:`seal_partition`). The manifest is written
last, in a work folder ``.<name>.partial`` beside the target that is then renamed to
the target: a failed conversion leaves no dataset, and its rerun keeps every shard whose
journal entry, source range and hash still match.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..backends._asefile import ASEFileBackend
from ..backends._aseframes import ExtxyzFrames
from ..backends._base import ReadableBackend, path_of
from ..backends._lmdb_lock import WriterLock
from ..backends._safety import put_in_place
from ..errors import PartitionError, StoreCorruptedError
from ..registry import open_backend
from ..rows import gc_paused
from ..selection import SelectedRows
from ..transfer import check_destination
from ._engines import engine_for, refuse_rerun
from ._manifest import MANIFEST, TEMP_PREFIX, Manifest, ShardEntry, digest, sync_folder, write_atomic
from ._write import (
    CHUNK_ROWS,
    DEFAULT_SHARD_BYTES,
    WrittenStore,
    backend_class,
    frames_per_shard,
    read_range,
    remove_path,
    sample_rows,
    seal,
    write_store,
)

__all__ = ["Partition", "convert_sharded", "seal_partition", "write_partition"]

_JOURNAL = ".convert-{:05d}.json"


class _XyzRange(ExtxyzFrames):
    """Frames ``first:first + n`` of an extxyz file, located by the rows of its index sent along."""

    def __init__(self, path: Path, table: np.ndarray, first: int, stamp: dict[str, Any]) -> None:
        self._path, self._table, self._first = path, table, first
        self._recent = {}
        self._stamp, self._seen = stamp, (stamp["size"], stamp["mtime_ns"])  # the driver's index's
        self._fd = os.open(path, os.O_RDONLY)

    def _corrupt(self, i: int, what: str, exc: Exception) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"{self._path}: frame {self._first + i} (byte {int(self._table[i, 0])}) cannot be read as "
            f"{what}: {type(exc).__name__}: {exc}"
        )


@dataclass(frozen=True)
class Partition:
    """One task: source rows ``start:stop`` (or shard ``stream_shard`` of a stream) become shard
    ``index`` of ``folder``."""

    index: int
    start: int
    stop: int  # a stream shard: -1 (its rows are counted as they are read)
    source: Any  # a path or URI (opened in the worker), or a picklable backend
    source_options: dict[str, Any]
    # extxyz only: index rows start..stop (the last is the end); a view of the driver's index, pickled
    # (sent to a worker) as these rows only
    xyz_table: np.ndarray | None
    xyz_stamp: dict[str, Any] | None  # the file the index was made of: a rewrite since then is refused
    folder: str
    backend: str
    options: dict[str, Any]
    stamp: str  # what identifies the source version, for the journal
    stream_shard: int | None = None
    stream_shards: int = 0
    picks: np.ndarray | None = None  # a selection: the source's row numbers of rows start..stop

    def describe(self) -> str:
        where = self.source if isinstance(self.source, str) else repr(self.source)
        if self.stream_shard is not None:
            return (
                f"{where}: stream shard {self.stream_shard} of {self.stream_shards} (partition {self.index})"
            )
        return f"{where}: source rows {self.start}-{self.stop - 1} (partition {self.index})"

    def journal_key(self) -> dict[str, Any]:
        return {
            "source": self.stamp,
            "start": self.start,
            "stop": self.stop,
            "stream_shard": self.stream_shard,
            "picks": None if self.picks is None else hashlib.sha256(self.picks.tobytes()).hexdigest(),
            "backend": self.backend,
            "options": repr(sorted(self.options.items())),
        }

    def rows(self) -> Any:
        """The partition's rows, read in this process."""
        if self.xyz_table is not None:
            stamp = cast("dict[str, Any]", self.xyz_stamp)  # set with the table
            frames = _XyzRange(Path(self.source), self.xyz_table, self.start, stamp)
            try:
                n = len(self.xyz_table) - 1
                for lo in range(0, n, 1000):
                    with gc_paused():
                        batch = frames.rows(np.arange(lo, min(lo + 1000, n)), None)
                    yield from batch
                    del batch  # freed before the next batch is parsed
            finally:
                frames.close()
            return
        backend = self.source
        if isinstance(backend, str):
            backend = open_backend(backend, readonly=True, **self.source_options)
        try:
            if self.stream_shard is not None:
                yield from backend.iter_stream_shard(self.stream_shard)
            elif self.picks is not None:
                for lo in range(0, len(self.picks), CHUNK_ROWS):
                    yield from backend.read_rows(self.picks[lo : lo + CHUNK_ROWS])
            else:
                yield from read_range(backend, self.start, self.stop)
        finally:
            if backend is not self.source:
                backend.close()


Staged = tuple[Partition, WrittenStore | dict[str, Any]]


def write_partition(part: Partition) -> Staged:
    """Write one partition's rows into a store under a temporary name (or find the shard a
    previous run finished: its journal entry); for :func:`seal_partition`."""
    with _named(part):
        done = _finished(part)
        return part, done if done is not None else write_store(
            Path(part.folder), part.rows(), part.backend, part.options
        )


def seal_partition(staged: Staged) -> dict[str, Any]:
    """Put a written store in place as the partition's shard and journal it; its journal entry."""
    part, written = staged
    if isinstance(written, dict):
        return written
    with _named(part):
        record = {"key": part.journal_key(), "entry": seal(written, part.index).to_json()}
        write_atomic(_journal(part), json.dumps(record).encode())
        return record


@contextmanager
def _named(part: Partition) -> Iterator[None]:
    """Any failure as a :class:`PartitionError` naming the partition's source range."""
    try:
        yield
    except Exception as exc:
        raise PartitionError(f"{part.describe()} failed: {type(exc).__name__}: {exc}") from exc


def _journal(part: Partition) -> Path:
    return Path(part.folder) / _JOURNAL.format(part.index)


def _finished(part: Partition) -> dict[str, Any] | None:
    """The journal entry of a shard a previous run wrote for this very partition, if it is intact."""
    journal = _journal(part)
    try:
        record = json.loads(journal.read_bytes())
        entry = ShardEntry.from_json(record["entry"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path, natoms = Path(part.folder) / entry.file, Path(part.folder) / entry.natoms_file
    if record.get("key") != part.journal_key() or not path.exists() or not natoms.exists():
        return None
    intact = digest(path) == (entry.size, entry.sha256) and digest(natoms)[1] == entry.natoms
    return record if intact else None


def _stamp(source: Any, backend: ReadableBackend) -> str:
    """The source's location, size and modification time (or its length, for other stores)."""
    where = backend.location or repr(backend)
    if where and os.path.exists(where):
        st = os.stat(where)
        return f"{os.path.realpath(where)}:{st.st_size}:{st.st_mtime_ns}"
    return f"{where}:{len(backend) if backend.length_known() else '?'}"


def convert_sharded(
    source: Any,
    target: str | os.PathLike[str],
    *,
    backend: str = "lmdb",
    shard_frames: int | None = None,
    shard_bytes: int | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    source_options: dict[str, Any] | None = None,
    shard_options: dict[str, Any] | None = None,
    show_progress: bool | None = None,
) -> int:
    """Write every frame of ``source`` as a sharded dataset at the folder ``target``; the frame count.

    >>> convert_sharded("big.extxyz", "big/", shard_frames=100_000, workers=8)  # doctest: +SKIP

    ``workers > 1`` starts a ``dask.distributed.LocalCluster`` of that many worker processes
    (one thread each) for this call; ``scheduler`` names a running cluster's scheduler
    instead (``"tcp://host:8786"``) or one of Dask's local schedulers (``"synchronous"``).
    The shards do not depend on the number of workers: the same input gives the same bytes.

    On a SLURM cluster (``pip install dask-jobqueue``), start the workers as jobs and pass the
    scheduler's address; the target folder must be on a file system every job sees::

        from dask_jobqueue import SLURMCluster
        cluster = SLURMCluster(cores=1, processes=1, memory="4GB", walltime="02:00:00")
        cluster.scale(jobs=64)
        convert_sharded("omat.extxyz", "/scratch/omat/", shard_frames=200_000,
                        scheduler=cluster.scheduler_address)

    Scripts that start a ``LocalCluster`` must run it under ``if __name__ == "__main__":``
    (the worker processes import the main module).

    A failing partition raises :class:`~asebytes_nodes.errors.PartitionError` naming its source
    rows, and no dataset appears at ``target``; the next call keeps the finished shards.
    """
    refuse_rerun(workers, scheduler)
    final = path_of(os.fspath(target)).absolute()  # workers may run in another folder
    check_destination(final, source, overwrite=overwrite)
    opened = not isinstance(source, ReadableBackend) and not hasattr(source, "backend")
    src: ReadableBackend = (
        open_backend(source, readonly=True, **(source_options or {}))
        if opened
        else getattr(source, "backend", source)
    )
    work = final.with_name(f".{final.name}.partial")
    try:
        work.mkdir(parents=True, exist_ok=True)
        with WriterLock(work, store=str(final), timeout=0).exclusive():
            for item in work.iterdir():
                if item.name.startswith(TEMP_PREFIX):
                    remove_path(item)
            streams = int(getattr(src, "stream_shards", lambda: 0)())
            n = 0 if streams else len(src)
            if shard_frames is None:
                sample = list(itertools.islice(src.iter_rows(), 256)) if streams else sample_rows(src, 0, n)
            cap = shard_frames or frames_per_shard(sample, shard_bytes or DEFAULT_SHARD_BYTES)
            ranges = _ranges(src, n, cap, streams)
            tasks = _partitions(
                source if opened else src, src, ranges, work, backend, source_options, shard_options,
            )  # fmt: skip
            imports = [__name__, backend_class(backend)[0].__module__, type(src).__module__]
            with closing(engine_for(workers, scheduler, show_progress, imports)) as engine:
                records = engine.map(
                    write_partition,
                    tasks,
                    desc=f"converting to {final.name}",
                    then=seal_partition,
                    frames=None if streams else [stop - start for start, stop in ranges],
                )
            shards = [ShardEntry.from_json(r["entry"]) for r in records]
            manifest = Manifest(backend=backend, shard_frames=cap, shards=shards)
            manifest.save(work)
            keep = {MANIFEST} | {s.file for s in shards} | {s.natoms_file for s in shards}
            for item in work.iterdir():
                if item.name not in keep:
                    remove_path(item)
        replaced = put_in_place(work, final)  # an old dataset there is never left half deleted
        sync_folder(final.parent)
        if replaced is not None:
            remove_path(replaced)
    finally:
        if opened:
            src.close()
    return manifest.frames


def _ranges(src: ReadableBackend, n: int, cap: int, streams: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``cap`` rows, none crossing an Arrow file of a HuggingFace dataset;
    a stream's shards as ``(k, -1)``."""
    if streams:
        return [(k, -1) for k in range(streams)]
    sizes = getattr(src, "arrow_shards", lambda: None)() or [n]
    bounds, first = [], 0
    for size in sizes:
        bounds += [(lo, min(lo + cap, first + size)) for lo in range(first, first + size, cap)]
        first += size
    return bounds


def _partitions(
    source: Any,
    src: ReadableBackend,
    ranges: list[tuple[int, int]],
    work: Path,
    backend: str,
    source_options: dict[str, Any] | None,
    shard_options: dict[str, Any] | None,
) -> list[Partition]:
    table = picks = xyz_stamp = None
    if isinstance(src, SelectedRows):  # each task gets its own row numbers, not all of them
        source, picks = src.source.backend, src.rows
    elif isinstance(src, ASEFileBackend) and isinstance(src._frames, ExtxyzFrames):
        table, xyz_stamp = src._frames._table, src._frames._stamp  # workers parse their own byte ranges
        source = os.path.abspath(src.location)
    elif isinstance(source, (str, os.PathLike)) and "://" not in os.fspath(source):
        source = os.path.abspath(os.path.expanduser(os.fspath(source)))  # workers may run elsewhere
    stamp = _stamp(source, src)
    streamed = bool(ranges) and ranges[0][1] < 0
    return [
        Partition(
            index=k,
            start=-1 if streamed else start,
            stop=stop,
            source=source,
            source_options=dict(source_options or {}) if table is None else {},
            xyz_table=None if table is None else table[start : stop + 1],
            xyz_stamp=xyz_stamp,
            folder=os.fspath(work),
            backend=backend,
            options=dict(shard_options or {}),
            stamp=stamp,
            stream_shard=start if streamed else None,
            stream_shards=len(ranges) if streamed else 0,
            picks=None if picks is None else picks[start:stop],
        )
        for k, (start, stop) in enumerate(ranges)
    ]
