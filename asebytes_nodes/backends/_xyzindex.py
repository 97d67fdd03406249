"""Byte offsets of the frames of an extxyz/xyz file, and their cache on disk.

One pass over the file finds every frame: read the atom-count line, skip the
comment line and that many atom lines, then any ``VEC1``-``VEC3`` lines (the
same walk as ``ase.io.extxyz.read_xyz``, which also stops at the first blank
count line). Newlines are found with numpy, block by block, so memory stays
bounded for files of any size; the Python work is a few operations per frame.

Damaged and hostile files: a count line declaring more atoms than the rest of the file can
hold (an atom line takes at least 2 bytes) is refused at once, before any skip or allocation;
a frame cut short is refused; errors name the file, frame, line and count. A file whose last
line has no line end is read as it is (some writers omit the final newline), with a warning:
if it was cut inside that line, a cut number still parses.
A cache file is read only when it is a regular file owned by this user (never through a
symbolic link or from a FIFO), its table must describe a well-formed walk over the file's
bytes, and it is written under a fresh random name, so a file planted in a shared cache folder
can make us neither read nor write anything else.

The cache layout and its version history are documented in
:mod:`asebytes_nodes.backends._asefile`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreCorruptedError
from ..progress import Progress, progress

__all__ = ["CACHE_ENV", "FrameIndex", "build_index", "cache_dir", "check_stream", "holds_stamped_bytes"]

CACHE_ENV = "ASEBYTES_NODES_CACHE_DIR"
CACHE_FORMAT = "asebytes_nodes.xyz-index"
CACHE_VERSION = 1
_MAGIC = b"ABNXYZI\n"
_BLOCK = 1 << 22  # bytes read per system call while scanning (a block's line ends are kept)
_MAX_COUNT_LINE = 4096  # longest count or VEC line looked at; longer ones are not count lines
_STAMP_BYTES = 1 << 16  # head and tail of the file hashed into the stamp
_BAR_BYTES = 1 << 26  # scans of fewer bytes draw no progress bar

#: (n_frames + 1, 3) int64 rows ``(byte start, atoms, VEC lines)``; the last row's start is the end.
FrameIndex = np.ndarray


def cache_dir(option: bool | str | os.PathLike[str]) -> Path | None:
    """Folder for index files: the given path, else ``$ASEBYTES_NODES_CACHE_DIR``, else the
    user's cache folder; None when caching is off."""
    if option is False:
        return None
    if option is not True:
        return Path(option).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "asebytes_nodes"


def build_index(fd: int, path: str, cache: Path | None) -> tuple[FrameIndex, dict[str, Any]]:
    """The frame table of the open file ``fd`` and the stamp of the bytes it describes (so a
    reader can tell later whether they changed): the table from the cache when it still
    describes the file, extended by scanning only the new bytes when the file grew by
    appending, else scanned in full (and the cache rewritten, if it can be)."""
    stamp = _stamp(fd)
    if cache is None:
        return _scan(fd, path, stamp["size"], 0, 0), stamp
    target = cache / "extxyz-index" / _cache_name(path)
    cached = _load(target, path)
    if cached is not None and cached[0] == stamp:
        return cached[1], stamp
    if cached is not None and _appended(fd, cached[0], stamp):
        old = cached[1]
        resume = max(len(old) - 2, 0)  # rescan the last known frame: VEC lines may have followed
        table = np.concatenate([old[:resume], _scan(fd, path, stamp["size"], int(old[resume, 0]), resume)])
    else:
        table = _scan(fd, path, stamp["size"], 0, 0)
    _save(target, path, stamp, table)
    return table, stamp


class _LineEnds:
    """Where the lines of a file end, found with numpy one block at a time (memory: one block)."""

    def __init__(self, fd: int, path: str, size: int, start: int, bar: Progress) -> None:
        self.fd, self.path, self.size, self.bar = fd, path, size, bar
        self.read_at = start
        self.chunk, self.chunk_at = b"", start  # the current block and where it starts
        self.ends: list[int] = []  # line ends in the current block
        self.k = 0  # lines of the block already passed

    def _load(self) -> bool:
        while self.read_at < self.size:
            chunk = os.pread(self.fd, min(_BLOCK, self.size - self.read_at), self.read_at)
            if not chunk:
                raise StoreCorruptedError(f"{self.path}: the file shrank while being indexed; reopen it")
            ends = (np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10) + self.read_at).tolist()
            self.chunk, self.chunk_at = chunk, self.read_at
            self.read_at += len(chunk)
            self.bar.update(len(chunk))
            if self.read_at >= self.size and not chunk.endswith(b"\n"):
                ends.append(self.size)  # a last line without a newline
            if ends:
                self.ends, self.k = ends, 0
                return True
        return False

    def text(self, begin: int, end: int) -> bytes:
        """Bytes ``begin:end`` (at most ``_MAX_COUNT_LINE``), from the current block when it holds them."""
        end = min(end, begin + _MAX_COUNT_LINE)
        if self.chunk_at <= begin and end <= self.chunk_at + len(self.chunk):
            return self.chunk[begin - self.chunk_at : end - self.chunk_at]
        return os.pread(self.fd, end - begin, begin)

    def peek(self) -> int | None:
        """End of the next line, without passing it; None at the end of the file."""
        if self.k == len(self.ends) and not self._load():
            return None
        return self.ends[self.k]

    def skip(self, n: int) -> int | None:
        """Pass ``n`` >= 1 lines; the end of the last one, or None if the file ends first."""
        while n > len(self.ends) - self.k:
            n -= len(self.ends) - self.k
            self.k = len(self.ends)
            if not self._load():
                return None
        self.k += n
        return self.ends[self.k - 1]


