"""The H5MD backend class: opens a particle group of an H5MD file (ours or another program's),
reads rows and columns through the process's shared handle, and writes our own stores. The
layout and the rules for other programs' files are described in :mod:`asebytes_nodes.backends.h5md`."""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import numpy as np

from ... import __version__
from ...errors import (
    ASEBytesError,
    InvalidDataError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnknownKeyError,
    UnsupportedOperationError,
)
from ...registry import builtin
from ...rows import gc_paused
from .._base import MISSING, ColumnInfo, WritableBackend, check_cache_bytes, check_group_name, path_of
from .._columns import Column, expand_rows, expand_values, first_value, sorted_unique, type_code_dtype
from .._hdf5_files import SharedFile, acquire, release
from .._hdf5_guard import FULL, LINKS, NONE
from .._hdf5_journal import JOURNAL_SUFFIX, LOCK_SUFFIX, checksum_problems, reading, store_lock, unseal
from .._keys import atom_counts
from ._check import check_version, conformance, creator_name, group_names, invariants
from ._foreign import foreign_plan
from ._gather import (
    DEFAULT_CACHE_BYTES,
    encoded_numbers,
    fast_batch,
    head,
    held_row,
    index_problems,
    plain,
    rows_of,
)
from ._plan import (
    CREATOR,
    FORMAT_NAME,
    PRIVATE,
    TABLE,
    Col,
    Plan,
    all_nan,
    as_text,
    convert,
    is_group,
    own_plan,
    particle_groups,
)
from ._table import encode_batch
from ._units import momenta
from ._writer import VELOCITY_SOURCES, velocities, write
from ._zarrmd import open_store

__all__ = ["DEFAULT_GROUP", "H5MDBackend"]

#: The particle group of a store opened without ``group=`` (unless the file has only another one).
DEFAULT_GROUP = "atoms"


