"""Safe binary encoding of flat rows (msgpack with numpy extension types).

Used by backends that store one blob per row (LMDB, caches). Decoding never
imports or calls user code: only these types come back, so reading an
untrusted file cannot run code (unlike pickle or msgpack-numpy object arrays).

Wire format (version 1)
-----------------------
A row is a msgpack array ``[plain, layout, raw]``: ``plain`` maps keys to values
that are not top-level numpy arrays (``None`` marks where an array goes, so key
order survives); ``layout`` is a msgpack array of
``key, dtype.str, shape, offset`` quadruples (flattened) that locate each top-level
array's C-order bytes in ``raw`` (offsets 8-byte aligned).
Values use plain msgpack types for ``None``,
``bool``, ``int`` (-2**63 .. 2**64-1), ``float``, ``str``, ``bytes``, ``list``
and ``dict``; nested numpy values and types msgpack cannot tell apart are extension types:

====  ===========================  ==============================================
code  Python type                  payload
====  ===========================  ==============================================
1     ``numpy.ndarray``            u8 len(dtype.str), dtype.str, u8 ndim,
                                   ndim x u64 shape (little endian), C-order data
2     ``numpy.generic`` (scalar)   u8 len(dtype.str), dtype.str, raw bytes
3     ``tuple``                    msgpack array of the items
4     ``complex``                  two little-endian float64
====  ===========================  ==============================================

Object, void (structured) and datetime dtypes are refused at encode time.

Decoding untrusted bytes
------------------------
Decoding refuses, with :class:`~asebytes_nodes.errors.UnsafeStoreError` naming where
in the value it sits, every msgpack extension type this package never writes: unknown
codes, and msgpack's own timestamp (code -1, which msgpack would turn into a
``msgpack.Timestamp`` before any hook sees it), as well as arrays of dtypes outside
bool/int/float/complex/fixed-width strings. Arrays are only ever views of or copies out
of the stored bytes (``numpy.frombuffer``): no pickle, no ``allow_pickle``, no object arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .errors import SerializationError, StoreCorruptedError, UnsafeStoreError

__all__ = [
    "CODEC_VERSION",
    "decode_row",
    "decode_value",
    "encode_row",
    "encode_value",
]

CODEC_VERSION = 1

_EXT_NDARRAY = 1
_EXT_SCALAR = 2
_EXT_TUPLE = 3
_EXT_COMPLEX = 4
_ALLOWED_KINDS = frozenset("biufcUS")

try:  # a core dependency; imported here, not at package import, to keep `import asebytes_nodes` light
    import msgpack
except ImportError:  # pragma: no cover - exercised only without the extra
    msgpack = None


def _require_msgpack() -> Any:
    if msgpack is None:
        from .errors import MissingExtraError

        raise MissingExtraError(
            "The row codec needs msgpack, a dependency of asebytes-nodes that is not installed "
            "here; run: pip install msgpack"
        )
    return msgpack


def _dtype_header(dtype: np.dtype[Any]) -> bytes:
    if dtype.kind not in _ALLOWED_KINDS:
        raise TypeError(
            f"numpy dtype {dtype} (kind {dtype.kind!r}) cannot be stored; allowed kinds are "
            "bool, integer, float, complex and fixed-width strings"
        )
    code = dtype.str.encode()
    return bytes((len(code),)) + code


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        header = _dtype_header(obj.dtype)
        shape = struct.pack(f"<B{obj.ndim}Q", obj.ndim, *obj.shape)
        return msgpack.ExtType(_EXT_NDARRAY, header + shape + np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):
        return msgpack.ExtType(_EXT_SCALAR, _dtype_header(obj.dtype) + obj.tobytes())
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj)))
    if isinstance(obj, complex):
        return msgpack.ExtType(_EXT_COMPLEX, struct.pack("<dd", obj.real, obj.imag))
    if isinstance(obj, dict):  # dict subclasses such as OrderedDict
        return dict(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bool):  # pragma: no cover - bool is exact in msgpack
        return bool(obj)
    if isinstance(obj, int):  # int subclasses such as IntEnum
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    raise TypeError(f"objects of type {type(obj).__name__} cannot be stored")


def _stored_dtype(data: bytes) -> tuple[np.dtype[Any], int]:
    """The dtype named at the start of an array or scalar payload, and where its data starts."""
    n = data[0]
    dtype = np.dtype(data[1 : 1 + n].decode())
    if dtype.kind not in _ALLOWED_KINDS:
        raise UnsafeStoreError(
            f"refusing a stored numpy value of dtype {dtype.str!r}: this package stores only bool, "
            "integer, float, complex and fixed-width string arrays; the file was not written by it"
        )
    return dtype, 1 + n


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_NDARRAY:
        dtype, at = _stored_dtype(data)
        ndim = data[at]
        start = at + 1 + 8 * ndim
        shape = struct.unpack_from(f"<{ndim}Q", data, at + 1)
        return np.frombuffer(data, dtype, offset=start).reshape(shape).copy()
    if code == _EXT_SCALAR:
        dtype, at = _stored_dtype(data)
        return np.frombuffer(data, dtype, count=1, offset=at)[0]
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_COMPLEX:
        real, imag = struct.unpack("<dd", data)
        return complex(real, imag)
    raise UnsafeStoreError(_foreign_message(code))


def _foreign_message(code: int) -> str:
    return (
        f"msgpack extension type {code} is not one this package writes (it writes only codes "
        f"{_EXT_NDARRAY}-{_EXT_COMPLEX}); refusing the value: the file was damaged or written by "
        "another program, read it with the program that wrote it"
    )


class _Foreign:
    """Marks where a refused extension sat, while locating it for the error message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _locating_hook(code: int, data: bytes) -> Any:
    try:
        return _ext_hook(code, data)
    except (UnsafeStoreError, ValueError, TypeError) as exc:
        return _Foreign(str(exc) if isinstance(exc, UnsafeStoreError) else _foreign_message(code))


