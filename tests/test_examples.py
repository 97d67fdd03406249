"""The README's main command: the quickstart example runs and writes what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from asebytes_nodes import ASEIO

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs(tmp_path: Path) -> None:
    out = tmp_path / "quickstart.lmdb"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "200 frames" in done.stdout
    with ASEIO(out, readonly=True) as db:
        assert len(db) == 200
        assert db[-1].info["step"] == 199
        forces = db["calc.forces"].to_numpy()
        assert forces.shape == (200, 32, 3) and np.isfinite(forces).all()
        assert db[0].get_potential_energy() == db["calc.energy"].to_list()[0]
