"""Read-only backend for files that ASE reads: extxyz/xyz and ``.traj`` with O(1) random access,
every other ``ase.io`` format through ``ase.io.read``.

Frame ``i`` is what ``ase.io.read(path, index=i)`` returns, taken apart by
:func:`~asebytes_nodes.rows.atoms_to_dict` (so values keep ASE's types: the
extxyz reader gives numpy scalars for numbers of the comment line, ``.traj``
keeps only ASE's standard per-atom arrays and JSON-encodable info). One change:
per-atom string columns, which ASE returns as object arrays, come back as
fixed-width unicode arrays, the form every backend can store. The store is a
snapshot of the file when it was opened: reopen it to see appended frames. An
extxyz/xyz file changed in any other way (rewritten in place, cut) makes every
later read raise :class:`~asebytes_nodes.errors.StoreCorruptedError`.
Damaged files raise :class:`~asebytes_nodes.errors.StoreCorruptedError` naming
the file and, where it applies, the frame.

Access paths
------------
* **extxyz/xyz** (``.xyz``, ``.extxyz``, or ``format="extxyz"``): one pass over
  the file finds the byte offset of every frame (see :mod:`._xyzindex`); reading
  frame ``i`` reads its bytes alone and hands them to ASE's own extxyz reader
  (``ase.io.extxyz.read_xyz``). Consecutive frames are read with one system call.
  Columns of per-frame values (``info.*``, ``calc.energy`` and ASE's other per-frame
  results, ``cell``, ``pbc``) and ``arrays.numbers`` read only comment lines and species
  tokens (see :mod:`._xyzcomment`), about 15x faster than parsing every atom line.
* **traj** (ULM): ``ase.io.trajectory.TrajectoryReader``. A ULM file keeps a
  table of item offsets, so frame ``i`` is read by seeking to it; ``db[-1]``
  decodes the first and the last frame only.
* **every other format** ``ase.io`` reads (and compressed ``.gz``/``.bz2``/``.xz``
  files): ``ase.io.read(path, ":")`` once at open; the rows are kept in memory
  and copied on every read. ASE has no random access for these formats. Compressed
  extxyz is first walked line by line with the indexer's checks (absurd counts, cut
  frames), which ASE's reader lacks (it loops once per declared atom past the end).

Untrusted files
---------------
Reading a file runs no code and touches no other file. Formats whose ``ase.io`` reader
would break that are refused with :class:`~asebytes_nodes.errors.UnsafeStoreError` before
anything is read (see ``UNSAFE_FORMATS``: Python source, CASTEP cells, whose reader may
run the ``castep`` program and write ``castep_keywords.json``, and database servers). Files
of other formats whose content is HDF5 (NetCDF-4, znh5md) go through the same check
as the H5MD backend first (no external links, virtual datasets or external storage).
Old pickle-based ``.traj`` files are refused by ASE itself and never unpickled.

``keys()`` reads only what decides a frame's keys (the extxyz comment line, the
header of a ULM item), then one full frame per distinct layout.

Index cache (extxyz/xyz)
------------------------
The offsets are cached in ``<cache>/extxyz-index/<file name>-<16 hex of sha256 of
the real path>.abnidx``, where ``<cache>`` is the ``index_cache`` argument when it
is a path, else ``$ASEBYTES_NODES_CACHE_DIR``, else ``$XDG_CACHE_HOME/asebytes_nodes``
(``~/.cache/asebytes_nodes``). Not beside the data file: a new file in a DVC-tracked
folder would change it. ``index_cache=False`` turns the cache off. A folder that
cannot be written is skipped silently; stale files can be deleted at any time.

==============  ================================================================
bytes           content
==============  ================================================================
0-7             magic ``b"ABNXYZI\\n"``
8-11            header length ``h``, u32 little endian
12 to 12+h      JSON header: ``format`` (``"asebytes_nodes.xyz-index"``),
                ``version``, ``path`` (real path), ``frames`` (n), ``stamp``
                (``size``, ``mtime_ns``, sha256 ``head``/``tail`` of the first and
                last 64 KiB)
12+h to end     int64 little endian, shape (n + 1, 3): byte start, atom count and
                VEC lines of each frame; the last row's start is the end of the data
==============  ================================================================

A cache file is used when its stamp equals the file's; when the file only grew
(same head, same bytes where the old tail was) the last known frame and the new
bytes are scanned and the cache is rewritten; otherwise the file is rescanned.
A cache file of another version is ignored and replaced.

Version history
---------------
1. First layout (asebytes-nodes 0.1).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import ase.io
import numpy as np
from ase.io.formats import filetype, get_compression, ioformats, open_with_compression
from ase.io.trajectory import TrajectoryReader

from ..errors import (
    BackendNotFoundError,
    MissingExtraError,
    ReadOnlyError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnsafeStoreError,
)
from ..progress import progress
from ..registry import builtin
from ..rows import gc_paused
from ._aseframes import ExtxyzFrames, Frames, Indices, row_of, select
from ._base import ReadableBackend, path_of
from ._columns import copy_row
from ._xyzindex import check_stream

__all__ = ["UNSAFE_FORMATS", "ASEFileBackend", "sniff"]

#: ``ase.io`` formats never read, and why: reading them could run code or touch other files.
UNSAFE_FORMATS: dict[str, str] = {
    "py": "it is Python source, which reading would execute",
    "castep-cell": (
        "ASE's reader builds a CASTEP calculator, which runs the castep program (and writes "
        "castep_keywords.json) when it finds no keyword file"
    ),
    "mysql": "it names a database server, which reading would connect to",
    "postgresql": "it names a database server, which reading would connect to",
}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # at byte 0, 512, 1024, 2048 ... (after a user block)

_KEYS_BATCH = 4096  # frames whose signatures keys() reads at once


def sniff(path: Path) -> bool:
    """True when ``ase.io`` recognises a format it can read in the existing file ``path``, or
    one named by its extension that is refused as unsafe (the backend then says why).

    Used by the registry for files whose extension no backend claims; never raises.
    """
    try:
        if not os.path.isfile(path):
            return False
        if _unsafe_by_extension(Path(path)):
            return True
        fmt = ioformats.get(filetype(os.fspath(path), read=True, guess=False))
        return fmt is not None and bool(fmt.can_read)
    except Exception:  # any failure to recognise the file means "not ours"
        return False


def _unsafe_by_extension(path: Path) -> str | None:
    """The unsafe format ``path``'s extension names (ASE names ``x.py`` 'py' but cannot place it)."""
    name = path.suffix.lower().lstrip(".")
    return name if name in UNSAFE_FORMATS else None