# msgpack's timestamp extension (code -1) as it appears on the wire: fixext 4, fixext 8 or
# ext 8 of length 12. msgpack decodes it itself (no ext_hook), so a decoded value is walked
# for timestamps only where these bytes occur: C-speed searches instead of a Python walk per row.
_TIMESTAMP_WIRE = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _find_foreign(value: Any, where: str) -> tuple[str, str] | None:
    """``(position, reason)`` of the first refused extension inside a decoded value, or None."""
    if isinstance(value, _Foreign):
        return where, value.reason
    if isinstance(value, msgpack.Timestamp):
        return where, _foreign_message(-1)
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _find_foreign(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def _refusal(found: tuple[str, str] | None) -> UnsafeStoreError:
    where, reason = found or ("a value", _foreign_message(-1))
    return UnsafeStoreError(f"{where}: {reason}")


def _refuse_foreign(data: bytes, decoded: Any, where: str) -> None:
    """Refuse a decoded value holding a msgpack timestamp (see ``_TIMESTAMP_WIRE``)."""
    if not any(wire in data for wire in _TIMESTAMP_WIRE):
        return
    found = _find_foreign(decoded, where)
    if found is not None:
        raise _refusal(found)


def _locate_foreign(data: Any, row: bool) -> UnsafeStoreError:
    """The error for bytes whose decoding met a refused extension, naming where it sits."""
    try:
        value = msgpack.unpackb(data, ext_hook=_locating_hook, raw=False, strict_map_key=False)
        found = _find_foreign(value[0], "key") if row else _find_foreign(value, "value")
    except Exception:  # noqa: BLE001 - the position only improves the message
        found = None
    return _refusal(found)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def encode_value(value: Any) -> bytes:
    """Encode one value; raises :class:`SerializationError` for unsupported types."""
    _require_msgpack()
    try:
        return _pack(value)
    except (TypeError, OverflowError, ValueError) as exc:
        raise SerializationError(f"cannot serialise value: {exc}") from exc


def decode_value(data: bytes) -> Any:
    """Decode bytes written by :func:`encode_value`."""
    _require_msgpack()
    try:
        value = _unpack(data)
    except UnsafeStoreError:
        raise _locate_foreign(data, row=False) from None
    except StoreCorruptedError:
        raise
    except Exception as exc:
        raise StoreCorruptedError(f"cannot decode stored value: {exc}") from exc
    if b"\xff" in data:  # the type byte of every timestamp (see _TIMESTAMP_WIRE)
        _refuse_foreign(bytes(data), value, "value")
    return value


def encode_row(row: dict[str, Any]) -> bytes:
    """Encode a flat row; the error names the key whose value cannot be stored.

    Top-level numpy arrays go to one raw section described by a layout record
    (no per-array msgpack hook), so rows of one shape share one cached layout.
    """
    _require_msgpack()
    plain: dict[str, Any] = {}
    specs: list[Any] = []
    parts: list[bytes] = []
    offset = 0
    for key, value in row.items():
        if type(value) is np.ndarray and value.dtype.kind in _ALLOWED_KINDS:
            data = value.tobytes()
            specs += (key, value.dtype.str, value.shape, offset)
            plain[key] = None  # keeps the key's position, so rows decode in their original order
            parts.append(data)
            offset += len(data)
            if offset % 8:
                parts.append(_PADDING[offset % 8])
                offset += 8 - offset % 8
        else:
            plain[key] = value
    try:
        layout = msgpack.packb(specs) if specs else b""
        return _pack([plain, layout, b"".join(parts)])
    except (TypeError, OverflowError, ValueError):
        for key, value in row.items():  # find the culprit for a precise message
            try:
                _pack(value)
            except (TypeError, OverflowError, ValueError) as exc:
                raise SerializationError(
                    f"cannot serialise key {key!r}: {exc}. Store numbers, strings, numpy "
                    "arrays of numbers/strings, or lists/dicts/tuples of those."
                ) from exc
        raise


_PADDING = {k: b"\0" * (8 - k) for k in range(1, 8)}
_LAYOUTS: dict[bytes, tuple[tuple[str, np.dtype[Any], tuple[int, ...], int], ...]] = {}
_DTYPES: dict[str, np.dtype[Any]] = {}  # dtype codes seen in layouts (np.dtype(str) costs ~1 us)


def _layout(code: bytes) -> tuple[tuple[str, np.dtype[Any], tuple[int, ...], int], ...]:
    """Decoded array layout of a row, cached: most rows of a store share a few layouts (a
    ragged store has one per atom count, so a new one costs little: a dict lookup per array)."""
    layout = _LAYOUTS.get(code)
    if layout is None:
        flat = msgpack.unpackb(code, raw=False) if code else []
        if len(flat) % 4:
            raise ValueError(f"an array layout of {len(flat)} fields (4 per array)")
        keys, codes = flat[0::4], flat[1::4]
        dtypes: list[np.dtype[Any]] = []
        for key, dtype_code in zip(keys, codes, strict=True):
            dtype = _DTYPES.get(dtype_code) if type(dtype_code) is str else None
            if dtype is None:
                dtype = _checked_dtype(key, dtype_code)
            elif type(key) is not str:
                raise _refused_array(key, dtype_code)
            dtypes.append(dtype)
        # shapes and offsets are used as given: anything but integers (or a buffer too short
        # for them) fails in np.ndarray, which decode_row reports as a damaged row
        layout = tuple(zip(keys, dtypes, map(tuple, flat[2::4]), flat[3::4], strict=True))
        if len(_LAYOUTS) > 4096:  # ragged stores have many layouts; keep the cache bounded
            _LAYOUTS.clear()
        _LAYOUTS[code] = layout
    return layout


def _checked_dtype(key: Any, dtype_code: Any) -> np.dtype[Any]:
    """The dtype a layout names for ``key``, if this package would store it (remembered)."""
    dtype = np.dtype(dtype_code)
    if dtype.kind not in _ALLOWED_KINDS or not isinstance(key, str):
        raise _refused_array(key, dtype_code)
    if isinstance(dtype_code, str) and len(_DTYPES) < 256:
        _DTYPES[dtype_code] = dtype
    return dtype


def _refused_array(key: Any, dtype_code: Any) -> UnsafeStoreError:
    return UnsafeStoreError(
        f"refusing stored array {key!r} of dtype {dtype_code!r}: this package stores only "
        "bool, integer, float, complex and fixed-width string arrays under string keys"
    )


def decode_row(data: Any, keys: Any = None) -> dict[str, Any]:
    """Decode a row written by :func:`encode_row`, optionally only ``keys``.

    Arrays come back writable and owned by the caller (copied out of ``data``).
    """
    _require_msgpack()
    plain = None
    try:
        plain, code, raw = _unpack(data)
        head = bytes(data[: len(data) - len(raw)])  # everything but the raw array section
        if b"\xff" in head:  # the type byte of every timestamp (see _TIMESTAMP_WIRE)
            _refuse_foreign(head, plain, "key")
        layout = _layout(code)
        if keys is not None:
            wanted = set(keys)
            plain = {k: v for k, v in plain.items() if k in wanted}
            layout = tuple(entry for entry in layout if entry[0] in wanted)
        if layout:
            buf = bytearray(raw)
            ndarray = np.ndarray
            for key, dtype, shape, offset in layout:
                plain[key] = ndarray(shape, dtype, buf, offset)
    except UnsafeStoreError:
        if plain is None:  # refused inside msgpack's unpacking: find the key for the message
            raise _locate_foreign(data, row=True) from None
        raise
    except StoreCorruptedError:
        raise
    except Exception as exc:
        raise StoreCorruptedError(f"cannot decode stored row: {exc}") from exc
    return plain
