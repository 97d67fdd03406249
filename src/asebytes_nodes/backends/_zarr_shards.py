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
    <name>/c/<s>[/0...]         shard s: its inner chunks, each the bytes codec then the
                                compressor, in order; then the index, (offset, nbytes) as
                                little-endian uint64 per inner chunk (2**64-1 twice for a
                                chunk never written), then the index's crc32c (uint32 LE)
    <parent>/zarr.json          an empty group document for each parent folder

Chunks are padded with the fill value (0) to full size, like zarr; unlike zarr, a chunk
that is all zeros is written rather than skipped, so ``-0.0`` keeps its sign. Rows
before ``start`` keep their bytes (a new array: they read as the fill value). Rewritten
files are replaced atomically. Only Blosc compressors and no compression are handled
(:func:`chunk_codec`); other codecs, arrays laid out otherwise and remote stores go
through zarr. ``tests/backends/test_zarr_shards.py`` checks documents and files against
zarr's, byte for byte, for new arrays and appends, and that zarr reads them back.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Blosc

from ..errors import StoreCorruptedError

__all__ = ["ChunkCodec", "chunk_codec", "handles", "write_new_array", "write_rows"]

_EMPTY = np.uint64(2**64 - 1)
_BLOSC = ("lz4", "lz4hc", "zstd", "zlib", "blosclz")
_GROUP_DOC = json.dumps({"attributes": {}, "zarr_format": 3, "node_type": "group"}, indent=2).encode()

Encoder = Callable[[np.ndarray], bytes]


class ChunkCodec:
    """The compressor stage of a chunk's codec chain: its JSON and an encoder per item size."""

    def __init__(self, cname: str | None, clevel: int) -> None:
        self.cname, self.clevel = cname, clevel

    def document(self, itemsize: int) -> list[dict[str, Any]]:
        if self.cname is None:
            return []
        config = {"typesize": itemsize, "cname": self.cname, "clevel": self.clevel}
        return [{"name": "blosc", "configuration": {**config, "shuffle": "shuffle", "blocksize": 0}}]

    def decoder(self, itemsize: int) -> Callable[[bytes], bytes]:
        if self.cname is None:
            return bytes
        blosc = Blosc(self.cname, self.clevel, Blosc.SHUFFLE, blocksize=0, typesize=itemsize)
        return lambda raw: bytes(blosc.decode(raw))

    def encoder(self, itemsize: int) -> Encoder:
        if self.cname is None:
            return np.ndarray.tobytes
        blosc = Blosc(self.cname, self.clevel, Blosc.SHUFFLE, blocksize=0, typesize=itemsize)
        return lambda chunk: bytes(blosc.encode(chunk))


def chunk_codec(compressor: str | None, clevel: int) -> ChunkCodec | None:
    """The codec this module can write for ``ZarrBackend(compressor=...)``, else None."""
    if compressor in (None, "none"):
        return ChunkCodec(None, clevel)
    if compressor in _BLOSC:
        return ChunkCodec(compressor, clevel)
    return None


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


def write_new_array(
    root: Path,
    name: str,
    rows: int,
    start: int,
    data: np.ndarray,
    chunk: int,
    shard: int,
    codec: ChunkCodec,
) -> None:
    """Create array ``name`` of ``rows`` rows under store ``root``, holding ``data`` at ``start:``.

    Whatever was at ``name`` before (an uncommitted leftover) is removed first.
    """
    dtype, tail = data.dtype, data.shape[1:]
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for parent in Path(name).parents:
        doc = root / parent / "zarr.json"
        if str(parent) != "." and not doc.exists():
            doc.write_bytes(_GROUP_DOC)
    document = array_document((rows, *tail), dtype, chunk, shard, codec)
    (folder / "zarr.json").write_text(json.dumps(document, indent=2))
    _write_shards(folder, rows, start, data, chunk, shard, codec, atomic=False)


