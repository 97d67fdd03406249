"""The clock of our H5MD stores: the ``step`` and ``time`` datasets every element of a particle
group links, which MDAnalysis and other H5MD readers take as each frame's step and time.

They are the frames' own ``info.step`` and ``info.time`` (an MD run's, or another H5MD file's as
this reader gives them: time in fs) while every frame of the store carries both, steps integers
(or whole-number floats, as znh5md writes them: stored as int64) that increase (H5MD's rule) and
times finite numbers; the first frames of a store decide. Else, and in stores written before
(table without ``clock``), frame ``i`` is step ``i`` at time ``i * timestep``. A write that
breaks the rule in a store that follows its frames (a frame without ``info.step``, a step that
does not increase) turns the whole store's clock to frame indices, with a warning: the clock is
never part one, part the other. ``info.step`` and ``info.time`` stay columns of their own either
way, so they read back exactly as written. A write reads and compares only its own rows and
their unwritten neighbours: its cost does not grow with the store."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._keys import MISSING

__all__ = ["CLOCK_VERSION", "INDEX_VERSION", "INFO_CLOCK", "Clock", "mark_version", "plan_clock"]

#: ``table["clock"]`` of a store whose step and time are its frames' info.step and info.time.
INFO_CLOCK = "info"
#: The layout version of such a store and of a 0-frame store holding placeholder elements
#: (:meth:`._writer._Writer.placeholders`), so that asebytes-nodes before it refuses them rather than
#: append frame-index steps or fail on the placeholders (other stores stay version 2).
CLOCK_VERSION = 3
#: The layout version of new stores, and of stores whose clock is the frame index.
INDEX_VERSION = 2
_KEYS = ("info.step", "info.time")
_INT64 = (-(2**63), 2**63 - 1)
_INTEGERS = frozenset(
    {int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.longlong}
)
_REALS = _INTEGERS | {float, np.float16, np.float32, np.float64, np.longdouble}


@dataclass
class Clock:
    """The step and time this write sets, at file rows ``rows``; ``note``: why the store's clock
    turned to frame indices (a warning once the write succeeded)."""

    rows: np.ndarray
    steps: np.ndarray
    times: np.ndarray
    note: str | None = None


def plan_clock(
    table: dict[str, Any],
    n0: int,
    where: np.ndarray,
    rows: list[dict[str, Any]],
    full: bool,
    drop: Sequence[str],
    stored: Callable[[str, np.ndarray], Sequence[Any] | np.ndarray],
    label: Callable[[int], str],
) -> Clock:
    """The clock of a write of ``rows`` at rows ``where`` into a store of committed length ``n0``
    whose column table (already grown to the new length) is ``table``, its ``clock`` updated here
    (its layout version then by :func:`mark_version`); ``full``, ``drop`` and ``stored`` as for
    :func:`._table.encode_batch`, ``label`` names value ``j`` in messages."""
    follows = table.get("clock") == INFO_CLOCK
    first = not n0 and table["length"] > 0 and table["version"] >= INDEX_VERSION
    if not follows and not first:
        return _index(table, n0)
    touched = full or set(drop) & set(_KEYS) or any(k in row for row in rows for k in _KEYS)
    if not len(where) or not (touched or where[-1] >= n0):
        return _index(table, table["length"])  # the clock's keys stay as they are: nothing to write
    steps, times, why = _values(n0, where, rows, full, drop, stored, label)
    if why is None:
        why = _order(table["length"], n0, where, steps, stored, label)
    if why is None:
        table["clock"] = INFO_CLOCK
        return Clock(where, steps, times)
    if first:  # frames without their own clock: frame indices, as always
        return _index(table, 0)
    table.pop("clock")
    note = (
        f"{why}: the H5MD step and time of every frame are now frame index x timestep, as in a store "
        "whose frames lack them (info.step and info.time stay as written)"
    )
    clock = _index(table, 0)
    clock.note = note
    return clock


def mark_version(table: dict[str, Any]) -> None:
    """The layout version of a table after :func:`plan_clock`: 3 where the clock follows the frames
    or the store is empty (placeholders older versions would collide with), else 2; version 1
    stores stay version 1."""
    if table["version"] >= INDEX_VERSION:
        marked = table.get("clock") == INFO_CLOCK or not table["length"]
        table["version"] = CLOCK_VERSION if marked else INDEX_VERSION


def _index(table: dict[str, Any], start: int) -> Clock:
    """Frame ``i`` at step ``i`` and time ``i * timestep``, for rows ``start`` to the end."""
    rows = np.arange(start, table["length"], dtype=np.int64)
    return Clock(rows, rows.copy(), rows * float(table["timestep"]))


def _values(
    n0: int,
    where: np.ndarray,
    rows: list[dict[str, Any]],
    full: bool,
    drop: Sequence[str],
    stored: Callable[[str, np.ndarray], Sequence[Any] | np.ndarray],
    label: Callable[[int], str],
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Each written frame's step and time after the write (an update keeps stored values it does
    not give), or the reason one has none."""
    found: dict[str, list[Any]] = {}
    for key in _KEYS:
        values = [MISSING] * len(rows) if key in drop else [row.get(key, MISSING) for row in rows]
        kept = [] if full or key in drop else [j for j, v in enumerate(values) if v is MISSING]
        kept = [j for j in kept if where[j] < n0]
        if kept:
            for j, value in zip(kept, stored(key, where[kept]), strict=True):
                values[j] = value
        found[key] = values
    steps = _steps(found["info.step"])
    times = _numbers(found["info.time"], _REALS, np.float64)
    if steps is not None and times is not None and np.isfinite(times).all():
        return steps, times, None
    return where[:0], where[:0], _fault(found["info.step"], found["info.time"], label)


