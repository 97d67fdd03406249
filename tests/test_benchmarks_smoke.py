"""The benchmark suite runs end to end on small sizes (speed is judged in benchmarks/, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_runs_and_reports(tmp_path: Path) -> None:
    pytest.importorskip("asebytes")
    pytest.importorskip("ase_db_backends")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for name, dataset in results["datasets"].items():
        ours = dataset["backends"]["ours (LMDB)"]
        assert ours["problems"] == [], (name, ours["problems"])
        for metric in ("write_fps", "read_all_fps", "random_fps", "energy_fps"):
            assert ours[metric] > 0, (name, metric)
        assert ours["size_bytes"] > 0
        assert "asebytes (LMDB)" in dataset["backends"]
    assert "| ours (LMDB) |" in (tmp_path / "results.md").read_text()
