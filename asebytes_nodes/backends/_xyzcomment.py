"""Values of extxyz frames read from their comment lines (and species columns) alone.

A frame's ``info.*`` values, its per-frame calculator results (``calc.energy``,
``calc.stress``, ...: ASE's ``per_config_properties``), ``cell`` and ``pbc`` all come
from its comment line, so a column of them needs that one line per frame, not the atom
lines. The values are ASE's own: every value goes through ``key_val_str_to_dict`` (plain
numbers of a whole column at once, through the same numpy conversion ASE makes for one),
then through the rules of ``ase.io.extxyz._read_xyz_frame`` and ``set_calc_and_arrays``
(``Lattice`` is the transposed cell and makes pbc default to True; a per-frame result
moves to the calculator, a 3x3 stress to Voigt form; SinglePointCalculator keeps energy,
free_energy and magmom as given and makes the others float arrays). Frames where the
comment line alone would not decide (VEC cell lines, a calculator result also named as a
per-atom column) are left to the full reader: :func:`comment_rows` names them.

``arrays.numbers`` comes from the first token of each atom line when the frame's first
property is ``species:S:1`` and no ``Z`` column overrides it (ASE's rule), found with numpy
over the frame's bytes. Only what is read is checked: a column read this way does not
notice a malformed atom line elsewhere in the frame (a full read or ``validate`` does).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from ase.data import atomic_numbers
from ase.io.extxyz import (
    SPECIAL_3_3_KEYS,
    UNPROCESSED_KEYS,
    key_val_str_to_dict,
    parse_properties,
    per_config_properties,
)

from ._base import MISSING

__all__ = ["Parsed", "comment_rows", "comment_signature", "fast_keys", "parse_comment", "species_numbers"]

# A comment line of plain ``key``, ``key=value``, ``key="quoted value"`` tokens (no escapes,
# no quoted keys): for these, ASE's character-by-character parser finds exactly these keys
# and values, so the regular expression (about 10x faster) may stand in for its tokenizer.
# (An empty quoted value is not plain: ASE then joins the next token to it.)
_KEY = r"[^\s=\"'{}\[\]\\]++"
_VALUE = r"\"[^\"\\]++\"|'[^'\\]++'|\{[^}\\]++\}|\[[^\]\\]++\]|[^\s\"'{}\[\]\\=]++"
_TOKEN = re.compile(rf"\s*+({_KEY})(?:=({_VALUE}))?+(?=\s|$)")
_SIMPLE_LINE = re.compile(rf"(?:\s*+{_KEY}(?:=(?:{_VALUE}))?+(?=\s|$))*+\s*+")
# Values ASE converts with numpy: ints (too short to overflow int64), and numbers with a
# point or an exponent among them (then every one is a float); anything else goes to ASE.
_INT = r"[+-]?\d{1,18}"
_INTS = re.compile(rf"{_INT}(?: {_INT})*", re.ASCII)  # other digits: ASE decides
_NUMBER = rf"(?:[+-]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][+-]?\d+)?|{_INT})"
_NUMBERS = re.compile(rf"{_NUMBER}(?: {_NUMBER})*", re.ASCII)
_BOOLS = {"T": True, "F": False, "true": True, "false": False, "True": True, "False": False}
_BOOLS |= {"TRUE": True, "FALSE": False}  # ASE's str_to_bool
_OPEN = ("'", '"', "{", "[")

_PER_CONFIG = frozenset(per_config_properties)
_KEPT_AS_GIVEN = frozenset(("energy", "free_energy", "magmom"))  # SinglePointCalculator.__init__
_NOT_INFO = frozenset(("pbc", "Lattice", "Properties")) | _PER_CONFIG
_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"
_WINDOW = 8  # bytes of an atom line looked at for its species token
_SPACE = np.zeros(256, bool)
_SPACE[[9, 10, 11, 12, 13, 32]] = True  # what str.split() splits on, in ASCII


def fast_keys(keys: Sequence[str] | None) -> bool:
    """Can rows restricted to ``keys`` be read by :func:`comment_rows` (and species)?"""
    return keys is not None and all(
        key in ("cell", "pbc", "arrays.numbers")
        or key.startswith("info.")
        or (key.startswith("calc.") and key[5:] in _PER_CONFIG)
        for key in keys
    )


def _pairs(comment: str) -> tuple[dict[str, str], bool]:
    """(key -> value, raw?) of a stripped comment line: the raw value text of a simple line
    (delimiters kept), else ASE's parsed values."""
    if _SIMPLE_LINE.fullmatch(comment):
        pairs = _TOKEN.findall(comment)
        for key, value in pairs:  # ASE's parser refuses these wherever they are: so do we
            if (key in SPECIAL_3_3_KEYS and not _nine_numbers(value)) or "_JSON " in value:
                _convert(key, value)
        return dict(pairs), True
    return (key_val_str_to_dict(comment) if comment else {}), False


