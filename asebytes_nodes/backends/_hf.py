"""HuggingFace Datasets backend: ``hf://``, ``colabfit://``, ``optimade://`` and in-memory datasets.

Read-only. Rows are read through Arrow in batches and converted column by column
(:mod:`._arrow`), with a :class:`~._hf_mapping.ColumnMapping` saying which columns make
a frame.

Sources
-------
``scheme://rest``, where ``scheme`` is ``hf``, ``colabfit`` or ``optimade``:

* if ``rest`` (``~`` expanded) is an existing local path, it is read locally, never from
  the network: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  through ``datasets.load_from_disk`` (memory-mapped, never streamed); a ``.parquet`` or
  ``.arrow`` file through ``datasets.load_dataset("parquet" | "arrow", data_files=...)``
  (one split, ``train``);
  any other folder through ``datasets.load_dataset(folder)``, which finds its data files
  and splits. ``hf:///abs/path`` and ``hf://relative/path`` both work. A folder whose
  recorded names (split names, ``state.json`` data files, README ``data_files`` patterns) or
  symbolic links lead outside it is refused with ``UnsafeStoreError`` (see :mod:`._hf_local`).
* a missing path spelt as a local one (starting with ``./``, ``../``, ``~`` or ``/``, or ending
  in a data file's suffix such as ``.parquet``, ``.arrow``, ``.json``, ``.jsonl``, ``.csv``,
  mistyped ones included) raises ``StoreNotFoundError`` naming it, never asking the Hub;
* otherwise ``rest`` is a Hub repository id (``user/dataset``), loaded with
  ``datasets.load_dataset(rest, name=..., revision=...)``. ``datasets`` >= 4 runs no
  dataset scripts; with datasets 3 this backend passes ``trust_remote_code=False``.

A ``datasets.Dataset`` or ``IterableDataset`` (or a ``DatasetDict``) may be passed instead of
a URI. ``split=`` (a split name) picks the split of a source that holds splits; it may be left
out when there is only one (a ``.parquet`` or ``.arrow`` file is one split, ``train``), and is
required, the error listing them, when there are several. ``streaming`` defaults to True for
Hub sources and False for local ones; ``streaming=False`` downloads.

Mapping: ``mapping=`` (a ``ColumnMapping`` or its dict), else by scheme (``colabfit://``
-> :data:`COLABFIT`, ``optimade://`` -> :data:`OPTIMADE`), else recognised from the
column names (flat layout, ColabFit, OPTIMADE), else ``ColumnMapping()``.

Length and order
----------------
A downloaded dataset knows its length. A stream takes it from the split info
(``dataset.info.splits[split].num_examples``); without one, iteration and ``db[i]`` still
work (reading forward; a row past the end raises ``RowIndexError``), while ``len()`` raises
``UnsupportedOperationError`` until the stream has been read to its end, after which it is
known (or open it with ``streaming=False``, which downloads it).
Should a stream end before that length, or run past it, reading raises
``StoreCorruptedError``. Streams read forward; reading a row behind the current position
restarts the stream from its beginning (use ``cache_to=`` to avoid re-reading).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import (
    MissingExtraError,
    RowIndexError,
    StoreCorruptedError,
    StoreNotFoundError,
    UnknownKeyError,
    UnsupportedOperationError,
)
from ..registry import builtin
from ._base import MISSING, ReadableBackend
from ._columns import sorted_unique
from ._hf_local import refuse_unsafe_folder
from ._hf_mapping import COLABFIT, OPTIMADE, ColumnMapping, detect_mapping

if TYPE_CHECKING:
    import pyarrow as pa

    from ._hf_readers import Reader

__all__ = ["HFBackend", "accepts", "hub_repository"]

_DATASET_TYPES = ("Dataset", "IterableDataset", "DatasetDict", "IterableDatasetDict")
_SCHEME_MAPPINGS = {"colabfit": COLABFIT, "optimade": OPTIMADE}
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
# a missing path spelt like these is a mistyped local file, never a Hub repository id
_LOCAL_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl", ".csv")


def accepts(obj: Any) -> bool:
    """Is ``obj`` a ``datasets`` dataset? Imports ``datasets`` only for objects from that package."""
    module = type(obj).__module__ or ""
    if module.split(".", 1)[0] != "datasets":
        return False
    import datasets

    return isinstance(obj, tuple(getattr(datasets, name) for name in _DATASET_TYPES))


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtraError(
            f'the hf backend needs the datasets library ({exc}); run: pip install "asebytes-nodes[hf]"'
        ) from exc
    return datasets


def _pick_split(data: Any, split: str | None, where: str) -> tuple[Any, str | None]:
    """The split ``split`` of a dataset with splits, and its name; without ``split=``, the only
    split of a dataset that has one (a parquet file is one split, ``train``)."""
    datasets = _datasets()
    if not isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return data, split
    names = ", ".join(repr(s) for s in data)
    if split is None and len(data) == 1:
        split = next(iter(data))
    if split is None:
        raise UnknownKeyError(
            f"{where} holds the splits {names}; choose one with split=..., e.g. split={next(iter(data))!r}"
        )
    if split not in data:
        raise UnknownKeyError(f"{where} has no split {split!r}; its splits are {names}")
    return data[split], split


def _load(uri: str, split: str | None, name: str | None, streaming: bool | None,
          revision: str | None, cache_dir: str | None) -> tuple[Any, str | None]:
    """The dataset behind a URI (module docstring, "Sources") and the name of its split."""
    datasets = _datasets()
    rest = uri.split("://", 1)[1]
    local = Path(rest).expanduser()
    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    if local.exists():
        if local.is_dir():
            refuse_unsafe_folder(local)  # names in the folder must not lead outside it
        if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
            return _pick_split(datasets.load_from_disk(str(local)), split, uri)
        if local.is_file():
            builder = _FILE_BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise UnsupportedOperationError(
                    f"{uri}: cannot read {local.suffix or 'extensionless'} files; give a .parquet or "
                    ".arrow file, or a folder of them"
                )
            data = datasets.load_dataset(builder, data_files=str(local), streaming=bool(streaming), **kwargs)
        else:
            data = _load_split(str(local), split, uri, name=name, streaming=bool(streaming), **kwargs)
        return _pick_split(data, split, uri)
    if _looks_local(rest):
        raise StoreNotFoundError(f"{uri}: no such local file or folder: {str(local.absolute())!r}")
    if "trust_remote_code" in inspect.signature(datasets.load_dataset).parameters:  # datasets 3
        kwargs["trust_remote_code"] = False
    stream = True if streaming is None else streaming
    repo = hub_repository(uri)
    data = _load_split(repo, split, uri, name=name, streaming=stream, revision=revision, **kwargs)
    return _pick_split(data, split, uri)


def _looks_local(rest: str) -> bool:
    """Is ``rest`` spelt as a local path (``./``, ``../``, ``~``, ``/``, or a data file's suffix,
    mistyped ones included), never as a Hub repository id?"""
    suffix = Path(rest).suffix.lower()
    # a typo is one of at least 5 characters (.parquett, .jsonn): a Hub id such as user/three.js stays
    mistyped = len(suffix) >= 5 and bool(difflib.get_close_matches(suffix, _LOCAL_SUFFIXES, cutoff=0.8))
    return suffix in _LOCAL_SUFFIXES or mistyped or rest.startswith(("./", "../", "~", "/"))


def _load_split(path: str, split: str | None, uri: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset`` of one split only (a download of one split, not all), with
    our error listing the splits when ``split`` names none of them."""
    datasets = _datasets()
    try:
        return datasets.load_dataset(path, split=split, **kwargs)
    except ValueError as exc:
        if split is None or "Unknown split" not in str(exc):
            raise
        return _pick_split(datasets.load_dataset(path, **kwargs), split, uri)[0]  # raises, listing them


