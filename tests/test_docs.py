"""The documentation's Python examples run, so they cannot rot.

Every ```python block of README.md and docs/*.md runs as a script in a fresh folder that is
a git repository (the nodes examples build a DVC graph there). Blocks marked
```python notest need the network or an earlier pipeline run and are skipped, visibly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python( notest)?\n(.*?)^```", re.S | re.M)


def _blocks() -> list[object]:
    params = []
    for doc in DOCS:
        for k, match in enumerate(BLOCK.finditer(doc.read_text())):
            marks = [pytest.mark.skip(reason="marked notest in the docs")] if match.group(1) else []
            params.append(pytest.param(match.group(2), id=f"{doc.name}-{k}", marks=marks))
    return params


def test_the_docs_have_examples() -> None:
    runnable = [p for p in _blocks() if not p.marks]  # type: ignore[attr-defined]
    assert len(runnable) >= 2


@pytest.mark.parametrize("code", _blocks())
def test_example_runs(code: str, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "data").mkdir()
    if "data/md.extxyz" in code:  # the nodes example reads a small file it expects the user to have
        import ase.io
        from ase.build import bulk

        ase.io.write(tmp_path / "data" / "md.extxyz", [bulk("Cu", cubic=True)] * 3)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