def _at(fd: int, pos: int) -> str:
    return f"line {_line_of(fd, pos)}, byte {pos}"


def _line_of(fd: int, pos: int) -> int:
    """1-based line number of byte ``pos`` (counted on the error path only)."""
    lines, at = 1, 0
    while at < pos:
        chunk = os.pread(fd, min(_BLOCK, pos - at), at)
        if not chunk:
            break
        lines, at = lines + chunk.count(b"\n"), at + len(chunk)
    return lines


def _damaged(path: str, frame: int, where: str, problem: str) -> StoreCorruptedError:
    return StoreCorruptedError(
        f"{path}: frame {frame} ({where}) {problem}; the file is truncated or corrupted, or not "
        "extxyz/xyz: restore it, or cut it before that frame"
    )


def _unterminated(path: str, frame: int, where: str) -> None:
    warnings.warn(
        f"{path}: frame {frame} ({where}) ends in a line without a line end; it is read as it is, "
        "but if the file was cut inside that line its last number may be incomplete: check the "
        "file's end, or append a newline to a complete file to silence this",
        UserWarning,
        stacklevel=4,
    )


def check_stream(lines: Iterable[bytes], path: str) -> None:
    """Walk the lines of a (decompressed) extxyz/xyz stream as :func:`build_index` walks a file,
    keeping nothing, and raise its errors; ASE's own reader would loop once per declared atom
    past the end of the stream (10**12 times for a count of 10**12)."""
    stream = iter(lines)
    frame = number = 0
    last = b"\n"
    for line in stream:
        number, last = number + 1, line
        if frame and line.lstrip().startswith(b"VEC"):
            continue
        if not line.strip():
            return  # ASE stops at a blank count line too
        try:
            natoms = int(line) if len(line) <= _MAX_COUNT_LINE else -1
        except ValueError:
            natoms = -1
        if natoms < 0:
            found = f"should start with its number of atoms, found {line[:60]!r}"
            raise _damaged(path, frame, f"line {number}", found)
        # the comment and atom lines, consumed in C, keeping only the last (islice stops at the end)
        tail = collections.deque(enumerate(itertools.islice(stream, natoms + 1), 1), maxlen=1)
        body, last = tail[0] if tail else (0, last)
        if body < natoms + 1:
            raise _damaged(path, frame, f"line {number}", f"declares {natoms} atoms, but the file ends first")
        number, frame = number + body, frame + 1
    if not last.endswith(b"\n"):
        _unterminated(path, max(frame - 1, 0), f"line {number}")


def _scan(fd: int, path: str, size: int, start: int, first_frame: int) -> FrameIndex:
    """Frame rows from byte ``start`` (a frame start) to the end of the file."""
    with progress(size - start, f"indexing {Path(path).name}", unit="B", min_total=_BAR_BYTES) as bar:
        return _scan_lines(_LineEnds(fd, path, size, start, bar), fd, path, size, start, first_frame)


def _scan_lines(lines: _LineEnds, fd: int, path: str, size: int, start: int, first_frame: int) -> FrameIndex:
    rows: list[tuple[int, int, int]] = []
    pos = start  # where the current frame's count line starts
    while (end := lines.skip(1)) is not None:
        text = lines.text(pos, end)
        if not text.strip():
            break  # ASE stops at a blank count line too
        frame = first_frame + len(rows)
        try:
            natoms = int(text) if end - pos <= _MAX_COUNT_LINE else -1
        except ValueError:
            natoms = -1
        if natoms < 0:
            found = f"should start with its number of atoms, found {text[:60]!r}"
            raise _damaged(path, frame, _at(fd, pos), found)
        if 2 * natoms > size - end:  # checked before skipping: a count of 10**12 costs nothing
            raise _damaged(
                path, frame, _at(fd, pos), f"declares {natoms} atoms, but {natoms} atom lines need at least "
                f"{2 * natoms} bytes and only {size - end} follow (truncated, or not a count)"
            )
        last = lines.skip(natoms + 1)  # the comment and atom lines
        if last is None:
            raise _damaged(path, frame, _at(fd, pos), f"declares {natoms} atoms, but the file ends first")
        nvec = 0
        while (nxt := lines.peek()) is not None and lines.text(last + 1, nxt).lstrip().startswith(b"VEC"):
            lines.skip(1)
            nvec, last = nvec + 1, nxt
        if nvec > 3:
            raise _damaged(path, frame, _at(fd, pos), "has more than 3 VEC lines")
        if last >= size:  # _LineEnds ends an unterminated last line at `size`
            _unterminated(path, frame, _at(fd, pos))
        rows.append((pos, natoms, nvec))
        pos = min(last + 1, size)
    rows.append((pos, 0, 0))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _digest(fd: int, start: int, stop: int) -> str:
    return hashlib.sha256(os.pread(fd, max(stop - start, 0), start)).hexdigest()