def hub_repository(uri: str) -> str:
    """The Hub repository id a non-local URI names.

    ColabFit publishes its datasets under the ``colabfit`` organisation, so
    ``colabfit://MD22_Ac_Ala3_NHMe`` is ``colabfit/MD22_Ac_Ala3_NHMe``; a name with a slash
    is taken as it is, and ``hf://`` and ``optimade://`` name the repository in full.

    >>> hub_repository("colabfit://MD22"), hub_repository("colabfit://someone/MD22")
    ('colabfit/MD22', 'someone/MD22')
    """
    scheme, rest = uri.split("://", 1)
    if scheme.lower() == "colabfit" and "/" not in rest:
        return f"colabfit/{rest}"
    return rest


def _stream_identity(data: Any) -> list[str] | None:
    """What names the rows of a ``datasets`` stream object: its data files (local ones with size and
    modification time) or the fingerprints of the datasets it streams, with its features. None for a
    stream that transforms its rows (``map``, ``shuffle``, ``take``, split by node...): nothing
    outside the instance tells such a stream from another."""
    source = data._ex_iterable
    if type(source).__name__ not in ("ArrowExamplesIterable", "ExamplesIterable") or data._distributed:
        return None
    kwargs = getattr(source, "kwargs", {})
    files, shards = kwargs.get("files"), kwargs.get("shards")
    if isinstance(files, list) and files and all(isinstance(f, str) for f in files):
        named = []
        for file in files:
            local = Path(file).expanduser()
            if not local.is_file():  # a remote file: its URL names the revision
                named.append(file)
                continue
            stat = local.stat()
            named.append(f"{local.resolve()} ({stat.st_size} B, {stat.st_mtime_ns} ns)")
    elif isinstance(shards, list) and shards and all(getattr(s, "_fingerprint", None) for s in shards):
        named = [f"dataset {s._fingerprint}" for s in shards]
    else:
        return None
    features = hashlib.sha256(str(data.features).encode()).hexdigest()[:16]
    return [*named, f"features {features}"]


