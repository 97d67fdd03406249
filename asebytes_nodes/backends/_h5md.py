"""H5MD backend: frames in H5MD 1.1 files that znh5md, MDAnalysis and pyh5md read, and H5MD 1.x
files written by other programs, read lazily with numpy over frames.

>>> from asebytes_nodes import ASEIO
>>> db = ASEIO("frames.h5", author_name="Jane Doe", compression="lzf")  # doctest: +SKIP

On-disk layout (layout version 2)
---------------------------------
One store is one particle group ``<g>`` (``particles_group``, default ``atoms``); ``T`` frames,
``W`` the largest atom count so far::

    h5md/                          version [1, 1]; author (name, email); creator (asebytes-nodes, version)
    particles/<g>/
        box/                       dimension 3; boundary ("periodic"/"none", from the first frame's pbc)
            edges/value            float64 (T, 3, 3) "Angstrom"         <- cell
            pbc/value              bool (T, 3)                          <- pbc (znh5md's per-frame extension)
        position/value             float64 (T, W, 3) "Angstrom"         <- arrays.positions
        species/value              int64 (T, W); float64 padded with NaN once atom counts differ
                                                                        <- arrays.numbers
        mass/value, charge/value   (T, W) "amu", "e"                    <- arrays.masses, initial_charges
        forces/value               (T, W, 3) "eV Angstrom-1"            <- calc.forces
        momenta/value              (T, W, 3) ASE units                  <- arrays.momenta
        velocity/value             (T, W, 3) "Angstrom ps-1": momenta / masses, for other readers
                                   (never read back; znh5md's origin attribute says "info")
        <name>/value               (T, W, ...)                          <- other arrays.* and per-atom calc.*
    observables/<g>/
        energy/value "eV", stress/value "eV Angstrom-3"                 <- calc.energy, calc.stress
        <name>/value               (T, ...) numbers, or UTF-8 strings   <- other calc.* and info.*
    parameters/asebytes_nodes/<g>/ attribute "asebytes_nodes": the JSON column table
        step, time                 int64, float64 (T,): frame i is step i at time i * timestep "fs";
                                   hard-linked as step/time into every element above
        n_atoms                    int64 (T,) true atom count of each frame
        present/c<k>               bool (T,) for a column that some frames lack
        encoded/c<k>               vlen uint8 (T,): values without an H5MD element (dicts, lists,
                                   None, string arrays, constraints ...), encoded by asebytes_nodes.codec

The table is ``{"format": "asebytes_nodes.h5md", "version": 2, "length": T, "width": W,
"padded": atom counts ever differed, "timestep": fs, "next": column id counter, "velocity": bool,
"columns": {key: {"id", "kind", "path", "dtype", "shape", "type", "count", "flags"}}}``, kinds
``atom`` (per-atom numbers), ``frame`` (per-frame arrays), ``scalar`` (one exact scalar type, see
:func:`~asebytes_nodes.codec.scalar_type_code`), ``string`` and ``object`` (encoded). Per-atom
values are padded to ``W`` with NaN (floats), 0 or False and a frame lacking a key holds the same
fill value; ``n_atoms`` and ``present`` give every row back exactly. znh5md reads the NaN padding.

A key gets the standard element above, else the part after its namespace (``info.smiles`` ->
``observables/<g>/smiles``); a name that another key holds, that a standard element reserves or
that contains ``/`` becomes the whole key with ``/`` written ``%2F`` (``arrays.forces`` next to
``calc.forces`` -> ``particles/<g>/arrays.forces``). Element groups carry znh5md's
``ASE_ENTRY_ORIGIN`` attribute (arrays, calc, info) so znh5md files them in the right namespace.

Units: ASE's (Angstrom, eV, amu, e), written as unit strings MDAnalysis knows where one exists.
Forces stay in eV/Angstrom under the name ``forces``, not the standard ``force``: MDAnalysis reads
``force`` only in units from its own table (none is eV-based) and raises on any other unit string
even with ``convert_units=False``, while znh5md ignores units and assumes eV/Angstrom. This way
znh5md reads our forces and MDAnalysis opens our files with its defaults (positions, velocities,
box). ``velocity`` is tagged ``info`` for znh5md, which would otherwise rebuild momenta from it
without its unit; znh5md takes the exact ``momenta`` instead.

Writes: append (``extend``) and replace in place (``set_rows``, ``update_rows``, ``drop_keys``); no
insert or delete, which would move every dataset. Every value is checked and encoded before the
file is opened for writing; the table (with ``length``) is written last. Every write is all or
nothing, also under kill -9 and a full disk: it goes through the undo journal of
:mod:`._hdf5_journal` (``<file>-journal`` while it runs; an interrupted write is rolled back by
the next open), writers are serialised across processes by ``<file>.lock`` (waiting, then
StoreLockedError), and readers wait out a write. Handles: one h5py handle per file per process,
shared by every backend on the file and opened read-only (reading never changes the file, but
the first open after a killed write rolls it back); a write closes it and writes through h5py's
``fileobj`` driver; every handle reopens when the file's size or mtime changes. A forked child
opens its own handle and never closes its parent's.

Reading files from other programs (H5MD 1.0 and 1.1; pre-1.0 and 2.x are refused)
-------------------------------------------------------------------------------
* Frames are the samples of ``position`` (else of the first time-dependent per-atom element);
  other elements are matched to them by ``step`` (explicit arrays, or scalar step with
  ``offset``); a frame whose step an element did not sample lacks that key (velocity and force
  sampled at other steps than position). An element without ``step``, or whose steps do not
  increase (a broken writer), is matched by index when it has one sample per frame; otherwise an
  observable is taken as time-independent (same value on every frame) and a per-atom element is
  skipped. Time-independent datasets (species, mass, box edges...) give every frame the same value.
* Per-atom elements: position -> arrays.positions, species -> arrays.numbers (int64, from integer
  or float species), mass -> arrays.masses, charge -> arrays.initial_charges, force/forces ->
  calc.forces, momenta/momentum -> arrays.momenta, velocity -> arrays.momenta as velocity x mass
  (masses from ``mass`` or ASE's table; only without a momenta element); any other element ->
  ``<origin>.<name>`` with znh5md's origin attribute, else ``arrays.<name>``. Padding: particles
  whose ``id`` equals its fill value are left out, else trailing NaN positions (or species) are.
* ``box``: edges (cuboid vector or triclinic matrix, fixed or time-dependent) -> cell, zeros when
  absent; ``boundary`` (fixed- or variable-length strings) or znh5md's ``box/pbc`` -> pbc.
* Observables of the group (``observables/<g>/*``), then global ones (``observables/*``):
  energy, and potential_energy unless the file declares the thermodynamics module (which makes it
  per particle) -> calc.energy, stress -> calc.stress, others -> ``info.<name>``; a global one
  whose key a group observable already gave is skipped. ``step`` and ``time`` of the frames ->
  info.step, info.time (in fs when the file gives a time unit). Connectivity (ASE frames have no
  bonds) and parameters are not read.
* Units: values with a unit string for length, velocity, force, energy, pressure, mass, charge or
  time are converted to ASE units; data without a unit string (reduced units) is taken as it is;
  an unknown unit string raises :class:`~asebytes_nodes.errors.StoreCorruptedError`.
* Files whose ``h5md/creator`` is ``znh5md`` are read as znh5md reads them: values are in ASE
  units whatever the label (it labels ASE velocities ``Angstrom/fs``), and an all-NaN value of
  a result or custom element means the frame has none (a frame written without a calculator).
* A per-atom element narrower than the group (znh5md writes forces only as wide as the largest
  frame that has them) is read for the frames that fit in it; larger frames lack the key.
  Elements that cannot be read are listed in ``skipped`` and named in a warning at open.
* ``skipped`` lists every element that was not read, with the reason. A file with several
  particle groups needs ``particles_group=`` (the error lists them; see :meth:`list_groups`).
  ``check()`` names where a file departs from H5MD 1.1 (metadata, box attributes, elements
  without or with decreasing steps) and, for stores written here, from the column table.

Files other programs wrote are read-only: writes raise
:class:`~asebytes_nodes.errors.UnsupportedOperationError` (copy the frames into a new file).
H5MD stored in a Zarr v2 directory ("zarrmd", as zarrtraj writes it) is read the same way through
the h5py-like view in :mod:`._h5md_zarr` (needs zarr), and is always read-only.

Version history
---------------
1. First layout (asebytes-nodes 0.1).
2. Fixed-size datasets carry HDF5's ``fletcher32`` checksum per chunk (a damaged chunk raises
   StoreCorruptedError naming dataset and rows; ``check()`` lists them); the table has its
   CRC-32 in the attribute ``asebytes_nodes_crc32``; new files use HDF5 1.8's object formats
   (checksummed metadata). Same groups and datasets otherwise: version 1 stores are read, and
   written as version 1 (datasets they gain get checksums). Strings and encoded values
   (variable-length, in HDF5's global heap) have no checksum.
"""

from __future__ import annotations

import copy
import json
import operator
import os
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import units as ase_units
from ase.data import atomic_masses

from .. import __version__
from ..codec import decode_value, encode_value, scalar_type_code, type_code_dtype
from ..errors import (
    ASEBytesError,
    FormatVersionError,
    InvalidDataError,
    MissingExtraError,
    SerializationError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnknownKeyError,
    UnsupportedOperationError,
)
from ..rows import expand_rows, gc_paused
from ..validation import PER_ATOM_CALC
from ._base import MISSING, ColumnInfo, WritableBackend, check_format_record, path_of
from ._h5md_zarr import ZarrDataset, ZarrGroup, is_zarr_dir, open_zarr
from ._hdf5_guard import refuse_outside_links
from ._hdf5_journal import (
    CHECKSUM,
    checked,
    checksum_problems,
    estimate,
    journaled,
    reading,
    recover,
    seal,
    store_lock,
    unseal,
)

