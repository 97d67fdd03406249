"""What an H5MD file must be: an ``/h5md`` group (:func:`sniff`, for the registry), the H5MD
version on open, then for ``check()`` where a particle group departs from H5MD 1.1 (metadata,
box, elements' step and time) and where a store we wrote departs from its column table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...errors import FormatVersionError, StoreCorruptedError, StoreNotFoundError
from ...registry import keep_until_opened
from .._base import path_of
from .._hdf5_files import acquire, peek, release
from .._hdf5_guard import LINKS
from .._hdf5_journal import read_attribute, reading
from ._foreign import increasing, sampling
from ._plan import PRIVATE, Plan, as_text, is_group, particle_groups, timed
from ._zarrmd import open_store

__all__ = ["check_version", "conformance", "creator_name", "group_names", "invariants", "sniff"]


def sniff(path: str | os.PathLike[str]) -> bool:
    """Is ``path`` an HDF5 file with an ``/h5md`` group, or one HDF5 cannot open (truncated,
    damaged: opening it as H5MD, the default of ``.h5``, then says why)? Never writes; raises
    StoreLockedError only, when another process's write holds the file past its lock timeout.
    The file is opened as the process's shared handle, which the backend opened next reuses (see
    :func:`~asebytes_nodes.registry.keep_until_opened`)."""
    try:
        if not os.path.isfile(path):
            return False
        f, let_go = peek(path_of(os.fspath(path)))
    except TimeoutError:  # a write held the file's lock throughout: that, not the content, is the news
        raise
    except OSError:  # HDF5 refused it: damaged if it carries HDF5's signature
        try:
            return bool(h5py.is_hdf5(os.fspath(path)))
        except Exception:
            return False
    except Exception:
        return False
    try:
        return (
            f is not None and isinstance(f.get("h5md", getlink=True), h5py.HardLink) and is_group(f["h5md"])
        )
    except Exception:
        return False
    finally:
        keep_until_opened(let_go)


def group_names(path: Path) -> list[str]:
    """The particle groups of the H5MD file at ``path`` (every link of the file checked first)."""
    if not path.exists():
        raise StoreNotFoundError(f"{path}: no such file")
    shared = acquire(path)
    try:
        with shared.lock, reading(path):
            handle = shared.reader(open_store, LINKS)
            if not is_group(handle.get("h5md")):
                raise StoreCorruptedError(f"{path}: not an H5MD file (no /h5md group)")
            return particle_groups(handle)
    finally:
        release(shared)


def check_version(path: Path, h5md: Any) -> tuple[int, int]:
    version = read_attribute(h5md, "version")
    if version is None:
        raise StoreCorruptedError(f"{path}: the h5md group has no 'version' attribute, which H5MD requires")
    numbers = np.asarray(version).reshape(-1)
    major, minor = int(numbers[0]), int(numbers[1]) if len(numbers) > 1 else 0
    if major < 1:
        raise FormatVersionError(
            f"{path}: H5MD version {major}.{minor} predates H5MD 1.0, whose layout this reader "
            "expects; rewrite the file with an H5MD 1.x writer"
        )
    if major > 1:
        raise FormatVersionError(
            f"{path}: H5MD version {major}.{minor} is newer than the 1.x this asebytes-nodes reads; "
            "upgrade asebytes-nodes"
        )
    return major, minor


def creator_name(creator: Any) -> str | None:
    """The program named by the ``h5md/creator`` group (None: no group, or no name)."""
    name = None if creator is None else read_attribute(creator, "name")
    return None if name is None else as_text(name)


def conformance(f: Any, group: str) -> list[str]:
    """Where the file departs from H5MD 1.1 around ``group`` (checked by :meth:`H5MDBackend.check`)."""
    problems = []
    h5md = f["h5md"]
    for where, name in (("author", "name"), ("creator", "name"), ("creator", "version")):
        if not is_group(h5md.get(where)) or name not in h5md[where].attrs:
            problems.append(f"h5md/{where}: no '{name}' attribute")
    box = f.get(f"particles/{group}/box")
    if not is_group(box):
        problems.append(f"particles/{group}: no box group")
    elif "dimension" not in box.attrs or "boundary" not in box.attrs:
        problems.append(f"particles/{group}/box: needs the attributes 'dimension' and 'boundary'")
    elif any(as_text(b) not in ("periodic", "none") for b in np.ravel(box.attrs["boundary"])):
        problems.append(f"particles/{group}/box: boundary values must be 'periodic' or 'none'")
    elements: dict[str, Any] = {}  # the group's elements, and global observables
    for root in (f"particles/{group}", f"observables/{group}"):
        found = f.get(root)
        if is_group(found):
            found.visititems(lambda _, obj: elements.update({obj.name: obj} if timed(obj) else {}))
    observables = f.get("observables")
    if is_group(observables):
        elements.update((obj.name, obj) for obj in observables.values() if timed(obj))
    for element in elements.values():
        path, n = element.name.lstrip("/"), len(element["value"])
        steps = sampling(element, "step", n)
        if steps is None:
            problems.append(f"{path}: a time-dependent element without 'step'")
        elif isinstance(steps, str) or not increasing(steps):
            problems.append(f"{path}: {steps if isinstance(steps, str) else 'its steps do not increase'}")
        times = sampling(element, "time", n)
        if isinstance(times, str):
            problems.append(f"{path}: {times}")
    return problems


def invariants(f: Any, group: str, plan: Plan) -> list[str]:
    """Where a store this backend wrote departs from its column table."""
    table, private = plan.table or {}, f"{PRIVATE}/{group}"
    n, width, problems = table["length"], table["width"], []
    for name in ("step", "time", "n_atoms"):
        if f[f"{private}/{name}"].shape != (n,):
            problems.append(f"{private}/{name}: {f[f'{private}/{name}'].shape[0]} rows, the table says {n}")
    if plan.counts is not None and len(plan.counts) and int(plan.counts.max()) > width:
        problems.append(f"{private}/n_atoms: {int(plan.counts.max())} atoms, wider than the table's {width}")
    for key, spec in table["columns"].items():
        ds = f.get(spec["path"])
        rows = (n, width) if spec["kind"] == "atom" else (n,)
        if ds is None or ds.shape[: len(rows)] != rows:
            problems.append(f"{spec['path']}: shape {None if ds is None else ds.shape}, {key!r} needs {rows}")
        flags = f.get(f"{private}/present/{spec['id']}")
        carried = n if flags is None else int(np.count_nonzero(flags[:n]))
        if carried != spec["count"]:
            problems.append(f"column {key!r}: {carried} frames carry it, the table says {spec['count']}")
    return problems
