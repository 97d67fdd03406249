"""Integrity of an LMDB store's file: what LMDB's meta pages claim, checksums on values.

- :func:`check_file` reads LMDB's two meta pages (the first two pages of the file) before
  the file is memory-mapped and refuses a file shorter than the pages its newest meta page
  says are in use. LMDB itself maps the file without that check, so a truncated file would
  kill the reading process with ``SIGBUS`` on the first access past its end.
- :class:`SealedC` (layout version 3) appends a CRC-32C to every stored value except the
  format record, :class:`Sealed` (layout version 2) a CRC-32 (zlib); the CRC starts from the
  CRC of the value's key, so a value found under another key (a damaged key or branch page)
  fails its check too. :class:`Unsealed` (layout version 1) stores values as they are.
- :func:`lmdb_failure` turns an error LMDB raised while reading into
  :class:`~asebytes_nodes.errors.StoreCorruptedError` naming the store.

LMDB pages carry no checksum, and py-lmdb touches every page of a value inside ``get``
before Python sees it: a flipped value size of an overflow value is refused before that by
:class:`._lmdb_bounds.BoundedTxn`.

LMDB meta page (``lmdb/mdb.c``, 64-bit builds; native byte order): a 16-byte page header,
then ``mm_magic`` u32 = 0xBEEFC0DE, ``mm_version`` u32 = 1, address and map size (2 x u64),
two 48-byte database records (free pages, main; the free-pages record's first u32 is the
page size; ``md_root`` is each record's last u64), ``mm_last_pg`` u64, ``mm_txnid`` u64.
Commit ``t`` writes meta page ``t % 2``, so the two pages hold consecutive transaction ids
(both 0 in a new file).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingExtraError, StoreCorruptedError

try:
    from google_crc32c import extend as _crc32c
    from google_crc32c import value as _crc32c_value
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        'The LMDB backend needs google-crc32c. Run: pip install "asebytes-nodes[lmdb]"'
    ) from exc

__all__ = ["SEALS", "Sealed", "SealedC", "Unsealed", "check_file", "lmdb_failure"]

_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_PAGE_HEADER = 16
# magic, version, (address, map size), page size, (free db), free root, (main db), main root, last, txnid
_META_FIELDS = struct.Struct("<II16xI36xQ40xQQQ")
_META_SIZE = _PAGE_HEADER + _META_FIELDS.size
_NO_PAGE = 2**64 - 1  # an empty database's root
_CRC = struct.Struct("<I")
_PAGE = struct.Struct("<Q2xHHH")  # mp_pgno, (mp_pad), mp_flags, mp_lower, mp_upper
_NODE_KSIZE = struct.Struct("<H")
_P_BRANCH, _P_LEAF, _P_DIRTY = 1, 2, 0x10
_NODE_REACH = 65536 + 8 + 4096  # how far past a page's start LMDB may read a node
_CRC_RESIDUE = 0x2144DF1C
_CRC32C_RESIDUE = 0x48674BC7  # the same property for CRC-32C


def _meta(head: bytes, offset: int) -> dict[str, int]:
    magic, version, psize, free_root, main_root, last, txnid = _META_FIELDS.unpack_from(
        head, offset + _PAGE_HEADER
    )
    return {
        "magic": magic, "version": version, "psize": psize, "free_root": free_root,
        "main_root": main_root, "last": last, "txnid": txnid,
    }


def check_file(path: Path, fd: int | None = None) -> None:
    """Refuse a file LMDB would map past its end (or that is no LMDB file at all); ``fd``: the
    file already open for reading (else it is opened here).

    Raises :class:`StoreCorruptedError` naming ``path`` and what its meta pages claim.
    A missing file passes (it is about to be created).
    """
    if fd is not None:
        _check_open_file(path, fd)
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _check_open_file(path, fd)
    finally:
        os.close(fd)


def _check_open_file(path: Path, fd: int) -> None:
    """:func:`check_file` on the file open as ``fd`` (one descriptor, positioned reads)."""
    size = os.fstat(fd).st_size
    advice = "restore the file from a copy, or delete it (and its -lock file) to start a new store"

    def refuse(what: str) -> StoreCorruptedError:
        return StoreCorruptedError(f"{path}: {what}; an LMDB store needs its meta pages intact: {advice}")

    head = os.pread(fd, _META_SIZE, 0)
    if len(head) < _META_SIZE:
        raise refuse(f"the file has {size} bytes, less than LMDB's first meta page (truncated?)")
    first = _meta(head, 0)
    psize = first["psize"]
    if first["magic"] != _MAGIC or first["version"] != _DATA_VERSION:
        raise refuse("not an LMDB file, or its first meta page is damaged")
    if psize < 512 or psize > 65536 or psize & (psize - 1):
        raise refuse(f"the first meta page names an impossible page size {psize}")
    head = os.pread(fd, _META_SIZE, psize)
    if len(head) < _META_SIZE:
        raise refuse(f"the file has {size} bytes, less than LMDB's two meta pages (truncated?)")
    second = _meta(head, 0)
    if second["magic"] != _MAGIC or second["version"] != _DATA_VERSION or second["psize"] != psize:
        raise refuse("the second meta page is damaged")
    t0, t1 = first["txnid"], second["txnid"]
    if not (t0 == t1 == 0 or (t0 % 2 == 0 and t1 % 2 == 1 and abs(t0 - t1) == 1)):
        raise refuse(f"the meta pages name transactions {t0} and {t1}, which LMDB never writes")
    newest, older = (second, first) if t1 > t0 else (first, second)
    last = newest["last"]
    if last < older["last"] or last < 1:
        raise refuse(f"the newest meta page claims {last + 1} pages, fewer than the older one")
    for root in (newest["free_root"], newest["main_root"]):
        if root != _NO_PAGE and not 2 <= root <= last:
            raise refuse(f"the newest meta page names root page {root} outside pages 2..{last}")
    if size < (last + 1) * psize:
        raise refuse(
            f"the file has {size} bytes but its newest meta page says {last + 1} pages of "
            f"{psize} bytes ({(last + 1) * psize} bytes) are in use (truncated?)"
        )
    damaged = _tail_page_damage(fd, size, psize, last)
    if damaged is not None:
        raise refuse(damaged)


def _tail_page_damage(fd: int, size: int, psize: int, last: int) -> str | None:
    """What is wrong with a B-tree page near the end of the file, if anything.

    A node offset is 16 bits, so LMDB reads a node up to 64 kB past the start of its page
    before checking anything; on a page that close to the end of the file, a damaged offset or
    page bound makes it read past the end (``SIGBUS``). Pages further in fail more gently.
    A page counts as a B-tree page when it names itself (``mp_pgno``) and its flags say so
    (the continuation pages of a large value hold plain data).
    """
    first = max(2, (size - _NODE_REACH) // psize)
    if first > last:  # the pages in use end well before the file does
        return None
    tail = os.pread(fd, (last + 1 - first) * psize, first * psize)
    for pgno in range(first, min(last + 1, first + len(tail) // psize)):
        at = (pgno - first) * psize
        number, flags, lower, upper = _PAGE.unpack_from(tail, at)
        if number != pgno or flags & ~_P_DIRTY not in (_P_BRANCH, _P_LEAF):
            continue
        if not _PAGE_HEADER <= lower <= upper <= psize:
            return f"page {pgno} has impossible bounds {lower}..{upper}"
        for ptr in struct.unpack_from(f"<{(lower - _PAGE_HEADER) // 2}H", tail, at + _PAGE_HEADER):
            ksize = _NODE_KSIZE.unpack_from(tail, at + ptr + 6)[0] if upper <= ptr <= psize - 8 else -1
            if ksize < 0 or ptr + 8 + ksize > psize:
                return f"page {pgno} has a node at offset {ptr} that runs past the page"
    return None


class Unsealed:
    """Layout version 1: values stored as they are, without a checksum."""

    version = 1
    trailer = 0  # bytes the checksum adds to a value

    @staticmethod
    def wrap(key: bytes, value: bytes) -> bytes:
        return value

    @staticmethod
    def wrap_many(keys: Sequence[bytes], values: list[bytes]) -> list[bytes]:
        """``values``, sealed in place (see :meth:`Sealed.wrap_many`): here they stay as they are."""
        return values

    @staticmethod
    def damaged(keys: Sequence[bytes], raws: Sequence[Any]) -> np.ndarray:
        """Positions of the values that fail their checksum (none without checksums)."""
        return np.zeros(0, np.int64)

    @staticmethod
    def unwrap(key: bytes, raw: Any) -> Any:
        return raw


class Sealed:
    """Layout version 2: every value is followed by a little-endian CRC-32 of key and value."""

    version = 2
    trailer = _CRC.size

    @staticmethod
    def wrap(key: bytes, value: bytes) -> bytes:
        return value + _CRC.pack(zlib.crc32(value, zlib.crc32(key)))

    @classmethod
    def wrap_many(cls, keys: Sequence[bytes], values: list[bytes]) -> list[bytes]:
        """``values`` with each one replaced by its :meth:`wrap` (in place, so each unsealed
        copy is freed as soon as its sealed one exists: a batch of 1,000 rows of 6 kB never
        holds both, which halved the time of this step by sparing the fresh pages)."""
        wrap = cls.wrap
        for j, key in enumerate(keys):
            values[j] = wrap(key, values[j])
        return values

    @staticmethod
    def damaged(keys: Sequence[bytes], raws: Sequence[Any]) -> np.ndarray:
        """Positions of the values that fail their checksum: one C-level pass, no Python per value."""
        crcs = np.fromiter(map(zlib.crc32, raws, map(zlib.crc32, keys)), np.uint32, len(raws))
        return np.flatnonzero(crcs != _CRC_RESIDUE)

    @staticmethod
    def unwrap(key: bytes, raw: Any) -> Any:
        """The value without its checksum, or None when the checksum does not match."""
        # CRC-32 over a message followed by its own CRC (little endian) always gives the same
        # residue: one pass over the stored bytes checks them, with no unpacking
        if zlib.crc32(raw, zlib.crc32(key)) != _CRC_RESIDUE or len(raw) < 4:
            return None
        return raw[:-4]


class SealedC(Sealed):
    """Layout version 3: as version 2 with CRC-32C (Castagnoli, google-crc32c), about 2-4x
    faster than zlib's CRC-32 on rows of a few kB, even with the copy it needs (it takes
    bytes, not a view of the map)."""

    version = 3

    @staticmethod
    def wrap(key: bytes, value: bytes) -> bytes:
        return value + _CRC.pack(_crc32c(_crc32c_value(key), value))

    @staticmethod
    def unwrap(key: bytes, raw: Any) -> Any:
        """The value without its checksum, or None when the checksum does not match."""
        data = bytes(raw)
        if len(data) < 4 or _crc32c(_crc32c_value(key), data) != _CRC32C_RESIDUE:
            return None
        return memoryview(data)[:-4]

    @staticmethod
    def damaged(keys: Sequence[bytes], raws: Sequence[Any]) -> np.ndarray:
        """Positions of the values that fail their checksum: one C-level pass, no Python per value
        (google-crc32c reads bytes and numpy arrays in place; other values, such as views of the
        map, are copied first, as in :meth:`unwrap`)."""
        if raws and not isinstance(raws[0], np.ndarray):
            raws = list(map(bytes, raws))
        crcs = map(_crc32c, map(_crc32c_value, keys), raws)
        return np.flatnonzero(np.fromiter(crcs, np.uint32, len(raws)) != _CRC32C_RESIDUE)


SEALS: dict[int, type[Unsealed] | type[Sealed]] = {1: Unsealed, 2: Sealed, 3: SealedC}


def lmdb_failure(path: Path, exc: BaseException) -> StoreCorruptedError:
    """The package error for an LMDB error met while reading ``path`` (raise it ``from exc``)."""
    return StoreCorruptedError(
        f"{path}: LMDB cannot read its pages ({type(exc).__name__}: {exc}); the file is damaged: "
        "restore it from a copy, or run `asebytes-nodes validate` to see which rows are still readable"
    )


def free_bytes(path: Path) -> int:
    """Bytes free to unprivileged writers on the file system holding ``path``."""
    stats = os.statvfs(path.parent)
    return stats.f_bavail * stats.f_frsize
