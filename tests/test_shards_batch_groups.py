"""Batches over shards are grouped per shard once: each shard touched gets one read, in any
order asked (shuffled, sorted across shards, repeated rows), and the batch equals one store's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.shards import ShardedBackend
from asebytes_nodes.testing.frames import make_frames

pytest.importorskip("lmdb")

_KEYS = ["arrays.positions", "arrays.numbers", "calc.energy", "calc.forces", "cell"]
_ORDERS = {
    "shuffled": [9, 0, 17, 4, 12, 3, 16, 8],
    "sorted across shards": [0, 1, 5, 6, 11, 17],
    "one shard, reversed": [4, 2, 1],
    "repeats": [13, 2, 13, 2, 7, 7, 0],
    "one row": [15],
}


@pytest.mark.parametrize("order", list(_ORDERS.values()), ids=list(_ORDERS))
@pytest.mark.parametrize("atoms", [None, np.array([0, -1]), slice(1, 3)], ids=["all", "ends", "slice"])
def test_sharded_batches_equal_one_stores(tmp_path: Path, order: list[int], atoms: Any) -> None:
    frames = make_frames("periodic_variable_n") * 4  # 20 ragged frames in 4 shards
    one = ASEIO(tmp_path / "one.lmdb")
    one.extend(frames)
    sharded = ASEIO(tmp_path / "ds", backend="shards", shard_frames=5)
    sharded.extend(frames[:7])  # then top up the half-full shard
    sharded.extend(frames[7:])
    backend = ShardedBackend(tmp_path / "ds", readonly=True)
    calls: list[int] = []
    for p in range(len(backend.shards)):
        shard = backend._part(p)  # an LMDB shard reads a batch's rows through _checked, alone or joint
        read = shard._checked
        shard._checked = lambda idx, _read=read, _p=p: calls.append(_p) or _read(idx)
    got = ASEIO(backend)[order].to_batch(_KEYS, atoms=atoms)
    want = one[order].to_batch(_KEYS, atoms=atoms)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert got[key].dtype == want[key].dtype, key
    assert sorted(calls) == sorted({i // 5 for i in order}), "one read per shard touched, none other"
    energies = [frames[i].get_potential_energy() for i in order]
    assert [row["calc.energy"] for row in backend.read_rows(order, ["calc.energy"])] == energies
    assert list(backend.read_column("calc.energy", order)) == energies
