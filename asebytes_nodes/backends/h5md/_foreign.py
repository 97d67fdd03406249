"""Reading H5MD files other programs wrote (znh5md, MDAnalysis, pyh5md, HAL's MD, zarrtraj): a
:class:`~._plan.Plan` from the particle group's elements, box and observables, as the package notes
describe (frames matched by step, units converted, padding found, znh5md's conventions)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ...errors import StoreCorruptedError, UnsupportedOperationError
from ._plan import ORIGIN, Col, Plan, as_text, is_dataset, is_group, particle_groups, timed
from ._units import QUANTITY, ase_unit, unit_factor

__all__ = ["foreign_plan", "increasing", "sampling"]

_UNITS_WARNED: set[tuple[str, str]] = set()  # (file, dataset) a unit warning named in this process

_PARTICLE_KEYS = {
    "position": "arrays.positions",
    "species": "arrays.numbers",
    "mass": "arrays.masses",
    "charge": "arrays.initial_charges",
    "force": "calc.forces",
    "forces": "calc.forces",
    "momenta": "arrays.momenta",
    "momentum": "arrays.momenta",
    "velocity": "arrays.momenta",
}
# Particle elements whose ASE_ENTRY_ORIGIN tag (znh5md's, asebytes') decides the key: znh5md files
# calculator charges as ``charge`` tagged "calc" and an ``arrays["charges"]`` tagged "arrays";
# untagged, ``charge`` is H5MD's fixed particle charge (initial charges).
_TAGGED_KEYS: dict[tuple[str, str | None], str] = {
    ("charge", "calc"): "calc.charges",
    ("charge", "arrays"): "arrays.charges",
}
# Keys whose NaN is a value even in znh5md's files (padding is told apart by the mask).
_FRAME_AXIS_KEYS = frozenset({"arrays.positions", "arrays.numbers", "cell", "pbc"})


def _origin(obj: Any, default: str | None) -> str | None:
    origin = as_text(obj.attrs[ORIGIN]) if ORIGIN in obj.attrs else None
    return origin if origin in ("arrays", "calc", "info") else default


def sampling(obj: Any, name: str, n: int) -> np.ndarray | str | None:
    """``step`` or ``time`` of an element's ``n`` samples (explicit, or scalar with ``offset``)."""
    ds = obj.get(name)
    if not is_dataset(ds):
        return None
    if ds.shape == ():
        increment = ds[()]
        return ds.attrs.get("offset", 0) + np.arange(n) * increment
    if ds.shape[0] < n:
        return f"its {name} has {ds.shape[0]} entries for {n} samples"
    return ds[:n]


def increasing(steps: np.ndarray) -> bool:
    """H5MD steps increase; a writer that repeats them leaves matching to the sample index."""
    return bool((np.diff(steps.astype(np.int64)) > 0).all())


def _match(frame_steps: np.ndarray, steps: np.ndarray) -> np.ndarray | None:
    """Row of ``steps`` holding each frame's step (-1: not sampled); None when row == frame."""
    mine, theirs = frame_steps.astype(np.int64), steps.astype(np.int64)
    if np.array_equal(mine, theirs):
        return None
    if not len(theirs):
        return np.full(len(mine), -1, np.int64)
    order = np.argsort(theirs, kind="stable")
    ordered = theirs[order]
    pos = np.minimum(np.searchsorted(ordered, mine), len(ordered) - 1)
    return np.where(ordered[pos] == mine, order[pos], -1)


_DTYPES = {
    "arrays.positions": "<f8",
    "arrays.momenta": "<f8",
    "arrays.masses": "<f8",
    "arrays.initial_charges": "<f8",
    "arrays.numbers": "<i8",
    "calc.forces": "<f8",
    "calc.stress": "<f8",
    "cell": "<f8",
    "pbc": "|b1",
}


@dataclass
class _Frames:
    """The frame axis of another program's particle group."""

    length: int
    width: int  # particles per frame (padded)
    steps: np.ndarray | None


