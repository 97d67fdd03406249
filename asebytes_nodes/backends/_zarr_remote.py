"""Writes of a Zarr store on an object store (``s3://``, ``gs://``...), where no lock exists.

Two writers of one object store may run at the same time, so a writer there keeps two rules:

- **It never writes an object a committed record may name.** Every array a write changes
  gets a new name unique to the write (``c<k>x<8 hex digits>``, see :func:`._zarr_txn.new_name`):
  :func:`fork_array` makes it from the committed array by copying, on the server, its
  document and the shard objects that hold only committed rows before the write; the shard
  the write starts in is written anew, with the committed rows it holds read first. The
  committed arrays stay exactly as they were until a later record retires them.
- **Its commit is conditional.** The record lives in the group's ``zarr.json``. On S3 it is
  replaced with ``If-Match`` on the ETag the writer saw when it began (:func:`publish`),
  and a new store's first record is created with ``If-None-Match: *``
  (:func:`create_group`), so of two writers that began from one record exactly one
  commits; the other raises :class:`~asebytes_nodes.errors.ConcurrentCommitError` and
  removes its own arrays (a killed writer's stay behind, unnamed by any record and
  harmless). Other object stores have no such condition: the generation is compared just
  before the record is written, which leaves a window of one request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from zarr.api import asynchronous as zarr_async
from zarr.core.sync import sync as zarr_sync

from ..errors import InvalidDataError

__all__ = ["conditional", "create_group", "fork_array", "group_at", "publish", "record_version"]

_COPIES_AT_ONCE = 32


def conditional(store: Any) -> bool:
    """Does the store's file system honour ``If-Match``/``If-None-Match`` on writes (S3)?"""
    protocol = getattr(store.fs, "protocol", ())
    return "s3" in ((protocol,) if isinstance(protocol, str) else protocol)


def _path(store: Any, *parts: str) -> str:
    return "/".join(p.strip("/") for p in (store.path, *parts) if p.strip("/"))


def _precondition_failed(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):
        return True
    response = getattr(exc.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")


def record_version(store: Any) -> tuple[str | None, dict[str, Any]]:
    """(ETag, parsed document) of the group's ``zarr.json`` as the object store holds it now.

    The ETag is read first: if the document changes in between, the commit's condition fails
    (a conflict reported, never one missed)."""
    path = _path(store, "zarr.json")
    etag = zarr_sync(store.fs._info(path, refresh=True)).get("ETag") if conditional(store) else None
    return etag, json.loads(zarr_sync(store.fs._cat_file(path)))


def publish(store: Any, document: dict[str, Any], etag: str | None) -> bool:
    """Replace the group's ``zarr.json`` by ``document`` if it still has ``etag``; False when
    another writer replaced it since (nothing written)."""
    body = json.dumps(document, indent=2).encode()
    try:
        condition = {"IfMatch": etag} if etag is not None else {}
        zarr_sync(store.fs._pipe_file(_path(store, "zarr.json"), body, **condition))
    except OSError as exc:
        if _precondition_failed(exc):
            return False
        raise
    return True


def group_at(target: str, storage_options: dict[str, Any] | None) -> bool:
    """Is there a Zarr group at ``target``? An object stored at that very key (a file uploaded
    there, ``s3://bucket/data.extxyz``) is refused: a store made over it would hide it."""
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(target, storage_options=storage_options, read_only=True)
    if zarr_sync(store.fs._exists(_path(store, "zarr.json"))):
        return True
    if store.path and zarr_sync(store.fs._isfile(store.path)):
        raise InvalidDataError(
            f"{target}: an object (a file, not a Zarr store) is stored at this key; read it with a "
            "tool for its format after copying it to a local path, or choose another key for the store"
        )
    return False


def create_group(target: str, storage_options: dict[str, Any] | None, attributes: dict[str, Any]) -> None:
    """Create the group at ``target`` with ``attributes`` unless some ``zarr.json`` is there
    already, in one conditional request (S3; elsewhere zarr creates the group)."""
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(target, storage_options=storage_options, read_only=False)
    if not conditional(store):
        return
    document = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
    body = json.dumps(document, indent=2).encode()
    try:
        zarr_sync(store.fs._pipe_file(_path(store, "zarr.json"), body, mode="create"))
    except OSError as exc:
        if not _precondition_failed(exc):
            raise


async def fork_array(store_path: Any, source: str, new: str, keep: int, rows: int) -> Any:
    """Array ``new`` of ``rows`` rows with ``source``'s codecs and chunking, holding
    ``source``'s rows before ``keep`` (a multiple of its shard rows): the shard objects that
    hold them are copied on the server. Returns the new array, open for writing."""
    store = store_path.store
    fs = store.fs
    old, fresh = _path(store, store_path.path, source), _path(store, store_path.path, new)
    document = json.loads(await fs._cat_file(f"{old}/zarr.json"))
    shard = int(document["chunk_grid"]["configuration"]["chunk_shape"][0])
    document["shape"][0] = rows
    await fs._pipe_file(f"{fresh}/zarr.json", json.dumps(document, indent=2).encode())
    kept = keep // shard
    copies = []
    if kept:
        for path in await fs._find(f"{old}/c"):  # objects present (an older array may lack some)
            relative = path[len(old) + 1 :]
            if int(relative.split("/")[1]) < kept:
                copies.append((path, f"{fresh}/{relative}"))
    for at in range(0, len(copies), _COPIES_AT_ONCE):  # all end before a failure is raised
        batch = copies[at : at + _COPIES_AT_ONCE]
        outcomes = await asyncio.gather(*(fs._cp_file(a, b) for a, b in batch), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    arr = await zarr_async.open_array(store=store_path, path=new, zarr_format=3)
    return arr.with_config({"write_empty_chunks": True})