def _detect_format(path: Path, format: str | None) -> str:
    """The ``ase.io`` format name for ``path``: ``format`` if given, else by extension and content."""
    if format is None:
        suffix = path.suffix.lower()
        if suffix in (".xyz", ".extxyz"):
            return "extxyz"
        if suffix == ".traj":
            return "traj"
        format = _unsafe_by_extension(path)
    if format is None:
        try:
            format = filetype(os.fspath(path), read=True, guess=False)
        except Exception as exc:  # ase raises several types for files it cannot place
            raise BackendNotFoundError(
                f"{path}: ase.io does not recognise the format of this file ({exc}); "
                "pass format=<an ase.io format name> or open it with another backend"
            ) from exc
    if format in UNSAFE_FORMATS:
        raise UnsafeStoreError(
            f"{path}: ase.io would read it as {format!r}, and {UNSAFE_FORMATS[format]}; asebytes_nodes "
            "reads no format that runs code or touches other files: convert it with ase.io yourself "
            "if you trust it"
        )
    fmt = ioformats.get(format)
    if fmt is None or not fmt.can_read:
        safe = (name for name, f in ioformats.items() if f.can_read and name not in UNSAFE_FORMATS)
        readable = ", ".join(sorted(safe))
        raise BackendNotFoundError(f"ase.io cannot read the format {format!r}; readable formats: {readable}")
    return str(format)


def _is_hdf5(path: Path) -> bool:
    """Does ``path`` carry the HDF5 signature where libhdf5 looks for it?"""
    size = path.stat().st_size
    with open(path, "rb") as f:
        at = 0
        while at + len(_HDF5_SIGNATURE) <= size:
            f.seek(at)
            if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return True
            at = 512 if at == 0 else 2 * at
    return False


def _refuse_hdf5_escapes(path: Path) -> None:
    """Check an HDF5 file that another library will read (see the module docstring)."""
    if not _is_hdf5(path):
        return
    try:
        import h5py
    except ImportError as exc:
        raise MissingExtraError(
            f"{path} is an HDF5 file, which is read only after h5py has checked that it points "
            'nowhere outside itself; install it with: pip install "asebytes-nodes[h5md]"'
        ) from exc
    from ._hdf5_guard import refuse_outside_links

    refuse_outside_links(h5py.File(path, "r"), path).close()


