"""Sharded Zarr v3 arrays of a local store written directly, in zarr's own layout.

zarr-python 3.1 sends every array and every inner chunk through its asynchronous codec
pipeline: about 1 ms to create an array and 1 ms more to write it, plus event-loop and
thread hops per chunk, whatever the data size. A store's first ``extend`` creates every
column at once, so for a batch of a thousand frames that fixed cost was most of the
write (periodic-1000: 35 of 58 ms).

:class:`~asebytes_nodes.backends.ZarrBackend` writes the arrays of a local store here
instead (:func:`write_new_array` to create one, :func:`write_rows` to append or rewrite
rows), in the files zarr itself writes for the same ``create_array``, ``resize`` and
``arr[start:stop] = data``::

    <name>/zarr.json            the array document (sharding_indexed codec, index at the end)
    <name>/c/<s>[/0...]         shard s: its inner chunks, each the bytes codec, the
                                compressor, then (layout version 2) a crc32c of the
                                compressed bytes (uint32 LE), in order; then the index, (offset, nbytes) as
                                little-endian uint64 per inner chunk (2**64-1 twice for a
                                chunk never written), then the index's crc32c (uint32 LE)
    <parent>/zarr.json          an empty group document for each parent folder

A new array keeps the store's compressor only when compressing its first 32 KiB saves 10% or
more (:func:`paying`): positions, forces, cells and stresses of varied structures shrink by about
6% under lz4 with shuffle, and an uncompressed chunk is read without being decompressed.
Measured 2026-12-05 (fresh processes, store opened inside, 5-7 alternating rounds): 300 shuffled
batches of 32 on 100,000 periodic frames 266 -> 232 ms, 1,000 random ``db[i]`` 332 -> 317 ms; a
cold epoch of periodic-1000 17.3 -> 14.9 ms, of ethanol-20000 47.8 -> 38.4 ms; open + 100 random
frames 20.8 -> 20.2 and 21.9 -> 20.4 ms. Stores grow 3-5% (periodic-1000 5.25 -> 5.44 MB,
ethanol-20000 10.06 -> 10.38 MB, 100,000 frames 332.0 -> 348.7 MB).

Chunks are padded with the fill value (0) to full size, like zarr; unlike zarr, a chunk
that is all zeros is written rather than skipped, so ``-0.0`` keeps its sign. Rows
outside the written range keep their bytes (a new array: they read as the fill value).
Rewritten files are replaced atomically (written beside, then ``os.replace``; the
temporary file is removed if the write fails), and no file is ever modified in place:
that is what lets :func:`copy_rows` build a new version of an array whose untouched
shard files are hard links to the old version's (copy-on-write). :func:`verify_array`
checks every chunk's checksum, for ``check()``. Only Blosc compressors and no compression are handled
(:func:`chunk_codec`); other codecs, arrays laid out otherwise and remote stores go
through zarr. ``tests/backends/test_zarr_shards.py`` checks documents and files against
zarr's, byte for byte, for new arrays and appends, and that zarr reads them back.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Blosc
from numcodecs.blosc import compress

from ..errors import StoreCorruptedError
from ..options import BLOSC_COMPRESSORS
from ._zarr_txn import group_document

__all__ = [
    "ChunkCodec",
    "chunk_codec",
    "copy_rows",
    "handles",
    "replace_file",
    "verify_array",
    "write_new_array",
    "write_rows",
]

_EMPTY = np.uint64(2**64 - 1)
_GROUP_DOC = group_document()

Encoder = Callable[[np.ndarray], bytes]


class ChunkCodec:
    """The stages after the bytes codec of a chunk's chain: compressor (Blosc or none) and,
    when ``checksum``, a crc32c of the compressed bytes. Gives their JSON and byte coders."""

    def __init__(self, cname: str | None, clevel: int, checksum: bool = True) -> None:
        self.cname, self.clevel, self.checksum = cname, clevel, checksum

    def variant(self, checksum: bool) -> ChunkCodec:
        """The same compressor with or without the checksum stage."""
        return self if checksum == self.checksum else ChunkCodec(self.cname, self.clevel, checksum)

    def document(self, itemsize: int) -> list[dict[str, Any]]:
        stages: list[dict[str, Any]] = []
        if self.cname is not None:
            config = {"typesize": itemsize, "cname": self.cname, "clevel": self.clevel}
            config |= {"shuffle": "shuffle", "blocksize": 0}
            stages.append({"name": "blosc", "configuration": config})
        return stages + ([{"name": "crc32c"}] if self.checksum else [])

    def _blosc(self, itemsize: int) -> Blosc:
        return Blosc(self.cname, self.clevel, Blosc.SHUFFLE, blocksize=0, typesize=itemsize)

    def decoder(self, itemsize: int) -> Callable[[bytes], bytes]:
        """Encoded chunk -> raw bytes; raises ValueError on a checksum mismatch."""
        blosc = None if self.cname is None else self._blosc(itemsize)
        checksum = self.checksum

        def decode(raw: bytes) -> bytes:
            if checksum:
                raw, crc = raw[:-4], raw[-4:]
                if google_crc32c.value(raw).to_bytes(4, "little") != crc:
                    raise ValueError("chunk does not match its crc32c checksum")
            return bytes(raw) if blosc is None else bytes(blosc.decode(raw))

        return decode

    def encoder(self, itemsize: int) -> Encoder:
        """Contiguous chunk -> encoded bytes; Blosc's own ``compress`` is called directly (what
        ``Blosc.encode`` calls after its buffer checks, about 1.5 us of a 16 KiB chunk's 15)."""
        if self.cname is None:
            squeeze: Encoder = np.ndarray.tobytes
        else:
            name, level = self.cname.encode(), self.clevel

            def squeeze(chunk: np.ndarray) -> bytes:
                return compress(chunk, name, level, Blosc.SHUFFLE, 0, itemsize)

        if not self.checksum:
            return squeeze

        def encode(chunk: np.ndarray) -> bytes:
            raw = squeeze(chunk)
            return raw + google_crc32c.value(raw).to_bytes(4, "little")

        return encode