def _numbers(values: list[Any], kinds: frozenset[type], dtype: type) -> np.ndarray | None:
    """``values`` as an array, if each is a number of one of ``kinds`` that ``dtype`` holds."""
    if not set(map(type, values)) <= kinds:
        return None
    try:
        return np.array(values, dtype)
    except OverflowError:
        return None


def _steps(values: list[Any]) -> np.ndarray | None:
    """``values`` as steps, if each is one (:func:`_step`)."""
    if set(map(type, values)) <= _INTEGERS:
        return _numbers(values, _INTEGERS, np.int64)
    found = [_step(v) for v in values]
    return None if None in found else np.array(found, np.int64)


def _step(value: Any) -> int | None:
    """``value`` as a step: an integer, or a float that is a whole number (znh5md writes info.step
    as float64), within int64."""
    if type(value) not in _REALS or not (type(value) in _INTEGERS or math.isfinite(value)):
        return None
    whole = int(value)
    return whole if whole == value and _INT64[0] <= whole <= _INT64[1] else None


def _fault(steps: list[Any], times: list[Any], label: Callable[[int], str]) -> str:
    """Why the first frame at fault has no step or time for the clock."""
    for j, (step, time) in enumerate(zip(steps, times, strict=True)):
        if step is MISSING or time is MISSING:
            return f"{label(j)} has no {'info.step' if step is MISSING else 'info.time'}"
        if _step(step) is None:
            return f"{label(j)}: info.step {step!r} is not an integer"
        if type(time) not in _REALS or not math.isfinite(float(time)):
            return f"{label(j)}: info.time {time!r} is not a finite number"
    return "info.step or info.time is not a number the clock holds"


def _order(
    n1: int,
    n0: int,
    where: np.ndarray,
    steps: np.ndarray,
    stored: Callable[[str, np.ndarray], Sequence[Any] | np.ndarray],
    label: Callable[[int], str],
) -> str | None:
    """Why the store's steps would not increase after the write (None: they do). The stored steps
    increase, so only the written rows and the unwritten rows next to them are read and compared."""
    if int(np.count_nonzero(where >= n0)) != n1 - n0:
        return "frames without info.step between the stored ones and the new ones"
    near = np.union1d(where - 1, where + 1)
    near = near[(near >= 0) & (near < n0)]
    near = near[~np.isin(near, where, assume_unique=True)]
    read = np.asarray(stored("info.step", near), np.int64).reshape(len(near))
    both = np.concatenate([where, near])
    order = np.argsort(both, kind="stable")
    both, known = both[order], np.concatenate([steps, read])[order]
    bad = np.flatnonzero(np.diff(known) <= 0)
    if not len(bad):
        return None
    k = int(bad[0]) + 1
    at = int(both[k])
    j = np.searchsorted(where, at)
    who = label(int(j)) if j < len(where) and where[j] == at else f"row {at}"
    before = int(known[k - 1])
    return f"{who}: info.step {int(known[k])} does not come after step {before} (H5MD steps increase)"