def _parts(value: str) -> list[str]:
    """The items ASE splits a raw value into (delimiters removed)."""
    return (value[1:-1] if value[:1] in _OPEN else value).replace(",", " ").split()


def _nine_numbers(value: str) -> bool:
    parts = _parts(value)
    return len(parts) == 9 and _NUMBERS.fullmatch(" ".join(parts)) is not None


def comment_signature(comment: str, has_atoms: bool) -> Hashable:
    """What decides the keys of a frame with this (stripped) comment line."""
    if _SIMPLE_LINE.fullmatch(comment):
        pairs = _TOKEN.findall(comment)
        properties = [value for key, value in pairs if key == "Properties"]
        return "simple", has_atoms, tuple(dict.fromkeys(key for key, _ in pairs)), tuple(properties[-1:])
    info = key_val_str_to_dict(comment) if comment else {}
    return "ase", has_atoms, tuple(info), str(info.get("Properties"))


def _convert(name: str, raw: str) -> Any:
    """ASE's value of ``name=raw`` (a bare key when ``raw`` is empty)."""
    return key_val_str_to_dict(f"{name}={raw}" if raw else name)[name]


def _values(name: str, frames: list[tuple[dict[str, Any], bool]]) -> list[Any]:
    """ASE's value of key ``name`` in each frame, MISSING where absent. Numbers and arrays
    of numbers of the whole column are converted at once, by the numpy call ASE makes."""
    out: list[Any] = [MISSING] * len(frames)
    batches: dict[tuple[int, type], list[tuple[int, list[str]]]] = {}
    plain = name.lower() in UNPROCESSED_KEYS  # kept as text by ASE
    for j, (pairs, raw) in enumerate(frames):
        value = pairs.get(name, MISSING)
        if value is MISSING or not raw:
            out[j] = value
            continue
        parts = _parts(value)
        text = " ".join(parts)
        if plain or not parts:
            out[j] = _convert(name, value)
        elif _INTS.fullmatch(text):
            batches.setdefault((len(parts), np.int64), []).append((j, parts))
        elif _NUMBERS.fullmatch(text):
            batches.setdefault((len(parts), np.float64), []).append((j, parts))
        elif name not in SPECIAL_3_3_KEYS and all(p in _BOOLS for p in parts):
            out[j] = _BOOLS[parts[0]] if len(parts) == 1 else [_BOOLS[p] for p in parts]
        else:
            out[j] = _convert(name, value)
    for (size, dtype), items in batches.items():
        if name in SPECIAL_3_3_KEYS and size != 9:
            for j, _ in items:
                out[j] = _convert(name, frames[j][0][name])  # ASE's error
            continue
        array: np.ndarray[Any, Any] = np.array([p for _, parts in items for p in parts], dtype=dtype).reshape(
            len(items), size
        )
        if name in SPECIAL_3_3_KEYS:  # ASE reshapes the 9 numbers in Fortran order
            array = array.reshape(len(items), 3, 3).transpose(0, 2, 1)
        column = array[:, 0] if size == 1 else array  # one number is a numpy scalar, as ASE's
        for (j, _), value in zip(items, column, strict=True):
            out[j] = value
    return out


def _calc_value(name: str, value: Any) -> Any:
    if name == "stress" and np.shape(value) == (3, 3):
        s = value
        value = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return value if name in _KEPT_AS_GIVEN else np.array(value, float)


@functools.lru_cache(maxsize=256)
def _property_names(properties: str) -> tuple[frozenset[str], bool]:
    """(ASE names of the per-atom columns, is the species column first and alone?)"""
    props, names, _, _ = parse_properties(properties)
    ase_names = frozenset(ase for ase, _ in props.values())
    species_first = bool(names) and names[0] == "species" and props["species"] == ("symbols", 1)
    return ase_names, species_first and "numbers" not in ase_names


