"""Rows of H5MD datasets for random and batched reads: decoded copies filled chunk by chunk, and
training batches gathered from them with numpy.

A dataset whose decoded size fits the file's budget (``cache_bytes``, shared by every store on
the file in this process) gets a *mirror*: an uninitialised array of its shape (the operating
system commits its pages only as they are written) into which whole HDF5 chunks are read the
first time a request touches them; random single rows read a mirror's small chunks ahead once
their misses have cost about what the rest costs in one request (:meth:`Mirror._ahead`). A row
read again is a numpy index, with no h5py call. Larger datasets are read per request, each
needed chunk once, per-atom datasets only up to the widest frame asked for. A training batch
hands the budget first to the datasets it reads whose chunks hold the most frames (energy before
species before one-frame positions chunks): only a chunk holding several frames is likely to be
read again before an epoch ends. Mirrors belong to the shared handle and go when it is reopened
(the file changed) or closed.

Chunks of our own numeric datasets are read as stored and decoded here (:mod:`._direct`: HDF5's
selection of scattered chunks costs more than inflating them); other datasets and other
programs' files are read by HDF5, each run of missing chunks of a mirror in one slab read.

Before a chunk of one of our own datasets is first read, HDF5's chunk index must find it if it
holds data (:func:`confirm`; a chunk decoded here is looked up as it is read): HDF5 reads a
chunk its index does not find as the fill value, without an error, so a damaged index key
would return NaN or 0 where values were written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import h5py
import numpy as np

from ...batch import is_numeric
from ...errors import StoreCorruptedError
from ...indexing import distinct
from .._base import MISSING
from .._hdf5_files import SharedFile
from .._hdf5_journal import checked
from ._direct import Grid
from ._plan import Col, Need, Plan, row_value, take

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "Mirror",
    "confirm",
    "encoded_numbers",
    "fast_batch",
    "head",
    "held_row",
    "index_problems",
    "plain",
    "rows_of",
]

#: Decoded bytes of mirrored datasets per file and process, unless ``cache_bytes=`` says otherwise.
DEFAULT_CACHE_BYTES = 64 << 20
_VLEN_ITEM_BYTES = 96  # what a short str or bytes object and its pointer take, counted per value
# Single rows read small chunks ahead (see Mirror._ahead): chunks of up to 8 KiB (our per-atom
# datasets' 3-4 KiB), once the misses reach a third of the chunks not read yet. Measured in a
# fresh process: a 4 KiB chunk costs 38-47 us alone, 13-14 us among many; a 32 KiB one 77-92
# alone and 104-112 among many (the batch's own decoded copy costs a page fault per 4 KiB).
_AHEAD_BYTES, _AHEAD_SHARE = 8 << 10, 3
_AHEAD_CHUNKS = 4096  # chunks read ahead in one request at most


class Mirror:
    """A decoded copy of one chunked dataset, filled one chunk run at a time. Variable-length
    values (strings, encoded blobs) are kept as the object arrays h5py reads, filled row by row:
    turning a value into a Python object costs more than decoding its chunk, so only the rows
    asked for are converted (a first frame reads one string, not a chunk of 2,048)."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.ds = ds
        vlen = ds.dtype.kind == "O"
        self.text = vlen and h5py.check_string_dtype(ds.dtype) is not None
        self.data = np.empty(ds.shape, ds.dtype)  # pages are committed as chunks are read in
        self.step = 1 if vlen else int(ds.chunks[0])
        self.loaded = np.zeros(-(-len(self.data) // self.step), bool)
        self.complete = not len(self.loaded)  # every chunk read in: rows are plain numpy indices
        self.left = len(self.loaded)  # chunks not read in yet
        chunk_bytes = self.step * ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
        self.reads_ahead = not vlen and chunk_bytes <= _AHEAD_BYTES  # see _ahead
        self.misses = 0  # single rows that had to read their chunk (see _ahead)

    def holds(self, row: int) -> bool:
        """Is ``row`` read in already?"""
        return self.complete or bool(self.loaded[row // self.step])

    def fill(self, rows: np.ndarray, load: Callable[[np.ndarray], np.ndarray | None]) -> np.ndarray:
        """The mirror, with the chunks holding ``rows`` (int64) read in; ``load`` is given the
        numbers of the chunks to read (sorted) and returns their rows decoded (:func:`_decoded`)
        or None after confirming them (:func:`confirm`), for HDF5 to read them."""
        if len(rows) == 1:  # a random read: Python ints cost less than numpy calls
            k = int(rows[0]) // self.step
            if self.loaded[k]:
                return self.data
            missing = self._ahead(k)
            if len(missing) > 1:
                try:
                    return self._read(missing, load)
                except StoreCorruptedError:  # in a chunk read ahead: the row's own chunk decides
                    self.reads_ahead, missing = False, np.array([k])  # and no more reading ahead
        else:
            chunks = rows // self.step
            if self.loaded[chunks].all():
                return self.data
            needed = np.zeros(len(self.loaded), bool)  # no sort: large requests touch many chunks
            needed[chunks] = True
            missing = np.flatnonzero(needed & ~self.loaded)
        return self._read(missing, load)

    def _read(self, missing: np.ndarray, load: Callable[[np.ndarray], np.ndarray | None]) -> np.ndarray:
        """The mirror with chunks ``missing`` (sorted, none read in) read in through ``load``."""
        block = load(missing)
        if block is not None and int(missing[-1]) - int(missing[0]) + 1 == len(missing):  # one run
            part = self.data[int(missing[0]) * self.step :][: len(block)]  # a view of the mirror
            part[...] = block[: len(part)]
        elif block is not None:
            at = (missing[:, None] * self.step + np.arange(self.step)).reshape(-1)
            keep = at < len(self.data)  # the last chunk reaches past the end
            self.data[at[keep]] = block[keep]
        else:
            cuts = np.flatnonzero(np.diff(missing) != 1) + 1
            runs = [
                (int(run[0]) * self.step, min(len(self.data), (int(run[-1]) + 1) * self.step))
                for run in np.split(missing, cuts)
            ]
            with checked(self.ds, np.array([runs[0][0], runs[-1][1] - 1])):
                self._read_runs(runs)
        self.loaded[missing] = True
        self.left -= len(missing)
        self.complete = not self.left
        return self.data

    def _ahead(self, k: int) -> np.ndarray:
        """The chunks a single row's miss in chunk ``k`` reads: ``k`` alone, until the misses
        have cost about what reading every small chunk not read yet costs in one request (a
        third as much each); then ``k`` and up to :data:`_AHEAD_CHUNKS` of those. Rows of a
        store that random reads would mostly touch anyway come at the batched price, and a few
        random rows never pay for the rest (at most about twice what the best choice made in
        hindsight costs). Text and large chunks are read one at a time."""
        self.misses += 1
        if not self.reads_ahead or self.misses * _AHEAD_SHARE < self.left:
            return np.array([k])
        rest = np.flatnonzero(~self.loaded)
        at = int(np.searchsorted(rest, k))
        lo = max(0, min(at - _AHEAD_CHUNKS // 2, len(rest) - _AHEAD_CHUNKS))
        return rest[lo : lo + _AHEAD_CHUNKS]

    def _read_runs(self, runs: list[tuple[int, int]]) -> None:
        """Rows ``lo:hi`` of every run in one HDF5 read (one selection, each chunk decoded once);
        variable-length text is decoded from UTF-8 as h5py's ``asstr()`` does."""
        space = self.ds.id.get_space()
        space.select_none()
        tail = self.data.shape[1:]
        for lo, hi in runs:
            space.select_hyperslab((lo, *(0 for _ in tail)), (hi - lo, *tail), op=h5py.h5s.SELECT_OR)
        self.ds.id.read(space, space, self.data)
        if self.text:
            for lo, hi in runs:
                flat = self.data[lo:hi].reshape(-1)  # a view: the mirror's own rows
                flat[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in flat.tolist()]


def _mirror(shared: SharedFile, path: str, limit: int) -> Mirror | None:
    """The mirror of dataset ``path``, made if it fits what is left of ``limit``; None: read it
    from the file."""
    cache = shared.mirrors
    if path in cache:
        return cache[path]
    ds = shared.dataset(path)
    mirror = None
    if isinstance(ds, h5py.Dataset) and ds.chunks is not None:
        itemsize = _VLEN_ITEM_BYTES if ds.dtype.kind == "O" else ds.dtype.itemsize
        size = itemsize * int(np.prod(ds.shape, dtype=np.int64))
        if shared.mirror_bytes + size <= limit:
            mirror = Mirror(ds)
            shared.mirror_bytes += size
    cache[path] = mirror
    return mirror


def rows_of(shared: SharedFile, plan: Plan, path: str, rows: np.ndarray, limit: int) -> Any:
    """Rows ``rows`` (sorted unique int64) of dataset ``path`` of the particle group of ``plan``."""
    source, at = _source(shared, plan, path, rows, limit)
    return source if at is None else source[at]


def held_row(
    shared: SharedFile, plan: Plan, row: int, cols: Sequence[Col], limit: int
) -> tuple[dict[str, Any], list[Col]]:
    """Row ``row``'s values of the plain columns it can take at once: from mirrors holding it
    (and its presence flags), its chunk read into the mirror first once the general path has
    read that dataset before (species of 20,000 frames: 905 of 1,000 random rows took that
    path); from its chunk decoded alone (:func:`_lone`) where a dataset is too large to mirror. Each
    is converted by :func:`._plan.row_value`, without the per-column lookups of the general
    path (1,000 random rows of 100,000 frames: 269 -> 210 ms); and the columns left for that
    path (not plain, not read in yet, a chunk with anything unusual)."""
    values: dict[str, Any] = {}
    rest: list[Col] = []
    mirrors, held = shared.mirrors, plan.held
    if held is None:  # each plain column's dataset, once per plan (an own plan's columns stay)
        held = plan.held = {key: col.path if plain(col) else None for key, col in plan.cols.items()}
    for col in cols:
        if col.flags is not None:
            flags = mirrors.get(col.flags)
            if flags is None or not flags.holds(row):
                rest.append(col)
                continue
            if not flags.data[row]:
                continue  # the row lacks the key
        path = held.get(col.key)
        n = None
        if col.kind == "atom":
            counts = plan.counts  # read only when a per-atom key needs them
            if counts is None:
                rest.append(col)
                continue
            n = int(counts[row])
        mirror = mirrors.get(path) if path is not None else None
        if mirror is not None and mirror.holds(row):
            stored = mirror.data[row]
        elif mirror is not None and path is not None and shared.found.get(path) is not None:
            stored = _filled(shared, plan, path, mirror, np.array([row]), limit)[row]
        elif mirror is None and path is not None and (lone := _lone(shared, path, row)) is not None:
            stored = lone
        else:
            rest.append(col)
            continue
        values[col.key] = row_value(col, stored, n)
    return values, rest


def _lone(shared: SharedFile, path: str, row: int) -> np.ndarray | None:
    """Row ``row`` of our unmirrored dataset ``path`` (a read-only view) from its chunk decoded
    alone (:meth:`Grid.lone`), once the general path has read it before (its grid and index
    made); None: that path reads it."""
    grid = shared.found.get(path)
    if grid is None:
        return None
    block = grid.lone(row // grid.step)
    return None if block is None else block[row % grid.step]


def head(shared: SharedFile, path: str, n: int) -> np.ndarray:
    """The first ``n`` rows of our dataset ``path``, whose every chunk holds data (atom counts)."""
    ds = shared.dataset(path)
    step = (ds.chunks or (1,))[0]
    confirm(shared, Plan(length=n, needs={path: Need()}), path, ds, np.arange(0, n, step), 0)
    with checked(ds, slice(0, n)):
        return np.asarray(ds[:n])


def _source(
    shared: SharedFile, plan: Plan, path: str, rows: np.ndarray, limit: int, width: int | None = None
) -> tuple[Any, np.ndarray | None]:
    """Where rows ``rows`` (sorted unique int64) of dataset ``path`` are: an array and the row of
    it holding each of ``rows`` (None: the array is those rows). The array is the mirror, the
    decoded chunks holding them, or those rows read by HDF5 (per-atom ones up to ``width``
    particles)."""
    mirror = _mirror(shared, path, limit)
    if mirror is not None:
        return _filled(shared, plan, path, mirror, rows, limit), rows
    ds = shared.dataset(path)
    grid = _grid(shared, plan, path, ds)
    if grid is not None and grid.bits is not None:
        if grid.step == 1:  # one row per chunk: the chunks are the rows
            return _decoded(shared, plan, path, grid, rows, limit), None
        if len(rows) == 1:  # a random read: its chunk is the block
            return _decoded(shared, plan, path, grid, rows // grid.step, limit), rows % grid.step
        chunks = rows // grid.step
        firsts = np.flatnonzero(np.diff(chunks, prepend=-1))  # rows are sorted: each chunk's first
        block = _decoded(shared, plan, path, grid, chunks[firsts], limit)
        return block, _positions(chunks, firsts) * grid.step + rows % grid.step
    confirm(shared, plan, path, ds, rows, limit)
    if width is not None and width < ds.shape[1]:
        ds = _Narrow(ds, width)
    return take(ds, rows), None


def _positions(chunks: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """For each of sorted ``chunks``, its place among the distinct ones (``firsts``: where each starts)."""
    place = np.zeros(len(chunks), np.int64)
    place[firsts[1:]] = 1
    return np.cumsum(place)


def _filled(shared: SharedFile, plan: Plan, path: str, mirror: Mirror, rows: np.ndarray, limit: int) -> Any:
    """The mirror of ``path`` with the chunks of ``rows`` read in: decoded here where the
    dataset's filters allow (a lone chunk by :meth:`Grid.lone` once the index is open: 1,000
    random rows of 20,000 frames 210 -> 187 ms), else each chunk first found (:func:`confirm`)
    and read by HDF5."""
    grid = _grid(shared, plan, path, mirror.ds)

    def load(chunks: np.ndarray) -> np.ndarray | None:
        if grid is not None and grid.bits is not None:
            if len(chunks) == 1 and (block := grid.lone(int(chunks[0]))) is not None:
                return block
            return _decoded(shared, plan, path, grid, chunks, limit)
        confirm(shared, plan, path, mirror.ds, chunks * mirror.step, limit)
        return None

    return mirror.fill(rows, load)


class _Narrow:
    """A dataset seen only up to ``width`` along its second axis (what :func:`take` reads)."""

    def __init__(self, ds: Any, width: int) -> None:
        self.ds, self.width = ds, width
        self.name, self.file = ds.name, ds.file  # for the damaged-chunk message

    def __getitem__(self, rows: Any) -> Any:
        return self.ds[rows, : self.width]


# -- training batches ---------------------------------------------------------------------------
_NUMERIC = ("atom", "frame", "scalar")


def plain(col: Col) -> bool:
    """A column of our own layout read as stored, without conversion (the fast path's columns)."""
    return (
        col.kind in _NUMERIC
        and col.path is not None
        and col.values is None
        and col.rows is None
        and not (col.velocity or col.nan_missing or col.cuboid or col.json)
        and col.width is None
        and col.scale == 1.0
    )


def fast_batch(
    shared: SharedFile,
    plan: Plan,
    indices: np.ndarray,
    keys: Sequence[str] | None,
    atoms: np.ndarray | slice | None,
    limit: int,
) -> dict[str, Any] | None:
    """The batch of ``indices`` (non-empty) as arrays, gathered with numpy from each dataset
    read once; None when a key needs the general path (missing in some rows, not numeric,
    another program's conversion). Frames of one atom count take each per-atom key in one
    fancy index of the (frames x particles) dataset; others gather atom by atom."""
    if plan.counts is None:
        return None
    wanted = _wanted(plan, None if keys is None else tuple(keys))
    if wanted is None:
        return None
    present = [c for c in wanted if c.flags is None or _all_present(shared, plan, c, indices, limit)]
    if keys is not None and len(present) < len(wanted):
        return None
    counts = plan.counts[indices]
    first = int(counts[0])
    fixed = atoms is None and not (counts != first).any()  # one atom count: no per-atom index
    frame_of = atom_of = indices  # per atom when frames differ: its store row, its place in the frame
    if atoms is not None or (not fixed and any(c.kind == "atom" for c in present)):
        frame_of = np.repeat(indices, counts)  # store row of every atom of the batch
        atom_of = np.arange(len(frame_of), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        if atoms is not None:
            from ...batch import atom_gather

            gather, counts = atom_gather(counts, atoms, indices)
            frame_of, atom_of = frame_of[gather], atom_of[gather]
    batch: dict[str, Any] = {"n_atoms": counts}
    frames: np.ndarray | None = None  # sorted unique rows: made for the first dataset read from the file
    mirrored: dict[int, np.ndarray] = {}  # particles per frame -> where the atoms sit in a mirror
    # Mirrors go first to the datasets with the most frames per chunk: a mirror spares decoding
    # a chunk again for each later row of it, and the budget may not hold every dataset.
    if any(col.path not in shared.mirrors for col in present):
        for col in sorted(present, key=lambda c: -_frames_per_chunk(shared, plan, c.path)):  # type: ignore[arg-type]
            _mirror(shared, col.path, limit)  # type: ignore[arg-type]
    for col in present:
        atom, path = col.kind == "atom", cast(str, col.path)  # plain columns have one
        mirror = shared.mirrors[path]
        if atom:
            _check_particles(shared, plan, path)
        if mirror is not None:
            data = mirror.data if mirror.complete else _filled(shared, plan, path, mirror, indices, limit)
            rows = frame_of if atom and not fixed else indices
        else:
            frames = distinct(indices) if frames is None else frames
            width = None
            if atom:
                width = first if fixed else int(atom_of.max()) + 1 if len(atom_of) else None
            data, at = _source(shared, plan, path, frames, limit, width)
            data = np.asarray(data)
            rows = np.searchsorted(frames, frame_of if atom and not fixed else indices)
            rows = rows if at is None else at[rows]
        if atom and fixed:  # every frame's first ``first`` particles
            values = data.take(rows, axis=0)  # a take costs far less than numpy's mixed indexing
            values = (values if first == data.shape[1] else values[:, :first]).reshape(-1, *data.shape[2:])
        elif atom:  # one take from the (rows x particles) view: no per-frame work
            flat = data.reshape(data.shape[0] * data.shape[1], *data.shape[2:])
            width = data.shape[1]
            if mirror is None:
                at = rows * width + atom_of
            elif (at := mirrored.get(width)) is None:  # the same for every mirror of this width
                at = mirrored[width] = rows * width + atom_of
            values = flat.take(at, axis=0)
        else:
            values = data.take(rows, axis=0)
        if col.dtype is not None and values.dtype != col.dtype:
            values = values.astype(col.dtype)  # species stored as float once atom counts differ
        batch[col.key] = values
    return batch


def encoded_numbers(plan: Plan, column: Callable[[str, np.ndarray], Any], rows: np.ndarray) -> bool:
    """Does a column of encoded values hold a number in each of ``rows`` (``column(key, rows)``
    reads its values)? :func:`fast_batch` of ``keys=None`` takes plain columns only, so such a
    batch (an energy of mixed Python and numpy floats) takes the general path."""
    return any(
        all(v is not MISSING and is_numeric(v) for v in column(key, rows))
        for key, col in plan.cols.items()
        if col.kind == "object"
    )


def _check_particles(shared: SharedFile, plan: Plan, path: str) -> None:
    """Raise StoreCorruptedError if per-atom dataset ``path`` holds fewer particles per frame
    than some frame's atom count says (a damaged count would read another frame's atoms);
    checked once per plan and dataset."""
    if path not in plan.checked:
        counts = plan.counts
        most = int(counts.max()) if counts is not None and len(counts) else 0
        particles = shared.dataset(path).shape[1]
        if most > particles:
            raise StoreCorruptedError(
                f"{shared.path}: a frame counts {most} atoms but {path} holds {particles} per "
                "frame: the file is damaged; restore it from a copy"
            )
        plan.checked.add(path)


def _wanted(plan: Plan, keys: tuple[str, ...] | None) -> list[Col] | None:
    """The columns a batch of ``keys`` (None: every numeric key) reads on the fast path, or None
    if one needs the general path (cached per plan); columns with presence flags are checked
    per batch."""
    cache = plan.batch_cols
    if keys not in cache:
        cols = plan.cols
        if keys is None:
            numeric = [c for c in cols.values() if c.kind in _NUMERIC]
            found = (
                None if not all(map(plain, numeric)) else [cols[k] for k in sorted(cols) if plain(cols[k])]
            )
        else:
            picked = [cols.get(k) for k in keys]
            found = [c for c in picked if c is not None and plain(c)]
            found = found if len(found) == len(picked) else None
        if len(cache) >= 64:
            cache.clear()
        cache[keys] = found
    return cache[keys]


def _frames_per_chunk(shared: SharedFile, plan: Plan, path: str) -> int:
    grid = _grid(shared, plan, path, shared.dataset(path))
    return 0 if grid is None else grid.step


def _all_present(shared: SharedFile, plan: Plan, col: Col, rows: np.ndarray, limit: int) -> bool:
    return col.flags is None or bool(np.asarray(rows_of(shared, plan, col.flags, rows, limit)).all())


# -- chunks HDF5's index must find --------------------------------------------------------------
def _grid(shared: SharedFile, plan: Plan, path: str, ds: Any) -> Grid | None:
    """The chunk grid of ``path`` if it is one of our datasets (see :class:`._plan.Need`)."""
    if path not in plan.needs:
        return None
    grid = shared.found.get(path)
    if grid is None and isinstance(ds, h5py.Dataset) and ds.chunks is not None and ds.ndim:
        grid = shared.found[path] = Grid(ds)
    return grid


def confirm(shared: SharedFile, plan: Plan, path: str, ds: Any, rows: np.ndarray, limit: int) -> None:
    """Raise StoreCorruptedError unless HDF5's chunk index finds every chunk holding data (see
    :class:`._plan.Need`) among the chunks of ``rows`` (any order) of dataset ``path`` of
    ``plan``'s particle group, across all its other axes.

    HDF5 reads a chunk its index does not find as the fill value, silently: a damaged key of the
    chunk B-tree hides a chunk that iterating the index still lists, and no checksum is read.
    The lookup is the one every read makes (``H5Dget_chunk_storage_size``, below h5py's
    ``read_direct_chunk``, which then copies the chunk's stored bytes, about 4 us a chunk; HDF5
    decoding it takes over 50 us), once per chunk and handle; chunks decoded here
    (:func:`_decoded`) are looked up as they are read. Other programs' files (no needs) keep
    their unwritten chunks as fill values.
    """
    grid = _grid(shared, plan, path, ds)
    if grid is None:
        return
    if len(rows) == 1:  # a random read: Python ints cost less than numpy calls
        k = int(rows[0]) // grid.step
        if grid.seen[k]:
            return
        todo = np.array([k])
    else:
        chunks = rows // grid.step
        new = ~grid.seen[chunks]
        if not new.any():
            return
        todo = distinct(chunks[new])
    _settle(shared, plan, path, grid, todo, grid.unfound(todo), limit)


def _decoded(
    shared: SharedFile, plan: Plan, path: str, grid: Grid, chunks: np.ndarray, limit: int
) -> np.ndarray:
    """Rows of the chunks numbered ``chunks`` (sorted unique) of our dataset ``path``, read and
    decoded here (:meth:`Grid.decode`), each found in HDF5's index or known to hold no data."""
    found, unfound = grid.fetch(chunks)
    _settle(shared, plan, path, grid, chunks, unfound, limit)
    return grid.decode(chunks, found)


def _settle(
    shared: SharedFile, plan: Plan, path: str, grid: Grid, todo: np.ndarray, unfound: list[Any], limit: int
) -> None:
    """Raise StoreCorruptedError if a chunk of ``unfound`` holds data; mark chunks ``todo`` seen."""
    if unfound:
        lost = _holding(shared, plan, plan.needs[path], grid, unfound, limit)
        if lost:
            ds = grid.ds
            raise StoreCorruptedError(
                f"{ds.file.filename}: dataset {ds.name} {lost[0]} is damaged: HDF5's chunk index does "
                "not find the chunk holding them, so they would read as fill values; the file's "
                "structure does not match what was written; restore the file from a copy"
            )
        if plan.needs[path].count is not None:  # all True flags found: the rest are unwritten
            grid.seen[:] = True
    grid.seen[todo] = True


def index_problems(shared: SharedFile, plan: Plan, limit: int) -> list[str]:
    """Every chunk holding data of our datasets that HDF5's index does not find (``check()``)."""
    found: list[str] = []
    for path, need in plan.needs.items():
        ds = shared.file.get(path)  # a dataset missing or misshapen: invariants() names it
        index = None if ds is None else _grid(shared, plan, path, shared.dataset(path))
        if index is None:
            continue
        try:
            lost = _holding(shared, plan, need, index, index.unfound(np.arange(len(index.seen))), limit)
        except StoreCorruptedError as exc:  # the flags or atom counts telling where data are
            found.append(str(exc))
            continue
        name = index.ds.name
        found += [
            f"dataset {name} {where}: damaged (HDF5's chunk index does not find its chunk)" for where in lost
        ]
    return found


def _holding(
    shared: SharedFile, plan: Plan, need: Need, index: Grid, offsets: list[tuple[int, ...]], limit: int
) -> list[str]:
    """Where the chunks at ``offsets`` hold data ("rows a-b[, atoms c-d]"): a frame below the
    length that carries the column (and, per-atom, has atoms in the chunk)."""
    ds, step = index.ds, index.step
    n = min(plan.length, ds.shape[0])
    if not offsets:
        return []
    spans = [(lo, min(lo + step, n), rest) for lo, *rest in offsets if lo < n]
    if need.count is not None:  # presence flags: all their True ones must be found
        with checked(ds, slice(0, n)):
            whole = int(np.count_nonzero(ds[:n]))
        return [] if whole == need.count else [f"rows {lo}-{hi - 1}" for lo, hi, _ in spans]
    lost = []
    for lo, hi, rest in spans:
        carries = np.ones(hi - lo, bool)
        if need.flags is not None:
            carries = np.asarray(rows_of(shared, plan, need.flags, np.arange(lo, hi), limit), bool)
        if not need.atom:
            if carries.any():
                lost.append(f"rows {lo}-{hi - 1}")
            continue
        a0 = rest[0]
        if (carries & (plan.counts[lo:hi] > a0)).any():  # type: ignore[index]
            lost.append(f"rows {lo}-{hi - 1}, atoms {a0}-{min(a0 + index.width, ds.shape[1]) - 1}")
    return lost
