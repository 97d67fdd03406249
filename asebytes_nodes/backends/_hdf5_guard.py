"""Refuse HDF5 files that would make libhdf5 open another file, before any data is read.

An HDF5 file can point outside itself in four ways, each resolved by libhdf5 while reading:

* an **external link** (``h5py.ExternalLink``): traversing it opens another HDF5 file;
* a **user-defined link** type, resolved by a callback whose meaning the file does not carry;
* a **virtual dataset** (VDS): reading it, or even asking the shape of an unlimited one, opens
  its source files;
* **external raw storage** (``create_dataset(..., external=[...])``): the data are the bytes
  of another file (``/etc/passwd`` is one ``external=[("/etc/passwd", 0, n)]`` away).

A soft link is a path inside the same file; it is refused only when it leads nowhere (dangling
or looping), which no writer produces on purpose. Object and region references also stay in the
same file. Filters come from plugins installed on this machine, never from the file.

The check has two levels:

* :data:`LINKS` walks the *links* only (``H5Lvisit``, which recurses through hard links and never
  resolves soft or external ones): no link leaves the file, every soft link resolves. After it,
  opening any object by path stays in the file; only a dataset's *storage* can still point out.
* :data:`FULL` adds the storage of every dataset reached through a hard link, each opened once by
  address to read its creation property list (``H5Dopen`` opens no source file; only reading or
  sizing a VDS does). No data is read.

A reader that opens only some objects (the H5MD backend on its own stores) checks neither at
open: it takes :func:`refuse_outside_path` on each path before it first opens it (every link
along it stays in the file: hard, or a soft link whose target passes the same check and
resolves) and :func:`refuse_outside_storage` on each dataset before it first reads it. A cold
open then costs a few link lookups instead of the link walk (about 0.3 ms on a typical H5MD
file) or opening every dataset (about 1 ms); what it never opens is never checked. A file that
passed a level is remembered in this process by device, inode, size, mtime and ctime (ctime
cannot be set back by a user), so reopening it unchanged costs one ``fstat``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import UnsafeStoreError

if TYPE_CHECKING:
    import h5py

__all__ = [
    "FULL",
    "LINKS",
    "NONE",
    "refuse_outside",
    "refuse_outside_links",
    "refuse_outside_path",
    "refuse_outside_storage",
]

NONE, LINKS, FULL = 0, 1, 2  # what has been checked of an open file

_PASSED: dict[tuple[int, ...], int] = {}  # identities of files that passed in this process, and the level
_PASSED_MAX = 4096

_HOPS = 16  # soft links followed in a row at most (HDF5's own limit)

_WHAT = "external links, virtual datasets or external raw storage (files that make HDF5 read other files)"


def _refuse(where: str | os.PathLike[str], name: bytes, problem: str) -> UnsafeStoreError:
    path = "/" + name.decode("utf-8", "replace").lstrip("/")
    return UnsafeStoreError(
        f"{os.fspath(where)}: the HDF5 object {path!r} {problem}; this package refuses {_WHAT}, so the "
        "file was not read: copy the data into the file itself (e.g. h5py's copy of the "
        "resolved datasets), or open it only if you trust where it points"
    )


def refuse_outside_links(handle: h5py.File, where: str | os.PathLike[str]) -> h5py.File:
    """Return ``handle`` when nothing in the file points outside it (:data:`FULL`), else close it
    and raise :class:`~asebytes_nodes.errors.UnsafeStoreError` naming the first offending object."""
    try:
        refuse_outside(handle, where, FULL)
    except BaseException:
        handle.close()
        raise
    return handle


def refuse_outside(handle: h5py.File, where: str | os.PathLike[str], level: int) -> None:
    """Raise :class:`~asebytes_nodes.errors.UnsafeStoreError` unless the open file passes
    ``level`` (:data:`LINKS` or :data:`FULL`); the handle stays open either way."""
    identity = _identity(handle)
    if level <= NONE or (identity is not None and _PASSED.get(identity, NONE) >= level):
        return
    root, hard = _walk_links(handle.id, where)
    if level >= FULL:
        for name in hard:
            _refuse_storage(root, name, where)
    if identity is not None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.clear()
        _PASSED[identity] = max(level, _PASSED.get(identity, NONE))


def refuse_outside_storage(ds: Any, where: str | os.PathLike[str]) -> Any:
    """Return the h5py dataset ``ds`` unless its data live in other files (a virtual dataset or
    external raw storage); call it on every dataset a :data:`LINKS`-checked file reads."""
    _check_plist(ds.id.get_create_plist(), ds.name.encode(), where)
    return ds


def refuse_outside_path(handle: h5py.File, name: str, where: str | os.PathLike[str], hops: int = 0) -> None:
    """Raise :class:`~asebytes_nodes.errors.UnsafeStoreError` unless opening ``name`` (a path
    from the root) stays in the file: each link along it is hard, or soft with a target that
    passes this check and resolves. Links are looked at, never followed out; a missing link
    ends the check (opening the path then fails inside the file)."""
    import h5py

    root = h5py.h5g.open(handle.id, b"/")
    parts = [part for part in name.encode().split(b"/") if part not in (b"", b".")]  # "." is no link
    for i in range(1, len(parts) + 1):
        path = b"/".join(parts[:i])
        try:
            info = root.links.get_info(path)
        except (KeyError, RuntimeError, ValueError, OSError):
            return
        if info.type == h5py.h5l.TYPE_HARD:
            continue
        if info.type == h5py.h5l.TYPE_EXTERNAL:
            target, inner = (part.decode("utf-8", "replace") for part in root.links.get_val(path))
            raise _refuse(where, path, f"is an external link to {inner!r} in {target!r}")
        if info.type != h5py.h5l.TYPE_SOFT:
            raise _refuse(where, path, f"is a user-defined link (type {info.type})")
        value = root.links.get_val(path)
        shown = value.decode("utf-8", "replace")
        if hops >= _HOPS:
            raise _refuse(where, path, f"is a soft link to {shown!r}, one of more than {_HOPS} in a row")
        inside = value if value.startswith(b"/") else b"/".join([*parts[: i - 1], value])
        refuse_outside_path(handle, inside.decode("utf-8", "replace"), where, hops + 1)
        try:
            h5py.h5o.get_info(root, path)
        except (KeyError, RuntimeError, ValueError, OSError):
            raise _refuse(where, path, f"is a soft link to {shown!r}, which does not resolve") from None


def _identity(handle: h5py.File) -> tuple[int, ...] | None:
    """What identifies this version of the open file, or None for a driver without a descriptor."""
    try:
        st = os.fstat(handle.id.get_vfd_handle())
    except (OSError, TypeError, ValueError, RuntimeError):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _walk_links(fid: Any, where: str | os.PathLike[str]) -> tuple[Any, list[bytes]]:
    """Refuse external, user-defined and unresolved soft links; the root group and one path of
    each hard-linked object."""
    import h5py  # imported by the caller already; here so that a missing extra fails there, with its hint

    root = h5py.h5g.open(fid, b"/")
    hard: dict[int, bytes] = {}  # address -> one path, so a hard-linked dataset is opened once
    soft: list[bytes] = []
    other: list[tuple[bytes, int]] = []  # raised after the walk: h5py cannot raise from a visitor

    def visit(name: bytes, info: Any) -> None:
        if info.type == h5py.h5l.TYPE_HARD:
            hard.setdefault(info.u, name)
        elif info.type == h5py.h5l.TYPE_SOFT:
            soft.append(name)
        else:
            other.append((name, info.type))

    root.links.visit(visit, info=True)
    for name, kind in other:
        if kind == h5py.h5l.TYPE_EXTERNAL:
            target, path = (part.decode("utf-8", "replace") for part in root.links.get_val(name))
            raise _refuse(where, name, f"is an external link to {path!r} in {target!r}")
        raise _refuse(where, name, f"is a user-defined link (type {kind})")
    # Every link is known now and none is external, so resolving a soft link stays in the file.
    for name in soft:
        try:
            h5py.h5o.get_info(root, name)
        except (KeyError, RuntimeError, ValueError, OSError):
            target = root.links.get_val(name).decode("utf-8", "replace")
            raise _refuse(where, name, f"is a soft link to {target!r}, which does not resolve") from None
    return root, list(hard.values())


def _refuse_storage(root: Any, name: bytes, where: str | os.PathLike[str]) -> None:
    import h5py

    obj = h5py.h5o.open(root, name)
    if isinstance(obj, h5py.h5d.DatasetID):
        _check_plist(obj.get_create_plist(), name, where)


def _check_plist(plist: Any, name: bytes, where: str | os.PathLike[str]) -> None:
    import h5py

    if plist.get_layout() == h5py.h5d.VIRTUAL:
        sources = sorted({plist.get_virtual_filename(i) for i in range(plist.get_virtual_count())})
        raise _refuse(where, name, f"is a virtual dataset reading from {', '.join(sources)}")
    count = plist.get_external_count()
    if count:
        files = sorted({plist.get_external(i)[0].decode("utf-8", "replace") for i in range(count)})
        raise _refuse(where, name, f"keeps its data in the external file(s) {', '.join(files)}")
