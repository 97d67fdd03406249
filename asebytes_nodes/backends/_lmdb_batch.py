"""Training batches from LMDB rows with numpy, without decoding rows one by one (issue 15).

A row is msgpack ``[plain, layout, raw]`` (:mod:`asebytes_nodes.codec`). Rows written by one
program share their structure: the same keys in the same order, values of the same msgpack
types, arrays of the same dtypes and shapes; only the numbers differ. A :class:`Template` is one
row's bytes up to its raw array section, where each byte may take one value, except the bytes
of top-level fixed-width numbers (float 32/64, int and uint 8-64: any payload; a fixint: any
fixint of its sign; ``true``/``false``: either) and of text, lists and dicts (any characters and
numbers of the same lengths and types), held as a mask and a value per byte. A row of
the template's length whose bytes the template allows parses exactly as the template row does
(msgpack's parse depends only on type bytes and lengths, which are fixed), so its values sit
at the template's offsets.

The row format is unchanged (layout 3); rows of stores written before work the same way.

A batch is a fixed number of C and numpy calls, whatever its rows' lengths or templates:

1. every row fetched in one bounded loop (:meth:`BoundedTxn.get_many`) and copied into one
   joined buffer (one ``bytes.join``);
2. every row's checksum verified on that copy, in one C-level pass over numpy views of it
   (nothing copied again), before any of its bytes is used;
3. every row's template looked up by its length and all rows compared with their templates in
   one 2-D numpy comparison (rows x 8-byte words of the widest template; narrower templates
   are padded with "any byte"). Rows failing it try the next older template of their length
   (lengths may collide) in another such pass; a row no template allows is decoded by
   :func:`decode_row` (with all its refusals) and its template learnt;
4. rows whose requested keys sit alike (same types and atom count, the same distances between
   the keys; templates differing only in earlier bytes qualify): every row gathered in one
   fancy index as one numpy record, each key one copy out of it; other batches: where the
   keys sit read from a per-keys plan (templates x keys) with one
   fancy index, per-frame values gathered with numpy (one call per key), the per-atom values
   of every key copied into one buffer in one ``bytearray.join`` of views of the joined rows.

Rows verified this way are kept (up to 64 MiB per store and process) for later batches of the
same snapshot, which then skip steps 1-3 (:mod:`._lmdb_batch_cache`: a training epoch reads
every row again).

Cost without kept rows: about a hundred C and numpy calls and two B-tree passes of LMDB (the
bounded loop finds the keys, then fetches the values) per batch, a few microseconds per row for
the checksum and the copies; learning a template costs one row decode.

Templates and plans are cached per process, bounded, and replaced as a whole when one is
learnt (a thread reading meanwhile keeps a consistent set). A batch the templates cannot serve
(a key some rows lack, non-numeric values, arrays of different types or shapes) returns None:
the caller assembles it from decoded rows.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import sub
from typing import Any

import numpy as np

from ..batch import AtomSelection, atom_gather
from ..errors import StoreCorruptedError
from ._keys import is_per_atom
from ._lmdb_batch_cache import cache_of, extends
from ._lmdb_plans import Plan, Record, Tables, ValueType
from ._lmdb_templates import learn

__all__ = [
    "BatchReads",
    "Verified",
    "fetch_rows",
    "gather_batch",
    "joint_batch",
    "read_batch",
    "verified_rows",
]

_MAX_TEMPLATES = 4096
# Templates of one row length at most: rows whose bytes vary beyond what templates free (a bytes
# value unique to each row) are served decoded past it (15-21k frames/s) instead of each learning
# a template and copying the tables (1-2k frames/s). Stores of many atom counts have a template
# per length, and other stores' templates of other lengths do not count.
_PER_LENGTH = 8
_OUT = {"f": np.dtype(np.float64), "i": np.dtype(np.int64), "b": np.dtype(np.bool_)}
_WORD = np.dtype((np.void, 8))
_U64 = np.dtype(">u8")
_ROW_KEY = struct.Struct(">cQ")  # a row's LMDB key: b"r" + u64 big endian


_TABLES = Tables()


# -- reading a batch -----------------------------------------------------------------------------
def _fetch(txn: Any, rows: list[int]) -> tuple[list[bytes], list[Any]]:
    """The LMDB keys of ``rows`` and their stored values (views into the map), fetched in one
    bounded loop; a missing row raises, naming it."""
    names = list(map(_ROW_KEY.pack, repeat(b"r", len(rows)), rows))
    values = txn.get_many(names)
    if None in values:
        raise StoreCorruptedError(f"row {rows[values.index(None)]} is missing from the file")
    return names, values


def _verify(
    seal: Any,
    names: list[bytes],
    values: list[Any],
    lengths: list[int],
    damaged: Callable[[bytes], Exception],
) -> None:
    """Raise ``damaged(key)`` for the first of ``values`` (of ``lengths`` bytes) failing its checksum."""
    bad = seal.damaged(names, values).tolist()
    if bad or min(lengths) < seal.trailer:
        raise damaged(names[min(bad + [j for j, n in enumerate(lengths) if n < seal.trailer])])


def fetch_rows(txn: Any, seal: Any, rows: list[int], damaged: Callable[[bytes], Exception]) -> list[Any]:
    """The stored values of ``rows`` (views into the map, checksums included), fetched in one
    bounded loop and verified in one pass; a missing or damaged row raises, naming it."""
    names, values = _fetch(txn, rows)
    _verify(seal, names, values, list(map(len, values)), damaged)
    return values


def read_batch(
    txn: Any,
    seal: Any,
    indices: np.ndarray,
    keys: Sequence[str] | None,
    atoms: AtomSelection,
    damaged: Callable[[bytes], Exception],
    decode: Callable[[int, Any], dict[str, Any]],
    cache_bytes: int,
) -> dict[str, Any] | None:
    """Rows ``indices`` as one batch (see :mod:`asebytes_nodes.batch`), or None where templates
    cannot serve it (arguments as :func:`verified_rows`)."""
    found = verified_rows(txn, seal, indices, damaged, decode, cache_bytes)
    return None if found is None else gather_batch(*found, keys, atoms, indices)


#: Rows verified and identified: ``(tables, buffer, starts, ids)``: each row's bytes start at
#: ``starts`` of ``buffer`` (bytes, or a kept copy's array) and its template is ``ids`` in ``tables``.
Verified = tuple[Tables, Any, np.ndarray, np.ndarray]


def verified_rows(
    txn: Any,
    seal: Any,
    indices: np.ndarray,
    damaged: Callable[[bytes], Exception],
    decode: Callable[[int, Any], dict[str, Any]],
    cache_bytes: int,
) -> Verified | None:
    """Rows ``indices`` (non-empty) checked and matched to templates, or None where templates
    cannot serve them. ``damaged(key)`` is the error for a value failing its checksum, ``decode(i,
    body)`` decodes row ``i`` (raising errors that name it); verified rows are kept for later
    batches up to ``cache_bytes`` (:mod:`._lmdb_batch_cache`; 0: none kept, none looked up)."""
    found = checked_rows(txn, seal, indices, damaged, decode, cache_bytes)
    return identified([found]) if isinstance(found, Fetched) else found


@dataclass
class Fetched:
    """Rows of one store fetched and their checksums verified, not yet matched to templates:
    ``data`` their bytes one after the other (checksums included, ``lengths`` each, ``size`` in
    all), then a spare word per template word; ``rows`` their row numbers, ``decode`` and
    ``trailer`` the store's, ``keep(tables, joined, starts, ids)`` keeps them for later batches
    once identified (``joined`` starting with them)."""

    data: bytes
    size: int
    lengths: list[int]
    rows: list[int]
    trailer: int
    decode: Callable[[int, Any], dict[str, Any]]
    keep: Callable[[Tables, Any, np.ndarray, np.ndarray], None]


def checked_rows(
    txn: Any,
    seal: Any,
    indices: np.ndarray,
    damaged: Callable[[bytes], Exception],
    decode: Callable[[int, Any], dict[str, Any]],
    cache_bytes: int,
) -> Verified | Fetched | None:
    """The first half of :func:`verified_rows`, in the store's transaction: rows kept from an
    earlier batch (verified and identified), else the rows fetched and their checksums verified
    (:func:`identified` matches them to templates, with other stores' rows at once)."""
    if not len(indices):
        return None
    size, db, txn_id = txn.snapshot()
    cache = cache_of(size, db, txn_id, cache_bytes) if cache_bytes > 0 else None
    held = None if cache is None else cache.get(indices)
    if cache is not None and held is not None:  # every row verified before, in this snapshot
        tables, starts, kept = held
        return tables, cache.buffer, starts, kept
    rows = indices.tolist()
    names, values = _fetch(txn, rows)
    lengths = list(map(len, values))
    ends = list(accumulate(lengths))
    data = b"".join([*values, bytes(8 * _TABLES.mask.shape[1])])  # a spare word per template word
    flat = np.frombuffer(data, np.uint8)
    _verify(seal, names, list(map(flat.__getitem__, map(slice, [0, *ends[:-1]], ends))), lengths, damaged)

    def keep(learnt: Tables, joined: Any, starts: np.ndarray, ids: np.ndarray) -> None:
        if cache is not None and not cache.keep(learnt, joined, ends[-1], starts, ids, rows):
            fresh = cache_of(size, db, txn_id, cache_bytes, fresh=True)  # the held rows' lineage differs
            fresh.keep(learnt, joined, ends[-1], starts, ids, rows)

    return Fetched(data, ends[-1], lengths, rows, seal.trailer, decode, keep)


def identified(fetched: Sequence[Fetched]) -> Verified | None:
    """Rows fetched from one store or several (the shards of a dataset) matched to templates in
    one pass (see :func:`_identify`), each store's then kept by it; None where templates cannot
    serve them. One pass costs what one store's does: 8 shards' rows of a batch of 32 checked
    apart took 84-134 us each."""
    global _TABLES
    tables = _TABLES
    if len(tables.templates) > _MAX_TEMPLATES:  # ragged stores: keep the cache bounded
        tables = _TABLES = Tables()
    spare = 8 * tables.mask.shape[1]  # bytes after the rows: a spare word per template word
    if len(fetched) == 1 and len(fetched[0].data) - fetched[0].size >= spare:  # as fetched
        (one,) = fetched
        joined, lengths, rows, decode = one.data, one.lengths, one.rows, one.decode
        bodies = list(map(sub, lengths, repeat(one.trailer)))
    else:
        joined = b"".join([*(memoryview(f.data)[: f.size] for f in fetched), bytes(spare)])
        lengths = [n for f in fetched for n in f.lengths]
        bodies = [n - f.trailer for f in fetched for n in f.lengths]
        owners = [(f, row) for f in fetched for row in f.rows]
        rows = list(range(len(owners)))

        def decode(j: int, body: Any) -> dict[str, Any]:
            store, row = owners[j]
            return store.decode(row, body)

    starts = np.array([0, *accumulate(lengths[:-1])], np.int64)
    found = _identify(tables, joined, starts, bodies, rows, decode)
    if found is None:
        return None
    learnt, ids, joined = found
    if learnt is not tables:
        _TABLES = learnt
    if ids is None:  # templates learnt, but a row's length has as many as it may (_PER_LENGTH)
        return None
    at = 0
    for f in fetched:
        base, n = int(starts[at]), len(f.rows)
        f.keep(learnt, memoryview(joined)[base:], starts[at : at + n] - base, ids[at : at + n])
        at += n
    return learnt, joined, starts, ids


def joint_batch(
    pieces: Sequence[tuple[Verified, np.ndarray]],
    indices: np.ndarray,
    keys: Sequence[str] | None,
    atoms: AtomSelection,
) -> dict[str, Any] | None:
    """One batch of rows verified in several stores (the shards of a dataset): each piece is
    :func:`verified_rows` of some of ``indices`` and their positions in it. The rows' bytes are
    copied into one buffer in the order asked and gathered once, instead of a batch per store
    joined and reordered (8 shards: 1.5 -> 0.8 ms per batch of 32); None if the pieces' templates are
    not of one lineage (the caller reads each store's batch then)."""
    tables = max((found[0] for found, _ in pieces), key=lambda t: len(t.templates))
    if not all(extends(tables, found[0]) for found, _ in pieces):
        return None
    ids = np.empty(len(indices), np.int64)
    rows: list[Any] = [b""] * len(indices)
    for (_, buffer, starts, piece_ids), positions in pieces:
        ids[positions] = piece_ids
        view = memoryview(buffer)
        ends = starts + tables.lengths[piece_ids]
        for j, row in zip(positions.tolist(), map(slice, starts.tolist(), ends.tolist()), strict=True):
            rows[j] = view[row]
    starts = np.zeros(len(indices), np.int64)
    np.cumsum(tables.lengths[ids[:-1]], out=starts[1:])
    return gather_batch(tables, b"".join(rows), starts, ids, keys, atoms, indices)


class BatchReads:
    """The LMDB backend's batch reads; it provides ``_txn``, ``_seal``, ``_damaged``, ``_decode``,
    ``_within`` and ``_cache_bytes``."""

    _txn: Any
    _seal: Any
    _damaged: Any
    _decode: Any
    _within: Any
    _cache_bytes: int

    def read_batch(
        self,
        indices: np.ndarray,
        keys: Sequence[str] | None = None,
        *,
        fill: Mapping[str, Any] | None = None,
        atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any]:
        """Rows as one batch of arrays, gathered with numpy from the joined rows; batches the
        templates cannot serve are assembled from decoded rows."""
        indices = np.asarray(indices, dtype=np.int64)
        found = self._verified(indices)
        batch = None if found is None else gather_batch(*found, keys, atoms, indices)
        if batch is None:
            return super().read_batch(indices, keys, fill=fill, atoms=atoms)  # type: ignore[misc]
        return batch

    @classmethod
    def read_batch_joint(
        cls,
        parts: Sequence[tuple[Any, np.ndarray, np.ndarray]],
        indices: np.ndarray,
        keys: Sequence[str] | None = None,
        *,
        atoms: np.ndarray | slice | None = None,
    ) -> dict[str, Any] | None:
        """Inherited; each store's rows fetched and checked in its own snapshot, then matched to
        templates in one pass (:func:`identified`) and gathered at once (:func:`joint_batch`)."""
        pieces, fetched, at = [], [], []
        for store, rows, positions in parts:
            found = store._checked(np.asarray(rows, dtype=np.int64))
            if found is None:
                return None
            if isinstance(found, Fetched):
                fetched.append(found)
                at.append(positions)
            else:
                pieces.append((found, positions))
        if fetched:
            joined = identified(fetched)
            if joined is None:
                return None
            pieces.append((joined, np.concatenate(at)))
        return joint_batch(pieces, indices, keys, atoms)

    def _verified(self, indices: np.ndarray) -> Verified | None:
        """Rows ``indices`` checked and matched to templates (:func:`verified_rows`)."""
        found = self._checked(indices)
        return identified([found]) if isinstance(found, Fetched) else found

    def _checked(self, indices: np.ndarray) -> Verified | Fetched | None:
        """Rows ``indices`` kept, or fetched and their checksums verified (:func:`checked_rows`)."""
        with self._txn() as txn:
            try:
                return checked_rows(txn, self._seal, indices, self._damaged, self._decode, self._cache_bytes)
            except StoreCorruptedError:
                self._within(txn, indices)
                raise


def _keys(tables: Tables, ids: np.ndarray, keys: Sequence[str] | None) -> tuple[str, ...]:
    """``keys``, or (None) every numeric key the templates ``ids`` share."""
    if keys is not None:
        return tuple(keys)
    numeric = [tables.templates[t].numeric for t in set(ids.tolist())]
    return tuple(sorted(frozenset.intersection(*numeric)))


def gather_batch(
    tables: Tables,
    joined: Any,
    starts: np.ndarray,
    ids: np.ndarray,
    keys: Sequence[str] | None,
    atoms: AtomSelection,
    indices: np.ndarray,
) -> dict[str, Any] | None:
    """The batch of verified rows at ``starts`` of ``joined`` (templates ``ids``): rows whose
    keys sit alike (one record of the plan) gathered as one record array, others key by key."""
    counts = tables.n_atoms[ids]
    plan = tables.plan(_keys(tables, ids, keys))
    records = plan.record_ids[ids]
    first = int(records[0])
    if first >= 0 and not (records != first).any():
        batch = _from_record(joined, starts + plan.bases[ids], plan.records[first], counts)
    else:
        batch = _columns(joined, starts, ids, counts, plan)
    return None if batch is None else _select(batch, atoms, indices)


def _identify(
    tables: Tables,
    joined: bytes,
    starts: np.ndarray,
    bodies: list[int],
    rows: list[int],
    decode: Callable[[int, Any], dict[str, Any]],
) -> tuple[Tables, np.ndarray | None, bytes] | None:
    """The template of every row (at ``starts``, ``bodies`` bytes without checksum): ``(tables,
    ids, joined)`` with any template learnt, the joined rows padded anew if one is wider; ids
    None when a row's length has its most templates; None if a row cannot have one."""
    ids = np.fromiter(map(tables.primary.get, bodies, repeat(0)), np.int64, len(rows))
    wrong = _mismatched(joined, starts, ids, tables)
    pending = np.arange(len(rows))
    while len(wrong):
        failed = pending[wrong]
        ids[failed] = older = tables.older[ids[failed]]  # the next older template of that length
        lost = failed[older == 0].tolist()
        if any(tables.depth.get(bodies[k], 0) >= _PER_LENGTH for k in lost):
            return tables, None, joined  # a template per few rows of that length (see _PER_LENGTH)
        if lost:  # no template allows them: learn the first one's of each length from its decoded row
            for j in {bodies[k]: k for k in reversed(lost)}.values():
                body = joined[starts[j] : starts[j] + bodies[j]]
                template = learn(body, decode(rows[j], body))
                if template is None:
                    return None
                tables = tables.add(template)
            ids[lost] = [tables.primary.get(bodies[k], 0) for k in lost]  # the others: tried next pass
            spare = len(joined) - int(starts[-1]) - bodies[-1]
            if 8 * tables.mask.shape[1] > spare:
                joined += bytes(8 * tables.mask.shape[1] - spare)
        pending = failed
        wrong = _mismatched(joined, starts[pending], ids[pending], tables)
    return tables, ids, joined


def _mismatched(joined: bytes, starts: np.ndarray, ids: np.ndarray, tables: Tables) -> np.ndarray:
    """Positions of the rows at ``starts`` whose bytes their templates ``ids`` do not allow, in
    one comparison of 8-byte words (``joined`` ends with a spare word per template word)."""
    words = np.ndarray((len(joined) - 7,), _WORD, joined, 0, (1,))
    got = words[starts[:, None] + tables.steps].view(np.uint64)
    return np.flatnonzero(((got & tables.mask[ids]) != tables.value[ids]).any(axis=1))


def _gather(joined: bytes, offsets: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at every offset, as a new array of ``width``-byte void items."""
    windows = np.ndarray((len(joined) - width + 1,), np.dtype((np.void, width)), joined, 0, (1,))
    return windows[offsets]


def _columns(
    joined: bytes, starts: np.ndarray, ids: np.ndarray, counts: np.ndarray, plan: Plan
) -> dict[str, Any] | None:
    """Every key of ``plan`` for the rows at ``starts`` of templates ``ids``; None if some row
    lacks one or the rows disagree on an array's type."""
    signatures = plan.signatures[ids]
    first = int(signatures[0])
    if first >= 0 and not (signatures != first).any():  # every key of one type in all rows
        kinds, row, mixed = None, plan.alike[first], [False] * len(plan.keys)
    else:
        kinds = plan.kinds[ids]
        if (kinds < 0).any():
            return None  # some rows lack it, or it is no number: assembled from decoded rows
        row, mixed = kinds[0].tolist(), (kinds != kinds[0]).any(axis=0).tolist()
    offsets = plan.offsets[ids] + starts[:, None]
    batch: dict[str, Any] = {"n_atoms": counts}
    spans: list[tuple[int, ValueType]] = []  # per-atom keys of ragged rows, copied together below
    fixed = not (counts != counts[0]).any()  # one atom count: each per-atom key one gather
    for j, key in enumerate(plan.keys):
        kind = plan.types[j][row[j]]
        if plan.per_atom[j] and not mixed[j] and kind.width:
            if fixed and counts[0]:
                values = _gather(joined, offsets[:, j], kind.width * int(counts[0])).view(kind.dtype)
                batch[key] = values.reshape(-1, *kind.shape)
            else:
                spans.append((j, kind))
                batch[key] = None  # keeps the order of keys
            continue
        if kinds is not None and mixed[j]:
            value = _mixed(joined, offsets[:, j], kinds[:, j], plan.types[j])
        else:
            value = _values(joined, offsets[:, j], kind) if kind.width else None
        if value is None:
            return None
        batch[key] = value
    if spans:
        begins = offsets[:, [j for j, _ in spans]].T
        widths = [kind.width for _, kind in spans]
        view = memoryview(joined)
        ends = begins + np.multiply.outer(widths, counts)
        cut = map(slice, begins.ravel().tolist(), ends.ravel().tolist())
        buffer = bytearray().join(map(view.__getitem__, cut))
        at, total = 0, int(counts.sum())
        for (j, kind), size in zip(spans, [w * total for w in widths], strict=True):
            values = (
                np.frombuffer(buffer, kind.dtype, size // kind.dtype.itemsize, at)
                if size
                else np.zeros(0, kind.dtype)
            )
            batch[plan.keys[j]] = values.reshape(-1, *kind.shape)
            at += size
    return batch


def _from_record(
    joined: Any, starts: np.ndarray, record: Record, counts: np.ndarray
) -> dict[str, Any] | None:
    """Every field of ``record`` for the rows whose first key sits at ``starts`` of ``joined``:
    the rows gathered in one step, each key copied out of them; None for uint64 beyond int64."""
    n_rows = len(starts)
    rows = _gather(joined, starts, record.dtype.itemsize).view(record.dtype)  # a void gather is faster
    batch: dict[str, Any] = {"n_atoms": counts}
    for key, kind, per_atom in record.fields:
        values = rows[key]
        if kind.kind == "b":
            batch[key] = values == 0xC3  # true, else false
        elif per_atom:  # copies: a lone row's field would keep the record's stride
            batch[key] = values.copy().reshape(-1, *kind.shape)
        else:
            batch[key] = _finish(values.copy(), kind, n_rows)
            if batch[key] is None:
                return None
    return batch


def _values(joined: bytes, offsets: np.ndarray, kind: ValueType) -> np.ndarray | None:
    """The per-frame values of type ``kind`` at ``offsets``; None for uint64 beyond int64."""
    if kind.kind == "b":
        return np.frombuffer(joined, np.uint8)[offsets] == 0xC3  # true, else false
    return _finish(_gather(joined, offsets, kind.width).view(kind.dtype), kind, len(offsets))


def _finish(values: np.ndarray, kind: ValueType, n: int) -> np.ndarray | None:
    """``n`` per-frame values of type ``kind`` (their stored bytes viewed as its dtype) as a
    batch holds them; None for uint64 beyond int64 (numpy would not give int64 for these)."""
    if kind.kind is None:
        return values.reshape(n, *kind.shape)
    if kind.dtype == _U64 and (values > np.iinfo(np.int64).max).any():
        return None
    return values.ravel().astype(_OUT[kind.kind])


def _mixed(
    joined: bytes, offsets: np.ndarray, kinds: np.ndarray, types: tuple[ValueType, ...]
) -> np.ndarray | None:
    """A number stored in different msgpack widths (5 takes one byte, 500 three), gathered per
    width; None unless every row holds a number of one kind."""
    present = sorted(set(kinds.tolist()))
    first = types[present[0]].kind
    if first is None or any(types[k].kind != first for k in present):
        return None
    out = np.empty(len(offsets), _OUT[first])
    for k in present:
        rows = kinds == k
        values = _values(joined, offsets[rows], types[k])
        if values is None:
            return None
        out[rows] = values
    return out


def _select(batch: dict[str, Any], atoms: AtomSelection, indices: np.ndarray) -> dict[str, Any]:
    """Only the ``atoms`` of every frame in the per-atom keys (all if None)."""
    if atoms is not None:
        gather, batch["n_atoms"] = atom_gather(batch["n_atoms"], atoms, indices)
        for key in batch:
            if key != "n_atoms" and is_per_atom(key):
                batch[key] = batch[key][gather]
    return batch
