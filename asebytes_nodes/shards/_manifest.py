"""The manifest of a sharded dataset: what a directory of shard stores holds, read without opening one.

On-disk layout (version 2)
--------------------------
A directory (any name) holding:

=============================  ========================================================
name                           content
=============================  ========================================================
``asebytes-shards.json``       the manifest (below); its presence makes the directory a dataset
``shard-NNNNN.nR<ext>``        shard ``NNNNN`` (from 0) holding ``R`` rows, a store of the
                               shard backend (``.lmdb`` file, ``.zarr`` folder, ``.h5`` file)
``shard-NNNNN.nR.natoms.npy``  uint32 atom count of each of that shard's frames (numpy ``.npy``)
``.tmp-*``                     temporary files of a writer; ignored by readers, deleted by
                               the next writer
``.convert-NNNNN.json``        (inside a conversion's work folder only) the entry of a finished
                               partition, so a rerun after a crash keeps its shard
=============================  ========================================================

The manifest is JSON: ``format`` (``"asebytes_nodes.shards"``), ``version``, ``backend``
(the shard backend's registry name), ``shard_frames`` (rows per full shard), ``frames``
and ``shards``: one ``{"file", "rows", "size", "sha256", "keys", "natoms"}`` per shard,
where ``size`` is bytes on disk, ``sha256`` the digest of the store's bytes (a folder
store: of its files' relative paths and digests, sorted), ``keys`` how many rows carry
each key and ``natoms`` the sha256 of the shard's atom-count file.

Shards and their atom-count files are immutable once a manifest names them: a writer that
adds rows to the last, partly filled shard writes new files with another row count in
their names, and deletes the old ones only after the new manifest is in place, so an
append writes the atom counts of the rows it adds and no others. The manifest is replaced
atomically (temporary file, ``fsync``, ``os.replace``, ``fsync`` of the folder) after
every file it names is on disk, so a crash leaves the previous manifest and its shards.

Version history
---------------
1. First layout (development only, never released): one ``natoms-<hex>.npy`` for the whole
   dataset, rewritten by every append. Not read: convert such a folder again.
2. Atom counts per shard (asebytes-nodes 0.1, issue 16).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends._base import check_format_record
from ..errors import FormatVersionError, StoreCorruptedError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "TEMP_PREFIX",
    "Manifest",
    "ShardEntry",
    "digest",
    "disk_size",
    "natoms_name",
    "shard_name",
    "sniff",
]

FORMAT_NAME = "asebytes_nodes.shards"
FORMAT_VERSION = 2
MANIFEST = "asebytes-shards.json"
TEMP_PREFIX = ".tmp-"
_HASH_BLOCK = 4 << 20  # bytes read and hashed at a time (few GIL hand-overs while another thread parses)


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it."""

    file: str
    rows: int
    size: int
    sha256: str
    keys: dict[str, int]
    natoms: str  # sha256 of the atom-count file

    @property
    def natoms_file(self) -> str:
        """Name of the shard's atom-count file (beside it)."""
        return natoms_name(self.file)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "size": self.size,
            "sha256": self.sha256,
            "keys": self.keys,
            "natoms": self.natoms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardEntry:
        return cls(
            str(data["file"]),
            int(data["rows"]),
            int(data["size"]),
            str(data["sha256"]),
            dict(data["keys"]),
            str(data["natoms"]),
        )

    def load_natoms(self, folder: Path) -> np.ndarray:
        """The shard's atom counts (uint32), checked against its row count."""
        path = folder / self.natoms_file
        try:
            natoms = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreCorruptedError(
                f"{path}: the atom counts of shard file {self.file} cannot be read ({exc}); restore it "
                "(dvc checkout / dvc pull), or rewrite the dataset"
            ) from exc
        if natoms.ndim != 1 or len(natoms) != self.rows:
            raise StoreCorruptedError(f"{path}: holds {natoms.shape} atom counts for {self.rows} frames")
        return natoms


@dataclass
class Manifest:
    """What a sharded dataset holds."""

    backend: str
    shard_frames: int
    shards: list[ShardEntry] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "backend": self.backend,
            "shard_frames": self.shard_frames,
            "frames": self.frames,
            "shards": [s.to_json() for s in self.shards],
        }

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """The manifest of ``folder``; FormatVersionError for a newer layout, StoreCorruptedError for junk."""
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise StoreCorruptedError(f"{path}: cannot be read as a shard manifest ({exc})") from exc
        check_format_record(str(path), data, FORMAT_NAME, FORMAT_VERSION, "sharded dataset")
        if int(data.get("version", 0)) < FORMAT_VERSION:
            raise FormatVersionError(
                f"{path}: sharded dataset layout version {data.get('version')} was a development layout "
                "and is no longer read; convert the source into a new dataset (asebytes_nodes.convert)"
            )
        try:
            manifest = cls(
                backend=str(data["backend"]),
                shard_frames=int(data["shard_frames"]),
                shards=[ShardEntry.from_json(s) for s in data["shards"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreCorruptedError(f"{path}: the manifest lacks or mangles a field ({exc!r})") from exc
        for entry in manifest.shards:  # names come from a file: never let one point elsewhere
            if Path(entry.file).name != entry.file or entry.file.startswith("."):
                raise StoreCorruptedError(f"{path}: refused shard file name {entry.file!r}")
        if int(data.get("frames", -1)) != manifest.frames:
            raise StoreCorruptedError(
                f"{path}: says {data.get('frames')} frames but its shards hold {manifest.frames}"
            )
        return manifest

    def save(self, folder: Path) -> None:
        """Replace the manifest atomically (the shards and natoms file must be on disk already)."""
        write_atomic(folder / MANIFEST, json.dumps(self.to_json(), indent=1).encode())


def shard_name(index: int, rows: int, extension: str) -> str:
    """File name of shard ``index`` holding ``rows`` rows (a refilled shard gets a new name)."""
    return f"shard-{index:05d}.n{rows}{extension}"


def natoms_name(shard_file: str) -> str:
    """Name of the atom-count file of the shard file ``shard_file`` (``shard-00003.n500.natoms.npy``)."""
    stem = shard_file.split(".n", 1)[0]
    rows = shard_file[len(stem) + 2 :].split(".", 1)[0]
    return f"{stem}.n{rows}.natoms.npy"


def save_natoms(path: Path, natoms: np.ndarray) -> str:
    """Write atom counts to ``path`` (synced); their sha256."""
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(natoms, dtype="<u4"), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return digest(path)[1]


def digest(path: Path) -> tuple[int, str]:
    """(bytes on disk, sha256) of a file, or of a folder's files by relative path, sorted."""
    if path.is_dir():
        outer = hashlib.sha256()
        total = 0
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            size, sha = digest(item)
            total += size
            outer.update(f"{item.relative_to(path).as_posix()}\0{sha}\n".encode())
        return total, outer.hexdigest()
    hasher, total = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        # one reused buffer, no larger than the file; hashlib releases the GIL on each block
        block = bytearray(min(_HASH_BLOCK, os.fstat(f.fileno()).st_size + 1))
        view = memoryview(block)
        while n := f.readinto(block):
            hasher.update(view[:n])
            total += n
    return total, hasher.hexdigest()


def disk_size(path: Path) -> int:
    """Bytes of a file, or of the files below a folder (what :func:`digest` counts, without hashing)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and a rename."""
    tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """``fsync`` a folder so the renames inside it survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sniff(path: Path) -> bool:
    """Is ``path`` a folder holding a shard manifest? (For the registry; never raises.)"""
    try:
        return (Path(path) / MANIFEST).is_file()
    except OSError:
        return False