def _stamp(fd: int) -> dict[str, Any]:
    """What identifies this version of the file: size, mtime and hashes of its head and tail."""
    st = os.fstat(fd)
    size = st.st_size
    return {
        "size": size,
        "mtime_ns": st.st_mtime_ns,
        "head": _digest(fd, 0, min(size, _STAMP_BYTES)),
        "tail": _digest(fd, max(size - _STAMP_BYTES, 0), size),
    }


def holds_stamped_bytes(fd: int, old: dict[str, Any], size: int) -> bool:
    """True when the open file ``fd``, now ``size`` bytes long, still holds the bytes the stamp
    ``old`` hashed: the same file, or it with bytes appended (the middle of a file longer than
    twice ``_STAMP_BYTES`` is not compared)."""
    n = old["size"]
    return (
        size >= n
        and _digest(fd, 0, min(n, _STAMP_BYTES)) == old["head"]
        and _digest(fd, max(n - _STAMP_BYTES, 0), n) == old["tail"]
    )


def _appended(fd: int, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when the file grew and the bytes the old stamp hashed are unchanged."""
    return new["size"] > old["size"] and holds_stamped_bytes(fd, old, new["size"])


def _cache_name(path: str) -> str:
    real = os.path.realpath(path)
    return f"{Path(real).name}-{hashlib.sha256(real.encode()).hexdigest()[:16]}.abnidx"


def _read_own_file(target: Path) -> bytes:
    """The bytes of ``target`` if it is a regular file owned by this user, read without following
    a symbolic link or blocking on a FIFO; else OSError."""
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise OSError(f"{target}: not a regular file of this user")
        with open(fd, "rb", buffering=0, closefd=False) as f:
            return f.readall()
    finally:
        os.close(fd)


def _well_formed(table: FrameIndex, size: int) -> bool:
    """Does ``table`` describe a walk over ``size`` bytes: frames from byte 0, in order, each long
    enough for its atom lines, at most 3 VEC lines? (So a crafted cache claims no memory.)"""
    starts = table[:, 0]
    spans = starts[1:] - starts[:-1]
    # natoms >= 0 and 2 * natoms < spans (so spans > 0) in one pass; unsigned view: 0 <= nvec <= 3
    return bool(
        starts[0] == 0
        and starts[-1] <= size
        and (np.minimum(table[:-1, 1], spans - 2 * table[:-1, 1]) >= 0).all()
        and (spans > 0).all()
        and (table[:-1, 2].view(np.uint64) <= 3).all()
    )


def _load(target: Path, path: str) -> tuple[dict[str, Any], FrameIndex] | None:
    """(stamp, table) from a cache file of this version for this path, else None."""
    try:
        raw = _read_own_file(target)
        if not raw.startswith(_MAGIC):
            return None
        size = int.from_bytes(raw[8:12], "little")
        header = json.loads(raw[12 : 12 + size])
        body = raw[12 + size :]
        if (
            header.get("format") != CACHE_FORMAT
            or header.get("version") != CACHE_VERSION
            or header.get("path") != os.path.realpath(path)
            or len(body) != (header["frames"] + 1) * 24
        ):
            return None
        table = np.frombuffer(body, dtype="<i8").reshape(-1, 3).astype(np.int64)
        stamp = header["stamp"]
        return (stamp, table) if _well_formed(table, int(stamp["size"])) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(target: Path, path: str, stamp: dict[str, Any], table: FrameIndex) -> None:
    """Write the cache atomically; a folder that cannot be written is not an error."""
    header = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "path": os.path.realpath(path),
        "frames": len(table) - 1,
        "stamp": stamp,
    }
    meta = json.dumps(header).encode()
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # A fresh name (O_EXCL): a predictable one could be a planted link to another file.
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + len(meta).to_bytes(4, "little") + meta + table.astype("<i8").tobytes())
        os.replace(tmp, target)  # replaces a link planted at `target`, never what it points to
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