class _TrajFrames(Frames):
    """Frames of a ULM ``.traj`` file, decoded one at a time by ASE's TrajectoryReader."""

    access = "ULM item offsets"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()  # the reader seeks and reads one shared file object
        self._open()

    def _open(self) -> None:
        try:
            self._traj = TrajectoryReader(os.fspath(self._path))
        except Exception as exc:  # ULM raises many types on damaged files
            raise StoreCorruptedError(
                f"{self._path}: cannot be read as an ASE trajectory (ULM): {type(exc).__name__}: {exc}"
            ) from exc
        self._pid = os.getpid()
        self._length = len(self._traj)

    def _reader(self) -> TrajectoryReader:
        if os.getpid() != self._pid:  # after fork the file position is shared with the parent
            self._traj.close()  # this process's copy of the descriptor only
            self._open()
        return self._traj

    def __len__(self) -> int:
        return self._length

    def _each(self, indices: Indices, read: Any) -> list[Any]:
        with self._lock, progress(len(indices), f"reading {self._path.name}") as bar:
            traj = self._reader()
            found = []
            for i in indices:
                try:
                    found.append(read(traj, int(i)))
                except Exception as exc:  # ULM raises many types on damaged items
                    raise StoreCorruptedError(
                        f"{self._path}: frame {int(i)} cannot be read as an ASE trajectory item: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                bar.update()
            return found

    def rows(self, indices: Indices, keys: Sequence[str] | None) -> list[dict[str, Any]]:
        return [row_of(atoms, keys) for atoms in self._each(indices, _traj_atoms)]

    def signatures(self, indices: Indices) -> list[Hashable]:
        return self._each(indices, _traj_signature)

    def close(self) -> None:
        self._traj.close()


def _traj_atoms(traj: TrajectoryReader, i: int) -> Any:
    return traj[i]


def _traj_signature(traj: TrajectoryReader, i: int) -> Hashable:
    # The item's JSON header names every array, calculator result and info key; the
    # arrays themselves stay on disk. Constraints count only when the list is not empty.
    item = traj.backend[i]
    calc = tuple(item.calculator.keys()) if "calculator" in item else ()
    constrained = str(item.get("constraints", "[]")).strip() != "[]"
    return tuple(item.keys()), calc, tuple(item.get("info") or ()), constrained


class _LoadedFrames(Frames):
    """Every frame read by ``ase.io.read`` at open and kept as rows; reads return copies."""

    access = "ase.io.read of the whole file at open"

    def __init__(self, path: Path, fmt: str) -> None:
        images: Any = []  # an empty file holds no frames (some ASE readers refuse it instead)
        if not path.is_file() or path.stat().st_size > 0:
            if path.is_file():
                _refuse_hdf5_escapes(path)
            if fmt == "extxyz":  # compressed: ASE's reader would spin on an absurd atom count
                with open_with_compression(os.fspath(path), "rb") as stream:
                    check_stream(stream, os.fspath(path))
            try:
                images = ase.io.read(os.fspath(path), index=":", format=fmt)  # a list for ":"
            except Exception as exc:  # every ASE reader has its own errors
                raise StoreCorruptedError(
                    f"{path}: ase.io.read cannot read it as {fmt!r}: {type(exc).__name__}: {exc}"
                ) from exc
        self._rows = [row_of(atoms, None) for atoms in images]

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, indices: Indices, keys: Sequence[str] | None) -> list[dict[str, Any]]:
        return [copy_row(select(self._rows[int(i)], keys)) for i in indices]

    def signatures(self, indices: Indices) -> list[Hashable]:
        return [tuple(self._rows[int(i)]) for i in indices]


