"""What to read from an H5MD particle group: one :class:`Col` per key, gathered in a
:class:`Plan`, and the conversion of stored values to row values. Also the names of our own
layout and the small helpers every H5MD module uses on h5py objects and their zarrmd twins."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...codec import decode_value
from .._base import MISSING, check_format_record
from .._columns import take as take_rows
from .._hdf5_journal import checked
from ._zarrmd import ZarrDataset, ZarrGroup

__all__ = [
    "CREATOR",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ORIGIN",
    "PRIVATE",
    "TABLE",
    "Col",
    "Need",
    "Plan",
    "all_nan",
    "as_text",
    "convert",
    "is_dataset",
    "is_group",
    "own_plan",
    "particle_groups",
    "row_value",
    "take",
    "timed",
]

FORMAT_NAME = "asebytes_nodes.h5md"
FORMAT_VERSION = 3  # the newest layout read (3: the clock from info.step and info.time, see _clock)
CREATOR = "asebytes-nodes"
PRIVATE = "parameters/asebytes_nodes"  # our column table and private datasets, per particle group
TABLE = "asebytes_nodes"  # the attribute holding the column table
ORIGIN = "ASE_ENTRY_ORIGIN"  # znh5md's hint: which Atoms namespace an element belongs to


@dataclass
class Col:
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


@dataclass(frozen=True)
class Need:
    """Own files: which chunks of a dataset hold data, so HDF5's chunk index must find them (a
    chunk it does not find reads as the fill value; see :func:`._gather.confirm`). Every chunk
    holding a frame below the length, unless narrowed as below."""

    atom: bool = False  # per-atom: only chunks holding atoms of a frame (its n_atoms)
    flags: str | None = None  # only chunks holding frames that carry the column (these flags)
    count: int | None = None  # presence flags: unwritten where all are False; the True ones


@dataclass
class Plan:
    """Everything read at open about one particle group."""

    length: int = 0
    cols: dict[str, Col] = field(default_factory=dict)
    read_counts: Callable[[], np.ndarray] | None = None  # own files: reads the atom count of each frame
    mask: tuple[Col, Any] | None = None  # other files: element marking padding, and its fill value
    table: dict[str, Any] | None = None  # own files: the column table
    needs: dict[str, Need] = field(default_factory=dict)  # own files: datasets by path, see Need
    skipped: dict[str, str] = field(default_factory=dict)
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # other files: unit kept as stored
    znh5md: bool = False  # other files: written by znh5md (units and NaN read its way)
    _counts: np.ndarray | None = field(default=None, repr=False)
    batch_cols: dict[Any, Any] = field(default_factory=dict, repr=False)  # see _gather._wanted
    checked: set[str] = field(default_factory=set, repr=False)  # see _gather._check_particles
    held: dict[str, str | None] | None = field(default=None, repr=False)  # see _gather.held_row

    @property
    def counts(self) -> np.ndarray | None:
        """Own files: the atom count of each frame, read on first use (under the store's read
        lock, as every use is), so a read of per-frame keys never reads them."""
        if self._counts is None and self.read_counts is not None:
            self._counts = self.read_counts()
        return self._counts


def own_plan(path: Path, head: Callable[[str, int], np.ndarray], group: str, table: dict[str, Any]) -> Plan:
    """What to read from a store this backend wrote: its column table says it all (``head``
    reads the first rows of one of its datasets, every chunk found in HDF5's index)."""
    check_format_record(str(path), table, FORMAT_NAME, FORMAT_VERSION, "H5MD")
    n, private = int(table["length"]), f"{PRIVATE}/{group}"
    counts = f"{private}/n_atoms"

    def read_counts() -> np.ndarray:
        return head(counts, n) if n else np.zeros(0, np.int64)

    cols, needs = {}, {counts: Need()}
    for key, spec in table["columns"].items():
        if not spec["count"]:
            continue
        kind = spec["kind"]
        flags = f"{private}/present/{spec['id']}" if spec["count"] < n else None
        cols[key] = Col(
            key,
            kind,
            path=spec["path"],
            flags=flags,
            dtype=spec["dtype"] if kind in ("atom", "frame") else None,
            code=spec.get("type"),
        )
        needs[spec["path"]] = Need(atom=kind == "atom", flags=flags)
        if flags is not None:
            needs[flags] = Need(count=int(spec["count"]))
    return Plan(length=n, cols=cols, read_counts=read_counts, table=table, needs=needs)


# -- h5py objects and their zarrmd twins --------------------------------------------------------
def as_text(value: Any) -> str:
    """A string attribute as str, whether stored fixed-length (bytes) or variable-length."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).rstrip(b"\0").decode("utf-8", "replace")
    return str(value)


def is_group(obj: Any) -> bool:
    """An h5py group, or a zarrmd group seen through the same API."""
    return isinstance(obj, (h5py.Group, ZarrGroup))


def is_dataset(obj: Any) -> bool:
    """An h5py dataset, or a zarrmd array seen through the same API."""
    return isinstance(obj, (h5py.Dataset, ZarrDataset))


def timed(obj: Any) -> bool:
    """Is ``obj`` a time-dependent H5MD element (a group holding a ``value`` dataset)?"""
    return is_group(obj) and is_dataset(obj.get("value"))


def particle_groups(f: Any) -> list[str]:
    """The particle groups of an open file, sorted."""
    particles = f.get("particles")
    if not is_group(particles):
        return []
    return sorted(name for name, obj in particles.items() if is_group(obj))


# -- stored values to row values ----------------------------------------------------------------
def convert(col: Col, data: Any, sizes: np.ndarray | None) -> list[Any]:
    """Per-frame values from the stored values of frames that carry the column."""
    kind = col.kind
    if kind == "object":
        return [decode_value(blob.tobytes()) for blob in data]
    if kind == "string":
        texts = [as_text(v) for v in data]
        return [_json(t) for t in texts] if col.json else texts
    arr = np.asarray(data)
    if col.dtype is not None and arr.dtype != col.dtype:
        arr = _as_dtype(arr, col.dtype)
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


def row_value(col: Col, stored: Any, n: int | None) -> Any:
    """What :func:`convert` gives for one frame of a plain column (``._gather.plain``: numeric,
    read as stored) from that frame's stored row, a view the caller keeps: only the frame's ``n``
    atoms (per-atom keys) are copied or converted, without a list or the other kinds' checks
    (1,000 random rows of 1,000 frames: 123 -> 117 ms)."""
    arr = np.asarray(stored) if n is None else stored[:n]
    if col.dtype is not None and arr.dtype != col.dtype:
        arr = _as_dtype(arr, col.dtype)
    elif col.kind != "scalar":
        arr = arr.copy()
    if col.kind != "scalar":
        return arr
    arr = arr.reshape(())
    return arr[()] if col.code is not None and col.code[0] == "n" else arr.item()


def _as_dtype(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values in the dtype handed out; a float's NaN (the padding of float species) as 0."""
    if arr.dtype.kind == "f" and np.dtype(dtype).kind in "iub":
        arr = np.where(np.isnan(arr), 0.0, arr)
    return arr.astype(dtype)


def all_nan(value: Any) -> bool:
    """Is ``value`` a float (array) that is NaN throughout? znh5md's mark of a missing value
    (an empty one too: a 0-atom frame's per-atom values, which znh5md reads as absent)."""
    if isinstance(value, float):
        return value != value
    arr = np.asarray(value)
    return arr.dtype.kind in "fc" and bool(np.isnan(arr).all())


def _json(value: str) -> Any:
    """znh5md stores text as JSON and an empty string for a missing value."""
    if not value:
        return MISSING
    try:
        return json.loads(value)
    except ValueError:
        return value


def _split(arr: np.ndarray, sizes: np.ndarray | None) -> list[np.ndarray]:
    """Per-frame views of a padded (frames, width, ...) array without the padding."""
    if sizes is None:
        return list(arr)
    if sizes.ndim == 1:
        if len(sizes) == 1:  # a random row: no numpy comparison
            n = int(sizes[0])
            return [arr[0] if n == arr.shape[1] else arr[0, :n]]
        if (sizes == arr.shape[1]).all():
            return list(arr)
        return [arr[j, :n] for j, n in enumerate(sizes.tolist())]
    return [row if keep.all() else row[keep] for row, keep in zip(arr, sizes, strict=True)]


# -- rows of datasets ---------------------------------------------------------------------------
def take(ds: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of a dataset: one slab read when they are dense (within 4x), else a selection."""
    rows = np.asarray(rows, np.int64)
    with checked(ds, rows):  # a chunk failing its checksum: StoreCorruptedError naming ds and rows
        # the span rule alone (row_bytes 1, slab_bytes 0: no slab is small enough by size)
        return take_rows(ds.__getitem__, rows, 1, slab_bytes=0, spread=4) if len(rows) else ds[0:0]
