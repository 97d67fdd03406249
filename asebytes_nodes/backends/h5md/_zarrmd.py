"""Read-only view of H5MD stored in a Zarr v2 directory ("zarrmd", as zarrtraj writes it).

The H5MD backend's reader for files of other programs walks h5py objects; :class:`ZarrGroup` and
:class:`ZarrDataset` give a zarr group the small part of h5py's API that reader uses (item access
by path, ``get``, ``attrs``, iteration, ``name``, ``visititems``; dataset ``shape``, ``ndim``,
``dtype``, slicing and ``asstr``). Zarr strings are reported with h5py's string dtype so the
reader's string test holds for both. Nothing here writes: zarrmd stores open read-only.

A zarrmd store is a directory, so it could reach outside itself through the file system: a
symbolic link (a chunk linked to ``/etc/passwd``, an array directory linked elsewhere), a FIFO or
device that blocks or never ends, or a path with ``..`` handed to zarr. :func:`open_zarr` walks
the directory once (names and link targets only, no data) and refuses all of these with
:class:`~asebytes_nodes.errors.UnsafeStoreError`; symbolic links that stay inside the store are
allowed. Paths looked up later are checked segment by segment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...errors import MissingExtraError, StoreCorruptedError, UnsafeStoreError
from .._confine import is_plain_name, refuse_escapes
from .._hdf5_files import open_hdf5


def is_zarr_dir(path: str | os.PathLike[str]) -> bool:
    """Is ``path`` a Zarr v2 group directory (it holds ``.zgroup``)?"""
    return (Path(path) / ".zgroup").is_file()


def open_zarr(path: Path) -> ZarrGroup:
    """The root group of the Zarr v2 directory at ``path``, opened read-only."""
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr ships with the zarr extra
        raise MissingExtraError('Reading zarrmd needs zarr. Run: pip install "asebytes-nodes[zarr]"') from exc
    refuse_escapes(path, _unsafe)
    try:
        root = ZarrGroup(zarr.open_group(str(path), mode="r", zarr_format=2))
    except (OSError, ValueError, KeyError) as exc:
        raise StoreCorruptedError(f"{path}: cannot open as a Zarr v2 group ({exc})") from exc
    root.filename = str(path)
    return root


def _unsafe(where: str | os.PathLike[str], problem: str) -> UnsafeStoreError:
    return UnsafeStoreError(
        f"{os.fspath(where)} {problem}; a zarrmd store must hold only its own directories and regular "
        "files, so it was not read: copy the store with its links resolved (cp -rL) if you trust them"
    )


def _checked_key(where: str, path: str) -> str:
    """``path`` relative to a group, refused when a segment is empty, ``.`` or ``..``."""
    key = path.strip("/")
    if not all(is_plain_name(part) for part in key.split("/")):
        raise _unsafe(f"{where}: the path {path!r}", "has an empty, '.' or '..' segment or a backslash")
    return key


def _wrap(obj: Any) -> ZarrGroup | ZarrDataset:
    import zarr

    return ZarrGroup(obj) if isinstance(obj, zarr.Group) else ZarrDataset(obj)


class ZarrGroup:
    """A zarr group seen through h5py's ``Group`` API (read-only)."""

    filename = ""  # the root group's: the directory, as h5py's File names its file

    def __init__(self, group: Any) -> None:
        self._group = group
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.name = "/" + group.path.strip("/")

    def __getitem__(self, path: str) -> ZarrGroup | ZarrDataset:
        return _wrap(self._group[_checked_key(self.name, path)])

    def get(self, path: str, default: Any = None) -> Any:
        try:
            return self[path]
        except KeyError:
            return default

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.get(path) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._group.keys()))

    def __len__(self) -> int:
        return len(list(self._group.keys()))

    def keys(self) -> list[str]:
        return list(self)

    def values(self) -> list[ZarrGroup | ZarrDataset]:
        return [self[name] for name in self]

    def items(self) -> list[tuple[str, ZarrGroup | ZarrDataset]]:
        return [(name, self[name]) for name in self]

    def visititems(self, func: Callable[[str, Any], Any], prefix: str = "") -> None:
        """Call ``func(relative path, object)`` for every member below this group, depth first."""
        for name, obj in self.items():
            func(prefix + name, obj)
            if isinstance(obj, ZarrGroup):
                obj.visititems(func, f"{prefix}{name}/")

    def close(self) -> None:
        """Nothing to release: zarr holds no open handle on a local directory."""


class ZarrDataset:
    """A zarr array seen through h5py's ``Dataset`` API (read-only)."""

    fillvalue = None  # zarr v2 always records a fill value, so it does not mark padding

    def __init__(self, array: Any) -> None:
        self._array = array
        self.attrs: dict[str, Any] = dict(array.attrs)
        self.name = "/" + array.path.strip("/")
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.ndim = len(self.shape)
        dtype = np.dtype(array.dtype)
        self.dtype = h5py.string_dtype() if dtype.kind in "OUT" else dtype

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("a scalar dataset has no len()")
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, np.ndarray):
            return np.asarray(self._array.oindex[key])
        return np.asarray(self._array[key])

    def asstr(self) -> ZarrDataset:
        """Zarr hands strings out as ``str`` already."""
        return self


def open_store(path: Path) -> Any:
    """The file read-only: HDF5, or H5MD in a Zarr v2 directory ("zarrmd")."""
    return open_zarr(path) if is_zarr_dir(path) else open_hdf5(path)
