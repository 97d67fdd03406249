"""Where HDF5 keeps each chunk of a dataset, read from the dataset's chunk B-tree without HDF5.

h5py's ``read_direct_chunk`` looks a chunk up in HDF5's index twice (its stored size, then its
bytes): 10-14 us a chunk on the 2-core machines here, most of a random training read of
one-frame chunks. Reading the index's nodes here (a few KiB each, up to 64 chunks a leaf, each
read once per handle) and a chunk's bytes with one ``pread`` costs about 4 us a chunk.

What is read (HDF5 file format specification 3.0; the files HDF5 writes with its default
``libver="earliest"``, which is how h5py, znh5md and we write H5MD):

* the dataset's object header: version 1 (messages from byte 16, 8-byte aligned) or version 2
  (``OHDR``; optional times and attribute limits by its flags; continuation blocks ``OCHK``),
  continued through Object Header Continuation messages (type 16: address, length);
* its Data Layout message (type 8), version 3, class 2 (chunked): rank + 1, the address of the
  root node of a version 1 B-tree, the chunk's shape and its element's size (u32 each; checked
  against the dataset's);
* a node: ``TREE``, node type 1 (raw data chunks), level, entries used (u16), the left and right
  sibling addresses, then key 0, child 0, ..., key n-1, child n-1, key n. A key is the chunk's
  stored size (u32), its filter mask (u32) and its offset along each axis and one more (u64
  each). Child i holds the chunks from key i up to key i + 1: a node one level down, or at
  level 0 the address of chunk i's stored bytes. Addresses are relative to the file's base (its
  user block).

The levels above the leaves are read when the index is first used (about 1/64 of the leaves);
a leaf when a chunk it holds is first asked for, and all the others once requests of whole
leaves (batches) would have read an eighth of them (a shuffled epoch reads them all). Anything
else gives no index and the callers ask HDF5 (``read_direct_chunk``), which also decides what a
chunk not found means: layout version 4 (HDF5 1.10+ indexes), addresses not 8 bytes wide, a node
that does not read as above, keys out of order. A chunk whose leaf key is not exactly its offset
is not found here either. Only for read-only handles: a writer's chunks may still sit in HDF5's
cache.
"""

from __future__ import annotations

import bisect
import os
import struct
from typing import Any

import h5py
import numpy as np

__all__ = ["ChunkIndex"]

_LAYOUT, _CONTINUATION = 8, 16
_NODE_HEAD = 24  # "TREE", type, level, entries used, left and right sibling addresses
_DEFAULT_ENTRIES = 64  # entries of a node of HDF5's default size (K = 32)
_MAX_BLOCKS = 64  # object header blocks read at most (HDF5 writes one or a few)
_MAX_BLOCK_BYTES = 1 << 20
#: Once a request would have read this fraction of a dataset's leaves (1/_REST), the rest are read
#: too, :data:`_LEAVES_AT_ONCE` at a time: a shuffled epoch reads every leaf, and a leaf read in a
#: group of thousands costs a fifth of one read with a batch's few (numpy's per-call work).
_REST = 8
_LEAVES_AT_ONCE = 4096  # about 10 MiB of nodes parsed at once


class _Unreadable(Exception):
    """The index is not one this module reads (the callers use HDF5 instead)."""