class H5MDBackend(WritableBackend):
    """Frames in an H5MD file (``.h5``, ``.h5md``, ``.hdf5``), readable by znh5md and MDAnalysis.

    >>> from asebytes_nodes import ASEIO
    >>> train = ASEIO("frames.h5", group="train")  # doctest: +SKIP

    Parameters
    ----------
    target
        The file; created on the first write. Files written by other programs open read-only.
    readonly
        Refuse every write.
    group
        The particle group (``particles/<group>``), a dataset of its own in the file: own length,
        keys and column table. Default: ``atoms`` (in a file another program wrote without such a
        group: its only group). ``particles_group`` is the same option under H5MD's name.
    author_name, author_email
        Written to ``h5md/author`` when the file is created.
    compression, compression_opts
        ``"gzip"`` (default, readable by every HDF5 program; level 0-9, default 4), ``"lzf"``
        (faster, h5py only) or ``None``.
    timestep
        Time between frames in fs, for the H5MD ``time`` of stores whose frames do not all carry
        ``info.step`` and ``info.time`` (which are the clock otherwise; see the package notes).
    cache_bytes
        Decoded copies of datasets kept for random and batched reads, per file and process
        (default 64 MiB; 0 reads every request from the file). See :mod:`._gather`.
    lock_timeout
        Seconds a write, or a read meeting one, waits for another process's write before
        StoreLockedError (default 60; for the file in this process).
    """

    name: ClassVar[str] = "h5md"
    extensions: ClassVar[tuple[str, ...]] = builtin("h5md").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("h5md").schemes
    supports_drop_keys: ClassVar[bool] = True
    supports_groups: ClassVar[bool] = True
    side_suffixes: ClassVar[tuple[str, ...]] = (LOCK_SUFFIX, JOURNAL_SUFFIX)
    read_batch_size: ClassVar[int] = 16384

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        readonly: bool = False,
        group: str | None = None,
        particles_group: str | None = None,
        author_name: str = "N/A",
        author_email: str | None = None,
        compression: str | None = "gzip",
        compression_opts: int | None = None,
        timestep: float = 1.0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        lock_timeout: float | None = None,
    ) -> None:
        self._path = path_of(os.fspath(target))
        if lock_timeout is not None:
            store_lock(self._path, lock_timeout)
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"unknown compression {compression!r}; use 'gzip', 'lzf' or None")
        if group is not None and particles_group is not None and group != particles_group:
            raise InvalidDataError(
                f"{self._path}: group={group!r} and particles_group={particles_group!r} name the same "
                "option; give one"
            )
        group = group if group is not None else particles_group
        if group is not None:
            check_group_name(str(self._path), group)
        self.readonly = readonly
        self._options: dict[str, Any] = {
            "group": group,
            "author_name": author_name,
            "author_email": author_email,
            "compression": compression,
            "compression_opts": compression_opts,
            "timestep": timestep,
            "cache_bytes": check_cache_bytes(str(self._path), cache_bytes),
            "lock_timeout": lock_timeout,
        }
        self._shared: SharedFile = acquire(self._path)
        self._finalizer = weakref.finalize(self, release, self._shared)
        self._generation = -1
        try:
            with self._shared.lock, reading(self._path):
                self._load(self._shared.reader(open_store, NONE))
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._finalizer()

    def __getstate__(self) -> dict[str, Any]:
        return {"target": str(self._path), "readonly": self.readonly, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], readonly=state["readonly"], **state["options"])  # type: ignore[misc]

    @property
    def location(self) -> str:
        return str(self._path)

    def cache_record(self) -> dict[str, Any]:
        """Inherited, plus the group when one was asked for."""
        record = super().cache_record()
        group = self._options["group"]
        return record if group is None else {**record, "group": group}

    @property
    def particles_group(self) -> str:
        """The particle group this store reads and writes."""
        return self._group

    @property
    def skipped(self) -> dict[str, str]:
        """Elements of another program's file that were not read, with the reason."""
        return dict(self._plan.skipped)

    @classmethod
    def list_groups(cls, target: str | os.PathLike[str]) -> list[str]:
        """The particle groups in the H5MD file at ``target`` but the default one (``atoms``),
        sorted: the names to pass as ``group=``."""
        return [name for name in group_names(path_of(os.fspath(target))) if name != DEFAULT_GROUP]

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the file's lock while reading: a write by another thread in this process swaps the
        handle and must not be seen half done; another process's write is waited out."""
        with self._shared.lock, reading(self._path):
            self._file()
            yield

    def _file(self, level: int = NONE) -> Any:
        """The shared read handle, checked to ``level`` (:mod:`.._hdf5_guard`; below it, each
        path and dataset as it is first opened, see :meth:`SharedFile.get`; FULL: every dataset
        now); reloads what to read when the file changed."""
        if not self._finalizer.alive:
            raise ValueError(f"{self._path}: the store is closed")
        handle = self._shared.reader(open_store, level)
        if self._shared.generation != self._generation:
            self._load(handle)
        return handle

    def _load(self, handle: Any) -> None:
        """Read what the file says about this store's particle group (``handle``: None if no file)."""
        self._generation = self._shared.generation
        self._own = True
        self._version = (1, 1)
        requested = self._options["group"]
        self._group = requested or DEFAULT_GROUP
        self._plan = Plan()
        if handle is None:
            if self.readonly:
                asked = "" if requested is None else f" for group {requested!r}"
                what = "no such H5MD file" if not self._path.exists() else "an empty file, no H5MD store"
                raise StoreNotFoundError(f"{self._path}: {what} (opened read-only{asked})")
            return
        h5md = self._shared.get("h5md")
        if not is_group(h5md):
            if len(handle) == 0 and not self.readonly:
                return
            raise StoreCorruptedError(
                f"{self._path}: an HDF5 file without an /h5md group, so not H5MD; open it with the "
                "backend that wrote it (for MDTraj files: backend='mdtraj')"
            )
        self._version = check_version(self._path, h5md)
        # read-only with our table: ours (the creator group and its name, 0.3 ms cold, only gate
        # writes; format_info looks the group up itself)
        private = self._shared.get(f"{PRIVATE}/{self._group}") if self.readonly else None
        made_by = CREATOR if private is not None else creator_name(self._creator())
        self._own = made_by == CREATOR
        # Without group=, our files open their default store (``atoms``, empty until written: the
        # other groups stay apart); another program's file opens its only group.
        groups = None if self._own or requested is not None else self._groups(handle)
        if groups and DEFAULT_GROUP not in groups:
            if len(groups) > 1:
                raise UnknownKeyError(
                    f"{self._path} has {len(groups)} particle groups ({', '.join(groups)}); pick one "
                    "with group=..."
                )
            self._group = groups[0]
        raw = private if private is not None else self._shared.get(f"{PRIVATE}/{self._group}")
        table = unseal(raw, TABLE, str(self._path)) if raw is not None else None
        if groups is None:  # a store of ours has its table: no need to list the groups
            groups = [] if table is not None else self._groups(handle)
        try:
            if table is not None:
                self._plan = own_plan(self._path, partial(head, self._shared), self._group, table)
            elif self._group in groups:
                self._own = False
                self._shared.require(FULL)  # another program's layout: its plan reads every element
                self._plan = foreign_plan(handle, self._group, made_by == "znh5md")
                if self._plan.skipped:
                    warnings.warn(
                        f"{self._path}: elements not read: "
                        + "; ".join(f"{k} ({why})" for k, why in sorted(self._plan.skipped.items())),
                        UserWarning,
                        stacklevel=2,
                    )
            elif not self._own or (self.readonly and (requested is not None or groups)):
                found = ", ".join(groups) or "none"  # read-only, our default store is empty only alone
                raise StoreNotFoundError(
                    f"{self._path} has no particle group {self._group!r}; it has: {found} (pick one "
                    "with group=...)"
                )
        except (KeyError, ValueError, TypeError, OSError) as exc:
            if isinstance(exc, ASEBytesError):
                raise
            raise StoreCorruptedError(
                f"{self._path}: cannot read particle group {self._group!r} as H5MD ({exc})"
            ) from exc

    def _creator(self) -> Any:
        """The file's ``h5md/creator`` group, or None (call with the handle current)."""
        creator = self._shared.get("h5md/creator")
        return creator if is_group(creator) else None

    def _groups(self, handle: Any) -> list[str]:
        """The file's particle groups, listed once every link of the file was checked."""
        self._shared.require(LINKS)
        return particle_groups(handle)

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._finalizer.alive and self._shared.unchanged(self._generation):
            return self._plan.length  # the file is as loaded: no lock round trip
        with self._reading():
            return self._plan.length

    def keys(self) -> list[str]:
        with self._reading():
            return sorted(self._plan.cols)

    def schema(self) -> dict[str, ColumnInfo]:
        with self._reading():
            plan = self._plan
        if plan.table is None:
            return super().schema()
        columns = plan.table["columns"]
        return {key: Column.of(columns[key]).info(key, self._sampler(key)) for key in sorted(plan.cols)}

    def _sampler(self, key: str) -> Callable[[], Any]:
        """The first stored value of ``key``, read when asked (what an object column's schema shows)."""
        return lambda: first_value(lambda rows: self.read_column(key, rows), len(self))

    def key_counts(self) -> dict[str, int]:
        with self._reading():
            plan = self._plan
        if plan.table is not None:
            return {key: int(plan.table["columns"][key]["count"]) for key in sorted(plan.cols)}
        return super().key_counts()

    def format_info(self) -> dict[str, Any]:
        with self._reading():
            found = self._creator() if self._shared.file is not None else None
            if found is not None:
                creator = {k: as_text(v) for k, v in found.attrs.items()}
            else:  # a store not written yet is ours; a file without h5md/creator names none
                creator = {"name": CREATOR, "version": __version__} if self._own else {}
            info: dict[str, Any] = {"h5md": ".".join(map(str, self._version)), "creator": creator}
            if self._plan.table is not None:
                info.update(format=FORMAT_NAME, version=self._plan.table["version"])
            return {**info, "particles_group": self._group}

    def check(self) -> list[str]:
        """H5MD conformance of the particle group (metadata, box, elements' value, step and
        time), this layout's own invariants for stores it wrote, then every row."""
        with self._reading():
            handle = self._file(FULL)  # the checks below read every dataset
            damaged = checksum_problems(handle)  # damaged chunks first: the checks below read them
            if not damaged and self._plan.table is not None:
                damaged = index_problems(self._shared, self._plan, self._options["cache_bytes"])
            if damaged:
                return damaged
            problems = [] if handle is None else conformance(handle, self._group)
            if self._plan.table is not None:
                problems += invariants(handle, self._group, self._plan)
        return problems or super().check()

    def columns(self, index: int = 0) -> list[str]:
        with self._reading():
            frame = np.array([index])
            cols = self._plan.cols
            keys = [
                key
                for key, col in cols.items()
                if (present := self._present(col, frame)) is None or bool(present[0])
            ]
        # Whether znh5md's NaN or a narrower element gives this frame a value shows only in the value.
        unsure = [k for k in keys if cols[k].nan_missing or cols[k].width is not None]
        if unsure:
            found = self.read_row(index, unsure)
            keys = [k for k in keys if k not in unsure or k in found]
        return keys

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return []
        with self._reading():
            frames, where = sorted_unique(idx)
            cols = self._plan.cols
            wanted = (
                list(cols.values()) if keys is None else [cols[k] for k in dict.fromkeys(keys) if k in cols]
            )
            rows: list[dict[str, Any]] = [{} for _ in frames]
            order, rest = wanted, wanted
            if len(frames) == 1 and self._own:  # a random row: what the mirrors hold, at once
                limit = self._options["cache_bytes"]
                rows[0], rest = held_row(self._shared, self._plan, int(frames[0]), wanted, limit)
            sizes = self._sizes(frames) if any(col.kind == "atom" for col in rest) else None
            for col in rest:
                key = col.key
                for row, value in zip(rows, self._column(col, frames, sizes), strict=True):
                    if value is not MISSING:
                        row[key] = value
            if rest is not order and rest:  # the keys in the order the general path gives them
                rows[0] = {col.key: rows[0][col.key] for col in order if col.key in rows[0]}
            return expand_rows(rows, where)

    def read_batch(
        self,
        indices: Sequence[int] | np.ndarray,
        keys: Sequence[str] | None = None,
        *,
        fill: Mapping[str, Any] | None = None,
        atoms: Any = None,
    ) -> dict[str, Any]:
        """Our own stores: every dataset the keys need read once for the batch's rows and gathered
        with numpy (:func:`._gather.fast_batch`); rows lacking a key, strings and objects, and
        other programs' files take the general path."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx):
            with self._reading():
                batch = fast_batch(self._shared, self._plan, idx, keys, atoms, self._options["cache_bytes"])
            plan = self._plan  # keys=None: numbers in encoded columns too (not in the fast batch)
            if batch is not None and (keys is not None or not encoded_numbers(plan, self.read_column, idx)):
                return batch
        return super().read_batch(idx, keys, fill=fill, atoms=atoms)

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        with self._reading():
            col = self._plan.cols.get(key)
            if col is None or idx.size == 0:
                return [MISSING] * len(idx)
            frames, where = sorted_unique(idx)
            values = self._column(col, frames, self._sizes(frames) if col.kind == "atom" else None)
            if col.kind == "frame" and not any(v is MISSING for v in values):
                stacked = np.stack(values, dtype=values[0].dtype)  # fresh memory, byte order kept
                return stacked if where is None else stacked[where]
            return expand_values(values, where)  # repeated rows never share arrays

    def read_column_array(self, key: str, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """``np.asarray(self.read_column(key, indices))``, read without making a Python value of
        each row, for a scalar key of our own layout that every row carries (``to_numpy`` asks
        for it); None: another case, read the values."""
        idx = np.asarray(indices, dtype=np.int64)
        with self._reading():
            col = self._plan.cols.get(key)
            if col is None or col.kind != "scalar" or col.code is None or not plain(col) or not idx.size:
                return None
            frames, where = sorted_unique(idx)
            if self._present(col, frames) is not None:
                return None
            raw = np.asarray(self._raw(col, frames)).reshape(len(frames))
        values = raw.astype(type_code_dtype(col.code), copy=False)  # the dtype numpy gives the values
        return values if where is None else values[where]

    def _present(self, col: Col, frames: np.ndarray) -> np.ndarray | None:
        """Which of ``frames`` carry the column (None: all of them)."""
        if col.flags is not None:
            flags = np.asarray(self._rows(col.flags, frames)).astype(bool)
            return None if flags.all() else flags
        if col.rows is not None:
            found = col.rows[frames] >= 0
            return None if found.all() else found
        return None

    def _sizes(self, frames: np.ndarray) -> np.ndarray | None:
        """Atom counts (1-d) or masks of real particles (2-d) of ``frames``; None: no padding."""
        plan = self._plan
        if plan.counts is not None:
            return plan.counts[frames]
        if plan.mask is None:
            return None
        col, fill = plan.mask
        raw = np.asarray(self._raw(col, frames))
        if fill is not None:
            return raw != fill
        valid = ~np.isnan(raw.reshape(len(frames), raw.shape[1], -1)).all(axis=2)
        return np.where(valid.any(axis=1), raw.shape[1] - np.argmax(valid[:, ::-1], axis=1), 0)

    def _column(self, col: Col, frames: np.ndarray, sizes: np.ndarray | None) -> list[Any]:
        """Values of ``col`` at sorted unique ``frames``, MISSING where a frame lacks it."""
        present = self._present(col, frames)
        if col.width is not None and sizes is not None:  # frames with more particles lack it
            fits = np.asarray(sizes <= col.width if sizes.ndim == 1 else ~sizes[:, col.width :].any(axis=1))
            present = fits if present is None else present & fits
            sizes = sizes if sizes.ndim == 1 else sizes[:, : col.width]
        picked = frames if present is None else frames[present]
        part = sizes if sizes is None or present is None else sizes[present]
        if col.velocity:
            values = self._momenta(col, picked, part)
        else:
            values = convert(col, self._raw(col, picked), part)
        if col.nan_missing:
            values = [MISSING if all_nan(v) else v for v in values]
        if present is None:
            return values
        out: list[Any] = [MISSING] * len(frames)
        for j, value in zip(np.flatnonzero(present).tolist(), values, strict=True):
            out[j] = value
        return out

    def _raw(self, col: Col, frames: np.ndarray) -> Any:
        """The stored values of ``frames`` (all carrying the column) as one array."""
        if col.values is not None:
            return col.values[frames]
        if col.path is None:
            return np.repeat(np.asarray(col.const)[None], len(frames), axis=0)
        return self._rows(col.path, frames if col.rows is None else col.rows[frames])

    def _rows(self, path: str, rows: np.ndarray) -> Any:
        return rows_of(self._shared, self._plan, path, rows, self._options["cache_bytes"])

    def _momenta(self, col: Col, frames: np.ndarray, sizes: np.ndarray | None) -> list[Any]:
        """Another program's velocities times masses: ASE keeps momenta, not velocities."""
        velocities = convert(col, self._raw(col, frames), sizes)
        cols = self._plan.cols
        masses = self._column(cols["arrays.masses"], frames, sizes) if "arrays.masses" in cols else None
        numbers = self._column(cols["arrays.numbers"], frames, sizes) if "arrays.numbers" in cols else None
        return momenta(velocities, masses, numbers)

    # -- writing -----------------------------------------------------------------------------
    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        if not rows and (self._plan.table is not None or not self._own):
            return  # the group's store exists (see _write: a missing one is laid out)
        with gc_paused():  # thousands of new objects per batch: see gc_paused
            counts = atom_counts(rows)
            self._write(None, list(rows), counts, full=True)

    def set_rows(self, indices: Sequence[int] | np.ndarray, rows: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        last = dict(zip(np.asarray(indices, np.int64).tolist(), rows, strict=True))  # the last write wins
        where = np.array(sorted(last), np.int64)
        picked = [last[i] for i in where.tolist()]
        self._write(where, picked, atom_counts(picked), full=True)

    def update_rows(self, indices: Sequence[int] | np.ndarray, updates: Sequence[dict[str, Any]]) -> None:
        self._check_writable()
        merged: dict[int, dict[str, Any]] = {}
        for i, update in zip(np.asarray(indices, np.int64).tolist(), updates, strict=True):
            merged.setdefault(i, {}).update(update)
        where = np.array(sorted(merged), np.int64)
        self._write(where, [merged[i] for i in where.tolist()], None, full=False)

    def drop_keys(self, indices: Sequence[int] | np.ndarray, keys: Sequence[str]) -> None:
        self._check_writable()
        where = sorted_unique(np.asarray(indices, np.int64))[0]
        self._write(where, [{} for _ in where], None, full=False, drop=keys)

    def _refuse_foreign(self, where: np.ndarray | None, rows: list[dict[str, Any]]) -> None:
        """Refuse a write of rows (``where``: None appends) to a file another program wrote."""
        if not self._own and len(rows if where is None else where):
            raise UnsupportedOperationError(
                f"{self._path} was written by another program; asebytes-nodes writes only H5MD files "
                "it created. Copy the frames into a new file: ASEIO('copy.h5').extend(ASEIO(path))"
            )

    def _write(
        self,
        where: np.ndarray | None,
        rows: list[dict[str, Any]],
        counts: np.ndarray | None,
        full: bool,
        drop: Sequence[str] = (),
    ) -> None:
        """Write ``rows`` at the sorted unique rows ``where`` (None: append; rows past the end are
        appended), planned from the store as it is, under the file's lock: one writer at a time in
        this process, one per file across processes (the store lock, held from planning to commit).

        ``full``: each row replaces a whole frame (keys it lacks are cleared); else only the given
        keys change. ``drop`` clears keys. Every value is checked and encoded first.
        """
        with self._shared.lock, reading(self._path):
            self._file(FULL)  # a hostile or foreign file is refused before a lock file is made beside it
        self._refuse_foreign(where, rows)
        with self._shared.lock, store_lock(self._path).exclusive(), reading(self._path):
            self._file(FULL)  # a write may touch any dataset of the group
            plan = self._plan
            if where is None:
                where = np.arange(plan.length, plan.length + len(rows))
            if not len(where) and (plan.table is not None or not self._own):
                return  # nothing to write (an empty write into a missing group makes its 0-frame store)
            self._refuse_foreign(where, rows)
            drop = [key for key in drop if key in plan.cols]
            batch = encode_batch(
                plan.table,
                plan.counts,
                self._options["timestep"],
                self._group,
                where,
                rows,
                counts,
                full,
                drop,
                self.read_column,
            )
            velocity = None
            derived = full or not batch.columns.keys().isdisjoint(VELOCITY_SOURCES)
            if "arrays.momenta" in batch.table["columns"] and derived:
                batch.table["velocity"] = True
                stored = [{} for _ in rows] if full else self.read_rows(where, VELOCITY_SOURCES)
                velocity = velocities(rows, stored, batch.counts[where], batch.table["width"], drop)
            pbc = rows[0].get("pbc") if full and rows else None
            write(self._shared, self._group, self._options, batch, where, pbc, velocity)
