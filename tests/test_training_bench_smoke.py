"""The training benchmark (benchmarks/training.py) runs end to end on tiny sizes and reports sane rows.

Speed is judged in benchmarks/training.md, not here: this only checks that every figure is
measured, that what was read matches what was written, and that the report shows it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import training
from benchmarks.batches import READERS, batch_indices
from benchmarks.datasets import periodic


def test_batch_indices_cover_an_epoch_once() -> None:
    batches = batch_indices(70)
    assert [len(b) for b in batches] == [32, 32, 6]
    assert sorted(np.concatenate(batches).tolist()) == list(range(70))
    assert len(batch_indices(70, 2)) == 2


def test_scaled_set_has_8_to_128_atoms_per_periodic_frame() -> None:
    frames = [a for chunk in training.scaled(25, chunk=10) for a in chunk]
    assert len(frames) == 25
    assert all(8 <= len(a) <= 128 and a.pbc.all() for a in frames)
    assert frames[0].get_forces().shape == (len(frames[0]), 3)


def test_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    kinds = ("ours (LMDB)", "atompack") if importlib.util.find_spec("atompack") else ("ours (LMDB)",)
    config = replace(
        training.QUICK,
        datasets=(("periodic-40", periodic, 40),),
        kinds=kinds,
        scale_sizes=(40,),
    )
    results = training.run(config, tmp_path)
    data = results["training"]["periodic-40"]
    assert set(data["stores"]) == set(kinds)
    for kind, row in data["stores"].items():
        assert "error" not in row, row.get("error")
        assert row["problems"] == [], (kind, row["problems"])
        assert row["size_bytes"] > 0 and row["write_fps"] > 0
        warm = row["warm"]
        assert min(warm["read_all_fps"], warm["random_fps"], warm["energy_fps"], warm["batches_fps"]) > 0
        assert all(row["cold"][op]["seconds"] > 0 for op in ("first", "random", "energy"))
        # the cold reader read the same frames as the warm one
        assert row["cold"]["energy"]["value"] == pytest.approx(warm["checks"]["energy"])
    ours = data["stores"]["ours (LMDB)"]["warm"]
    assert ours["positions_dtype"] == "float64"
    assert ours["positions_max_err"] == 0.0 and ours["forces_max_err"] == 0.0
    # our batches run on the calling thread: at most one CPU second per wall second (and some)
    assert 0 < ours["batches_cpu_per_wall"] <= 1.05
    if "atompack" in kinds:
        assert data["stores"]["atompack"]["warm"]["positions_dtype"] == "float32"
    scale = results["scale"]["40"]["stores"]["ours (LMDB)"]
    assert "error" not in scale, scale.get("error")
    assert all(scale[op]["seconds"] > 0 for op in ("getitem", "batches", "read_all", "energy"))
    report = training.render(results)
    assert "| ours (LMDB) |" in report and "Issue 17" in report and "| CPU/wall |" in report
    if "atompack" in kinds:
        assert "batches: ours (LMDB) vs atompack" in report


def test_every_reader_names_its_libraries() -> None:
    for kind, cls in READERS.items():
        assert cls.kind == kind and cls.modules, kind