def write_rows(root: Path, name: str, stop: int, start: int, data: np.ndarray, codec: ChunkCodec) -> bool:
    """Write ``data`` at rows ``start:stop`` of the existing array ``name``, which then has
    ``stop`` rows; rows before ``start`` keep their bytes.

    Returns False, having written nothing, when the array is not laid out as this module
    writes it (another codec, dtype or chunk order): zarr must do it. Every file is
    replaced atomically, so an interrupted append leaves the rows before ``start`` intact.
    """
    folder = root / name
    try:
        document = json.loads((folder / "zarr.json").read_bytes())
        rows, tail = document["shape"][0], tuple(document["shape"][1:])
        shard = document["chunk_grid"]["configuration"]["chunk_shape"][0]
        chunk = document["codecs"][0]["configuration"]["chunk_shape"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False
    if tail != data.shape[1:] or document != array_document((rows, *tail), data.dtype, chunk, shard, codec):
        return False
    _write_shards(folder, stop, start, data, chunk, shard, codec, atomic=True)
    for s in range(-(-stop // shard), -(-rows // shard)):  # shards past the new end, as zarr's resize
        shutil.rmtree(folder / f"c/{s}", ignore_errors=True)
        (folder / f"c/{s}").unlink(missing_ok=True)
    if rows != stop:
        document["shape"][0] = stop
        _replace_file(folder / "zarr.json", json.dumps(document, indent=2).encode())
    return True


def _write_shards(
    folder: Path,
    rows: int,
    start: int,
    data: np.ndarray,
    chunk: int,
    shard: int,
    codec: ChunkCodec,
    atomic: bool,
) -> None:
    """Shard files for rows ``start:rows`` holding ``data``; chunks before ``start`` are kept
    from the shard on disk (the one ``start`` falls in), or left unwritten."""
    dtype, tail = data.dtype, data.shape[1:]
    encode = codec.encoder(dtype.itemsize)
    per_shard = shard // chunk
    suffix = "/0" * len(tail)
    for s in range(start // shard, -(-rows // shard)):
        lo = s * shard
        path = folder / f"c/{s}{suffix}"
        old = _read_shard(path, per_shard) if lo < start else {}
        index = np.full((per_shard, 2), _EMPTY, np.uint64)
        parts, offset = [], 0
        for j in range(per_shard):
            a, b = lo + j * chunk, lo + (j + 1) * chunk
            if a >= rows or (b <= start and j not in old):
                continue
            if b <= start:  # wholly before the write: its bytes as they are
                encoded = old[j]
            else:
                piece = data[max(a, start) - start : min(b, rows) - start]
                if len(piece) < chunk:  # part-filled: earlier rows from disk, the rest 0 like zarr
                    padded = np.zeros((chunk, *tail), dtype)
                    if a < start and j in old:
                        decoded = codec.decoder(dtype.itemsize)(old[j])
                        padded[: start - a] = np.frombuffer(decoded, dtype).reshape(chunk, *tail)[: start - a]
                    padded[max(a, start) - a : max(a, start) - a + len(piece)] = piece
                    piece = padded
                encoded = encode(np.ascontiguousarray(piece))
            parts.append(encoded)
            index[j] = offset, len(encoded)
            offset += len(encoded)
        raw = index.astype("<u8").tobytes()
        parts += [raw, google_crc32c.value(raw).to_bytes(4, "little")]
        path.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            _replace_file(path, b"".join(parts))
        else:
            path.write_bytes(b"".join(parts))


def _read_shard(path: Path, per_shard: int) -> dict[int, bytes]:
    """Encoded inner chunks of a shard file by position; {} when there is no file."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return {}
    size = 16 * per_shard
    raw, crc = blob[-size - 4 : -4], blob[-4:]
    if len(blob) < size + 4 or google_crc32c.value(raw).to_bytes(4, "little") != crc:
        raise StoreCorruptedError(f"{path}: shard index does not match its checksum")
    index = np.frombuffer(raw, "<u8").reshape(per_shard, 2)
    return {
        j: blob[int(offset) : int(offset) + int(length)]
        for j, (offset, length) in enumerate(index.tolist())
        if offset != _EMPTY
    }


def _replace_file(path: Path, content: bytes) -> None:
    """Write ``content`` beside ``path`` and move it into place: readers see old or new, whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_bytes(content)
    os.replace(temporary, path)
