"""Row templates for LMDB batch reads (issue 15): what one row's bytes say about every row
like it (see :mod:`._lmdb_batch` for how batches use them).

A row is msgpack ``[plain, layout, raw]`` (:mod:`asebytes_nodes.codec`). :func:`learn` walks
one decoded row's bytes once and records, per byte before the raw section, which bits must
match (``mask``/``value``; the payload bytes of numbers and the characters of text are free,
in lists and dicts too: type bytes and lengths, which decide the parse, stay fixed) and
where each key's value sits (:class:`Field`). Rows of the same length whose bytes the template
allows parse exactly as the template row does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..batch import is_numeric
from ..codec import _EXT_SCALAR, _layout
from ._keys import atom_count

__all__ = ["Field", "Template", "learn"]

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


def _numpy_scalar(body: bytes, pos: int) -> tuple[int, np.dtype[Any]] | None:
    """(where its bytes start, dtype) of the numpy number at ``pos`` (the codec's extension
    type 2: dtype string, then the value's bytes), or None for any other value."""
    b = body[pos]
    if b == 0xC7:  # ext 8: length, type, payload
        size, code, at = body[pos + 1], body[pos + 2], pos + 3
    elif 0xD4 <= b <= 0xD8:  # fixext 1-16: type, payload
        size, code, at = 1 << (b - 0xD4), body[pos + 1], pos + 2
    else:
        return None
    n = body[at] if code == _EXT_SCALAR and size else 0
    try:
        dtype = np.dtype(body[at + 1 : at + 1 + n].decode("ascii")) if n else None
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    if dtype is None or dtype.kind not in "biufc" or dtype.itemsize != size - 1 - n:
        return None
    return at + 1 + n, dtype


_MAP = ((0x80, 0x8F), {0xDE: 2, 0xDF: 4})
_STR = ((0xA0, 0xBF), {0xD9: 1, 0xDA: 2, 0xDB: 4})
_ARRAY = ((0x90, 0x9F), {0xDC: 2, 0xDD: 4})
_BIN = ((1, 0), {0xC4: 1, 0xC5: 2, 0xC6: 4})


def _free(body: bytes, pos: int, mask: np.ndarray, value: np.ndarray) -> int:
    """Free the bytes of the value at ``pos`` that do not change how it parses: the characters
    of text, the payloads of numbers, within lists and dicts too (type bytes and lengths stay
    fixed); the position after it. Without this, an id per frame (``info["frame_id"]``) or a
    list of floats made a template per row: 1.2-2.3k frames/s against 30-46k."""
    b = body[pos]
    if b in _FIXED:
        end = pos + 1 + np.dtype(_FIXED[b]).itemsize
        mask[pos + 1 : end] = value[pos + 1 : end] = 0
        return end
    elif b <= 0x7F or b >= 0xE0:  # fixint
        mask[pos], value[pos] = (0x80, 0) if b <= 0x7F else (0xE0, 0xE0)
    elif b in (0xC2, 0xC3):
        mask[pos], value[pos] = 0xFE, 0xC2
    elif 0xA0 <= b <= 0xBF or b in _STR[1]:
        size, at = _header(body, pos, *_STR)
        mask[at : at + size] = value[at : at + size] = 0
        return at + size
    elif 0x80 <= b <= 0x9F or b in (0xDC, 0xDD, 0xDE, 0xDF):  # map, array
        pairs = 0x80 <= b <= 0x8F or b in (0xDE, 0xDF)
        n, at = _header(body, pos, *(_MAP if pairs else _ARRAY))
        for _ in range(2 * n if pairs else n):
            at = _free(body, at, mask, value)
        return at
    return _skip(body, pos)


def _number(b: int, pos: int) -> Field | None:
    """Where the msgpack number at ``pos`` (type byte ``b``) keeps its value: a fixed-width
    number's payload, a fixint's or bool's type byte; None for any other value."""
    if b in _FIXED:
        return Field(pos + 1, np.dtype(_FIXED[b]), (), "f" if b in (0xCA, 0xCB) else "i")
    if b <= 0x7F or b >= 0xE0:  # fixint: the type byte is the value
        return Field(pos, np.dtype("u1" if b <= 0x7F else "i1"), (), "i")
    if b in (0xC2, 0xC3):
        return Field(pos, np.dtype("u1"), (), "b")
    return None


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
            pos = at + size
            if (scalar := _numpy_scalar(body, pos)) is not None:  # np.float64(...): ASE's extxyz
                at, dtype = scalar
                mask[at : at + dtype.itemsize] = value[at : at + dtype.itemsize] = 0
                slots[names[-1]] = Field(at, dtype, ())
                pos = _skip(body, pos)
                continue
            if (number := _number(body[pos], pos)) is not None:  # read from here by batches
                slots[names[-1]] = number
            pos = _free(body, pos, mask, value)  # text, lists, dicts: told apart by their structure only
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
    numeric = frozenset(k for k, v in row.items() if is_numeric(v))
    counted = atom_count(row, None)
    if counted is None or "arrays.numbers" not in row:
        return None
    return Template(len(body), mask[:raw], value[:raw], fields, numeric, counted)
