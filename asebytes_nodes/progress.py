"""Progress bars for long operations: shown on a terminal, silent elsewhere.

Every long operation of the package (``extend`` of many frames, conversions, cache
filling, indexing and reading extxyz files, ``info`` and ``validate``) reports through
:func:`progress`. Bars are drawn by tqdm on standard error when it is a terminal. Turn
them off everywhere with ``set_progress(False)`` or the environment variable
``ASEBYTES_NODES_PROGRESS=0``; force them on with ``True`` / ``1``. A terminal that
reports no width (0 columns: some CI runners and ``docker exec`` sessions), or no
terminal at all, gets bars of ``$COLUMNS`` or 80 columns: tqdm alone would draw nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["Progress", "progress", "progress_enabled", "set_progress", "stepped"]

ENV_VAR = "ASEBYTES_NODES_PROGRESS"
#: Operations on fewer frames than this draw no bar: it would only flicker.
MIN_TOTAL = 5000
#: Width of a bar when the terminal reports none.
FALLBACK_COLUMNS = 80
#: Rows assumed when the terminal reports none (docker exec, some CI runners report 0x0).
FALLBACK_ROWS = 24

_setting: bool | None = None
_drawing = threading.local()  # is a bar drawn by this thread? (inner operations then stay silent)


class Progress(Protocol):
    """What a progress bar offers: advance by ``n`` units."""

    def update(self, n: int = 1) -> Any: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        return None


def set_progress(enabled: bool | None) -> None:
    """Turn bars on (True), off (False), or back to automatic (None: on a terminal only)."""
    global _setting
    _setting = enabled


def progress_enabled() -> bool:
    """Would a bar be drawn now? The call's own setting, then the environment, then: is stderr a TTY?"""
    if _setting is not None:
        return _setting
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return sys.stderr.isatty()


def _fixed_width() -> int | None:
    """None when standard error is a terminal that reports its width (tqdm follows it),
    else a fixed width: ``$COLUMNS`` when positive, else :data:`FALLBACK_COLUMNS`."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        if size.columns > 0:  # a fixed width when the height is 0: tqdm's dynamic size takes both
            return None if size.lines > 0 else size.columns
    except (AttributeError, OSError, ValueError):  # no terminal, or no file descriptor
        pass
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    return columns if columns > 0 else FALLBACK_COLUMNS


def _rows() -> int | None:
    """None when standard error is a terminal that reports its height, else
    :data:`FALLBACK_ROWS` (tqdm hides every bar on a terminal of 0 rows)."""
    try:
        return None if os.get_terminal_size(sys.stderr.fileno()).lines > 0 else FALLBACK_ROWS
    except (AttributeError, OSError, ValueError):  # no terminal, or no file descriptor
        return FALLBACK_ROWS


@contextmanager
def progress(
    total: int | None,
    desc: str,
    *,
    unit: str = "frames",
    enabled: bool | None = None,
    min_total: int = MIN_TOTAL,
) -> Iterator[Progress]:
    """A bar with throughput and ETA for ``total`` units, or a silent stand-in.

    ``enabled`` overrides the global setting for this one operation. Small operations
    (under ``min_total`` units) stay silent unless ``enabled`` is True, and so do
    operations inside one that draws a bar (one bar at a time per thread).
    """
    show = progress_enabled() if enabled is None else enabled
    if show and enabled is None and total is not None and total < min_total:
        show = False
    if not show or getattr(_drawing, "active", False):
        yield _Silent()
        return
    from tqdm.auto import tqdm

    width = _fixed_width()
    _drawing.active = True
    try:
        with tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=True,
            ncols=width,
            nrows=_rows(),
            dynamic_ncols=width is None,
            leave=False,
        ) as bar:
            yield bar
    finally:
        _drawing.active = False


def stepped(total: int, step: int, desc: str, *, enabled: bool | None = None) -> Iterator[int]:
    """The starts ``0, step, 2 * step, ...`` below ``total``, with a bar of ``total`` frames
    that advances as each step's work is done (for loops over a store in chunks)."""
    with progress(total, desc, enabled=enabled) as bar:
        for start in range(0, total, step):
            yield start
            bar.update(min(step, total - start))