class _Stream:
    """Forward reads over an IterableDataset in Arrow batches; restarts to go backwards."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self._dataset = dataset.with_format("arrow")
        self._batch_size = batch_size
        self._batches: Iterator[pa.Table] | None = None
        self._table: pa.Table | None = None
        self._start = 0  # dataset row of self._table's first row
        self.ended_at: int | None = None  # rows in the stream, once it has been read to its end

    def _advance(self) -> bool:
        if self._batches is None:
            self._batches = iter(self._dataset.iter(batch_size=self._batch_size))
            self._start, self._table = 0, None
        elif self._table is not None:
            self._start += self._table.num_rows
        self._table = next(self._batches, None)
        if self._table is None:
            self.ended_at = self._start
        return self._table is not None

    def tables(self) -> Iterator[tuple[int, pa.Table]]:
        """Every batch from the start, with the dataset row of its first row."""
        self._batches = None
        while self._advance():
            assert self._table is not None
            yield self._start, self._table

    def first(self) -> pa.Table:
        """The first batch (for the column names), leaving the stream at its start."""
        self._batches = None
        if not self._advance():
            raise StoreCorruptedError("the stream holds no rows")
        assert self._table is not None
        return self._table

    def take(self, rows: np.ndarray, length: int | None) -> pa.Table:
        """Rows ``rows`` (ascending, unique) as one table; ``length`` is the split info's count, if any."""
        import pyarrow as pa

        if self._table is None or rows[0] < self._start:
            self._batches = None
            self._advance()
        parts = []
        k = 0
        while k < len(rows):
            table = self._table
            if table is None and length is None:
                raise RowIndexError(
                    f"row {int(rows[k])} is past the end of the stream, which holds {self._start} rows"
                )
            if table is None:
                raise StoreCorruptedError(
                    f"the stream ended after {self._start} rows, but its split info claims {length}"
                )
            end = self._start + table.num_rows
            if length is not None and end > length:
                raise StoreCorruptedError(
                    f"the stream holds more rows than the {length} its split info claims"
                )
            stop = int(np.searchsorted(rows, end))
            if stop > k:
                picked = rows[k:stop] - self._start
                contiguous = int(picked[-1] - picked[0]) == len(picked) - 1
                parts.append(table.slice(int(picked[0]), len(picked)) if contiguous else table.take(picked))
                k = stop
            if k < len(rows):
                self._advance()
        return pa.concat_tables(parts) if len(parts) != 1 else parts[0]


