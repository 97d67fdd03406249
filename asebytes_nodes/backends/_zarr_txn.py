"""The Zarr store's record: checking it before trusting it, sealing it, and cleaning up after it.

The record (the ``asebytes_nodes`` attribute of the group, see :mod:`._zarr`) is the one
thing a commit writes, so everything a reader or writer does starts from it:

- :func:`check_record` refuses a record that is malformed (:class:`StoreCorruptedError`)
  or names anything but our own arrays (:class:`UnsafeStoreError`): column ids must be
  ``c<digits>`` (optionally ``x<8 hex digits>``, the suffix object-store writers add so
  that two of them never pick the same name), the atom-count array ``n_atoms`` or
  ``n<digits>``; nothing with ``..``, a separator or an absolute path ever reaches a path
  join. :func:`check_inside` also refuses arrays that a symbolic link takes out of the store.
- :func:`seal` adds a crc32c of the record's canonical JSON (``"crc"``, layout version 2),
  so a damaged record is refused rather than read as another length or column table.
- :func:`collect_garbage` removes what no committed record needs: the arrays a
  replacement retired (listed in ``"retired"`` by its commit), and, in a local store
  whose lock the caller holds, every unreferenced array and temporary ``*.partial`` file
  a killed or failed writer left. Only names checked above, only under the store's root,
  never through a symbolic link; only writers call it, never readers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import google_crc32c

from ..errors import StoreCorruptedError, UnsafeStoreError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RECORD_ATTR",
    "parse_record",
    "array_names",
    "check_inside",
    "check_record",
    "collect_garbage",
    "document_stat",
    "group_document",
    "new_name",
    "seal",
]

FORMAT_NAME = "asebytes_nodes.zarr"
FORMAT_VERSION = 2
RECORD_ATTR = "asebytes_nodes"  # the group attribute holding the record

_COLUMN_ID = re.compile(r"c\d{1,9}(?:x[0-9a-f]{8})?")
_COUNTS_NAME = re.compile(r"n_atoms|n\d{1,9}(?:x[0-9a-f]{8})?")
_KINDS = frozenset({"scalar", "frame", "atom", "object"})
# a group document changed this lately is read, not trusted by its stat (FAT keeps times to 2 s)
_SETTLE_NS = 2_000_000_000


def _unsafe(where: str, what: str, value: Any) -> UnsafeStoreError:
    return UnsafeStoreError(
        f"{where}: the store's record names {what} {value!r}, which is not one of this package's "
        "array names (c<digits>, n_atoms, n<digits>); refused before reading or writing anything. "
        "The store was not written by asebytes-nodes or was tampered with: do not open it"
    )


def _malformed(where: str, detail: str) -> StoreCorruptedError:
    return StoreCorruptedError(
        f"{where}: the store's record is malformed ({detail}); a record holds non-negative counts "
        "and a column table. Restore the store from a copy"
    )


def _count(where: str, meta: dict[str, Any], key: str) -> None:
    value = meta.get(key, 0)
    if type(value) is not int or value < 0:
        raise _malformed(where, f"{key} = {value!r}")


def check_record(where: str, meta: dict[str, Any]) -> None:
    """Refuse a record that is malformed or names anything outside our own arrays."""
    for key in ("length", "atoms", "generation", "next_id"):
        _count(where, meta, key)
    counts = meta.get("n_atoms", "n_atoms")
    if type(counts) is not str or not _COUNTS_NAME.fullmatch(counts):
        raise _unsafe(where, "atom-count array", counts)
    columns = meta.get("columns")
    if not isinstance(columns, dict):
        raise _malformed(where, f"columns = {type(columns).__name__}")
    seen = {counts}
    for key, spec in columns.items():
        if not isinstance(spec, dict) or spec.get("kind") not in _KINDS:
            raise _malformed(where, f"column {key!r}")
        cid = spec.get("id")
        if type(cid) is not str or not _COLUMN_ID.fullmatch(cid):
            raise _unsafe(where, f"column {key!r} with id", cid)
        if cid in seen:
            raise _malformed(where, f"column id {cid!r} used twice")
        seen.add(cid)
        _count(where, spec, "count")
        _count(where, spec, "nbytes")
        if spec["kind"] != "object" and not isinstance(spec.get("shape"), list):
            raise _malformed(where, f"column {key!r} has no shape")
    retired = meta.get("retired", [])
    if not isinstance(retired, list):
        raise _malformed(where, "retired is not a list")
    for name in retired:
        if type(name) is not str or not (_COLUMN_ID.fullmatch(name) or _COUNTS_NAME.fullmatch(name)):
            raise _unsafe(where, "retired array", name)


def array_names(meta: dict[str, Any]) -> set[str]:
    """Top-level names (column ids and the atom-count array) the record refers to."""
    return {meta.get("n_atoms", "n_atoms"), *(spec["id"] for spec in meta["columns"].values())}


def check_inside(root: Path, names: Iterable[str]) -> None:
    """Refuse arrays that resolve outside the store (a symbolic link planted in it)."""
    base = None
    for name in names:
        if "/" not in name:  # one plain component: inside unless it is a link (one lstat, no resolve)
            try:
                if not stat.S_ISLNK(os.lstat(root / name).st_mode):
                    continue
            except FileNotFoundError:
                continue
        base = root.resolve() if base is None else base
        real = (root / name).resolve()
        if real != base and base not in real.parents:
            raise UnsafeStoreError(
                f"{root}: array {name!r} leads outside the store (to {real}); a store holds its own "
                "arrays, never links to other places. Refused before reading or writing anything: "
                "replace the link with the array it should hold"
            )


def _canonical(meta: dict[str, Any]) -> bytes:
    body = {k: v for k, v in meta.items() if k != "crc"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(meta: dict[str, Any]) -> dict[str, Any]:
    """The record with its checksum (``"crc"``) set."""
    return {**meta, "crc": google_crc32c.value(_canonical(meta))}


def verify_seal(where: str, meta: dict[str, Any]) -> None:
    """Refuse a record whose checksum is missing or does not match (version-1 records carry none)."""
    sealed = "crc" in meta or int(meta.get("version", 1)) < 2
    if not sealed or ("crc" in meta and meta["crc"] != google_crc32c.value(_canonical(meta))):
        raise StoreCorruptedError(
            f"{where}: the store's record does not match its checksum (the group's zarr.json is "
            "damaged); its length and column table cannot be trusted. Restore the store from a copy"
        )


def new_name(prefix: str, number: int, remote: bool) -> str:
    """A fresh array name; object-store writers add a random suffix (no lock keeps two apart)."""
    return f"{prefix}{number}" + (f"x{secrets.token_hex(4)}" if remote else "")


def collect_garbage(root: Path, meta: dict[str, Any], *, everything: bool) -> None:
    """Remove arrays of the local store ``root`` that ``meta`` (the committed record) does not
    use: those it lists as retired, or with ``everything`` (the caller holds the store's lock)
    any unreferenced array name and temporary file."""
    keep = array_names(meta)
    if everything:
        ours = (_COLUMN_ID.fullmatch, _COUNTS_NAME.fullmatch)
        candidates = [e.name for e in os.scandir(root) if any(match(e.name) for match in ours)]
    else:
        candidates = list(meta.get("retired", []))
    for name in candidates:
        if name in keep:
            continue
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
    if everything:
        for folder, _, files in os.walk(root):  # never follows links
            for name in files:
                if name.endswith(".partial"):
                    os.unlink(os.path.join(folder, name))


def group_document(record: dict[str, Any] | None = None, current: bytes | None = None) -> bytes:
    """A Zarr v3 group document as zarr writes it: ``current`` (None: an empty group), with
    ``record`` as its record attribute unless None (its other attributes kept)."""
    document: dict[str, Any] = {"attributes": {}, "zarr_format": 3}
    if current is not None:
        document = json.loads(current)
    document.setdefault("node_type", "group")
    if record is not None:
        document["attributes"] = {**document.get("attributes", {}), RECORD_ATTR: record}
    return json.dumps(document, indent=2, allow_nan=True).encode()


def parse_record(raw: bytes | None) -> Any:
    """The record in a group document's bytes; None unless it is a Zarr v3 group holding one
    (zarr then opens or reports it)."""
    try:
        parsed: Any = json.loads(raw) if raw is not None else None
        if parsed.get("zarr_format") != 3 or parsed.get("node_type") != "group":
            return None
        return parsed.get("attributes", {}).get(RECORD_ATTR)
    except (ValueError, AttributeError):
        return None


def document_stat(folder: str) -> tuple[int, ...] | None:
    """A local group document's identity (inode, size, times), so a reader can tell it is
    unchanged without reading it; None when that cannot be trusted: missing, or changed so
    lately (within ``_SETTLE_NS``) that a rewrite in the same clock tick would keep its times.
    A commit replaces the document (a new inode), so an equal identity means the same bytes."""
    try:
        st = os.stat(os.path.join(folder, "zarr.json"))
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < _SETTLE_NS:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