def chunk_codec(compressor: str | None, clevel: int) -> ChunkCodec | None:
    """The codec this module can write for ``ZarrBackend(compressor=...)``, else None."""
    if compressor in (None, "none"):
        return ChunkCodec(None, clevel)
    if compressor in BLOSC_COMPRESSORS:
        return ChunkCodec(compressor, clevel)
    return None


_GAIN = 0.1  # a new array keeps its compressor when its first rows compress by this much
_PROBE_BYTES = 32 << 10  # ... compressed as one block of this many bytes (at least 16 KiB given)


def paying(codec: ChunkCodec, data: np.ndarray, fill: int = 0) -> ChunkCodec:
    """``codec``, or the same without its compressor when compressing the first 32 KiB of
    ``data`` (after ``fill`` rows of 0) saves less than 10% (under 16 KiB in all keeps
    ``codec``): positions and forces of varied structures shrink by about 6%, and an
    uncompressed chunk is read without being decompressed (shuffled batches of 100,000
    periodic frames, every array uncompressed: 263 -> 208 ms)."""
    lead = fill * int(np.prod(data.shape[1:], dtype=np.int64))  # values of the fill rows
    if codec.cname is None or (lead + data.size) * data.itemsize < _PROBE_BYTES // 2:
        return codec
    size = _PROBE_BYTES // data.itemsize
    head = np.zeros(min(lead, size), data.dtype)
    sample = np.concatenate([head, data.reshape(-1)[: size - len(head)]])  # contiguous
    if len(codec.encoder(data.itemsize)(sample)) <= (1 - _GAIN) * sample.nbytes:
        return codec
    return ChunkCodec(None, codec.clevel, codec.checksum)


def handles(dtype: np.dtype[Any]) -> bool:
    """Numeric dtypes in little-endian (or single-byte) order: the ones zarr names plainly."""
    return dtype.kind in "biufc" and dtype.byteorder in "=<|" and dtype.isnative