try:
    import h5py
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError('The H5MD backend needs h5py. Run: pip install "asebytes-nodes[h5md]"') from exc

__all__ = ["H5MDBackend", "sniff"]

FORMAT_NAME = "asebytes_nodes.h5md"
FORMAT_VERSION = 2
CREATOR = "asebytes-nodes"
_PRIVATE = "parameters/asebytes_nodes"
_TABLE = "asebytes_nodes"
_ORIGIN = "ASE_ENTRY_ORIGIN"  # znh5md's hint: which Atoms namespace an element belongs to
_CHUNK_BYTES = 1 << 15
_NUMERIC = frozenset("biuf")
_VLEN_BYTES = h5py.vlen_dtype(np.dtype(np.uint8))
_EMPTY_BLOB = np.zeros(0, np.uint8)
_DTYPE, _SHAPE = operator.attrgetter("dtype"), operator.attrgetter("shape")
_VELOCITY_UNIT = ("Angstrom ps-1", 1000 * ase_units.fs)  # ASE velocity -> Angstrom/ps

# Where keys with a standard place go; everything else goes by kind and name.
_PLACES: dict[str, tuple[str, str]] = {
    "arrays.positions": ("particles", "position"),
    "arrays.numbers": ("particles", "species"),
    "arrays.masses": ("particles", "mass"),
    "arrays.initial_charges": ("particles", "charge"),
    "arrays.momenta": ("particles", "momenta"),
    "calc.forces": ("particles", "forces"),
    "calc.energy": ("observables", "energy"),
    "calc.stress": ("observables", "stress"),
    "cell": ("particles", "box/edges"),
    "pbc": ("particles", "box/pbc"),
}
_RESERVED = set(_PLACES.values()) | {("particles", n) for n in ("box", "force", "velocity", "id", "image")}
_UNITS = {
    "arrays.positions": "Angstrom",
    "cell": "Angstrom",
    "arrays.masses": "amu",
    "arrays.initial_charges": "e",
    "calc.forces": "eV Angstrom-1",
    "calc.energy": "eV",
    "calc.free_energy": "eV",
    "calc.energies": "eV",
    "calc.stress": "eV Angstrom-3",
    "calc.stresses": "eV Angstrom-3",
    "calc.dipole": "e Angstrom",
    "calc.charges": "e",
}
# Reading other programs' files: element name -> key, in order of precedence.
_PARTICLE_KEYS = {
    "position": "arrays.positions",
    "species": "arrays.numbers",
    "mass": "arrays.masses",
    "charge": "arrays.initial_charges",
    "force": "calc.forces",
    "forces": "calc.forces",
    "momenta": "arrays.momenta",
    "momentum": "arrays.momenta",
    "velocity": "arrays.momenta",
}
# Keys whose NaN is a value even in znh5md's files (padding is told apart by the mask).
_FRAME_AXIS_KEYS = frozenset({"arrays.positions", "arrays.numbers", "cell", "pbc"})
_QUANTITY = {
    "arrays.positions": "length",
    "cell": "length",
    "arrays.masses": "mass",
    "arrays.initial_charges": "charge",
    "calc.forces": "force",
    "calc.energy": "energy",
    "calc.stress": "pressure",
}

# Units: factor to ASE units and dimension (length, mass, time, charge) of each symbol.
_L, _M, _T, _Q = (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)
_E = (2, 1, -2, 0)
_SYMBOLS: dict[str, tuple[float, tuple[int, ...]]] = {
    **dict.fromkeys(("Angstrom", "angstrom", "A", "Å"), (1.0, _L)),
    "nm": (10.0, _L),
    "pm": (0.01, _L),
    "fm": (1e-5, _L),
    "m": (ase_units.m, _L),
    **dict.fromkeys(("Bohr", "bohr"), (ase_units.Bohr, _L)),
    "fs": (ase_units.fs, _T),
    "ps": (1e3 * ase_units.fs, _T),
    "ns": (1e6 * ase_units.fs, _T),
    "s": (ase_units.s, _T),
    **dict.fromkeys(("amu", "u", "Da"), (1.0, _M)),
    "g": (ase_units.kg / 1000, _M),
    "kg": (ase_units.kg, _M),
    "eV": (1.0, _E),
    "meV": (1e-3, _E),
    "J": (ase_units.J, _E),
    "kJ": (ase_units.kJ, _E),
    "kcal": (ase_units.kcal, _E),
    **dict.fromkeys(("Hartree", "Ha"), (ase_units.Hartree, _E)),
    "mol": (ase_units.mol, (0, 0, 0, 0)),
    "e": (1.0, _Q),
    "C": (ase_units.C, _Q),
    **dict.fromkeys(("N", "Newton"), (ase_units.J / ase_units.m, (1, 1, -2, 0))),
    "Pa": (ase_units.Pascal, (-1, 1, -2, 0)),
    "GPa": (ase_units.GPa, (-1, 1, -2, 0)),
    "bar": (ase_units.bar, (-1, 1, -2, 0)),
}
_DIMENSIONS = {
    "length": _L,
    "velocity": (1, 0, -1, 0),
    "force": (1, 1, -2, 0),
    "energy": _E,
    "pressure": (-1, 1, -2, 0),
    "mass": _M,
    "charge": _Q,
    "time": _T,
}
_SYMBOL = re.compile(r"^([A-Za-zÅ]+)(?:\^?(-?\d+))?$")


def unit_factor(unit: str, quantity: str) -> float:
    """Factor from ``unit`` to ASE units for a ``quantity`` ("time": to fs).

    Understands H5MD's ``kJ mol-1 nm-1`` and the ``eV/Angstrom^3`` or ``kJ/(mol*nm)`` spellings.

    >>> round(unit_factor("kJ mol-1 Angstrom-1", "force"), 6)
    0.010364
    >>> unit_factor("nm", "length")
    10.0
    """
    factor, dims, sign = 1.0, np.zeros(4, int), 1
    for token in unit.replace("/", " / ").replace("(", " ").replace(")", " ").replace("*", " ").split():
        if token == "/":
            sign = -1
            continue
        match = _SYMBOL.match(token)
        if match is None or match.group(1) not in _SYMBOLS:
            raise ValueError(f"unknown unit symbol {token!r}")
        scale, dim = _SYMBOLS[match.group(1)]
        power = sign * int(match.group(2) or 1)
        factor *= scale**power
        dims += power * np.array(dim)
    if tuple(dims) != _DIMENSIONS[quantity]:
        raise ValueError(f"{unit!r} is not a unit of {quantity}")
    return factor / ase_units.fs if quantity == "time" else factor


def sniff(path: str | os.PathLike[str]) -> bool:
    """Is ``path`` an HDF5 file with an ``/h5md`` group? Never raises, never writes."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return isinstance(f.get("h5md", getlink=True), h5py.HardLink) and _is_group(f["h5md"])
    except Exception:
        return False


# -- one shared handle per file per process ----------------------------------------------------
class _SharedFile:
    """The h5py handle on one file in this process, shared by every backend open on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: Any = None
        self.pid = os.getpid()
        self.generation = 0  # bumped whenever the handle is reopened: content may have changed
        self.stamp: tuple[int, int] | None = None
        self.users = 0
        self.lock = threading.RLock()

    def _forget_if_forked(self) -> None:
        if self.pid != os.getpid():  # the parent's handle is left alone (closing it could unlock
            _INHERITED.append(self.file)  # or flush the parent's file); this process opens its own
            self.file, self.pid, self.stamp = None, os.getpid(), None
            self.generation += 1

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reader(self) -> Any:
        """The read-only handle (None while the file does not exist), reopened if the file changed."""
        with self.lock:
            self._forget_if_forked()
            stamp = self._stat()
            if (self.file is None or stamp != self.stamp) and recover(self.path):  # a killed write
                stamp = self._stat()
            if self.file is not None and stamp != self.stamp:
                self.file.close()
                self.file = None
                self.generation += 1
            if self.file is None and stamp is not None and is_zarr_dir(self.path):
                self.file = open_zarr(self.path)  # H5MD in Zarr v2 ("zarrmd"): read-only
                self.stamp = stamp
                self.generation += 1
            if self.file is None and stamp is not None:
                try:
                    self.file = refuse_outside_links(h5py.File(self.path, "r"), self.path)
                except OSError as exc:
                    if h5py.is_hdf5(self.path):
                        raise
                    raise StoreCorruptedError(f"{self.path}: cannot open as HDF5 ({exc})") from exc
                self.stamp = stamp
                self.generation += 1
            return self.file

    @contextmanager
    def writer(self, nbytes: int) -> Iterator[Any]:
        """The file opened for writing (created if needed) for one all-or-nothing write of about
        ``nbytes``, closed afterwards (see :mod:`._hdf5_journal`)."""
        with self.lock:
            self._forget_if_forked()
            if self.file is not None:
                self.file.close()
                self.file = None
            try:
                with journaled(self.path, nbytes) as handle:
                    yield handle
            finally:
                self.stamp = None
                self.generation += 1


_FILES: dict[str, _SharedFile] = {}
_FILES_LOCK = threading.Lock()
_INHERITED: list[Any] = []


def _acquire(path: Path) -> _SharedFile:
    key = os.path.realpath(path)
    with _FILES_LOCK:
        shared = _FILES.get(key)
        if shared is None:
            shared = _FILES[key] = _SharedFile(path)
        shared.users += 1
        return shared


def _release(key: str, shared: _SharedFile) -> None:
    with _FILES_LOCK:
        shared.users -= 1
        if shared.users <= 0 and _FILES.get(key) is shared:
            del _FILES[key]
            with shared.lock:
                if shared.file is not None and shared.pid == os.getpid():
                    shared.file.close()
                shared.file = None