def _properties(pairs: dict[str, Any], raw: bool) -> str:
    value = pairs.get("Properties", _DEFAULT_PROPERTIES)
    if raw and value[:1] in _OPEN:
        value = value[1:-1]
    return str(value)


#: A parsed comment line: (key -> value, raw values?); None for a frame the full reader reads.
Parsed = tuple[dict[str, Any], bool] | None


def parse_comment(comment: str | None) -> Parsed:
    """The keys and values of a stripped comment line (None stays None: VEC lines follow).
    Raises what ASE raises on a malformed line."""
    return None if comment is None else _pairs(comment)


def comment_rows(
    parsed: Sequence[Parsed], keys: Sequence[str]
) -> tuple[list[dict[str, Any]], list[int], list[int]]:
    """Rows restricted to ``keys`` (without ``arrays.numbers``) from parsed comment lines.

    Returns the rows, the positions whose frames need the full reader (``None``: VEC
    lines; a per-frame result also named as a column), and the positions whose
    ``arrays.numbers`` may come from :func:`species_numbers`.
    Raises what ASE raises on a malformed value.
    """
    frames = [({}, False) if p is None else p for p in parsed]
    whole = [j for j, p in enumerate(parsed) if p is None]
    species: list[int] = []
    calc = [key[5:] for key in keys if key.startswith("calc.")]
    if calc or "arrays.numbers" in keys:
        for j, (pairs, raw) in enumerate(frames):
            if parsed[j] is None:
                continue
            columns, species_first = _property_names(_properties(pairs, raw))
            if any(name in columns for name in calc):
                whole.append(j)
            elif species_first:
                species.append(j)
    rows: list[dict[str, Any]] = [{} for _ in frames]
    for key in keys:
        if key == "arrays.numbers":
            continue
        if key in ("cell", "pbc"):
            lattice = _values("Lattice", frames)
            if key == "cell":
                column = [np.zeros((3, 3)) if v is MISSING else np.array(v.T, float) for v in lattice]
            else:
                column = []
                for v, lat in zip(_values("pbc", frames), lattice, strict=True):
                    pbc = np.zeros(3, bool)
                    pbc[:] = (lat is not MISSING) if v is MISSING else v
                    column.append(pbc)
        elif key.startswith("info."):
            column = [MISSING] * len(frames) if key[5:] in _NOT_INFO else _values(key[5:], frames)
        else:
            column = [v if v is MISSING else _calc_value(key[5:], v) for v in _values(key[5:], frames)]
        for row, value in zip(rows, column, strict=True):
            if value is not MISSING:
                row[key] = value
    return rows, sorted(set(whole)), species


def species_numbers(blob: bytes, starts: np.ndarray, natoms: np.ndarray) -> list[np.ndarray] | None:
    """Atomic numbers of frames in ``blob`` (frame ``k`` starts at byte ``starts[k]`` with
    ``natoms[k]`` atoms; species first) from the first token of each atom line; None when
    any token is indented, longer than a few bytes or no element symbol (the full reader
    then decides)."""
    buf = np.frombuffer(blob, np.uint8)
    line_starts = np.concatenate([[0], np.flatnonzero(buf == 10) + 1])
    first = np.searchsorted(line_starts, starts) + 2  # past the count and comment lines
    total = int(natoms.sum())
    if total == 0:
        return [np.zeros(0, np.int64) for _ in natoms]
    within = np.arange(total) - np.repeat(np.cumsum(natoms) - natoms, natoms)
    at = line_starts[np.repeat(first, natoms) + within]
    window = buf[np.minimum(at[:, None] + np.arange(_WINDOW), len(buf) - 1)]
    space = _SPACE[window]
    if space[:, 0].any() or not space.any(axis=1).all():
        return None
    window[np.logical_or.accumulate(space, axis=1)] = 0
    tokens, inverse = np.unique(np.ascontiguousarray(window).view(f"S{_WINDOW}").ravel(), return_inverse=True)
    table = [atomic_numbers.get(t.decode("ascii", "replace").capitalize()) for t in tokens.tolist()]
    if None in table:
        return None
    numbers = np.array(table, np.int64)[inverse.ravel()]
    return np.split(numbers, np.cumsum(natoms)[:-1])
