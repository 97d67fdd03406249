"""Moving frames between stores: streamed in chunks, row dicts straight from backend to backend.

:func:`copy_frames` appends a selection of one store to another without building
``Atoms``; :func:`convert` writes a whole new store at a path and only puts it in
place once every frame is written, so an interrupted conversion never leaves a
half-written file where a complete one is expected.

The temporary copy is ``.NAME.partial-PID-HOST.ext`` beside the destination. An exception
or SIGTERM removes it (SIGTERM is turned into an exception in the main thread while the
copy is written, then ends the process as before); what ``kill -9`` or the OOM killer
leaves, the next conversion into that folder removes once the pid is gone on this host
(another host's copy is only reported, when untouched for an hour).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends._base import WritableBackend
from .backends._safety import put_in_place, put_new
from .errors import (
    BackendNotFoundError,
    DestinationExistsError,
    InvalidDataError,
    MissingValueError,
    StoreCorruptedError,
    UnknownKeyError,
    UnsupportedOperationError,
)
from .indexing import normalize_indices
from .io import ASEIO
from .progress import progress
from .registry import resolve_backend

if TYPE_CHECKING:
    from .backends._base import ReadableBackend

__all__ = ["convert", "copy_frames"]

#: Frames per chunk when the backends do not suggest more.
CHUNK_FRAMES = 1000
#: A temporary copy's name without its extension; names without a host are from older versions.
_PARTIAL = re.compile(r"\.(?P<stem>.+)\.partial-(?P<pid>\d+)(?:-(?P<host>[A-Za-z0-9-]+))?")
#: Another host's copy untouched for this many seconds is reported as perhaps a killed conversion's.
_IDLE_SECONDS = 3600
#: A copy of this host whose pid is gone is removed once untouched for this many seconds: a pid is
#: not enough (a conversion in another PID namespace, a host name two machines share).
_GONE_SECONDS = 900


def _as_io(target: Any, **options: Any) -> ASEIO:
    return target if isinstance(target, ASEIO) else ASEIO(target, **options)


def copy_frames(
    source: Any,
    destination: Any,
    *,
    indices: Any = None,
    chunk_size: int | None = None,
    show_progress: bool | None = None,
    desc: str = "copying",
) -> int:
    """Append ``source[indices]`` (all frames by default) to ``destination``; returns the count.

    Both ends are an :class:`ASEIO` or anything ``ASEIO`` opens. Each chunk is one
    atomic ``extend`` of the destination, so an interruption keeps whole chunks only.
    """
    src, dst = _as_io(source, readonly=True), _as_io(destination)
    rows = normalize_indices(slice(None) if indices is None else indices, len(src))
    size = chunk_size or max(CHUNK_FRAMES, min(src.backend.read_batch_size, 16384))
    writer = dst._writable()
    with progress(len(rows), desc, enabled=show_progress) as bar:
        for start in range(0, len(rows), size):
            chunk = np.asarray(rows[start : start + size])
            with _named_by_source(chunk):
                writer.extend(src.backend.read_rows(chunk))
            bar.update(len(chunk))
    if not len(rows):
        writer.extend([])  # makes a new destination store, empty (stores are made by a write)
    return len(rows)


@contextmanager
def _named_by_source(chunk: np.ndarray) -> Iterator[None]:
    """A refused chunk's error names source rows: a backend names a bad value by its place in the
    write ("frame 210"), which past the first chunk is not the source row; the first such place
    gets its source row beside it, and the message says which source rows the write held."""
    try:
        yield
    except (InvalidDataError, MissingValueError, UnknownKeyError) as exc:
        if (chunk == np.arange(len(chunk))).all():
            raise  # frame j is source row j
        text = _FRAME.sub(
            lambda m: f"{m[0]} (source row {chunk[int(m[1])]})" if int(m[1]) < len(chunk) else m[0],
            str(exc),
            count=1,
        )
        lo, hi = int(chunk[0]), int(chunk[-1])
        rows = f"{lo}-{hi}" if hi - lo == len(chunk) - 1 and (np.diff(chunk) == 1).all() else "picked"
        exc.args = (f"writing {len(chunk)} source rows ({rows}): {text}",)
        raise


_FRAME = re.compile(r"\bframe (\d+)\b")


def convert(
    source: Any,
    destination: str | os.PathLike[str],
    *,
    indices: Any = None,
    overwrite: bool = False,
    source_options: dict[str, Any] | None = None,
    destination_options: dict[str, Any] | None = None,
    chunk_size: int | None = None,
    show_progress: bool | None = None,
    backend: str | None = None,
    shard_frames: int | None = None,
    shard_bytes: int | None = None,
    workers: int = 1,
    scheduler: str | None = None,
) -> int:
    """Write ``source[indices]`` into a new store at ``destination``; returns the frame count.

    The store is written beside the destination under a temporary name and moved into
    place at the end: an existing destination is replaced only when ``overwrite`` is
    set, and only after the new store is complete. URIs (``s3://``...) are written in
    place, and must not exist yet. ``backend`` names the destination's backend.

    With ``shard_frames``, ``shard_bytes``, ``workers > 1`` or a ``scheduler``, the
    destination is a sharded dataset folder of ``backend`` stores (default LMDB), one shard
    per partition, written by Dask workers: see :func:`asebytes_nodes.shards.convert_sharded`.
    """
    whole = isinstance(chunk_size, (int, np.integer)) and not isinstance(chunk_size, bool)
    if chunk_size is not None and (not whole or chunk_size < 1):
        raise InvalidDataError(f"chunk_size must be a whole number of frames, 1 or more, got {chunk_size!r}")
    if shard_frames or shard_bytes or workers > 1 or scheduler is not None:
        if "://" in os.fspath(destination):
            raise InvalidDataError(
                f"{os.fspath(destination)}: a sharded conversion writes a local folder of shards, not "
                "a URI; convert into a local folder (then copy it), or drop the shard options"
            )
        if indices is not None or chunk_size is not None:
            raise InvalidDataError(
                "a sharded conversion writes every frame of the source: drop indices=/chunk_size=, "
                "or select the frames into a store first"
            )
        from .shards import convert_sharded

        return convert_sharded(
            source, destination, backend=backend or "lmdb", shard_frames=shard_frames,
            shard_bytes=shard_bytes, workers=workers, scheduler=scheduler, overwrite=overwrite,
            source_options=source_options, shard_options=destination_options, show_progress=show_progress,
        )  # fmt: skip
    if backend is not None:
        destination_options = {**(destination_options or {}), "backend": backend}
    src = _as_io(source, readonly=True, **(source_options or {}))
    dest = os.fspath(destination)
    options = destination_options or {}
    if "://" in dest:
        dst = ASEIO(dest, **options)
        if len(dst):
            raise DestinationExistsError(
                f"{dest}: the destination already holds {len(dst)} frames; a URI is never replaced "
                "(overwrite= applies to local paths): delete it with the object store's tools first"
            )
        return copy_frames(src, dst, indices=indices, chunk_size=chunk_size, show_progress=show_progress)
    final = Path(dest).expanduser()
    old = check_destination(final, source, overwrite=overwrite)
    vacant = not overwrite and not os.path.lexists(final)  # then a store made meanwhile stays there
    partial = final.with_name(f".{final.stem}.partial-{os.getpid()}-{_host()}{final.suffix}")
    # the new store's backend, named by the destination (an existing one is replaced, not sniffed)
    store = _store_class(partial if final.exists() else final, options.get("backend"))
    if not issubclass(store, WritableBackend):
        raise UnsupportedOperationError(
            f"{final}: the {store.name} backend reads these files but does not write them; "
            "convert to .lmdb, .zarr or .h5 (H5MD)"
        )
    _clear_leftovers(final, store, partial)
    store.remove_store(partial)
    try:
        with _sigterm_unwinds(lambda: store.remove_store(partial)), ASEIO(partial, **options) as dst:
            count = copy_frames(
                src,
                dst,
                indices=indices,
                chunk_size=chunk_size,
                show_progress=show_progress,
                desc=f"converting to {final.name}",
            )
            held = len(dst)
        if not partial.exists():  # a backend that made nothing must not cost the old destination
            raise StoreCorruptedError(f"{final}: the {store.name} backend wrote no store; left unchanged")
        if held != count:  # its file was removed or replaced meanwhile, and the writer made a new one
            raise StoreCorruptedError(
                f"{final}: the conversion wrote {count} frames but its copy {partial.name} holds {held}: "
                "another process removed or replaced the copy meanwhile; left unchanged, convert again"
            )
        if vacant:  # a conversion that finished first into final stays
            try:
                put_new(partial, final)
            except FileExistsError:
                raise DestinationExistsError(
                    f"{final}: another conversion made it meanwhile; pass overwrite=True (--overwrite) "
                    "to replace it"
                ) from None
        replaced = None if vacant else put_in_place(partial, final)
        if old is not None:  # the old store's own side files (another backend's lock file)
            for side in set(old.side_files(final)) - set(store.side_files(final)):
                side.unlink(missing_ok=True)
            if replaced is not None and replaced != partial:
                old.remove_store(replaced)
    finally:
        store.remove_store(partial)
    return count


def check_destination(final: Path, source: Any, *, overwrite: bool) -> type[ReadableBackend] | None:
    """Refuse an existing ``final`` unless ``overwrite`` is set and it is a store that may be replaced:
    never a folder of other files, one holding the source or inside it, or the working folder.
    Returns the backend class of the store there (None: nothing there)."""
    if not final.exists():
        return None
    if not overwrite:
        raise DestinationExistsError(
            f"{final}: already exists; pass overwrite=True (--overwrite) to replace it"
        )
    owner: type[ReadableBackend] | None
    try:  # the store there, recognised by its own content (not the backend of the new one)
        owner = resolve_backend(final).load()
        replaceable = owner.holds_store(final)
    except BackendNotFoundError:
        owner, replaceable = None, final.is_dir() and not any(final.iterdir())
    if not replaceable:
        names = sorted(p.name for p in final.iterdir()) if final.is_dir() else []
        some = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DestinationExistsError(
            f"{final}: exists and is not a store{f' (it holds {some})' if names else ''}; overwrite=True "
            "replaces stores only: choose another destination, or remove it yourself"
        )
    place = final.resolve()
    where = getattr(getattr(source, "backend", source), "location", None)
    if isinstance(source, (str, os.PathLike)) and "://" not in os.fspath(source):
        where = os.fspath(source)
    origin = Path(where).expanduser().resolve() if where and "://" not in where else None
    if origin is not None and origin.is_dir() and place.is_relative_to(origin) and place != origin:
        raise DestinationExistsError(
            f"{final}: overwrite=True would replace part of the source ({origin}); choose another destination"
        )
    if final.is_dir():
        inside = [("the source", origin)] if origin is not None else []
        for what, path in [*inside, ("the working folder", Path.cwd().resolve())]:
            if path.is_relative_to(place) and (path != place or what == "the working folder"):
                raise DestinationExistsError(
                    f"{final}: overwrite=True would delete {what} ({path}) with it; "
                    "choose another destination"
                )
    return owner


def _host() -> str:
    """This host's name as a copy's name carries it: a pid means something only on its own host."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"


def _clear_leftovers(final: Path, store: type[ReadableBackend], own: Path) -> None:
    """Remove the copies killed conversions (``kill -9``, out of memory) left in ``final``'s folder:
    ``store``'s, made on this host by a process that is gone, untouched for 15 minutes (a reused
    pid keeps a copy, never the reverse). Another host's copy untouched for an hour is reported,
    never removed."""
    cut = len(final.suffix)
    for leftover in final.parent.glob(f".*.partial-*{final.suffix}"):
        match = _PARTIAL.fullmatch(leftover.name[: len(leftover.name) - cut] if cut else leftover.name)
        if match is None or leftover == own or not store.holds_store(leftover):
            continue
        host = match["host"]
        if host == _host() or (host is None and match["stem"] == final.stem):
            if not _alive(int(match["pid"])) and _idle(leftover) > _GONE_SECONDS:
                store.remove_store(leftover)
            continue
        if (idle := _idle(leftover)) > _IDLE_SECONDS:
            size = "a folder" if leftover.is_dir() else f"{leftover.stat().st_size:,} bytes"
            warnings.warn(
                f"{leftover}: the hidden copy ({size}) of a conversion by pid {match['pid']} on "
                f"{host or 'an unnamed host'}, untouched for {idle / 3600:.1f} h: if no conversion "
                "runs there, it was killed; delete the copy (and its side files)",
                RuntimeWarning,
                stacklevel=3,
            )


def _idle(copy: Path) -> float:
    """Seconds since anything in ``copy`` (a file, or a folder and every file in it) was written;
    0 for a copy whose files come and go meanwhile (a conversion writing it)."""
    try:
        newest = copy.stat().st_mtime
        for folder, _, files in os.walk(copy) if copy.is_dir() else ():
            for name in files:
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime)
    except FileNotFoundError:
        return 0.0
    return time.time() - newest


def _alive(pid: int) -> bool:
    """Is process ``pid`` of this host running (or another user's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _Terminated(BaseException):
    """SIGTERM arrived while a conversion wrote its copy (see :func:`_sigterm_unwinds`)."""


@contextmanager
def _sigterm_unwinds(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run the block with SIGTERM (what DVC, SLURM and ``kill`` send) raised as an exception,
    so ``cleanup`` runs once the block unwound; the process then ends by SIGTERM as before.

    Python's default SIGTERM ends the process at once, skipping every ``finally``. Only in the
    main thread (signal handlers live there; Dask runs tasks in other threads) and only while
    SIGTERM has its default action: a handler the program set is left in charge.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it now
        try:
            cleanup()
        finally:  # ended by SIGTERM even if the cleanup failed
            signal.raise_signal(signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None  # SIGTERM blocked: end as a shell reports it
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _store_class(target: str | os.PathLike[str], backend: str | None) -> type[ReadableBackend]:
    """The backend class that owns the store at ``target`` (its side files, how to remove it)."""
    return resolve_backend(target, backend).load()