# -- what to read: one column per key ------------------------------------------------------------
@dataclass
class _Col:
    """How to read one key: from a dataset, a constant, or values computed at open."""

    key: str
    kind: str  # atom | frame | scalar | string | object
    path: str | None = None  # the value dataset
    rows: np.ndarray | None = None  # file row of each frame, -1 where the element has no sample
    const: Any = None  # raw value of a time-independent element
    values: np.ndarray | None = None  # one value per frame, computed at open (steps, times)
    flags: str | None = None  # own files: presence flags of a column some frames lack
    dtype: str | None = None  # dtype handed out (species may be stored as float)
    code: str | None = None  # own files: exact scalar type code
    scale: float = 1.0  # unit factor to ASE units
    cuboid: bool = False  # box edges stored as a vector
    velocity: bool = False  # another program's velocity, handed out as momenta
    json: bool = False  # znh5md's JSON text
    element: str = ""  # other files: the element read
    width: int | None = None  # other files: particles of a per-atom element narrower than the group
    nan_missing: bool = False  # znh5md files: an all-NaN value means "this frame has none"


@dataclass
class _Plan:
    length: int = 0
    cols: dict[str, _Col] = field(default_factory=dict)
    counts: np.ndarray | None = None  # own files: atom count of each frame
    mask: tuple[_Col, Any] | None = None  # other files: element marking padding, and its fill value
    table: dict[str, Any] | None = None  # own files: the column table
    skipped: dict[str, str] = field(default_factory=dict)
    znh5md: bool = False  # other files: written by znh5md (units and NaN read its way)