def _foreign_col(obj: Any, key: str, atom: bool, frames: _Frames, plan: Plan) -> Col | None:
    """How to read element ``obj`` as ``key``, or None (the reason goes to ``plan.skipped``).

    In znh5md's files (``plan.znh5md``) values are in ASE units whatever their unit label says
    (znh5md labels ASE velocities ``Angstrom/fs`` and ignores units when reading), and an all-NaN
    value of a result or custom element marks a frame that has none, as znh5md reads them.
    """
    path = obj.name.lstrip("/")
    if key in plan.cols:
        plan.skipped[path] = f"gives {key}, already read from {plan.cols[key].element}"
        return None
    col = Col(key, "atom" if atom else "frame", dtype=_DTYPES.get(key), element=path)
    if is_dataset(obj):  # time-independent: the same value on every frame
        data = obj
        col.const = obj[()]
    elif timed(obj):
        data = obj["value"]
        n = data.shape[0] if data.ndim else 0
        steps = sampling(obj, "step", n)
        if isinstance(steps, str):
            plan.skipped[path] = steps
            return None
        if steps is not None and not increasing(steps):  # invalid steps: match by index if possible
            steps = None
        if steps is not None and frames.steps is not None:
            col.path, col.rows = data.name.lstrip("/"), _match(frames.steps, steps)
        elif n == frames.length and data.ndim:
            col.path = data.name.lstrip("/")
        elif not atom:  # an observable without steps and not one sample per frame: time-independent
            col.const = data[()]
        else:
            plan.skipped[path] = f"{n} samples without steps, for {frames.length} frames"
            return None
    else:
        plan.skipped[path] = "a group without a value dataset"
        return None
    shape = tuple(data.shape[1:] if col.path is not None else np.shape(col.const))
    if atom and (not shape or shape[0] > frames.width or (shape[0] < frames.width and col.path is None)):
        plan.skipped[path] = f"{shape[0] if shape else 0} particles, the group has {frames.width}"
        return None
    if atom and shape[0] < frames.width:  # written only for frames of at most that many particles
        col.width = shape[0]
    col.nan_missing = plan.znh5md and key not in _FRAME_AXIS_KEYS
    if h5py.check_string_dtype(data.dtype) is not None:
        col.kind = "string"
        col.json = ORIGIN in getattr(obj, "attrs", {})
    elif not atom and (shape == () or (key == "calc.energy" and shape == (1,))):
        col.kind = "scalar"
    quantity = "velocity" if key == "arrays.momenta" and path.endswith("velocity") else QUANTITY.get(key)
    unit = None if plan.znh5md else data.attrs.get("unit")
    if quantity is not None and unit is not None:
        try:
            col.scale = unit_factor(as_text(unit), quantity)
        except ValueError as exc:
            raise StoreCorruptedError(f"{data.name}: cannot convert its unit to ASE units: {exc}") from exc
    elif unit is not None and not ase_unit(as_text(unit)):
        plan.units[data.name.lstrip("/")] = (key, as_text(unit))
    if key == "cell":
        col.cuboid = shape == (3,)
    return col


def foreign_plan(f: Any, group: str, znh5md: bool = False) -> Plan:
    """What to read from a particle group another program wrote (see the module notes);
    ``znh5md``: the file's creator is znh5md, read with its conventions."""
    part = f[f"particles/{group}"]
    box = part.get("box")
    if is_group(box) and "dimension" in box.attrs:
        dimension = int(np.asarray(box.attrs["dimension"]).reshape(-1)[0])
        if dimension != 3:
            raise UnsupportedOperationError(f"{part.name}: a {dimension}-dimensional box; ASE frames are 3-D")
    plan = Plan(znh5md=znh5md)
    names = sorted(name for name in part if name != "box")
    clock = next((part[n] for n in (*_PARTICLE_KEYS, *names) if n in part and timed(part[n])), None)
    if clock is not None:
        value = clock["value"]
        steps = sampling(clock, "step", value.shape[0])
        frames = _Frames(
            value.shape[0],
            value.shape[1] if value.ndim > 1 else 0,
            steps if isinstance(steps, np.ndarray) and increasing(steps) else None,
        )
    else:
        fixed = [part[n] for n in ("position", *names) if is_dataset(part.get(n)) and part[n].ndim]
        frames = _Frames(1 if fixed else 0, fixed[0].shape[0] if fixed else 0, None)
    plan.length = frames.length
    ordered = [n for n in _PARTICLE_KEYS if n in names] + [n for n in names if n not in _PARTICLE_KEYS]
    for name in ordered:
        obj = part[name]
        key = (
            _TAGGED_KEYS.get((name, _origin(obj, None)))
            or _PARTICLE_KEYS.get(name)
            or f"{_origin(obj, 'arrays')}.{name}"
        )
        col = _foreign_col(obj, key, True, frames, plan)
        if col is not None:
            col.velocity = name == "velocity"
            plan.cols[key] = col
    _foreign_box(box, frames, plan)
    _foreign_observables(f, group, frames, plan)
    if frames.steps is not None and clock is not None:
        plan.cols.setdefault("info.step", Col("info.step", "scalar", values=frames.steps))
        times = sampling(clock, "time", frames.length)
        if isinstance(times, np.ndarray):
            unit = clock["time"].attrs.get("unit")
            try:
                scale = unit_factor(as_text(unit), "time") if unit is not None else 1.0
            except ValueError:  # not a time unit we know: the times as written, named in the warning
                scale = 1.0
                plan.units[clock["time"].name.lstrip("/")] = ("info.time", as_text(unit))
            plan.cols.setdefault("info.time", Col("info.time", "scalar", values=times * scale))
    plan.mask = _padding(f, part, plan)
    _warn_units(str(getattr(f, "filename", "")), plan.units)
    return plan


