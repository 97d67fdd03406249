"""SIGKILL during ``extend`` of a sharded dataset: the previous manifest and its frames survive.

Matrix: kill moments drawn over the measured duration of an extend that tops up the last
shard and starts new ones (3 seeds; 10 with ``-m slow``). After each kill the dataset holds
exactly the frames it held before or after the extend, passes ``check()``, and its next
write deletes the killed writer's temporary and unreferenced files.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from faultkit import child_seconds, frame_version, kill_during, versioned_frame

from asebytes_nodes import ASEIO
from asebytes_nodes.shards import ShardedBackend

BASE, GROW = 130, 900  # the last shard of 50 is part full


def op_extend(path: str) -> None:
    ASEIO(path).extend([versioned_frame(i, 1) for i in range(BASE, BASE + GROW)])


def _seed(path: Path) -> None:
    ASEIO(path, backend="shards", shard_frames=50).extend([versioned_frame(i) for i in range(BASE)])


def _trials(tmp_path: Path, seeds: int) -> None:
    template = tmp_path / "template"
    _seed(template)
    duration = child_seconds(op_extend, str(shutil.copytree(template, tmp_path / "timing")))
    killed = 0
    for seed in range(seeds):
        path = shutil.copytree(template, tmp_path / f"trial{seed}")
        killed += kill_during(op_extend, (str(path),), random.Random(seed).uniform(0.05, 1.0) * duration)
        db = ASEIO(path, readonly=True)
        assert len(db) in (BASE, BASE + GROW), f"seed {seed}: {len(db)} frames"
        assert [frame_version(a) for a in db] == [(i, 0 if i < BASE else 1) for i in range(len(db))]
        assert db.backend.check() == []
        writer = ASEIO(path)
        writer.append(versioned_frame(len(db), 2))
        shards = writer.backend.shards
        named = {s.file for s in shards} | {s.natoms_file for s in shards} | {"asebytes-shards.json"}
        leftovers = [p.name for p in path.iterdir() if p.name not in named]
        assert leftovers == [], f"seed {seed}: {leftovers}"
        assert isinstance(writer.backend, ShardedBackend)
    assert killed, "every kill came after the extend had finished: no crash was tested"


def test_kill_during_extend(tmp_path: Path) -> None:
    _trials(tmp_path, 3)


@pytest.mark.slow
def test_kill_during_extend_many(tmp_path: Path) -> None:
    _trials(tmp_path, 10)
