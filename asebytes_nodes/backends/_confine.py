"""Keep reads of a directory store inside that directory.

A store that is a directory (zarrmd, a ``datasets`` folder) can reach outside itself through the
file system or through names its own metadata holds: a symbolic link to ``/etc/passwd``, a FIFO
or device that blocks or never ends, a recorded file name such as ``../other/data.arrow`` or
``/abs/path``. :func:`refuse_escapes` walks a directory once (names and link targets, no data);
:func:`is_plain_name` and :func:`is_relative_inside` judge recorded names before they are used.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path

from ..errors import UnsafeStoreError

__all__ = ["is_plain_name", "is_relative_inside", "refuse_escapes"]

Refusal = Callable[[str, str], UnsafeStoreError]


def refuse_escapes(path: str | os.PathLike[str], refuse: Refusal) -> None:
    """Raise ``refuse(entry path, problem)`` for the first symbolic link below ``path`` that leads
    outside it (or nowhere), and for the first entry that is neither a directory nor a regular file.
    Links that stay inside are fine."""
    root = os.path.realpath(path)
    stack = [os.fspath(path)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.commonpath([root, target]) != root:
                        raise refuse(entry.path, f"is a symbolic link to {target}, outside the store")
                    if not (os.path.isfile(target) or os.path.isdir(target)):
                        raise refuse(entry.path, "is a symbolic link to a missing or special file")
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif not entry.is_file(follow_symlinks=False):
                    raise refuse(entry.path, "is neither a directory nor a regular file (a FIFO or device)")


def is_plain_name(name: object) -> bool:
    """Is ``name`` one file or folder name: a non-empty string, not ``.``/``..``, no separator?"""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def is_relative_inside(pattern: object) -> bool:
    """Is ``pattern`` a relative path (or glob) that cannot climb out: no ``..`` segment, not
    absolute, no URL scheme or home folder?"""
    if not isinstance(pattern, str) or not pattern or "\0" in pattern or "\\" in pattern:
        return False
    if "://" in pattern or pattern.startswith(("/", "~")) or ":" in pattern.split("/", 1)[0]:
        return False
    return ".." not in Path(posixpath.normpath(pattern)).parts and ".." not in pattern.split("/")
