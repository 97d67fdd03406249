"""Training batches from LMDB rows with numpy, without decoding rows one by one (issue 15).

A row is msgpack ``[plain, layout, raw]`` (:mod:`asebytes_nodes.codec`). Rows written by one
program share their structure: the same keys in the same order, values of the same msgpack
types, arrays of the same dtypes and shapes; only the numbers differ. A :class:`Template` is one
row's bytes up to its raw array section, where each byte may take one value, except the bytes
of top-level fixed-width numbers (float 32/64, int and uint 8-64: any payload; a fixint: any
fixint of its sign; ``true``/``false``: either), held as a mask and a value per byte. A row of
the template's length whose bytes the template allows parses exactly as the template row does
(msgpack's parse depends only on type bytes and lengths, which are fixed), so its values sit
at the template's offsets. Checksums are verified before any of this.

The row format is unchanged (layout 3); rows of stores written before work the same way.
Cost: a batch still does a few C calls per row (the bounded fetch, the checksum, the copy
google-crc32c needs) and about a hundred numpy calls per batch.

A batch is then: every row fetched in one bounded loop (:meth:`BoundedTxn.get_many`), every
checksum verified in one C-level pass, the rows joined into one buffer, every row compared
with its template (looked up by length) in one numpy comparison, and every key gathered with
numpy from the joined buffer. Templates are learnt from rows :func:`decode_row` decodes (with
all its refusals), cached per process, bounded. A batch the templates cannot serve (a key some
rows lack, non-numeric values, values of different types or shapes) returns None: the caller
assembles it from decoded rows.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from ..batch import AtomSelection, _is_numeric, atom_gather
from ..codec import _layout
from ..errors import StoreCorruptedError
from ._keys import atom_count, is_per_atom

__all__ = ["Template", "fetch_rows", "learn", "read_batch"]

_MAX_TEMPLATES = 4096
_FIXED = {
    0xCA: ">f4",
    0xCB: ">f8",
    0xCC: ">u1",
    0xCD: ">u2",
    0xCE: ">u4",
    0xCF: ">u8",
    0xD0: ">i1",
    0xD1: ">i2",
    0xD2: ">i4",
    0xD3: ">i8",
}  # msgpack type byte -> payload
_OUT = {"f": np.dtype(np.float64), "i": np.dtype(np.int64), "b": np.dtype(np.bool_)}
_SPARE = bytes(8)  # after the joined rows: a template's last 8-byte word may reach past them
_ROW_KEY = struct.Struct(">cQ")  # a row's LMDB key: b"r" + u64 big endian


@dataclass(frozen=True)
class Field:
    """Where one key's value sits in a row: ``offset`` (from the row's start), its stored
    ``dtype`` and ``shape``; ``kind`` for a msgpack number (``f``/``i``/``b``), else None."""

    offset: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    kind: str | None = None


@dataclass(frozen=True)
class Template:
    """The structure of rows of ``length`` bytes (checksum excluded): the bits ``mask`` of
    every byte before the raw arrays must equal ``value`` (``mask`` 0: any byte); where each
    key sits, which keys :mod:`asebytes_nodes.batch` counts as numeric, the atom count."""

    length: int
    mask: np.ndarray
    value: np.ndarray
    fields: dict[str, Field]
    numeric: frozenset[str]
    n_atoms: int


@dataclass(frozen=True)
class _Type:
    """What a key holds in some templates: a number (``kind`` ``f``/``i``/``b``) or an array
    (``kind`` None) of ``dtype`` and, beyond the atom axis of per-atom keys, ``shape``."""

    kind: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


class _Registry:
    """Templates learnt in this process: their byte ranges concatenated for one comparison, and
    per key the offset and type in every template (``-1``: absent, ``-2``: not served)."""

    def __init__(self) -> None:
        self.templates: list[Template] = []
        self.by_length: dict[int, list[int]] = {}  # templates of a row length, newest first
        self.primary: dict[int, int] = {}  # the newest of them
        self.mask = np.zeros(0, np.uint64)  # every template's mask and value as 8-byte words
        self.value = np.zeros(0, np.uint64)
        self.heads = np.zeros(0, np.int64)  # where each template's words start
        self.sizes = np.zeros(0, np.int64)  # and how many it has
        self.n_atoms = np.zeros(0, np.int64)
        self.columns: dict[str, tuple[np.ndarray, np.ndarray, list[_Type]]] = {}

    def find(self, body: Any, length: int) -> int | None:
        """A known template allowing ``body`` (a row without checksum), if any."""
        head = np.frombuffer(body, np.uint8, min(length, len(body)))
        for j in self.by_length.get(length, ()):
            t = self.templates[j]
            if len(head) >= len(t.mask) and not ((head[: len(t.mask)] & t.mask) != t.value).any():
                return j
        return None

    def add(self, template: Template) -> int:
        """The id of ``template``, added unless known; another thread sees the new id only once
        its byte ranges are in place."""
        for j in self.by_length.get(template.length, ()):
            known = self.templates[j]
            if np.array_equal(known.mask, template.mask) and np.array_equal(known.value, template.value):
                return j
        words = -(-len(template.mask) // 8)
        mask, value = np.zeros((2, words * 8), np.uint8)  # padded with "any byte"
        mask[: len(template.mask)], value[: len(template.value)] = template.mask, template.value
        self.heads = np.append(self.heads, len(self.mask))
        self.sizes = np.append(self.sizes, words)
        self.n_atoms = np.append(self.n_atoms, template.n_atoms)
        self.mask = np.concatenate([self.mask, mask.view(np.uint64)])
        self.value = np.concatenate([self.value, value.view(np.uint64)])
        self.columns = {}
        self.templates.append(template)
        j = len(self.templates) - 1
        self.by_length[template.length] = [j, *self.by_length.get(template.length, ())]
        self.primary[template.length] = j
        return j

    def column(self, key: str) -> tuple[np.ndarray, np.ndarray, list[_Type]]:
        """``(offsets, type ids, types)`` of ``key`` over every template."""
        found = self.columns.get(key)
        if found is not None:
            return found
        per_atom = is_per_atom(key)
        types: list[_Type] = []
        offsets, ids = np.zeros(len(self.templates), np.int64), np.full(len(self.templates), -1, np.int64)
        for j, t in enumerate(self.templates):
            f = t.fields.get(key)
            if f is None:
                continue
            offsets[j] = f.offset
            if key not in t.numeric or (per_atom and (f.kind is not None or f.shape[:1] != (t.n_atoms,))):
                ids[j] = -2  # not a number, or not one value per atom: assembled from decoded rows
                continue
            kind = _Type(f.kind, f.dtype, f.shape[1:] if per_atom else f.shape)
            if kind not in types:
                types.append(kind)
            ids[j] = types.index(kind)
        self.columns[key] = found = (offsets, ids, types)
        return found


_REGISTRY = _Registry()


# -- learning a template -------------------------------------------------------------------------
def _length(body: bytes, pos: int, width: int) -> int:
    return int.from_bytes(body[pos : pos + width], "big")


def _skip(body: bytes, pos: int) -> int:
    """The position after the msgpack value at ``pos``."""
    b = body[pos]
    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
        return pos + 1
    if 0x80 <= b <= 0x9F:  # fixmap, fixarray
        n = (b & 0x0F) * (2 if b < 0x90 else 1)
        pos += 1
        for _ in range(n):
            pos = _skip(body, pos)
        return pos
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F)
    if b in _FIXED:
        return pos + 1 + np.dtype(_FIXED[b]).itemsize
    if b in (0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB):  # bin, str 8/16/32
        width = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
        return pos + 1 + width + _length(body, pos + 1, width)
    if b in (0xC7, 0xC8, 0xC9):  # ext 8/16/32: length, type, data
        width = {0xC7: 1, 0xC8: 2, 0xC9: 4}[b]
        return pos + 2 + width + _length(body, pos + 1, width)
    if 0xD4 <= b <= 0xD8:  # fixext 1-16
        return pos + 2 + (1 << (b - 0xD4))
    if b in (0xDC, 0xDD, 0xDE, 0xDF):  # array, map 16/32
        width = 2 if b in (0xDC, 0xDE) else 4
        n = _length(body, pos + 1, width) * (2 if b >= 0xDE else 1)
        pos += 1 + width
        for _ in range(n):
            pos = _skip(body, pos)
        return pos
    raise ValueError(f"msgpack type byte {b:#x}")


def _header(body: bytes, pos: int, fix: tuple[int, int], codes: dict[int, int]) -> tuple[int, int]:
    """``(count, position after the header)`` of a map/array/str/bin header at ``pos``."""
    b = body[pos]
    if fix[0] <= b <= fix[1]:
        return b - fix[0], pos + 1
    width = codes[b]
    return _length(body, pos + 1, width), pos + 1 + width


_MAP = ((0x80, 0x8F), {0xDE: 2, 0xDF: 4})
_STR = ((0xA0, 0xBF), {0xD9: 1, 0xDA: 2, 0xDB: 4})
_BIN = ((1, 0), {0xC4: 1, 0xC5: 2, 0xC6: 4})


def learn(body: bytes, row: dict[str, Any]) -> Template | None:
    """The template of ``body`` (a row's stored bytes without checksum), whose values
    :func:`decode_row` gave as ``row``; None if the row is not of the expected form."""
    try:
        if body[0] != 0x93:
            return None
        n, pos = _header(body, 1, *_MAP)
        value = np.frombuffer(body, np.uint8).copy()
        mask = np.full(len(value), 0xFF, np.uint8)
        names: list[str] = []
        slots: dict[str, Field] = {}
        for _ in range(n):
            size, at = _header(body, pos, *_STR)
            names.append(body[at : at + size].decode())
            pos, b = at + size, body[at + size]
            if b in _FIXED:
                dtype = np.dtype(_FIXED[b])
                mask[pos + 1 : pos + 1 + dtype.itemsize] = value[pos + 1 : pos + 1 + dtype.itemsize] = 0
                slots[names[-1]] = Field(pos + 1, dtype, (), "f" if b in (0xCA, 0xCB) else "i")
            elif b <= 0x7F or b >= 0xE0:  # fixint: the type byte is the value
                mask[pos], value[pos] = (0x80, 0) if b <= 0x7F else (0xE0, 0xE0)
                slots[names[-1]] = Field(pos, np.dtype("u1" if b <= 0x7F else "i1"), (), "i")
            elif b in (0xC2, 0xC3):
                mask[pos], value[pos] = 0xFE, 0xC2
                slots[names[-1]] = Field(pos, np.dtype("u1"), (), "b")
            pos = _skip(body, pos)
        size, pos = _header(body, pos, *_BIN)
        code = body[pos : pos + size]
        size, raw = _header(body, pos + size, *_BIN)
    except (IndexError, KeyError, ValueError, UnicodeDecodeError):
        return None
    if raw + size != len(body) or names != list(row):
        return None
    fields = dict(slots)
    for key, dtype, shape, offset in _layout(bytes(code)):
        fields[key] = Field(raw + offset, dtype, shape)
    numeric = frozenset(k for k, v in row.items() if _is_numeric(v))
    counted = atom_count(row, None)
    if counted is None or "arrays.numbers" not in row:
        return None
    return Template(len(body), mask[:raw], value[:raw], fields, numeric, counted)


# -- reading a batch -----------------------------------------------------------------------------
def _gather(joined: bytes, offsets: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at every offset, as a new array of ``width``-byte void items."""
    windows = np.ndarray((len(joined) - width + 1,), np.dtype((np.void, width)), joined, 0, (1,))
    return windows[offsets]


def _spans(joined: bytes, offsets: np.ndarray, sizes: np.ndarray) -> bytearray:
    """The bytes ``[offset, offset + size)`` of every row, one after the other (C-level passes)."""
    view = memoryview(joined)
    return bytearray().join(map(view.__getitem__, map(slice, offsets.tolist(), (offsets + sizes).tolist())))


def _column(
    joined: bytes, offsets: np.ndarray, kinds: np.ndarray, types: list[_Type], counts: np.ndarray | None
) -> np.ndarray | None:
    """One key of every row: row ``j``'s value of type ``types[kinds[j]]`` at ``offsets[j]``;
    None if the rows disagree on its type (numbers of one kind may differ in msgpack width:
    5 takes one byte, 500 three)."""
    first = types[kinds[0]]
    uniform = not (kinds != kinds[0]).any()
    if not uniform and (first.kind is None or any(types[k].kind != first.kind for k in set(kinds.tolist()))):
        return None
    if first.kind is None:
        width = first.dtype.itemsize * int(np.prod(first.shape, dtype=np.int64))
        if width == 0:
            return None
        if counts is None:
            return _gather(joined, offsets, width).view(first.dtype).reshape(-1, *first.shape)
        return np.frombuffer(_spans(joined, offsets, width * counts), first.dtype).reshape(-1, *first.shape)
    if first.kind == "b":
        return np.frombuffer(joined, np.uint8)[offsets] == 0xC3  # true, else false
    out = np.empty(len(offsets), _OUT[first.kind])
    for k in [int(kinds[0])] if uniform else sorted(set(kinds.tolist())):
        rows: Any = slice(None) if uniform else kinds == k
        dtype = types[k].dtype
        values = _gather(joined, offsets[rows], dtype.itemsize).view(dtype).ravel()
        if dtype == np.dtype(">u8") and (values > np.iinfo(np.int64).max).any():
            return None  # numpy would not give int64 for these
        out[rows] = values
    return out


def fetch_rows(txn: Any, seal: Any, rows: list[int], damaged: Callable[[bytes], Exception]) -> list[Any]:
    """The stored values of ``rows`` (views into the map, checksums included), fetched in one
    bounded loop and verified in one pass; a missing or damaged row raises, naming it."""
    names = list(map(_ROW_KEY.pack, repeat(b"r", len(rows)), rows))
    values = txn.get_many(names)
    if None in values:
        raise StoreCorruptedError(f"row {rows[values.index(None)]} is missing from the file")
    bad = seal.damaged(names, values).tolist()
    if bad or (seal.trailer and min(map(len, values)) < seal.trailer):
        short = [j for j, value in enumerate(values) if len(value) < seal.trailer]
        raise damaged(names[min(bad + short)])
    return values


def read_batch(
    txn: Any,
    seal: Any,
    indices: np.ndarray,
    keys: list[str] | None,
    atoms: AtomSelection,
    damaged: Callable[[bytes], Exception],
    decode: Callable[[int, Any], dict[str, Any]],
) -> dict[str, Any] | None:
    """Rows ``indices`` as one batch (see :mod:`asebytes_nodes.batch`), or None where templates
    cannot serve it. ``damaged(key)`` is the error for a value failing its checksum, ``decode(i,
    body)`` decodes row ``i`` (raising errors that name it)."""
    global _REGISTRY
    if len(_REGISTRY.templates) > _MAX_TEMPLATES:  # ragged stores: keep the cache bounded
        _REGISTRY = _Registry()
    registry = _REGISTRY
    rows = indices.tolist()
    values = fetch_rows(txn, seal, rows, damaged)
    lengths = list(map(len, values))
    buffer = b"".join([*values, _SPARE])
    if len(set(lengths)) == 1:
        same = _uniform(buffer, lengths[0] - seal.trailer, len(rows), registry, keys)
        if same is not None:
            return _select(same, atoms, indices)
    lengths_ = np.array(lengths, np.int64)
    starts = np.cumsum(lengths_) - lengths_
    bodies = (lengths_ - seal.trailer).tolist()
    ids = np.fromiter(map(registry.primary.get, bodies, repeat(-1)), np.int64, len(rows))
    for j in _mismatched(buffer, starts, ids, registry).tolist():
        body = bytes(values[j][: bodies[j]])
        found = registry.find(body, bodies[j])  # another template of that length
        if found is None:
            template = learn(body, decode(rows[j], body))
            if template is None:
                return None
            found = registry.add(template)
        ids[j] = found
    counts = registry.n_atoms[ids]
    if keys is None:
        numeric = [registry.templates[t].numeric for t in set(ids.tolist())]
        keys = sorted(frozenset.intersection(*numeric))
    batch: dict[str, Any] = {"n_atoms": counts}
    for key in keys:
        offsets, kinds, types = registry.column(key)
        kinds = kinds[ids]
        if kinds.min() < 0:
            return None  # some rows lack it, or it is no number: assembled from decoded rows
        column = _column(buffer, starts + offsets[ids], kinds, types, counts if is_per_atom(key) else None)
        if column is None:
            return None
        batch[key] = column
    return _select(batch, atoms, indices)


def _field(key: str, template: Template) -> Field | None:
    """Where ``key`` sits in ``template``; None if absent, not a number, or a per-atom key
    without one value per atom."""
    f = template.fields.get(key)
    if f is None or key not in template.numeric:
        return None
    if is_per_atom(key) and (f.kind is not None or f.shape[:1] != (template.n_atoms,)):
        return None
    return f


def _uniform(
    buffer: bytes, length: int, n: int, registry: _Registry, keys: list[str] | None
) -> dict[str, Any] | None:
    """The batch of rows of one length and one template, as slices of one 2-D array of rows;
    None if they are not (the general path learns the templates) or it cannot serve them."""
    found = registry.primary.get(length)
    if found is None:
        return None
    template = registry.templates[found]
    table = np.frombuffer(buffer, np.uint8, len(buffer) - len(_SPARE)).reshape(n, -1)
    if ((table[:, : len(template.mask)] & template.mask) != template.value).any():
        return None
    batch: dict[str, Any] = {"n_atoms": np.full(n, template.n_atoms, np.int64)}
    for key in sorted(template.numeric) if keys is None else keys:
        f = _field(key, template)
        if f is None:
            return None
        size = f.dtype.itemsize * int(np.prod(f.shape, dtype=np.int64))
        if f.kind == "b":
            batch[key] = table[:, f.offset] == 0xC3
        elif size == 0:
            return None
        elif f.kind is not None:
            values = table[:, f.offset : f.offset + size].copy().view(f.dtype).ravel()
            if f.dtype == np.dtype(">u8") and (values > np.iinfo(np.int64).max).any():
                return None  # numpy would not give int64 for these
            batch[key] = values.astype(_OUT[f.kind])
        else:
            values = table[:, f.offset : f.offset + size].copy().view(f.dtype)
            batch[key] = values.reshape(-1, *f.shape[1:]) if is_per_atom(key) else values.reshape(n, *f.shape)
    return batch


def _select(batch: dict[str, Any], atoms: AtomSelection, indices: np.ndarray) -> dict[str, Any]:
    """Only the ``atoms`` of every frame in the per-atom keys (all if None)."""
    if atoms is not None:
        gather, batch["n_atoms"] = atom_gather(batch["n_atoms"], atoms, indices)
        for key in batch:
            if key != "n_atoms" and is_per_atom(key):
                batch[key] = batch[key][gather]
    return batch


def _mismatched(joined: bytes, starts: np.ndarray, ids: np.ndarray, registry: _Registry) -> np.ndarray:
    """Rows whose bytes their template does not allow (or that have none), compared 8 bytes at
    a time in one pass (``joined`` ends with 8 spare bytes)."""
    known = ids >= 0
    rows = np.flatnonzero(known)
    if not len(rows):
        return np.flatnonzero(~known)
    sizes = registry.sizes[ids[rows]]
    firsts = np.cumsum(sizes) - sizes
    within = np.arange(int(sizes.sum())) - np.repeat(firsts, sizes)
    got = _gather(joined, np.repeat(starts[rows], sizes) + 8 * within, 8).view(np.uint64)
    at = np.repeat(registry.heads[ids[rows]], sizes) + within
    wrong = (got & registry.mask[at]) != registry.value[at]
    failed = ~known
    failed[rows[np.unique(np.repeat(np.arange(len(rows)), sizes)[wrong])]] = True
    return np.flatnonzero(failed)
