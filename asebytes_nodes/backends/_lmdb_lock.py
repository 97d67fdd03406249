"""The LMDB backend's writer lock: ``flock`` on the data file itself, with a timeout.

LMDB serialises writers with a mutex in its ``-lock`` file, and a second writer waits on
it without limit. Writers of this package first take an exclusive ``flock`` on the data
file, waiting up to ``lock_timeout`` and then raising
:class:`~asebytes_nodes.errors.StoreLockedError` naming the store and the holder's pid
(from ``/proc/locks``). Locking the data file adds no side file beside a single-file DVC
output and writes no byte into it; ``flock`` does not interact with LMDB's own locks
(``fcntl`` record locks on the ``-lock`` file) and the kernel drops it when a writer dies.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._safety import StoreLock

__all__ = ["WriterLock"]


class WriterLock(StoreLock):
    """:class:`StoreLock` on an existing data file, which it never writes."""

    def __init__(self, path: Path, *, store: str, timeout: float) -> None:
        super().__init__(path, store=store, timeout=timeout)
        self.records_holder = False

    def _open(self, create: bool) -> int | None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def holder(self) -> str:
        """``pid N``, read from the kernel's table of file locks (Linux), else ``unknown``."""
        try:
            inode = os.stat(self.path).st_ino
            with open("/proc/locks") as table:
                for line in table:
                    fields = line.split()
                    if "FLOCK" in fields and fields[-3].endswith(f":{inode}") and "->" not in line:
                        return f"pid {fields[-4]}"
        except (OSError, IndexError):
            pass
        return "unknown"