def _warn_units(filename: str, units: dict[str, tuple[str, str]]) -> None:
    """Name the datasets whose values are read in a unit other than ASE's without conversion (keys
    of no known quantity: ``info.temperature`` in K, ``info.kinetic_energy`` in kJ/mol), once per
    file and dataset in a process: the row keeps only the number."""
    new = {path: found for path, found in units.items() if (filename, path) not in _UNITS_WARNED}
    if not new:
        return
    _UNITS_WARNED.update((filename, path) for path in new)
    listed = "; ".join(f"{path} in {unit!r} -> {key}" for path, (key, unit) in sorted(new.items()))
    warnings.warn(
        f"{filename}: values read as stored, in the file's units (not converted to ASE units; the unit "
        f"is not kept with the value): {listed}",
        UserWarning,
        stacklevel=4,
    )


def _foreign_box(box: Any, frames: _Frames, plan: Plan) -> None:
    """cell from ``box/edges`` (zeros without), pbc from ``box/pbc`` or ``boundary``."""
    boundary: Any = None
    if is_group(box):
        for name, key in (("edges", "cell"), ("pbc", "pbc")):
            if name in box and (col := _foreign_col(box[name], key, False, frames, plan)) is not None:
                col.kind = "frame"
                plan.cols[key] = col
        boundary = box.attrs.get("boundary")
        if boundary is None and is_dataset(box.get("boundary")):
            boundary = box["boundary"][()]
    plan.cols.setdefault("cell", Col("cell", "frame", const=np.zeros((3, 3))))
    periodic = [False] * 3 if boundary is None else [as_text(b) == "periodic" for b in np.ravel(boundary)]
    plan.cols.setdefault("pbc", Col("pbc", "frame", const=np.array(periodic, bool)))


def _foreign_observables(f: Any, group: str, frames: _Frames, plan: Plan) -> None:
    """The group's observables, then global ones (see the module notes for the keys)."""
    observables = f.get("observables")
    if not is_group(observables):
        return
    per_particle = is_group(f.get("h5md/modules/thermodynamics"))
    own = observables.get(group)
    entries = [own[n] for n in sorted(own)] if is_group(own) and not timed(own) else []
    entries += [observables[n] for n in sorted(observables) if observables[n] is not own or timed(own)]
    groups = set(particle_groups(f))
    for obj in entries:
        name = obj.name.rsplit("/", 1)[1]
        if is_group(obj) and not timed(obj):
            if name not in groups:
                plan.skipped[obj.name.lstrip("/")] = (
                    "a group of observables (nested observables are not read)"
                )
            continue
        origin = _origin(obj, None)
        if origin is not None:
            key = f"{origin}.{'energy' if name == 'potential_energy' else name}"
        elif name == "energy" or (name == "potential_energy" and not per_particle):
            key = "calc.energy"
        elif name == "stress":
            key = "calc.stress"
        else:
            key = f"info.{name}"
        col = _foreign_col(obj, key, False, frames, plan)
        if col is not None and key == "calc.energy" and col.kind != "scalar":
            col.key = key = f"info.{name}"
            if key in plan.cols:
                plan.skipped[obj.name.lstrip("/")] = (
                    f"gives {key}, already read from {plan.cols[key].element}"
                )
                continue
        if col is not None:
            plan.cols[key] = col


def _padding(f: Any, part: Any, plan: Plan) -> tuple[Col, Any] | None:
    """The element telling real particles from padding: ``id`` with a fill value, else NaN."""
    col = plan.cols.get("arrays.id")
    if col is not None and col.rows is None:
        ds = f[col.path] if col.path is not None else part["id"]
        if (
            isinstance(ds, h5py.Dataset)
            and ds.id.get_create_plist().fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED
        ):
            return col, ds.fillvalue
    for key in ("arrays.positions", "arrays.numbers"):
        col = plan.cols.get(key)
        if col is None or col.rows is not None:
            continue
        dtype = f[col.path].dtype if col.path is not None else np.asarray(col.const).dtype
        if dtype.kind == "f":
            return col, None
    return None