class ASEFileBackend(ReadableBackend):
    """Frames of a file that ``ase.io`` reads, read lazily and never written.

    >>> import os, tempfile
    >>> from ase.build import molecule
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "water.xyz")
    ...     ase.io.write(path, [molecule("H2O"), molecule("NH3")])
    ...     with ASEFileBackend(path, index_cache=False) as db:
    ...         print(len(db), db.read_row(1)["arrays.numbers"].tolist())
    2 [7, 1, 1, 1]

    Parameters
    ----------
    target
        The file. It must exist.
    readonly
        Accepted for the registry's sake; the store is read-only either way, and
        every write raises :class:`~asebytes_nodes.errors.ReadOnlyError`.
    format
        An ``ase.io`` format name; by default ``.xyz``/``.extxyz`` are extxyz,
        ``.traj`` is ULM, anything else is recognised by ``ase.io``.
    index_cache
        Where extxyz offsets are cached: True for the default folder, a folder
        path, or False for none (see the module docstring).
    """

    name: ClassVar[str] = "ase"
    extensions: ClassVar[tuple[str, ...]] = builtin("ase").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("ase").schemes
    supports_write: ClassVar[bool] = False

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        format: str | None = None,
        index_cache: bool | str | os.PathLike[str] = True,
    ) -> None:
        self._open(path_of(os.fspath(target)), format, index_cache)  # always read-only

    def _open(self, path: Path, format: str | None, index_cache: bool | str | os.PathLike[str]) -> None:
        self.readonly = True
        self._path = path
        self._options: dict[str, Any] = {"format": format, "index_cache": index_cache}
        if not path.exists():
            raise StoreNotFoundError(f"{path}: no such file; ASE files are opened read-only and must exist")
        self._format = _detect_format(path, format)
        compressed = get_compression(os.fspath(path))[1] is not None
        self._frames: Frames
        if self._format == "extxyz" and not compressed:
            self._frames = ExtxyzFrames(path, index_cache)
        elif self._format == "traj" and not compressed and path.stat().st_size > 0:
            self._frames = _TrajFrames(path)
        else:
            self._frames = _LoadedFrames(path, self._format)
        self._columns: dict[Hashable, list[str]] = {}  # signature -> keys of frames that have it
        self._signature_counts: Counter[Hashable] | None = None

    @property
    def format(self) -> str:
        """The ``ase.io`` format the file is read as."""
        return self._format

    def __len__(self) -> int:
        return len(self._frames)

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self._frames.rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        with gc_paused():  # column reads build thousands of frames in one call: see gc_paused
            return self._frames.rows(indices, keys)

    def _columns_of(self, index: int, signature: Hashable) -> list[str]:
        known = self._columns.get(signature)
        if known is None:
            known = self._columns[signature] = list(self.read_row(index))
        return known

    def columns(self, index: int = 0) -> list[str]:
        return list(self._columns_of(index, self._frames.signatures([index])[0]))

    def _layouts(self) -> Counter[Hashable]:
        """How many frames have each signature; read once per handle."""
        if self._signature_counts is None:
            counts: Counter[Hashable] = Counter()
            n = len(self)
            with progress(n, f"reading the keys of {self._path.name}") as bar:
                for start in range(0, n, _KEYS_BATCH):
                    batch = range(start, min(start + _KEYS_BATCH, n))
                    for i, signature in zip(batch, self._frames.signatures(batch), strict=True):
                        self._columns_of(i, signature)
                        counts[signature] += 1
                    bar.update(len(batch))
            self._signature_counts = counts
        return self._signature_counts

    def keys(self) -> list[str]:
        """Inherited; from one full frame per distinct signature (see the module docstring)."""
        return sorted({key for signature in self._layouts() for key in self._columns[signature]})

    def key_counts(self) -> dict[str, int]:
        """Inherited; from one full frame per distinct signature (see the module docstring)."""
        counts: Counter[str] = Counter()
        for signature, frames in self._layouts().items():
            for key in self._columns[signature]:
                counts[key] += frames
        return dict(sorted(counts.items()))

    def format_info(self) -> dict[str, Any]:
        """The ``ase.io`` format and how frames are found (byte offsets, ULM items, or all read at open)."""
        return {"format": self._format, "access": self._frames.access}

    def close(self) -> None:
        self._frames.close()

    @property
    def location(self) -> str:
        return os.fspath(self._path)

    def _check_writable(self) -> None:
        raise ReadOnlyError(
            f"{self._path} ({self._format}) is read through ase.io, and asebytes_nodes never writes "
            "such files; copy the frames into a writable store instead, e.g. "
            "ASEIO('frames.lmdb').extend(ASEIO(path))"
        )

    def __getstate__(self) -> dict[str, Any]:
        # The file is reopened on unpickling (the extxyz index comes from the cache). The keys
        # of each signature travel along: they hold for any file, unlike the key list itself.
        return {"path": os.fspath(self._path), **self._options, "columns": self._columns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open(Path(state["path"]), state["format"], state["index_cache"])
        self._columns = state["columns"]