class HFBackend(ReadableBackend):
    """Frames from a HuggingFace dataset, read-only.

    >>> from asebytes_nodes import ASEIO
    >>> db = ASEIO("colabfit://colabfit/MD22_Ac_Ala3_NHMe", split="train")  # doctest: +SKIP
    >>> db = ASEIO("hf:///data/frames.parquet", split="train")  # doctest: +SKIP

    Parameters
    ----------
    target
        A URI (module docstring) or a ``datasets`` dataset.
    readonly
        Accepted for the registry; the store is always read-only.
    mapping
        A :class:`ColumnMapping` (or its dict); default chosen by scheme or column names.
    split, name, revision
        Split, configuration and Hub revision of the dataset.
    streaming
        Stream (default for Hub URIs) or download/read locally.
    cache_dir
        Where ``datasets`` keeps downloaded and converted files.
    batch_size
        Rows per Arrow batch read from a stream.
    """

    name: ClassVar[str] = "hf"
    extensions: ClassVar[tuple[str, ...]] = builtin("hf").extensions
    schemes: ClassVar[tuple[str, ...]] = builtin("hf").schemes
    read_batch_size: ClassVar[int] = 4096

    def __init__(
        self,
        target: Any,
        *,
        readonly: bool = False,
        mapping: ColumnMapping | dict[str, Any] | None = None,
        split: str | None = None,
        name: str | None = None,
        streaming: bool | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 4096,
    ) -> None:
        self.readonly = True
        self._source = target
        self._options: dict[str, Any] = {
            "mapping": mapping, "split": split, "name": name, "streaming": streaming,
            "revision": revision, "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
            "batch_size": batch_size,
        }
        if isinstance(target, (str, os.PathLike)):
            self._uri: str | None = os.fspath(target)
            if "://" not in self._uri:
                raise UnsupportedOperationError(
                    f"{self._uri!r}: the hf backend opens hf://, colabfit:// or optimade:// URIs or "
                    "datasets objects"
                )
            data, split = _load(self._uri, split, name, streaming, revision, self._options["cache_dir"])
            scheme = self._uri.split("://", 1)[0].lower()
        else:
            if streaming is not None or revision is not None or name is not None:
                raise TypeError("streaming=, name= and revision= apply to URIs, not to datasets objects")
            self._uri, scheme = None, "hf"
            data, split = _pick_split(target, split, type(target).__name__)
        self._options["split"] = split  # the only split, when split= was not given
        self._data = data
        datasets = _datasets()
        self._stream = None if isinstance(data, datasets.Dataset) else _Stream(data, batch_size)
        columns = list(data.column_names or []) if self._stream is None else self._stream_columns()
        if isinstance(mapping, dict):
            mapping = ColumnMapping.from_dict(mapping)
        self._mapping: ColumnMapping = (
            mapping or _SCHEME_MAPPINGS.get(scheme) or detect_mapping(columns) or ColumnMapping()
        )
        from ._arrow import LAYOUT_COLUMN, layout_version
        from ._hf_readers import plan_readers

        self._readers: dict[str, Reader] = plan_readers(columns, self._mapping)
        self._layout: int | None = None
        if self._mapping.flat and LAYOUT_COLUMN in columns:
            table = self._stream.first() if self._stream is not None else self._data.data
            self._layout = layout_version(table.column(LAYOUT_COLUMN), self._uri or "the dataset")
        self._views: dict[tuple[str, ...], Any] = {}
        self._counts: dict[str, int] | None = None

    def _stream_columns(self) -> list[str]:
        assert self._stream is not None
        names = self._data.column_names
        return list(names) if names else list(self._stream.first().column_names)

    # -- identity and pickling ---------------------------------------------------------------
    @property
    def mapping(self) -> ColumnMapping:
        """The column mapping in use."""
        return self._mapping

    @property
    def location(self) -> str | None:
        return self._uri

    def format_info(self) -> dict[str, Any]:
        """The flat layout's name and version, or the mapping the dataset is read with."""
        if self._layout is not None:
            return {"format": "asebytes_nodes.flat-parquet", "version": self._layout}
        streaming = self._stream is not None
        return {"format": "datasets", "streaming": streaming, "mapping": self._mapping.to_dict()}

    def cache_record(self) -> dict[str, Any]:
        """What a cache records to recognise this source: URI (or fingerprint, or a stream's data
        files), split, name, mapping. A stream object with none of these is known by its instance."""
        where: Any = self._uri or getattr(self._data, "_fingerprint", None)
        if where is None:
            where = _stream_identity(self._data)
        if where is None:
            return {"source": None, "instance": self._cache_identity}
        if self._uri is not None:
            scheme, rest = self._uri.split("://", 1)
            local = Path(rest).expanduser()
            if local.exists():  # one record for every spelling of a local path
                where = f"{scheme}://{local.resolve()}"
        return {
            "source": where,
            "split": str(self._options["split"]) if self._options["split"] is not None else None,
            "name": self._options["name"],
            "revision": self._options["revision"],
            "mapping": self._mapping.to_dict(),
        }

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self._source, "options": {**self._options, "mapping": self._mapping}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], **state["options"])  # type: ignore[misc]

    # -- reading -----------------------------------------------------------------------------
    def _claimed_length(self) -> int | None:
        """The row count of a stream's split info, if it has one."""
        splits = self._data.info.splits
        split = str(self._data.split) if self._data.split is not None else None
        if splits and split in splits and splits[split].num_examples:
            return int(splits[split].num_examples)
        return None

    def __len__(self) -> int:
        if self._stream is None:
            return int(self._data.num_rows)
        length = self._claimed_length()
        if length is None:
            length = self._stream.ended_at
        if length is None:
            raise UnsupportedOperationError(
                f"the length of the stream {self._uri or 'dataset'} is unknown until it has been read to "
                "its end: it has no split info with a row count. Iterate over it (which works without a "
                "length), or open it with streaming=False, which downloads it"
            )
        return length

    def length_known(self) -> bool:
        """Does ``len()`` answer without reading the whole stream?"""
        return self._stream is None or self._claimed_length() is not None or self._stream.ended_at is not None

    def iter_rows(self, keys: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row in order, reading a stream forward once; needs no length."""
        from ._hf_readers import table_to_rows

        if self._stream is None:
            yield from super().iter_rows(keys)
            return
        for start, table in self._stream.tables():
            rows = np.arange(start, start + table.num_rows)
            yield from table_to_rows(table, self._readers, rows, keys)

    def _view(self, columns: tuple[str, ...]) -> Any:
        """The downloaded dataset restricted to ``columns``, in Arrow format (kept per column set)."""
        view = self._views.get(columns)
        if view is None:
            view = self._views[columns] = self._data.select_columns(list(columns)).with_format("arrow")
        return view

    def _table(self, rows: np.ndarray, keys: Sequence[str] | None) -> pa.Table:
        """Dataset rows ``rows`` (in that order) with the columns ``keys`` need."""
        from ._hf_readers import needed_columns

        columns = needed_columns(self._readers, keys)
        if self._stream is not None:
            unique, where = sorted_unique(rows)
            import pyarrow as pa

            known = self._claimed_length()
            table = self._stream.take(unique, known).select(list(columns))
            return table if where is None else table.take(pa.array(where))
        view = self._view(columns)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            return view[range(int(rows[0]), int(rows[-1]) + 1)]
        return view[rows.tolist()]

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        from ._hf_readers import table_to_rows

        rows = np.asarray(indices, dtype=np.int64)
        if keys is not None and not any(k in self._readers for k in keys):
            return [{} for _ in range(len(rows))]
        if rows.size == 0:
            return []
        return table_to_rows(self._table(rows, keys), self._readers, rows, keys)

    def read_row(self, index: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return self.read_rows([index], keys)[0]

    def columns(self, index: int = 0) -> list[str]:
        return list(self.read_row(index))

    def read_column(self, key: str, indices: Sequence[int] | np.ndarray) -> list[Any] | np.ndarray:
        reader = self._readers.get(key)
        rows = np.asarray(indices, dtype=np.int64)
        if reader is None or rows.size == 0:
            return [MISSING] * len(rows)
        from ._hf_readers import column_values

        values = column_values(self._table(rows, [key]), self._readers, key, rows)
        first = values[0]
        if type(first) is np.ndarray and all(
            type(v) is np.ndarray and v.shape == first.shape and v.dtype == first.dtype for v in values
        ):
            return np.stack(values)
        return values

    def key_counts(self) -> dict[str, int]:
        """Rows carrying each key, from Arrow's null counts (a stream reads every row)."""
        if self._stream is not None:
            return super().key_counts()
        if self._counts is None:
            n = len(self)
            nulls: dict[str, int] = {}
            for column in dict.fromkeys(r.column for r in self._readers.values()):
                if getattr(self._data, "_indices", None) is None:  # the whole table
                    nulls[column] = self._data.data.column(column).null_count
                else:  # a selection of rows (shuffle, select, filter): count those
                    nulls[column] = self._view((column,))[range(n)].column(0).null_count
            filled = ("cell", "pbc")  # a null cell is a zero cell, null pbc non-periodic: never missing
            counts = {k: n - (0 if r.kind in filled else nulls[r.column]) for k, r in self._readers.items()}
            self._counts = {k: c for k, c in sorted(counts.items()) if c}
        return dict(self._counts)

    def keys(self) -> list[str]:
        """Keys of the columns that hold values (for a stream: every column, unread)."""
        return sorted(self._readers) if self._stream is not None else list(self.key_counts())

    # -- pieces read apart (parallel conversion, asebytes_nodes.shards) --------------------------
    def arrow_shards(self) -> list[int] | None:
        """Row counts of the Arrow tables (files) a downloaded dataset is made of, in order; None
        for a stream, or a selection of rows (``shuffle``, ``select``, ``filter``) crossing them."""
        if self._stream is not None or getattr(self._data, "_indices", None) is not None:
            return None
        blocks = getattr(self._data.data, "blocks", None)
        counts = [int(self._data.num_rows)] if blocks is None else [int(b[0].num_rows) for b in blocks]
        return counts if sum(counts) == self._data.num_rows else None

    def stream_shards(self) -> int:
        """How many shards (data files) a stream reads, each readable alone; 0 for a downloaded dataset."""
        return 0 if self._stream is None else int(self._data.num_shards)

    def iter_stream_shard(self, index: int, keys: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """The rows of stream shard ``index`` (of :meth:`stream_shards`) in order: reading the shards in
        turn gives every row of the stream. Errors number rows from the shard's first."""
        from ._hf_readers import table_to_rows

        part = self._data.shard(num_shards=self.stream_shards(), index=index, contiguous=True)
        start = 0
        for table in part.with_format("arrow").iter(batch_size=self._options["batch_size"]):
            yield from table_to_rows(table, self._readers, np.arange(start, start + table.num_rows), keys)
            start += table.num_rows

    def close(self) -> None:
        self._views.clear()

    def __repr__(self) -> str:
        where = self._uri or type(self._data).__name__
        try:
            size = str(len(self))
        except UnsupportedOperationError:
            size = "unknown"
        return f"<HFBackend {where!r} split={self._options['split']!r} rows={size}>"