class H5MDBackend(WritableBackend):
    """Frames in an H5MD file (``.h5``, ``.h5md``, ``.hdf5``), readable by znh5md and MDAnalysis.

    Parameters
    ----------
    path
        The file; created on the first write. Files written by other programs open read-only.
    readonly
        Refuse every write.
    particles_group
        The particle group to use; default: the file's only group, or ``atoms`` for a new file.
    author_name, author_email
        Written to ``h5md/author`` when the file is created.
    compression, compression_opts
        ``"gzip"`` (default, readable by every HDF5 program; level 0-9, default 4), ``"lzf"``
        (faster, h5py only) or ``None``.
    timestep
        Time between frames in fs, written to the ``time`` datasets when the store is created.
    """

    name: ClassVar[str] = "h5md"
    extensions: ClassVar[tuple[str, ...]] = (".h5", ".h5md", ".hdf5")
    supports_drop_keys: ClassVar[bool] = True
    read_batch_size: ClassVar[int] = 16384

    def __init__(
        self,
        path: str | os.PathLike[str],
        readonly: bool = False,
        *,
        particles_group: str | None = None,
        author_name: str = "N/A",
        author_email: str | None = None,
        compression: str | None = "gzip",
        compression_opts: int | None = None,
        timestep: float = 1.0,
    ) -> None:
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"unknown compression {compression!r}; use 'gzip', 'lzf' or None")
        if particles_group is not None and (not particles_group or "/" in particles_group):
            raise ValueError(f"particles_group must be a name without '/', got {particles_group!r}")
        self._path = path_of(os.fspath(path))
        self.readonly = readonly
        self._options: dict[str, Any] = {
            "particles_group": particles_group,
            "author_name": author_name,
            "author_email": author_email,
            "compression": compression,
            "compression_opts": compression_opts,
            "timestep": timestep,
        }
        key = os.path.realpath(self._path)
        self._shared = _acquire(self._path)
        self._finalizer = weakref.finalize(self, _release, key, self._shared)
        self._generation = -1
        self._datasets: dict[str, Any] = {}
        try:
            with self._shared.lock, reading(self._path):
                self._load()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._datasets = {}
        self._finalizer()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self._path), "readonly": self.readonly, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["readonly"], **state["options"])  # type: ignore[misc]

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def particles_group(self) -> str:
        """The particle group this store reads and writes."""
        return self._group

    @property
    def skipped(self) -> dict[str, str]:
        """Elements of another program's file that were not read, with the reason."""
        return dict(self._plan.skipped)

    @staticmethod
    def list_groups(path: str | os.PathLike[str]) -> list[str]:
        """Names of the particle groups in the H5MD file at ``path``, sorted."""
        target = path_of(os.fspath(path))
        if not target.exists():
            raise StoreNotFoundError(f"{target}: no such file")
        if not sniff(target):
            raise StoreCorruptedError(f"{target}: not an H5MD file (no /h5md group)")
        with refuse_outside_links(h5py.File(target, "r"), target) as f:
            return _groups(f)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the file's lock while reading: a write by another thread in this process swaps the
        handle and must not be seen half done; another process's write is waited out."""
        with self._shared.lock, reading(self._path):
            self._file()
            yield

    def _file(self) -> Any:
        """The shared read handle; reloads what to read when the file changed."""
        if not self._finalizer.alive:
            raise ValueError(f"{self._path}: the store is closed")
        handle = self._shared.reader()
        if self._shared.generation != self._generation:
            self._load(handle)
        return handle

    def _load(self, handle: Any = None) -> None:
        handle = self._shared.reader() if handle is None else handle
        self._generation = self._shared.generation
        self._datasets = {}
        self._own = True
        self._version, self._creator = (1, 1), {"name": CREATOR, "version": __version__}
        requested = self._options["particles_group"]
        self._group = requested or "atoms"
        self._plan = _Plan()
        if handle is None:
            if self.readonly:
                raise StoreNotFoundError(f"{self._path}: no such H5MD file (opened read-only)")
            return
        h5md = handle.get("h5md")
        if not _is_group(h5md):
            if len(handle) == 0 and not self.readonly:
                return
            raise StoreCorruptedError(
                f"{self._path}: an HDF5 file without an /h5md group, so not H5MD; open it with the "
                "backend that wrote it (for MDTraj files: backend='mdtraj')"
            )
        self._version = _check_version(self._path, h5md)
        creator = h5md.get("creator")
        self._creator = {k: _text(v) for k, v in creator.attrs.items()} if _is_group(creator) else {}
        self._own = self._creator.get("name") == CREATOR
        groups = _groups(handle)
        if requested is None and len(groups) > 1:
            raise UnknownKeyError(
                f"{self._path} has {len(groups)} particle groups ({', '.join(groups)}); pick one with "
                "particles_group=..."
            )
        self._group = requested or (groups[0] if groups else "atoms")
        raw = handle.get(f"{_PRIVATE}/{self._group}")
        table = unseal(raw.attrs, _TABLE, str(self._path)) if raw is not None else None
        try:
            if table is not None:
                self._plan = _own_plan(self._path, handle, self._group, table)
            elif self._group in groups:
                self._own = False
                self._plan = _foreign_plan(handle, self._group, self._creator.get("name") == "znh5md")
                if self._plan.skipped:
                    warnings.warn(
                        f"{self._path}: elements not read: "
                        + "; ".join(f"{k} ({why})" for k, why in sorted(self._plan.skipped.items())),
                        UserWarning,
                        stacklevel=2,
                    )
            elif self.readonly or not self._own:
                found = ", ".join(groups) or "none"
                raise UnknownKeyError(f"{self._path} has no particle group {self._group!r}; it has: {found}")
        except (KeyError, ValueError, TypeError, OSError) as exc:
            if isinstance(exc, ASEBytesError):
                raise
            raise StoreCorruptedError(
                f"{self._path}: cannot read particle group {self._group!r} as H5MD ({exc})"
            ) from exc

    def _dataset(self, path: str) -> Any:
        ds = self._datasets.get(path)
        if ds is None:
            ds = self._datasets[path] = self._file()[path]
        return ds

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._reading():
            return self._plan.length

    def keys(self) -> list[str]:
        with self._reading():
            return sorted(self._plan.cols)

    def schema(self) -> dict[str, ColumnInfo]:
        with self._reading():
            plan = self._plan
        if plan.table is None:
            return super().schema()
        out = {}
        for key in sorted(plan.cols):
            spec = plan.table["columns"][key]
            kind = spec["kind"]
            if kind in ("object", "string"):
                out[key] = ColumnInfo("object" if kind == "object" else "str", (), False)
            else:
                shape = tuple(spec["shape"])
                dtype = str(type_code_dtype(spec["type"]) if kind == "scalar" else np.dtype(spec["dtype"]))
                out[key] = ColumnInfo(dtype, (-1, *shape) if kind == "atom" else shape, kind == "atom")
        return out

    def key_counts(self) -> dict[str, int]:
        with self._reading():
            plan = self._plan
        if plan.table is not None:
            return {key: int(plan.table["columns"][key]["count"]) for key in sorted(plan.cols)}
        return super().key_counts()

    def format_info(self) -> dict[str, Any]:
        with self._reading():
            info: dict[str, Any] = {"h5md": ".".join(map(str, self._version)), "creator": self._creator}
            if self._plan.table is not None:
                info.update(format=FORMAT_NAME, version=self._plan.table["version"])
            return {**info, "particles_group": self._group}

    def check(self) -> list[str]:
        """H5MD conformance of the particle group (metadata, box, elements' value, step and
        time), this layout's own invariants for stores it wrote, then every row."""
        with self._reading():
            handle = self._file()
            damaged = checksum_problems(handle)  # damaged chunks first: the checks below read them
            if damaged:
                return damaged
            problems = [] if handle is None else _conformance(handle, self._group)
            if self._plan.table is not None:
                problems += _invariants(handle, self._group, self._plan)
        return problems or super().check()

    def columns(self, index: int = 0) -> list[str]:
        with self._reading():
            frame = np.array([index])
            cols = self._plan.cols
            keys = [
                key
                for key, col in cols.items()
                if (present := self._present(col, frame)) is None or bool(present[0])
            ]
        # Whether znh5md's NaN or a narrower element gives this frame a value shows only in the value.
        unsure = [k for k in keys if cols[k].nan_missing or cols[k].width is not None]
        if unsure:
            found = self.read_row(index, unsure)
            keys = [k for k in keys if k not in unsure or k in found]
        return keys

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return []
        with self._reading():
            frames, where = _sorted_unique(idx)
            cols = self._plan.cols
            wanted = (
                list(cols.values()) if keys is None else [cols[k] for k in dict.fromkeys(keys) if k in cols]
            )
            sizes = self._sizes(frames) if any(col.kind == "atom" for col in wanted) else None
            rows: list[dict[str, Any]] = [{} for _ in frames]
            for col in wanted:
                key = col.key
                for row, value in zip(rows, self._column(col, frames, sizes), strict=True):
                    if value is not MISSING:
                        row[key] = value
            if where is None:
                return rows
            if len(frames) == len(idx):
                return [rows[j] for j in where.tolist()]
            return expand_rows(rows, where)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        with self._reading():
            col = self._plan.cols.get(key)
            if col is None or idx.size == 0:
                return [MISSING] * len(idx)
            frames, where = _sorted_unique(idx)
            values = self._column(col, frames, self._sizes(frames) if col.kind == "atom" else None)
            if col.kind == "frame" and not any(v is MISSING for v in values):
                stacked = np.stack(values)  # one array, fresh memory
                return stacked if where is None else stacked[where]
            if where is None:
                return values
            if len(frames) == len(idx):
                return [values[j] for j in where.tolist()]
            return [copy.deepcopy(values[j]) for j in where.tolist()]  # repeated rows never share arrays

    def _present(self, col: _Col, frames: np.ndarray) -> np.ndarray | None:
        """Which of ``frames`` carry the column (None: all of them)."""
        if col.flags is not None:
            flags = _take(self._dataset(col.flags), frames).astype(bool)
            return None if flags.all() else flags
        if col.rows is not None:
            found = col.rows[frames] >= 0
            return None if found.all() else found
        return None

    def _sizes(self, frames: np.ndarray) -> np.ndarray | None:
        """Atom counts (1-d) or masks of real particles (2-d) of ``frames``; None: no padding."""
        plan = self._plan
        if plan.counts is not None:
            return plan.counts[frames]
        if plan.mask is None:
            return None
        col, fill = plan.mask
        raw = np.asarray(self._raw(col, frames))
        if fill is not None:
            return raw != fill
        valid = ~np.isnan(raw.reshape(len(frames), raw.shape[1], -1)).all(axis=2)
        return np.where(valid.any(axis=1), raw.shape[1] - np.argmax(valid[:, ::-1], axis=1), 0)

    def _column(self, col: _Col, frames: np.ndarray, sizes: np.ndarray | None) -> list[Any]:
        """Values of ``col`` at sorted unique ``frames``, MISSING where a frame lacks it."""
        present = self._present(col, frames)
        if col.width is not None and sizes is not None:  # frames with more particles lack it
            fits = sizes <= col.width if sizes.ndim == 1 else ~sizes[:, col.width :].any(axis=1)
            present = fits if present is None else present & fits
            sizes = sizes if sizes.ndim == 1 else sizes[:, : col.width]
        picked = frames if present is None else frames[present]
        part = sizes if sizes is None or present is None else sizes[present]
        if col.velocity:
            values = self._momenta(col, picked, part)
        else:
            values = _convert(col, self._raw(col, picked), part)
        if col.nan_missing:
            values = [MISSING if _all_nan(v) else v for v in values]
        if present is None:
            return values
        out: list[Any] = [MISSING] * len(frames)
        for j, value in zip(np.flatnonzero(present).tolist(), values, strict=True):
            out[j] = value
        return out

    def _raw(self, col: _Col, frames: np.ndarray) -> Any:
        """The stored values of ``frames`` (all carrying the column) as one array."""
        if col.values is not None:
            return col.values[frames]
        if col.path is None:
            return np.repeat(np.asarray(col.const)[None], len(frames), axis=0)
        ds = self._dataset(col.path)
        return _take(
            ds.asstr() if col.kind == "string" else ds, frames if col.rows is None else col.rows[frames]
        )

    def _momenta(self, col: _Col, frames: np.ndarray, sizes: np.ndarray | None) -> list[Any]:
        """Another program's velocities times masses: ASE keeps momenta, not velocities."""
        velocities = _convert(col, self._raw(col, frames), sizes)
        cols = self._plan.cols
        masses = self._column(cols["arrays.masses"], frames, sizes) if "arrays.masses" in cols else None
        numbers = self._column(cols["arrays.numbers"], frames, sizes) if "arrays.numbers" in cols else None
        out = []
        for j, v in enumerate(velocities):
            m = MISSING if masses is None else masses[j]
            if m is MISSING:
                z = MISSING if numbers is None else numbers[j]
                m = np.ones(len(v)) if z is MISSING else atomic_masses[z]
            out.append(v * m[:, None])
        return out

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        if not rows:
            return
        with gc_paused():  # thousands of new objects per batch: see gc_paused
            counts = np.array([_n_atoms(row) for row in rows], np.int64)
            self._write(None, list(rows), counts, full=True)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        last = dict(zip(np.asarray(indices, np.int64).tolist(), rows, strict=True))  # the last write wins
        where = np.array(sorted(last), np.int64)
        picked = [last[i] for i in where.tolist()]
        self._write(where, picked, np.array([_n_atoms(row) for row in picked], np.int64), full=True)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        merged: dict[int, dict[str, Any]] = {}
        for i, update in zip(np.asarray(indices, np.int64).tolist(), updates, strict=True):
            merged.setdefault(i, {}).update(update)
        where = np.array(sorted(merged), np.int64)
        self._write(where, [merged[i] for i in where.tolist()], None, full=False)

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        where = np.unique(np.asarray(indices, np.int64))
        self._write(where, [{} for _ in where], None, full=False, drop=keys)

    def _write(
        self,
        where: np.ndarray | None,
        rows: list[dict[str, Any]],
        counts: np.ndarray | None,
        full: bool,
        drop: Sequence[str] = (),
    ) -> None:
        """Plan and write under the file's lock: one writer at a time in this process, each
        planning from the store as it is (``where`` None: append); one writer per file across
        processes (the store lock, held from planning to commit)."""
        with self._shared.lock, store_lock(self._path).exclusive(), reading(self._path):
            self._file()
            if where is None:
                where = np.arange(self._plan.length, self._plan.length + len(rows))
            self._apply(where, rows, counts, full, [key for key in drop if key in self._plan.cols])

    def _apply(
        self,
        where: np.ndarray,
        rows: list[dict[str, Any]],
        counts: np.ndarray | None,
        full: bool,
        drop: Sequence[str],
    ) -> None:
        """Write ``rows`` at the sorted unique rows ``where`` (rows past the end are appended).

        ``full``: each row replaces a whole frame (keys it lacks are cleared); else only the
        given keys change. ``drop`` clears keys. Every value is checked and encoded first.
        """
        if not len(where):
            return
        if not self._own:
            raise UnsupportedOperationError(
                f"{self._path} was written by another program; asebytes-nodes writes only H5MD files "
                "it created. Copy the frames into a new file: ASEIO('copy.h5').extend(ASEIO(path))"
            )
        plan = self._plan
        table = copy.deepcopy(plan.table) if plan.table is not None else _new_table(self._options["timestep"])
        n0 = table["length"]
        n1 = max(n0, int(where[-1]) + 1)
        all_counts = np.zeros(n1, np.int64)
        if plan.counts is not None:
            all_counts[:n0] = plan.counts
        if counts is not None:
            all_counts[where] = counts
        width = max(table["width"], int(all_counts.max(initial=0)))
        table.update(length=n1, width=width, padded=table["padded"] or bool((all_counts != width).any()))
        columns = table["columns"]
        batches: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
        new: set[str] = set() if table["velocity"] else {"velocity"}  # datasets this write creates
        keys = dict.fromkeys([*(columns if full else ()), *rows[0]])
        if not set().union(*rows) <= keys.keys():  # later rows bring keys of their own: keep their order
            keys.update(dict.fromkeys(k for row in rows for k in row))
        for key in keys:
            values = [row.get(key, MISSING) for row in rows]
            present = np.fromiter((v is not MISSING for v in values), bool, len(values))
            at = where
            if not full and not present.all():
                at, values, present = (
                    where[present],
                    [v for v in values if v is not MISSING],
                    present[present],
                )
            spec = columns.get(key)
            if spec is None:
                spec = columns[key] = _new_spec(key, values, present, all_counts[at], table, self._group)
                new.add(key)
            batches[key] = (
                at,
                present,
                _encode(key, spec, values, present, all_counts[at], table, key in new, _labels(at, n0)),
            )
        for key in drop:
            absent = np.zeros(len(where), bool)
            data = _encode(key, columns[key], [MISSING] * len(where), absent, all_counts[where], table, True)
            batches[key] = (where, absent, data)
        velocity = None
        touched = {"arrays.momenta", "arrays.masses", "arrays.numbers"}
        if "arrays.momenta" in columns and (full or touched & set(batches)):
            table["velocity"] = True
            velocity = self._velocities(where, rows, all_counts[where], width, full, drop)
        payload = estimate([velocity, *(data for _, _, data in batches.values())])
        nbytes = 2 * payload + len(batches) * (1 << 17)  # data, its journal, and chunk rewrites
        with self._shared.writer(nbytes) as f, _Journal(f) as journal:
            writer = _Writer(f, journal, self._group, self._options, table, n0, new)
            writer.layout(rows[0].get("pbc") if full else None)
            writer.clock(where if counts is not None else where[:0], all_counts)
            for key, spec in columns.items():
                at, present, data = batches.get(key, (where[:0], np.zeros(0, bool), None))
                writer.column(key, spec, at, present, data)
            if table["velocity"]:
                writer.velocity(where, velocity)
            writer.commit()

    def _velocities(
        self,
        where: np.ndarray,
        rows: list[dict[str, Any]],
        counts: np.ndarray,
        width: int,
        full: bool,
        drop: Sequence[str],
    ) -> np.ndarray:
        """The derived velocity rows (Angstrom/ps, NaN padded) of the frames being written."""
        needed = ["arrays.momenta", "arrays.masses", "arrays.numbers"]
        stored = [{} for _ in rows] if full else self.read_rows(where, needed)
        out = np.full((len(rows), width, 3), np.nan)
        for j, (row, old) in enumerate(zip(rows, stored, strict=True)):
            merged = {k: v for k, v in {**old, **row}.items() if k not in drop}
            momenta, n = merged.get("arrays.momenta"), int(counts[j])
            if momenta is None or not n:
                continue
            masses = merged.get("arrays.masses")
            if masses is None:
                masses = atomic_masses[merged.get("arrays.numbers", np.zeros(n, np.int64))]
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero mass: inf, as ASE would give
                out[j, :n] = momenta / masses[:, None] * _VELOCITY_UNIT[1]
        return out