class ChunkIndex:
    """The chunk addresses of one dataset chunked along its first axis whose chunks span its
    other axes, looked up by chunk number along the first axis."""

    def __init__(
        self, fd: int, base: int, root: int, rank: int, n_chunks: int, step: int, nbytes: int
    ) -> None:
        self._fd, self._base, self._step = fd, base, step
        # what a chunk of nbytes can take stored (deflate's worst case, a checksum): a larger size
        # read from a damaged key is left to HDF5 rather than allocated here
        self._largest = nbytes + nbytes // 64 + 1024
        self._key = np.dtype([("size", "<u4"), ("mask", "<u4"), ("offset", "<u8", (rank + 1,))])
        self._entry = np.dtype([("key", self._key), ("child", "<u8")])
        # a node as HDF5 sizes it by default (K = 32: 64 entries); a larger one is read again
        self._leaf = np.dtype(
            [("head", "S4"), ("type", "u1"), ("level", "u1"), ("used", "<u2"), ("siblings", "<u8", (2,)),
             ("entries", self._entry, (_DEFAULT_ENTRIES,)), ("last", self._key)]
        )  # fmt: skip
        self._node_bytes = self._leaf.itemsize
        self.address = np.zeros(n_chunks, np.int64)  # absolute file offsets, once known
        self.size = np.zeros(n_chunks, np.int64)
        self.mask = np.zeros(n_chunks, np.int64)
        self.known = np.zeros(n_chunks, bool)  # its leaf read (a chunk not found stays 0-sized)
        self._leaves, self._firsts = self._leaf_table(root)
        self._leaf_at, self._first_list = self._leaves.tolist(), self._firsts.tolist()  # for one()
        self._unpack_key = struct.Struct(f"<II{rank + 1}Q").unpack_from
        self._unpack_entry = struct.Struct(f"<II{rank + 1}QQ").unpack_from
        self._read = np.zeros(len(self._leaves), bool)

    @classmethod
    def of(cls, ds: h5py.Dataset) -> ChunkIndex | None:
        """The index of ``ds`` (a read-only handle's dataset), or None if it is not one this module
        reads or ``ds`` is not chunked along its first axis alone."""
        chunks = ds.chunks
        if chunks is None or not ds.ndim or tuple(chunks[1:]) != tuple(ds.shape[1:]):
            return None
        try:
            f = ds.file
            if f.mode != "r" or f.id.get_create_plist().get_sizes() != (8, 8):
                return None
            fd = f.id.get_vfd_handle()
            root, dims = _layout(fd, _header(ds), f.userblock_size)
            if dims != (*chunks, ds.dtype.itemsize):  # the message is this dataset's
                return None
            n_chunks = -(-ds.shape[0] // chunks[0])
            nbytes = ds.dtype.itemsize * int(np.prod(chunks))
            return cls(fd, f.userblock_size, root, ds.ndim, n_chunks, int(chunks[0]), nbytes)
        except (_Unreadable, OSError, ValueError, KeyError, struct.error, AttributeError):
            return None

    def lookup(self, chunks: np.ndarray) -> np.ndarray:
        """Which of the chunks numbered ``chunks`` (int64) the index holds; their :attr:`address`,
        :attr:`size` and :attr:`mask` are then set (leaves read as needed)."""
        todo = chunks[~self.known[chunks]]
        if len(todo):
            leaf = np.searchsorted(self._firsts, todo * self._step, side="right") - 1
            wanted = np.zeros(len(self._read), bool)
            wanted[leaf[leaf >= 0]] = True
            new = np.flatnonzero(wanted & ~self._read)
            if len(new) and (int(self._read.sum()) + len(new)) * _REST >= len(self._read):
                new = np.flatnonzero(~self._read)
            for at in range(0, len(new), _LEAVES_AT_ONCE):
                self._load_leaves(new[at : at + _LEAVES_AT_ONCE])
            self.known[todo] = True  # not in their leaf: not found here
        return self.size[chunks] > 0

    def one(self, k: int) -> bool:
        """Does the index hold chunk ``k``? For a random row: only the key where the chunk's leaf
        keeps it when its chunks are consecutive is read (a leaf parsed whole costs 5-10x more);
        any other case is :meth:`lookup`'s."""
        if self.known[k]:
            return bool(self.size[k])
        want = k * self._step
        i = bisect.bisect_right(self._first_list, want) - 1
        j = (want - self._first_list[i]) // self._step if i >= 0 else -1
        if 0 <= j < _DEFAULT_ENTRIES:  # the node's head up to key j + 1, in one read
            at = _NODE_HEAD + j * self._entry.itemsize
            raw = os.pread(
                self._fd, at + self._entry.itemsize + self._key.itemsize, self._base + self._leaf_at[i]
            )
            if len(raw) == at + self._entry.itemsize + self._key.itemsize and raw[:6] == b"TREE\x01\x00":
                size, mask, first, *rest = self._unpack_entry(raw, at)
                child = rest.pop()
                after, *beyond = self._unpack_key(raw, at + self._entry.itemsize)[2:]
                if (
                    j < int.from_bytes(raw[6:8], "little")
                    and first == want
                    and not any(rest)
                    and (after > want or (after == want and any(beyond)))
                    and 0 < size <= self._largest
                ):
                    self.address[k], self.size[k], self.mask[k] = child + self._base, size, mask
                    self.known[k] = True
                    return True
        return bool(self.lookup(np.array([k]))[0])

    def blob(self, k: int) -> bytes | None:
        """The stored bytes of chunk ``k`` if the index holds it (:meth:`one`) and the file has
        them all; None otherwise."""
        if not self.one(k):
            return None
        size = int(self.size[k])
        raw = os.pread(self._fd, size, int(self.address[k]))
        return raw if len(raw) == size else None

    def read(self, chunks: np.ndarray) -> list[bytes] | None:
        """The stored bytes of ``chunks`` (found by :meth:`lookup`), or None if the file ends first."""
        fd, pread, sizes = self._fd, os.pread, self.size[chunks].tolist()
        blobs = [pread(fd, n, at) for n, at in zip(sizes, self.address[chunks].tolist(), strict=True)]
        return blobs if list(map(len, blobs)) == sizes else None

    def _node(self, address: int, level: int | None) -> tuple[int, np.ndarray, np.ndarray]:
        """(level, keys, children) of the node at ``address``; _Unreadable unless it is a raw-data
        node of ``level`` (if given) with its keys in order."""
        raw = os.pread(self._fd, self._node_bytes, self._base + address)
        if len(raw) < _NODE_HEAD or raw[:4] != b"TREE" or raw[4] != 1:
            raise _Unreadable(f"no chunk B-tree node at {address}")
        found, used = raw[5], int.from_bytes(raw[6:8], "little")
        if (level is not None and found != level) or not used:
            raise _Unreadable(f"node at {address}: level {found}, {used} entries")
        need = used * self._entry.itemsize + self._key.itemsize
        if _NODE_HEAD + need > len(raw) == self._node_bytes:  # more entries than HDF5's default
            raw = os.pread(self._fd, _NODE_HEAD + need, self._base + address)
        body = raw[_NODE_HEAD:]
        if len(body) < need:
            raise _Unreadable(f"node at {address} is cut short")
        entries = np.frombuffer(body, self._entry, used)
        last = np.frombuffer(body, self._key, 1, used * self._entry.itemsize)
        keys = np.concatenate([entries["key"], last])
        first = keys["offset"][:, 0].astype(np.int64)
        if (np.diff(first) <= 0).any() and found:  # leaves are checked per key in _load_leaves
            raise _Unreadable(f"node at {address}: keys out of order")
        return found, keys, entries["child"].astype(np.int64)

    def _leaf_table(self, root: int) -> tuple[np.ndarray, np.ndarray]:
        """Addresses of the leaves and the first-axis offset of each one's first chunk, in order,
        read level by level from the root."""
        level, keys, children = self._node(root, None)
        if level == 0:
            return np.array([root], np.int64), keys["offset"][:1, 0].astype(np.int64)
        while True:
            level -= 1
            nodes = [self._node(int(c), level) for c in children.tolist()] if level else None
            if nodes is None:  # children are leaves
                firsts = keys["offset"][:-1, 0].astype(np.int64)
                if (np.diff(firsts) <= 0).any():
                    raise _Unreadable("leaves out of order")
                return children, firsts
            keys = np.concatenate([n[1][:-1] for n in nodes] + [nodes[-1][1][-1:]])
            children = np.concatenate([n[2] for n in nodes])

    def _load_leaves(self, leaves: np.ndarray) -> None:
        """Record the chunks of ``leaves`` (numbers into the leaf table) whose key is exactly a
        chunk's offset (any other chunk, or a leaf that does not read, stays not found here: HDF5
        decides). Leaves of HDF5's default size are parsed together, others one by one."""
        fd, size, base = self._fd, self._node_bytes, self._base
        raws = [os.pread(fd, size, base + a) for a in self._leaves[leaves].tolist()]
        parts = []
        whole = [raw for raw in raws if len(raw) == size]
        if whole:
            nodes = np.frombuffer(b"".join(whole), self._leaf)
            good = (nodes["head"] == b"TREE") & (nodes["type"] == 1) & (nodes["level"] == 0)
            good &= (nodes["used"] > 0) & (nodes["used"] <= _DEFAULT_ENTRIES)
            # an entry counts up to the node's entries used, and below its last key (as HDF5 finds)
            used = np.arange(_DEFAULT_ENTRIES) < nodes["used"][:, None]
            offsets, count = nodes["entries"]["key"]["offset"], nodes["used"].astype(np.int64)
            last = offsets[np.arange(len(nodes)), np.minimum(count, _DEFAULT_ENTRIES - 1)]  # key `used`
            last = np.where((count < _DEFAULT_ENTRIES)[:, None], last, nodes["last"]["offset"])
            used &= _below(offsets[:, :, 0], last[:, None])
            parts.append(nodes["entries"][good][used[good]])
        for raw, address in zip(raws, self._leaves[leaves].tolist(), strict=True):
            if len(raw) < size or int.from_bytes(raw[6:8], "little") > _DEFAULT_ENTRIES:
                try:
                    _, keys, children = self._node(address, 0)
                except _Unreadable:
                    continue
                entries = np.empty(len(children), self._entry)
                entries["key"], entries["child"] = keys[:-1], children
                parts.append(entries[_below(entries["key"]["offset"][:, 0], keys["offset"][-1])])
        entries = np.concatenate(parts) if parts else np.empty(0, self._entry)
        offsets, sizes = entries["key"]["offset"].astype(np.int64), entries["key"]["size"]
        k = offsets[:, 0] // self._step
        exact = (
            (offsets[:, 0] % self._step == 0)
            & ~offsets[:, 1:].any(axis=1)
            & (k < len(self.known))
            & (sizes > 0)
            & (sizes <= self._largest)
        )
        k = k[exact]
        self.address[k] = entries["child"][exact].astype(np.int64) + base
        self.size[k] = sizes[exact]
        self.mask[k] = entries["key"]["mask"][exact]
        self.known[k] = True
        self._read[leaves] = True  # last: a thread looking up meanwhile reads the leaves too


def _below(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Is a chunk at first-axis offset ``first`` (0 along the other axes) below the key ``last``
    (the offsets along every axis), comparing as HDF5 does, axis by axis?"""
    return (first < last[..., 0]) | ((first == last[..., 0]) & last[..., 1:].any(axis=-1))


def _header(ds: h5py.Dataset) -> int:
    """The address of the dataset's object header. ``H5Gget_objinfo`` gives it in 20 us;
    ``H5Oget_info`` (``h5o.get_info``) also sizes the chunk index, walking it whole (13 ms for
    100,000 chunks). The layout message read from it must match the dataset (see :meth:`ChunkIndex.of`)."""
    try:
        return int(h5py.h5g.get_objinfo(ds.id, b".").objno[0])
    except (AttributeError, TypeError):  # an h5py without the deprecated call
        return int(h5py.h5o.get_info(ds.id).addr)


def _layout(fd: int, header: int, base: int) -> tuple[int, tuple[int, ...]]:
    """(root node address, chunk shape and element size) from the Data Layout message of the
    object header at ``header``."""
    for kind, data in _messages(fd, base + header, base):
        if kind == _LAYOUT:
            if data[0] != 3 or data[1] != 2:
                raise _Unreadable(f"layout version {data[0]} class {data[1]}")
            dims = struct.unpack_from(f"<{data[2]}I", data, 11)
            return int.from_bytes(data[3:11], "little"), dims
    raise _Unreadable("no layout message")


def _messages(fd: int, at: int, base: int) -> Any:
    """(type, data) of every message of the object header at file offset ``at``; _Unreadable for
    a header whose continuation blocks loop, number over :data:`_MAX_BLOCKS` or are larger than
    :data:`_MAX_BLOCK_BYTES` (a damaged or hostile file)."""
    head = os.pread(fd, 32, at)
    if head[:4] == b"OHDR":  # version 2: type u8, size u16, flags u8, [creation order u16]
        flags = head[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        first, v2 = (at + pos + width, int.from_bytes(head[pos : pos + width], "little")), True
        step = 6 if flags & 0x04 else 4
    elif head[:1] == b"\x01":  # version 1: type u16, size u16, flags u8, 3 reserved; from byte 16
        first, v2, step = (at + 16, int.from_bytes(head[8:12], "little")), False, 8
    else:
        raise _Unreadable("unknown object header version")
    blocks, seen = [(*first, False)], set[int]()
    while blocks:
        start, size, continued = blocks.pop()
        if start in seen or len(seen) >= _MAX_BLOCKS or size > _MAX_BLOCK_BYTES:
            raise _Unreadable("object header blocks loop, or are too many or too large")
        seen.add(start)
        data = os.pread(fd, size, start)
        framed = v2 and continued  # "OCHK", messages, checksum
        if framed and data[:4] != b"OCHK":
            raise _Unreadable("continuation block without its signature")
        pos, end = (4, len(data) - 4) if framed else (0, len(data))
        while pos + step <= end:
            if v2:
                kind, length = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "little")
            else:
                kind, length = struct.unpack_from("<HH", data, pos)
            body = data[pos + step : pos + step + length]
            pos += step + length
            if kind == _CONTINUATION and len(body) >= 16:
                offset, size = struct.unpack_from("<QQ", body)
                blocks.append((base + offset, size, True))
            yield kind, body