def _fill_json(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "b":
        return False
    if dtype.kind == "c":
        return [0.0, 0.0]
    return 0.0 if dtype.kind == "f" else 0


def array_document(
    shape: tuple[int, ...], dtype: np.dtype[Any], chunk: int, shard: int, codec: ChunkCodec
) -> dict[str, Any]:
    """The ``zarr.json`` zarr writes for this sharded array (``chunk``/``shard`` rows, 0-filled)."""
    tail = list(shape[1:])
    little = {"name": "bytes", "configuration": {"endian": "little"}}
    inner = [little if dtype.itemsize > 1 or dtype.kind == "c" else {"name": "bytes"}]
    sharding = {
        "chunk_shape": [chunk, *tail],
        "codecs": inner + codec.document(dtype.itemsize),
        "index_codecs": [little, {"name": "crc32c"}],
        "index_location": "end",
    }
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [shard, *tail]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _fill_json(dtype),
        "codecs": [{"name": "sharding_indexed", "configuration": sharding}],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _new_folder(root: Path, name: str) -> Path:
    """An empty folder for array ``name`` (an uncommitted leftover there is removed) and
    group documents for its parents."""
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for parent in Path(name).parents:
        doc = root / parent / "zarr.json"
        if str(parent) != "." and not doc.exists():
            doc.write_bytes(_GROUP_DOC)
    return folder


def write_new_array(
    root: Path,
    name: str,
    rows: int,
    start: int,
    data: np.ndarray,
    chunk: int,
    shard: int,
    codec: ChunkCodec,
    trim: bool = True,
    fill: int = 0,
) -> None:
    """Create array ``name`` of ``rows`` rows under store ``root``, holding ``fill`` rows of the
    fill value (0) at ``start:``, then ``data``.

    Rows before ``start`` are left unwritten, as zarr leaves them; the ``fill`` rows are written
    (as ``data`` padded with them would be) without being held in memory: a column new to a
    store of a million frames needs every chunk before its first value. Whatever was at
    ``name`` before (an uncommitted leftover) is removed first. A compressor that does not pay
    on those rows is left out of the array (:func:`paying`) unless not ``trim``.
    """
    folder = _new_folder(root, name)
    codec = paying(codec, data, fill) if trim else codec
    document = array_document((rows, *data.shape[1:]), data.dtype, chunk, shard, codec)
    (folder / "zarr.json").write_text(json.dumps(document, indent=2))
    _write_shards(None, folder, rows, start, data, chunk, shard, codec, atomic=False, fill=fill)


def _our_layout(
    folder: Path, data: np.ndarray, codec: ChunkCodec, document: dict[str, Any] | None = None
) -> tuple[dict[str, Any], ChunkCodec] | None:
    """The array document at ``folder`` (or ``document``, read from there already) and its
    codec, if this module writes it that way (``codec`` or no compressor, with or without chunk
    checksums); None otherwise (another codec, dtype or chunk order)."""
    try:
        if document is None:
            document = json.loads((folder / "zarr.json").read_bytes())
        rows, tail = document["shape"][0], tuple(document["shape"][1:])
        shard = document["chunk_grid"]["configuration"]["chunk_shape"][0]
        chunk = document["codecs"][0]["configuration"]["chunk_shape"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if tail != data.shape[1:]:
        return None
    plain = ChunkCodec(None, codec.clevel)  # what paying() may have chosen for the array
    for variant in (codec, codec.variant(not codec.checksum), plain, plain.variant(False)):
        if document == array_document((rows, *tail), data.dtype, chunk, shard, variant):
            return document, variant
    return None


def _geometry(document: dict[str, Any]) -> tuple[int, int]:
    """(chunk rows, shard rows) of an array document."""
    shard = document["chunk_grid"]["configuration"]["chunk_shape"][0]
    return document["codecs"][0]["configuration"]["chunk_shape"][0], shard


def write_rows(root: Path, name: str, stop: int, start: int, data: np.ndarray, codec: ChunkCodec) -> bool:
    """Write ``data`` at rows ``start:stop`` of the existing array ``name``, which then has
    ``stop`` rows; rows before ``start`` keep their bytes.

    Returns False, having written nothing, when the array is not laid out as this module
    writes it (another codec, dtype or chunk order): zarr must do it. Every file is
    replaced atomically, so an interrupted append leaves the rows before ``start`` intact.
    """
    folder = root / name
    found = _our_layout(folder, data, codec)
    if found is None:
        return False
    document, codec = found
    rows = document["shape"][0]
    chunk, shard = _geometry(document)
    _write_shards(folder, folder, stop, start, data, chunk, shard, codec, atomic=True)
    for s in range(-(-stop // shard), -(-rows // shard)):  # shards past the new end, as zarr's resize
        shutil.rmtree(folder / f"c/{s}", ignore_errors=True)
        (folder / f"c/{s}").unlink(missing_ok=True)
    if rows != stop:
        document["shape"][0] = stop
        replace_file(folder / "zarr.json", json.dumps(document, indent=2).encode())
    return True


def copy_rows(
    root: Path, source: str, name: str, rows: int, start: int, data: np.ndarray, codec: ChunkCodec
) -> bool:
    """Create array ``name``: array ``source``'s first ``rows`` rows, with rows
    ``start:start + len(data)`` replaced by ``data`` (rows after them keep their place).

    The copy-on-write step of a replacement: shard files that hold no replaced row are
    hard links to ``source``'s (copies where the file system cannot link), so the cost
    is the shards that change. ``source`` is never modified. Returns False, having
    written nothing, when ``source`` is not laid out as this module writes it.
    """
    found = _our_layout(root / source, data, codec)
    if found is None:
        return False
    document, codec = found
    chunk, shard = _geometry(document)
    stop = start + len(data)
    old, folder = root / source, _new_folder(root, name)
    suffix = "/0" * (data.ndim - 1)
    touched = range(start // shard, -(-stop // shard)) if stop > start else range(0)
    for s in range(-(-rows // shard)):
        if s not in touched and (old / f"c/{s}{suffix}").exists():
            (folder / f"c/{s}{suffix}").parent.mkdir(parents=True, exist_ok=True)
            _link(old / f"c/{s}{suffix}", folder / f"c/{s}{suffix}")
    if stop > start:
        _write_shards(old, folder, rows, start, data, chunk, shard, codec, atomic=False)
    document["shape"][0] = rows
    (folder / "zarr.json").write_text(json.dumps(document, indent=2))
    return True


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        shutil.copyfile(source, target)  # no hard links here (another file system, a share)


def _write_shards(
    source: Path | None,
    folder: Path,
    rows: int,
    start: int,
    data: np.ndarray,
    chunk: int,
    shard: int,
    codec: ChunkCodec,
    atomic: bool,
    fill: int = 0,
) -> None:
    """Shard files in ``folder`` (of an array of ``rows`` rows) for the shards rows
    ``start:start + fill + len(data)`` fall in, holding ``fill`` rows of 0 and then ``data``
    there; their other chunks are kept from ``source``'s shard files (the same folder for
    appends; None: a new array), or left unwritten. A chunk wholly of fill rows is encoded once
    and its bytes shared: memory stays at one shard's encoded chunks, whatever ``fill``."""
    dtype, tail = data.dtype, data.shape[1:]
    begin = start + fill  # where data starts
    stop = begin + len(data)
    encode = codec.encoder(dtype.itemsize)
    per_shard = shard // chunk
    suffix = "/0" * len(tail)
    zero: bytes | None = None  # the encoded chunk of fill rows only
    for s in range(start // shard, -(-min(stop, rows) // shard)):
        lo = s * shard
        partial = lo < start or lo + shard > stop
        old = _read_shard(source / f"c/{s}{suffix}", per_shard) if source is not None and partial else {}
        index = np.full((per_shard, 2), _EMPTY, np.uint64)
        parts, offset = [], 0
        written = range(max(start - lo, 0) // chunk, min(per_shard, -(-(stop - lo) // chunk)))
        for j in sorted({*old, *written}) if old else written:  # never all 2,048 chunks of a shard
            a, b = lo + j * chunk, lo + (j + 1) * chunk
            if a >= rows:
                continue
            if j not in written:  # wholly outside the write: its bytes as they are
                encoded = old[j]
            elif b <= begin and j not in old:  # fill rows only (and the padding, 0 too)
                zero = encode(np.zeros((chunk, *tail), dtype)) if zero is None else zero
                encoded = zero
            else:
                piece = data[max(a, begin) - begin : min(b, stop) - begin]
                if len(piece) < chunk:  # part-filled: other rows from the old chunk, else 0 like zarr
                    padded = np.zeros((chunk, *tail), dtype)
                    if j in old:
                        decoded = codec.decoder(dtype.itemsize)(old[j])
                        padded[:] = np.frombuffer(decoded, dtype).reshape(chunk, *tail)
                        padded[max(a, start) - a : max(a, begin) - a] = 0
                    padded[max(a, begin) - a : max(a, begin) - a + len(piece)] = piece
                    piece = padded
                encoded = encode(np.ascontiguousarray(piece))
            parts.append(encoded)
            index[j] = offset, len(encoded)
            offset += len(encoded)
        raw = index.astype("<u8").tobytes()
        parts += [raw, google_crc32c.value(raw).to_bytes(4, "little")]
        path = folder / f"c/{s}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            replace_file(path, b"".join(parts))
        else:
            with path.open("wb") as file:  # shared chunks are never joined into one copy
                file.writelines(parts)


def _shard_chunks(blob: bytes, per_shard: int, where: Path) -> dict[int, bytes]:
    """Encoded inner chunks of a shard file's bytes by position."""
    size = 16 * per_shard
    raw, crc = blob[-size - 4 : -4], blob[-4:]
    if len(blob) < size + 4 or google_crc32c.value(raw).to_bytes(4, "little") != crc:
        raise StoreCorruptedError(
            f"{where}: shard index does not match its checksum (the file is damaged or cut short); "
            "restore the store from a copy"
        )
    index = np.frombuffer(raw, "<u8").reshape(per_shard, 2)
    chunks = {}
    for j, (offset, length) in enumerate(index.tolist()):
        if offset != _EMPTY:
            if offset + length > len(blob) - size - 4:
                raise StoreCorruptedError(
                    f"{where}: chunk {j} lies outside the shard file; restore the store from a copy"
                )
            chunks[j] = blob[int(offset) : int(offset) + int(length)]
    return chunks


def _read_shard(path: Path, per_shard: int) -> dict[int, bytes]:
    """Encoded inner chunks of a shard file by position; {} when there is no file."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return {}
    return _shard_chunks(blob, per_shard, path)


def _codec_of(document: dict[str, Any]) -> ChunkCodec:
    """The codec an array document names (checked against the whole document by the caller)."""
    try:
        stages = document["codecs"][0]["configuration"]["codecs"][1:]
        blosc = next((c["configuration"] for c in stages if c.get("name") == "blosc"), None)
        checksum = any(c.get("name") == "crc32c" for c in stages)
        if blosc is None:
            return ChunkCodec(None, 5, checksum)
        return ChunkCodec(blosc["cname"], blosc["clevel"], checksum)
    except (KeyError, IndexError, TypeError, AttributeError):
        return ChunkCodec(None, 5)


def verify_array(root: Path, name: str, rows: int, dtype: np.dtype[Any]) -> list[str] | None:
    """Problems of array ``name``'s first ``rows`` rows, one per damaged shard or chunk
    (missing, cut short, checksum or decoding failure); None when the array is not laid
    out as this module writes it (the caller checks it another way)."""
    folder = root / name
    try:
        document = json.loads((folder / "zarr.json").read_bytes())
        tail = tuple(document["shape"][1:])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{name}: array document unreadable ({exc})"]
    found = _our_layout(folder, np.zeros((0, *tail), dtype), _codec_of(document), document)
    if found is None:
        return None
    document, codec = found
    chunk, shard = _geometry(document)
    rows = min(rows, document["shape"][0])  # a short array is the caller's check
    decode = codec.decoder(dtype.itemsize)
    expected = chunk * int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
    problems, suffix = [], "/0" * len(tail)
    for s in range(-(-rows // shard)):
        path = folder / f"c/{s}{suffix}"
        try:
            chunks = _shard_chunks(path.read_bytes(), shard // chunk, path.relative_to(root))
        except (OSError, StoreCorruptedError) as exc:
            problems.append(f"{name}: shard {s}: {exc}")
            continue
        for j in range(min(shard // chunk, -(-(rows - s * shard) // chunk))):
            try:
                if j not in chunks:
                    raise ValueError("chunk missing")
                if len(decode(chunks[j])) != expected:
                    raise ValueError("chunk decodes to the wrong size")
            except Exception as exc:  # noqa: BLE001 - any decoding failure is damage to report
                problems.append(f"{name}: shard {s} chunk {j}: {exc}")
    return problems


def replace_file(path: Path, content: bytes) -> None:
    """Write ``content`` beside ``path`` and move it into place: readers see old or new, whole.
    A failed write (a full disk) leaves no temporary file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