# -- the write session ---------------------------------------------------------------------------
class _Journal:
    """The structural edits of one write (groups made, datasets replaced). A failed write needs no
    undo here: :func:`._hdf5_journal.journaled` puts the file's old bytes back."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.backups: dict[str, str] = {}
        self.groups: dict[str, Any] = {}  # groups known to exist (HDF5 lookups of missing paths are slow)

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            for backup in self.backups.values():
                del self.f[backup]

    def group(self, path: str, new: bool = False) -> Any:
        """The group at ``path`` (``new``: known not to exist), created and logged with its parents."""
        group = self.groups.get(path)
        if group is None:
            group = None if new else self.f.get(path)
            if group is None:
                parent = path.rpartition("/")[0]
                if parent:
                    self.group(parent)
                group = self.f.create_group(path)
            self.groups[path] = group
        return group

    def dataset(self, path: str, **kwargs: Any) -> Any:
        parent, _, name = path.rpartition("/")
        return self.group(parent).create_dataset(name, **kwargs)

    def resize(self, ds: Any, shape: tuple[int, ...]) -> None:
        if ds.shape != shape:
            ds.resize(shape)

    def set_aside(self, path: str) -> None:
        """Move ``path`` out of the way; deleted when the write succeeds."""
        backup = f"{path}.replaced"
        self.f.move(path, backup)
        self.backups[path] = backup


class _Writer:
    """Creates, grows and fills the datasets of one write session."""

    def __init__(
        self,
        f: Any,
        journal: _Journal,
        group: str,
        options: dict[str, Any],
        table: dict[str, Any],
        n0: int,
        fresh: set[str],
    ) -> None:
        self.f, self.journal, self.group, self.options, self.table = f, journal, group, options, table
        self.n0 = n0  # committed length before this write
        self.fresh = fresh  # keys (and "velocity") whose datasets this write creates
        self.private = f"{_PRIVATE}/{group}"

    def layout(self, pbc: Any) -> None:
        """The h5md metadata, the particle group with its box, and the private group."""
        journal = self.journal
        if "h5md" not in self.f:
            h5md = journal.group("h5md")
            h5md.attrs["version"] = np.array([1, 1], np.int32)
            author = h5md.create_group("author")
            author.attrs["name"] = self.options["author_name"]
            if self.options["author_email"] is not None:
                author.attrs["email"] = self.options["author_email"]
            creator = h5md.create_group("creator")
            creator.attrs["name"] = CREATOR
            creator.attrs["version"] = __version__
        path = f"particles/{self.group}/box"
        if path not in self.f:
            box = journal.group(path)
            periodic = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool).reshape(3)
            box.attrs["dimension"] = np.int32(3)
            box.attrs["boundary"] = ["periodic" if p else "none" for p in periodic]
        journal.group(self.private)

    def _private(self, name: str, dtype: Any, exists: bool, fill: Any = None) -> Any:
        """The private per-frame dataset ``name``, grown to the table's length."""
        path, n = f"{self.private}/{name}", self.table["length"]
        if exists:
            ds = self.f[path]
            self.journal.resize(ds, (n,))
            return ds
        rows = max(1, _CHUNK_BYTES // np.dtype(dtype).itemsize)
        extra = {} if fill is None else {"fillvalue": fill}
        return self.journal.dataset(
            path, shape=(n,), maxshape=(None,), chunks=(rows,), dtype=dtype, **extra, **self._filters(dtype)
        )

    def _filters(self, dtype: Any) -> dict[str, Any]:
        """Compression options of every dataset, and a checksum per chunk (fixed-size values
        only: HDF5 keeps variable-length ones outside the chunk)."""
        checksum = {} if np.dtype(dtype).kind == "O" else CHECKSUM
        if self.options["compression"] is None:
            return checksum
        return {
            "compression": self.options["compression"],
            "compression_opts": self.options["compression_opts"],
            **checksum,
        }

    def clock(self, where: np.ndarray, counts: np.ndarray) -> None:
        """step and time of new frames; atom counts of the frames at ``where``."""
        n0, n1 = self.n0, self.table["length"]
        steps = np.arange(n0, n1, dtype=np.int64)
        self._private("step", np.int64, n0 > 0)[n0:n1] = steps
        time = self._private("time", np.float64, n0 > 0)
        if not n0:
            time.attrs["unit"] = "fs"
        time[n0:n1] = steps * float(self.table["timestep"])
        n_atoms = self._private("n_atoms", np.int64, n0 > 0)
        if len(where):
            _put(n_atoms, where, counts[where])

    def _value(
        self,
        path: str,
        dtype: np.dtype[Any],
        tail: tuple[int, ...],
        atom: bool,
        origin: str | None,
        unit: str | None,
        exists: bool,
    ) -> Any:
        """The value dataset at ``path`` shaped (length[, width], *tail), created as an element."""
        n, width = self.table["length"], self.table["width"]
        shape = (n, width, *tail) if atom else (n, *tail)
        ds = self.f[path] if exists else None
        old = None
        if ds is not None and ds.dtype != dtype and dtype.kind == "f":  # species turn float once padded
            old = ds[...]
            self.journal.set_aside(path)
            ds = None
        if ds is not None:
            self.journal.resize(ds, shape)
            return ds
        if old is None and not path.startswith(_PRIVATE):  # a new element: step and time from the clock
            group = self.journal.group(path.rpartition("/")[0], new=True)
            group["step"], group["time"] = self.f[f"{self.private}/step"], self.f[f"{self.private}/time"]
            if origin is not None:
                group.attrs[_ORIGIN] = origin
        vlen = dtype.kind == "O"
        row_bytes = 16 if vlen else dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        options: dict[str, Any] = {} if vlen else {"fillvalue": _fill(dtype)}
        ds = self.journal.dataset(
            path,
            shape=shape,
            maxshape=(None, *((None,) if atom else ()), *tail),
            chunks=(max(1, _CHUNK_BYTES // max(1, row_bytes)), *(max(1, s) for s in shape[1:])),
            dtype=dtype,
            **options,
            **self._filters(dtype),
        )
        if unit is not None:
            ds.attrs["unit"] = unit
        if old is not None:
            ds[: old.shape[0], : old.shape[1]] = old
        return ds

    def column(self, key: str, spec: dict[str, Any], at: np.ndarray, present: np.ndarray, data: Any) -> None:
        """Grow column ``key``'s datasets to the table and write ``data`` at rows ``at``."""
        standard = key in ("arrays.positions", "arrays.numbers", "cell", "pbc")  # znh5md maps these by name
        origin = None if standard or spec["kind"] == "object" else key.partition(".")[0]
        ds = self._value(
            spec["path"],
            _storage_dtype(spec, self.table),
            tuple(spec["shape"]),
            spec["kind"] == "atom",
            origin,
            _UNITS.get(key),
            key not in self.fresh,
        )
        if data is not None and len(at):
            _put(ds, at, data)
        self._presence(spec, at, present)

    def _presence(self, spec: dict[str, Any], at: np.ndarray, present: np.ndarray) -> None:
        """Keep ``count`` and the presence flags of a column right after writing rows ``at``."""
        n0, n1 = self.n0, self.table["length"]
        name = f"present/{spec['id']}"
        exists = spec.get("flags", False)
        before = spec["count"]
        old = at[at < n0]
        if exists:
            was = int(np.count_nonzero(_take(self.f[f"{self.private}/{name}"], old))) if len(old) else 0
        else:
            was = len(old) if before == n0 else 0  # no flags: every old frame has it, or (new) none
        spec["count"] = before - was + int(np.count_nonzero(present))
        if not exists and spec["count"] == n1:
            return
        flags = self._private(name, np.bool_, exists, fill=False)
        if not exists and before == n0 and n0:
            flags[:n0] = True
        spec["flags"] = True
        if len(at):
            _put(flags, at, present)

    def velocity(self, where: np.ndarray, data: np.ndarray | None) -> None:
        """The derived velocity element, for programs that read velocities."""
        path = f"particles/{self.group}/velocity/value"
        ds = self._value(
            path, np.dtype(np.float64), (3,), True, "info", _VELOCITY_UNIT[0], "velocity" not in self.fresh
        )
        if data is not None:
            _put(ds, where, data)

    def commit(self) -> None:
        """Publish the table (with its CRC-32): the one write that makes the new rows visible."""
        seal(self.f[self.private].attrs, _TABLE, self.table)


# -- module helpers ------------------------------------------------------------------------------
def _text(value: Any) -> str:
    """A string attribute as str, whether stored fixed-length (bytes) or variable-length."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).rstrip(b"\0").decode("utf-8", "replace")
    return str(value)


def _groups(f: Any) -> list[str]:
    particles = f.get("particles")
    if not _is_group(particles):
        return []
    return sorted(name for name, obj in particles.items() if _is_group(obj))


def _check_version(path: Path, h5md: Any) -> tuple[int, int]:
    version = h5md.attrs.get("version")
    if version is None:
        raise StoreCorruptedError(f"{path}: the h5md group has no 'version' attribute, which H5MD requires")
    numbers = np.asarray(version).reshape(-1)
    major, minor = int(numbers[0]), int(numbers[1]) if len(numbers) > 1 else 0
    if major < 1:
        raise FormatVersionError(
            f"{path}: H5MD version {major}.{minor} predates H5MD 1.0, whose layout this reader "
            "expects; rewrite the file with an H5MD 1.x writer"
        )
    if major > 1:
        raise FormatVersionError(
            f"{path}: H5MD version {major}.{minor} is newer than the 1.x this asebytes-nodes reads; "
            "upgrade asebytes-nodes"
        )
    return major, minor


def _conformance(f: Any, group: str) -> list[str]:
    """Where the file departs from H5MD 1.1 around ``group`` (checked by :meth:`H5MDBackend.check`)."""
    problems = []
    h5md = f["h5md"]
    for where, name in (("author", "name"), ("creator", "name"), ("creator", "version")):
        if not _is_group(h5md.get(where)) or name not in h5md[where].attrs:
            problems.append(f"h5md/{where}: no '{name}' attribute")
    box = f.get(f"particles/{group}/box")
    if not _is_group(box):
        problems.append(f"particles/{group}: no box group")
    elif "dimension" not in box.attrs or "boundary" not in box.attrs:
        problems.append(f"particles/{group}/box: needs the attributes 'dimension' and 'boundary'")
    elif any(_text(b) not in ("periodic", "none") for b in np.ravel(box.attrs["boundary"])):
        problems.append(f"particles/{group}/box: boundary values must be 'periodic' or 'none'")
    elements: dict[str, Any] = {}  # the group's elements, and global observables
    for root in (f"particles/{group}", f"observables/{group}"):
        found = f.get(root)
        if _is_group(found):
            found.visititems(lambda _, obj: elements.update({obj.name: obj} if _timed(obj) else {}))
    observables = f.get("observables")
    if _is_group(observables):
        elements.update((obj.name, obj) for obj in observables.values() if _timed(obj))
    for element in elements.values():
        path, n = element.name.lstrip("/"), len(element["value"])
        steps = _sampling(element, "step", n)
        if steps is None:
            problems.append(f"{path}: a time-dependent element without 'step'")
        elif isinstance(steps, str) or not _increasing(steps):
            problems.append(f"{path}: {steps if isinstance(steps, str) else 'its steps do not increase'}")
        times = _sampling(element, "time", n)
        if isinstance(times, str):
            problems.append(f"{path}: {times}")
    return problems


def _invariants(f: Any, group: str, plan: _Plan) -> list[str]:
    """Where a store this backend wrote departs from its column table."""
    table, private = plan.table or {}, f"{_PRIVATE}/{group}"
    n, width, problems = table["length"], table["width"], []
    for name in ("step", "time", "n_atoms"):
        if f[f"{private}/{name}"].shape != (n,):
            problems.append(f"{private}/{name}: {f[f'{private}/{name}'].shape[0]} rows, the table says {n}")
    if plan.counts is not None and len(plan.counts) and int(plan.counts.max()) > width:
        problems.append(f"{private}/n_atoms: {int(plan.counts.max())} atoms, wider than the table's {width}")
    for key, spec in table["columns"].items():
        ds = f.get(spec["path"])
        rows = (n, width) if spec["kind"] == "atom" else (n,)
        if ds is None or ds.shape[: len(rows)] != rows:
            problems.append(f"{spec['path']}: shape {None if ds is None else ds.shape}, {key!r} needs {rows}")
        flags = f.get(f"{private}/present/{spec['id']}")
        carried = n if flags is None else int(np.count_nonzero(flags[:n]))
        if carried != spec["count"]:
            problems.append(f"column {key!r}: {carried} frames carry it, the table says {spec['count']}")
    return problems


def _own_plan(path: Path, f: Any, group: str, table: dict[str, Any]) -> _Plan:
    """What to read from a store this backend wrote: its column table says it all."""
    check_format_record(str(path), table, FORMAT_NAME, FORMAT_VERSION, "H5MD")
    n, private = int(table["length"]), f"{_PRIVATE}/{group}"
    counts = f[f"{private}/n_atoms"][:n] if n else np.zeros(0, np.int64)
    cols = {}
    for key, spec in table["columns"].items():
        if not spec["count"]:
            continue
        kind = spec["kind"]
        cols[key] = _Col(
            key,
            kind,
            path=spec["path"],
            flags=f"{private}/present/{spec['id']}" if spec["count"] < n else None,
            dtype=spec["dtype"] if kind in ("atom", "frame") else None,
            code=spec.get("type"),
        )
    return _Plan(length=n, cols=cols, counts=counts, table=table)


def _is_group(obj: Any) -> bool:
    """An h5py group, or a zarrmd group seen through the same API."""
    return isinstance(obj, (h5py.Group, ZarrGroup))


def _is_dataset(obj: Any) -> bool:
    """An h5py dataset, or a zarrmd array seen through the same API."""
    return isinstance(obj, (h5py.Dataset, ZarrDataset))


def _timed(obj: Any) -> bool:
    """Is ``obj`` a time-dependent H5MD element (a group holding a ``value`` dataset)?"""
    return _is_group(obj) and _is_dataset(obj.get("value"))


def _origin(obj: Any, default: str | None) -> str | None:
    origin = _text(obj.attrs[_ORIGIN]) if _ORIGIN in obj.attrs else None
    return origin if origin in ("arrays", "calc", "info") else default


def _sampling(obj: Any, name: str, n: int) -> np.ndarray | str | None:
    """``step`` or ``time`` of an element's ``n`` samples (explicit, or scalar with ``offset``)."""
    ds = obj.get(name)
    if not _is_dataset(ds):
        return None
    if ds.shape == ():
        increment = ds[()]
        return ds.attrs.get("offset", 0) + np.arange(n) * increment
    if ds.shape[0] < n:
        return f"its {name} has {ds.shape[0]} entries for {n} samples"
    return ds[:n]


def _increasing(steps: np.ndarray) -> bool:
    """H5MD steps increase; a writer that repeats them leaves matching to the sample index."""
    return bool((np.diff(steps.astype(np.int64)) > 0).all())


def _match(frame_steps: np.ndarray, steps: np.ndarray) -> np.ndarray | None:
    """Row of ``steps`` holding each frame's step (-1: not sampled); None when row == frame."""
    mine, theirs = frame_steps.astype(np.int64), steps.astype(np.int64)
    if np.array_equal(mine, theirs):
        return None
    if not len(theirs):
        return np.full(len(mine), -1, np.int64)
    order = np.argsort(theirs, kind="stable")
    ordered = theirs[order]
    pos = np.minimum(np.searchsorted(ordered, mine), len(ordered) - 1)
    return np.where(ordered[pos] == mine, order[pos], -1)


_DTYPES = {
    "arrays.positions": "<f8",
    "arrays.momenta": "<f8",
    "arrays.masses": "<f8",
    "arrays.initial_charges": "<f8",
    "arrays.numbers": "<i8",
    "calc.forces": "<f8",
    "calc.stress": "<f8",
    "cell": "<f8",
    "pbc": "|b1",
}


@dataclass
class _Frames:
    """The frame axis of another program's particle group."""

    length: int
    width: int  # particles per frame (padded)
    steps: np.ndarray | None


def _foreign_col(obj: Any, key: str, atom: bool, frames: _Frames, plan: _Plan) -> _Col | None:
    """How to read element ``obj`` as ``key``, or None (the reason goes to ``plan.skipped``).

    In znh5md's files (``plan.znh5md``) values are in ASE units whatever their unit label says
    (znh5md labels ASE velocities ``Angstrom/fs`` and ignores units when reading), and an all-NaN
    value of a result or custom element marks a frame that has none, as znh5md reads them.
    """
    path = obj.name.lstrip("/")
    if key in plan.cols:
        plan.skipped[path] = f"gives {key}, already read from {plan.cols[key].element}"
        return None
    col = _Col(key, "atom" if atom else "frame", dtype=_DTYPES.get(key), element=path)
    if _is_dataset(obj):  # time-independent: the same value on every frame
        data = obj
        col.const = obj[()]
    elif _timed(obj):
        data = obj["value"]
        n = data.shape[0] if data.ndim else 0
        steps = _sampling(obj, "step", n)
        if isinstance(steps, str):
            plan.skipped[path] = steps
            return None
        if steps is not None and not _increasing(steps):  # invalid steps: match by index if possible
            steps = None
        if steps is not None and frames.steps is not None:
            col.path, col.rows = data.name.lstrip("/"), _match(frames.steps, steps)
        elif n == frames.length and data.ndim:
            col.path = data.name.lstrip("/")
        elif not atom:  # an observable without steps and not one sample per frame: time-independent
            col.const = data[()]
        else:
            plan.skipped[path] = f"{n} samples without steps, for {frames.length} frames"
            return None
    else:
        plan.skipped[path] = "a group without a value dataset"
        return None
    shape = tuple(data.shape[1:] if col.path is not None else np.shape(col.const))
    if atom and (not shape or shape[0] > frames.width or (shape[0] < frames.width and col.path is None)):
        plan.skipped[path] = f"{shape[0] if shape else 0} particles, the group has {frames.width}"
        return None
    if atom and shape[0] < frames.width:  # written only for frames of at most that many particles
        col.width = shape[0]
    col.nan_missing = plan.znh5md and key not in _FRAME_AXIS_KEYS
    if h5py.check_string_dtype(data.dtype) is not None:
        col.kind = "string"
        col.json = _ORIGIN in getattr(obj, "attrs", {})
    elif not atom and (shape == () or (key == "calc.energy" and shape == (1,))):
        col.kind = "scalar"
    quantity = "velocity" if key == "arrays.momenta" and path.endswith("velocity") else _QUANTITY.get(key)
    unit = None if plan.znh5md else data.attrs.get("unit")
    if quantity is not None and unit is not None:
        try:
            col.scale = unit_factor(_text(unit), quantity)
        except ValueError as exc:
            raise StoreCorruptedError(f"{data.name}: cannot convert its unit to ASE units: {exc}") from exc
    if key == "cell":
        col.cuboid = shape == (3,)
    return col


def _foreign_plan(f: Any, group: str, znh5md: bool = False) -> _Plan:
    """What to read from a particle group another program wrote (see the module notes);
    ``znh5md``: the file's creator is znh5md, read with its conventions."""
    part = f[f"particles/{group}"]
    box = part.get("box")
    if _is_group(box) and "dimension" in box.attrs:
        dimension = int(np.asarray(box.attrs["dimension"]).reshape(-1)[0])
        if dimension != 3:
            raise UnsupportedOperationError(f"{part.name}: a {dimension}-dimensional box; ASE frames are 3-D")
    plan = _Plan(znh5md=znh5md)
    names = sorted(name for name in part if name != "box")
    clock = next((part[n] for n in (*_PARTICLE_KEYS, *names) if n in part and _timed(part[n])), None)
    if clock is not None:
        value = clock["value"]
        steps = _sampling(clock, "step", value.shape[0])
        frames = _Frames(
            value.shape[0],
            value.shape[1] if value.ndim > 1 else 0,
            steps if isinstance(steps, np.ndarray) and _increasing(steps) else None,
        )
    else:
        fixed = [part[n] for n in ("position", *names) if _is_dataset(part.get(n)) and part[n].ndim]
        frames = _Frames(1 if fixed else 0, fixed[0].shape[0] if fixed else 0, None)
    plan.length = frames.length
    ordered = [n for n in _PARTICLE_KEYS if n in names] + [n for n in names if n not in _PARTICLE_KEYS]
    for name in ordered:
        obj = part[name]
        key = _PARTICLE_KEYS.get(name) or f"{_origin(obj, 'arrays')}.{name}"
        col = _foreign_col(obj, key, True, frames, plan)
        if col is not None:
            col.velocity = name == "velocity"
            plan.cols[key] = col
    _foreign_box(box, frames, plan)
    _foreign_observables(f, group, frames, plan)
    if frames.steps is not None and clock is not None:
        plan.cols.setdefault("info.step", _Col("info.step", "scalar", values=frames.steps))
        times = _sampling(clock, "time", frames.length)
        if isinstance(times, np.ndarray):
            unit = clock["time"].attrs.get("unit")
            scale = unit_factor(_text(unit), "time") if unit is not None else 1.0
            plan.cols.setdefault("info.time", _Col("info.time", "scalar", values=times * scale))
    plan.mask = _padding(f, part, plan)
    return plan


def _foreign_box(box: Any, frames: _Frames, plan: _Plan) -> None:
    """cell from ``box/edges`` (zeros without), pbc from ``box/pbc`` or ``boundary``."""
    boundary: Any = None
    if _is_group(box):
        for name, key in (("edges", "cell"), ("pbc", "pbc")):
            if name in box and (col := _foreign_col(box[name], key, False, frames, plan)) is not None:
                col.kind = "frame"
                plan.cols[key] = col
        boundary = box.attrs.get("boundary")
        if boundary is None and _is_dataset(box.get("boundary")):
            boundary = box["boundary"][()]
    plan.cols.setdefault("cell", _Col("cell", "frame", const=np.zeros((3, 3))))
    periodic = [False] * 3 if boundary is None else [_text(b) == "periodic" for b in np.ravel(boundary)]
    plan.cols.setdefault("pbc", _Col("pbc", "frame", const=np.array(periodic, bool)))


def _foreign_observables(f: Any, group: str, frames: _Frames, plan: _Plan) -> None:
    """The group's observables, then global ones (see the module notes for the keys)."""
    observables = f.get("observables")
    if not _is_group(observables):
        return
    per_particle = _is_group(f.get("h5md/modules/thermodynamics"))
    own = observables.get(group)
    entries = [own[n] for n in sorted(own)] if _is_group(own) and not _timed(own) else []
    entries += [observables[n] for n in sorted(observables) if observables[n] is not own or _timed(own)]
    groups = set(_groups(f))
    for obj in entries:
        name = obj.name.rsplit("/", 1)[1]
        if _is_group(obj) and not _timed(obj):
            if name not in groups:
                plan.skipped[obj.name.lstrip("/")] = (
                    "a group of observables (nested observables are not read)"
                )
            continue
        origin = _origin(obj, None)
        if origin is not None:
            key = f"{origin}.{'energy' if name == 'potential_energy' else name}"
        elif name == "energy" or (name == "potential_energy" and not per_particle):
            key = "calc.energy"
        elif name == "stress":
            key = "calc.stress"
        else:
            key = f"info.{name}"
        col = _foreign_col(obj, key, False, frames, plan)
        if col is not None and key == "calc.energy" and col.kind != "scalar":
            col.key = key = f"info.{name}"
            if key in plan.cols:
                plan.skipped[obj.name.lstrip("/")] = (
                    f"gives {key}, already read from {plan.cols[key].element}"
                )
                continue
        if col is not None:
            plan.cols[key] = col


def _padding(f: Any, part: Any, plan: _Plan) -> tuple[_Col, Any] | None:
    """The element telling real particles from padding: ``id`` with a fill value, else NaN."""
    col = plan.cols.get("arrays.id")
    if col is not None and col.rows is None:
        ds = f[col.path] if col.path is not None else part["id"]
        if (
            isinstance(ds, h5py.Dataset)
            and ds.id.get_create_plist().fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED
        ):
            return col, ds.fillvalue
    for key in ("arrays.positions", "arrays.numbers"):
        col = plan.cols.get(key)
        if col is None or col.rows is not None:
            continue
        dtype = f[col.path].dtype if col.path is not None else np.asarray(col.const).dtype
        if dtype.kind == "f":
            return col, None
    return None


def _convert(col: _Col, data: Any, sizes: np.ndarray | None) -> list[Any]:
    """Per-frame values from the stored values of frames that carry the column."""
    kind = col.kind
    if kind == "object":
        return [decode_value(blob.tobytes()) for blob in data]
    if kind == "string":
        texts = [_text(v) for v in data]
        return [_json(t) for t in texts] if col.json else texts
    arr = np.asarray(data)
    if col.dtype is not None and arr.dtype != col.dtype:
        if arr.dtype.kind == "f" and np.dtype(col.dtype).kind in "iub":
            arr = np.nan_to_num(arr, nan=0.0)  # padding of float species
        arr = arr.astype(col.dtype)
    if col.scale != 1.0:
        arr = arr * col.scale
    if col.cuboid:
        box = np.zeros((len(arr), 3, 3), arr.dtype)
        box[:, [0, 1, 2], [0, 1, 2]] = arr
        arr = box
    if kind == "atom":
        return _split(arr, sizes)
    if kind == "frame":
        return list(arr)
    arr = arr.reshape(len(arr))
    return list(arr) if col.code is not None and col.code[0] == "n" else arr.tolist()


def _all_nan(value: Any) -> bool:
    """Is ``value`` a float (array) that is NaN throughout? znh5md's mark of a missing value."""
    if isinstance(value, float):
        return value != value
    arr = np.asarray(value)
    return arr.dtype.kind in "fc" and arr.size > 0 and bool(np.isnan(arr).all())


def _json(text: str) -> Any:
    """znh5md stores text as JSON and an empty string for a missing value."""
    if not text:
        return MISSING
    try:
        return json.loads(text)
    except ValueError:
        return text


def _split(arr: np.ndarray, sizes: np.ndarray | None) -> list[np.ndarray]:
    """Per-frame views of a padded (frames, width, ...) array without the padding."""
    if sizes is None:
        return list(arr)
    if sizes.ndim == 1:
        if (sizes == arr.shape[1]).all():
            return list(arr)
        return [arr[j, :n] for j, n in enumerate(sizes.tolist())]
    return [row if keep.all() else row[keep] for row, keep in zip(arr, sizes, strict=True)]


def _sorted_unique(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(sorted unique rows, where each index is among them); None when ``idx`` is already so."""
    if len(idx) < 2 or bool((idx[1:] > idx[:-1]).all()):
        return idx, None
    frames, where = np.unique(idx, return_inverse=True)
    return frames, where


def _take(ds: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of a dataset: one slab read when they are dense, else a selection."""
    rows = np.asarray(rows, np.int64)
    with checked(ds, rows):  # a chunk failing its checksum: StoreCorruptedError naming ds and rows
        return _take_rows(ds, rows)


def _take_rows(ds: Any, rows: np.ndarray) -> Any:
    if not len(rows):
        return ds[0:0]
    if len(rows) > 1 and not (np.diff(rows) > 0).all():
        unique, inverse = np.unique(rows, return_inverse=True)
        return _take(ds, unique)[inverse]
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo == len(rows):
        return ds[lo:hi]
    if hi - lo <= 4 * len(rows):
        return ds[lo:hi][rows - lo]
    return ds[rows]


def _put(ds: Any, rows: np.ndarray, data: Any) -> None:
    """Write ``data`` at sorted unique ``rows`` of a dataset."""
    if data.dtype == object:  # h5py writes arrays of variable-length values only through write_direct
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        for start, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True):
            ds.write_direct(data, np.s_[start:stop], np.s_[int(rows[start]) : int(rows[stop - 1]) + 1])
        return
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo == len(rows):
        ds[lo:hi] = data
    else:
        ds[rows] = data


def _n_atoms(row: dict[str, Any]) -> int:
    for key in ("arrays.numbers", "arrays.positions"):
        if key in row:
            return len(row[key])
    return 0


def _new_table(timestep: float) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "length": 0,
        "width": 0,
        "padded": False,
        "timestep": float(timestep),
        "next": 0,
        "velocity": False,
        "columns": {},
    }


def _fill(dtype: np.dtype[Any]) -> Any:
    """What pads and marks absent values: NaN for floats (znh5md reads it as missing), else 0."""
    return np.nan if dtype.kind in "fc" else np.zeros((), dtype)[()]


def _storage_dtype(spec: dict[str, Any], table: dict[str, Any]) -> np.dtype[Any]:
    """The dtype of a column's dataset: species turn float64 (NaN padded) once counts differ."""
    kind = spec["kind"]
    if kind == "object":
        return np.dtype(_VLEN_BYTES)
    if kind == "string":
        return np.dtype(h5py.string_dtype())
    if kind == "scalar":
        return type_code_dtype(spec["type"])
    dtype = np.dtype(spec["dtype"])
    if table["padded"] and spec["path"].endswith("/species/value") and dtype.kind in "iub":
        return np.dtype(np.float64)
    return dtype


def _new_spec(
    key: str, values: list[Any], present: np.ndarray, counts: np.ndarray, table: dict[str, Any], group: str
) -> dict[str, Any]:
    """How a new column is stored, from the values it first arrives with."""
    kind, dtype, shape, code = _infer(key, _given(values, present), counts[present])
    cid = f"c{table['next']}"
    table["next"] += 1
    spec: dict[str, Any] = {"id": cid, "kind": kind, "dtype": dtype, "shape": shape, "count": 0}
    if code is not None:
        spec["type"] = code
    if kind == "object":
        spec["path"] = f"{_PRIVATE}/{group}/encoded/{cid}"
        return spec
    place = _PLACES.get(key)
    root, name = place or ("particles" if kind == "atom" else "observables", key.partition(".")[2] or key)
    taken = {other["path"] for other in table["columns"].values()}
    path = f"{root}/{group}/{name}/value"
    odd = name in (".", "..") or "/" in name or "\0" in name  # not an HDF5 link name as it is
    if place is None and ((root, name) in _RESERVED or odd or path in taken):
        name = key.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
        path = f"{root}/{group}/{name}/value"
        if path in taken:
            path = f"{root}/{group}/{name}~{cid}/value"
    spec["path"] = path
    return spec


def _given(values: list[Any], present: np.ndarray) -> list[Any]:
    return values if present.all() else [v for v in values if v is not MISSING]


def _infer(key: str, given: list[Any], counts: np.ndarray) -> tuple[str, str, list[int], str | None]:
    """(kind, dtype, per-row shape, scalar type code) of a new column from its values (``counts``:
    atom counts of their frames).

    Values HDF5 cannot hold exactly in a typed dataset go to an encoded (object) column: 0-d
    arrays (a dataset row would read back as a numpy scalar), zero-length axes in a row (HDF5
    chunks cannot be empty) and strings with NUL characters (variable-length HDF5 strings end at
    the first NUL).
    """
    per_atom = key.startswith("arrays.") or (key.startswith("calc.") and key[5:] in PER_ATOM_CALC)
    if given and set(map(type, given)) == {np.ndarray}:
        dtypes = set(map(_DTYPE, given))
        shapes = list(map(_SHAPE, given))
        tails = {shape[1:] if per_atom else shape for shape in shapes}
        if len(dtypes) == 1 and len(tails) == 1 and (dtype := dtypes.pop()).kind in _NUMERIC:
            tail = list(tails.pop())
            if not per_atom and tail and 0 not in tail:
                return "frame", dtype.str, tail, None
            lengths = [shape[0] if shape else -1 for shape in shapes]
            if per_atom and 0 not in tail and lengths == counts.tolist():
                return "atom", dtype.str, tail, None
    if given and not per_atom:
        code = scalar_type_code(given)
        if code is not None and type_code_dtype(code).kind in _NUMERIC:
            return "scalar", type_code_dtype(code).str, [], code
        if set(map(type, given)) == {str} and not any("\x00" in v for v in given):
            return "string", "str", [], None
    return "object", "object", [], None


def _labels(at: np.ndarray, n0: int) -> Callable[[int], str]:
    """Names of the values written at file rows ``at`` in messages: "frame j" of an extend
    (rows from the committed length ``n0`` on), "row i" of a replaced frame."""
    return lambda j: f"frame {int(at[j]) - n0}" if at[j] >= n0 else f"row {int(at[j])}"


def _encode(
    key: str,
    spec: dict[str, Any],
    values: list[Any],
    present: np.ndarray,
    counts: np.ndarray,
    table: dict[str, Any],
    fresh: bool,
    label: Callable[[int], str] = "frame {}".format,
) -> Any:
    """The data to write for rows of one column (``fresh``: the spec was just inferred from these
    values, so they fit); refuses values that do not fit the stored column exactly, naming
    value ``j`` as ``label(j)``: nothing is converted."""
    given = _given(values, present)
    kind, n = spec["kind"], len(values)
    if kind == "object":
        blobs = np.empty(n, object)
        for j, value in enumerate(values):
            try:
                blobs[j] = _EMPTY_BLOB if value is MISSING else np.frombuffer(encode_value(value), np.uint8)
            except SerializationError as exc:
                raise SerializationError(f"{label(j)}: key {key!r}: {exc}; nothing was written") from exc
        return blobs
    if kind == "string":
        if not set(map(type, given)) <= {str} or any("\x00" in v for v in given):
            j = next(j for j, v in enumerate(values) if v is not MISSING and
                      (type(v) is not str or "\0" in v))
            got = "a string with a NUL character" if type(values[j]) is str else type(values[j]).__name__
            raise _conflict(key, spec, got, label(j))
        return np.array([v if v is not MISSING else "" for v in values], dtype=object)
    dtype = _storage_dtype(spec, table)
    if kind == "scalar":
        if given and scalar_type_code(given) != spec["type"]:  # exact types only: never convert
            code = spec["type"]
            j = next(j for j, v in enumerate(values) if v is not MISSING and scalar_type_code([v]) != code)
            raise _conflict(key, spec, f"a value of type {type(values[j]).__name__}", label(j))
        data = np.full(n, _fill(dtype), dtype)
        data[present] = given
        return data
    tail = tuple(spec["shape"])
    if not fresh:
        _check_arrays(key, spec, given, counts[present], lambda j: label(int(np.flatnonzero(present)[j])))
    if kind == "frame" and present.all():
        return np.array(given, dtype) if given else np.zeros((0, *tail), dtype)
    if kind == "frame":
        data = np.full((n, *tail), _fill(dtype), dtype)
        if given:
            data[present] = np.array(given)
        return data
    width = table["width"]
    if present.all() and (counts == width).all():
        return np.array(given, dtype) if given else np.zeros((0, width, *tail), dtype)
    data = np.full((n, width, *tail), _fill(dtype), dtype)
    if given:
        data[(np.arange(width) < counts[:, None]) & present[:, None]] = np.concatenate(given)
    return data


def _check_arrays(
    key: str, spec: dict[str, Any], given: list[Any], counts: np.ndarray, label: Callable[[int], str]
) -> None:
    """Refuse arrays of another dtype or shape than the column's (whole passes over the values;
    the culprit is looked for only on failure)."""
    stored, tail = np.dtype(spec["dtype"]), tuple(spec["shape"])
    fits = set(map(type, given)) <= {np.ndarray} and set(map(_DTYPE, given)) <= {stored}
    if fits:
        shapes = list(map(_SHAPE, given))
        if spec["kind"] == "atom":
            fits = {s[1:] for s in shapes} <= {tail} and [
                s[0] if s else -1 for s in shapes
            ] == counts.tolist()
        else:
            fits = set(shapes) <= {tail}
    if fits:
        return
    expected = [(c, *tail) for c in counts.tolist()] if spec["kind"] == "atom" else [tail] * len(given)
    j = next(
        j
        for j, (v, shape) in enumerate(zip(given, expected, strict=True))
        if type(v) is not np.ndarray or v.dtype != stored or v.shape != shape
    )
    bad = given[j]
    what = f"dtype {bad.dtype}, shape {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
    raise _conflict(key, spec, what, label(j))


def _conflict(key: str, spec: dict[str, Any], got: str, where: str) -> InvalidDataError:
    stored = {
        "scalar": f"scalars of type code {spec.get('type')!r}",
        "string": "strings",
        "frame": f"arrays of dtype {spec['dtype']} and shape {tuple(spec['shape'])}",
        "atom": f"per-atom arrays of dtype {spec['dtype']} and shape (n_atoms, "
        f"{', '.join(map(str, spec['shape']))})",
    }[spec["kind"]]
    return InvalidDataError(
        f"{where}: column {key!r} stores {stored}, but got {got}; nothing was written. An H5MD column "
        "holds one type: convert the value to the stored type, or use another key"
    )
