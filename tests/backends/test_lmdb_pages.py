"""LMDB pages damaged where sizes and bounds live: each bit of the value sizes, flags and key
sizes of leaf nodes, the page bounds and node offsets of leaf and branch pages, and the page
counts of overflow pages, flipped one at a time in a store with overflow rows and column
blocks; each damaged copy is read in a child process (a signal counts as a failure, see
``test_lmdb_faults.run_trials``). py-lmdb reads an overflow value's pages before Python sees
them, so a flipped value size used to kill the reader with ``SIGBUS``.

Page layout (``lmdb/mdb.c``, 64-bit): header ``mp_pgno`` u64, ``mp_pad`` u16, ``mp_flags`` u16
(1 branch, 2 leaf, 4 overflow), then ``mp_lower``/``mp_upper`` u16 (node pages) or ``mp_pages``
u32 (overflow pages); node pages then hold u16 node offsets; a node is ``mn_lo``, ``mn_hi``,
``mn_flags``, ``mn_ksize`` (u16 each), the key, then the value (or an overflow page number).
"""

from __future__ import annotations

import collections
import struct
from pathlib import Path

import pytest
from faultkit import versioned_frame
from test_lmdb_faults import OUTCOMES, build, run_trials

from asebytes_nodes import ASEIO

pytest.importorskip("lmdb")

_HEADER = struct.Struct("<QHHHH")
_NODE = struct.Struct("<HHHH")
BIG_ROWS = range(10, 15)


def padded(i: int) -> object:
    atoms = versioned_frame(i)
    atoms.info["pad"] = "x" * 3000  # the row goes to overflow pages
    return atoms


def store_with_overflow_rows(path: Path) -> Path:
    build(path)
    with ASEIO(path) as db:
        for i in BIG_ROWS:
            db[i] = padded(i)
    return path


def targets(path: Path, every_field: bool) -> list[tuple[str, int, int]]:
    """``("flip", offset, bit)`` for each bit of the size fields (every node field and page
    bound if ``every_field``) of every leaf, branch and overflow page in the file."""
    data = path.read_bytes()
    psize = 4096
    found: list[tuple[int, int]] = []  # (offset, bytes)
    for start in range(2 * psize, len(data), psize):
        _, _, flags, lower, upper = _HEADER.unpack_from(data, start)
        if flags & 4:
            found.append((start + 12, 4))  # mp_pages
            continue
        if not flags & 3 or not 16 <= lower <= upper <= psize:
            continue
        if every_field:
            found.append((start + 12, 4))  # mp_lower, mp_upper
        for j, ptr in enumerate(struct.unpack_from(f"<{(lower - 16) // 2}H", data, start + 16)):
            node = start + ptr
            if flags & 2 and _NODE.unpack_from(data, node)[2] & 1:
                found.append((node, 4))  # the size of a value on overflow pages
            if every_field:
                found += [(node, 8), (start + 16 + 2 * j, 2)]  # the node, its offset
    offsets = sorted({o + k for o, n in found for k in range(n)})
    return [("flip", offset, bit) for offset in offsets for bit in range(8)]


def outcomes(tmp_path: Path, every_field: bool) -> collections.Counter[str]:
    store = store_with_overflow_rows(tmp_path / "clean.lmdb")
    trials = targets(store, every_field)
    results = run_trials(store, trials)
    seen = collections.Counter(OUTCOMES.get(c, f"exit code {c}") for c in results.values())  # type: ignore[arg-type]
    print(f"{len(trials)} targeted flips: {dict(seen)}")
    failures = {offset: code for offset, code in results.items() if code not in OUTCOMES}
    assert not failures, f"offsets that crashed (None) or returned wrong data (20): {failures}"
    return seen


def test_flipped_value_sizes_give_a_clean_error(tmp_path: Path) -> None:
    seen = outcomes(tmp_path, every_field=False)
    assert seen["StoreCorruptedError"] > 0


@pytest.mark.slow
def test_flipped_node_fields_and_page_bounds(tmp_path: Path) -> None:
    outcomes(tmp_path, every_field=True)


def test_the_address_of_a_view_is_where_numpy_finds_its_bytes() -> None:
    import numpy as np

    from asebytes_nodes.backends._lmdb_bounds import _address

    data = bytes(100)
    for view in (memoryview(data), memoryview(data)[17:40]):
        assert _address(view) == np.frombuffer(view, np.uint8).ctypes.data
