"""H5MD stores whose step/time follow the frames' ``info.step``/``info.time`` (see ``_clock``):

* A single-row write read the whole stored ``info.step`` column (and built a set difference over
  every row): 112 ms per ``db[i] = a`` on 200k frames against 28 ms with the index clock. A write
  now reads only its rows' unwritten neighbours.
* znh5md writes ``info.step`` as float64 (0.0, 100.0, ...): such a run fell back to frame-index
  steps. Whole-number float steps are the clock now (int64 in the H5MD step dataset).
* A 0-frame store (``extend([])``) holds placeholder elements but said layout version 2, so
  asebytes-nodes before them appended to it and failed calling the file damaged. It is version 3
  until the first frames replace the placeholders.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk

h5py = pytest.importorskip("h5py")

from asebytes_nodes import ASEIO  # noqa: E402
from asebytes_nodes.backends._base import check_format_record  # noqa: E402
from asebytes_nodes.backends.h5md._plan import FORMAT_NAME  # noqa: E402
from asebytes_nodes.errors import FormatVersionError  # noqa: E402
from asebytes_nodes.transfer import convert  # noqa: E402


def _md(n: int, stride: int = 10, step: Any = int) -> list[Any]:
    frames = []
    for i in range(n):
        atoms = bulk("Cu")
        atoms.positions += 0.01 * i
        atoms.info.update(step=step(stride * i), time=5.0 * i)
        frames.append(atoms)
    return frames


def _table(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return json.loads(f["parameters/asebytes_nodes/atoms"].attrs["asebytes_nodes"])


def _steps(path: Path) -> list[int]:
    with h5py.File(path, "r") as f:
        return f["particles/atoms/position/step"][()].tolist()


def test_a_write_reads_only_the_neighbours_steps(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    db = ASEIO(path)
    db.extend(_md(1000))
    read: list[int] = []
    backend = db.backend
    column = backend.read_column

    def counted(key: str, indices: Any) -> Any:
        if key == "info.step":
            read.extend(np.asarray(indices).tolist())
        return column(key, indices)

    backend.read_column = counted  # type: ignore[method-assign]
    frame = db[500]
    frame.info["step"] = 5001
    db[500] = frame
    db.update(700, info={"step": 7001})
    db.extend(_md(2, stride=20000)[1:])
    assert sorted(read) == [499, 501, 699, 701, 999]  # was every stored row, per write
    assert _steps(path)[499:502] == [4990, 5001, 5010] and _steps(path)[-1] == 20000
    assert _table(path)["version"] == 3 and db.backend.check() == []


@pytest.mark.parametrize("seed", range(6))
def test_updates_keep_the_clock_exactly_when_all_steps_increase(tmp_path: Path, seed: int) -> None:
    """Random updates of a few rows, checked against the whole column: the store keeps the
    frames' steps exactly when they all increase, else it turns to frame indices for good."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "x.h5"
    db = ASEIO(path)
    db.extend(_md(30))
    expected, follows = [10 * i for i in range(30)], True
    for _ in range(8):
        rows = np.sort(rng.choice(30, int(rng.integers(1, 4)), replace=False))
        for i in rows.tolist():
            expected[i] = int(expected[i] + rng.integers(-12, 12))
            with warnings.catch_warnings(record=True) as found:
                warnings.simplefilter("always")
                db.update(i, info={"step": expected[i]})
            turned = follows and not all(a < b for a, b in zip(expected, expected[1:], strict=False))
            assert bool(found) == turned
            follows = follows and not turned
            assert _steps(path) == (expected if follows else list(range(30)))
    assert db["info.step"].to_list() == expected


@pytest.mark.parametrize("kind", [float, np.float32, np.float64])
def test_whole_number_float_steps_are_the_clock(tmp_path: Path, kind: Any) -> None:
    path = tmp_path / "x.h5"
    ASEIO(path).extend(_md(4, stride=100, step=kind))
    assert _steps(path) == [0, 100, 200, 300] and _table(path)["version"] == 3
    with h5py.File(path, "r") as f:
        assert f["particles/atoms/position/step"].dtype == np.int64
    got = ASEIO(path, readonly=True)["info.step"].to_list()
    assert got == [0.0, 100.0, 200.0, 300.0] and all(isinstance(s, float | np.floating) for s in got)
    other = tmp_path / "y.h5"
    frames = _md(3, stride=100, step=float)
    frames[1].info["step"] = 100.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ASEIO(other).extend(frames)  # not a step: frame indices, as for frames without one
    assert _steps(other) == [0, 1, 2]
    with pytest.warns(UserWarning, match=r"info.step 2e\+19 is not an integer"):
        ASEIO(path).update(3, info={"step": 2e19})  # beyond int64
    assert _steps(path) == [0, 1, 2, 3]


def test_a_znh5md_run_converted_keeps_its_steps(tmp_path: Path) -> None:
    znh5md = pytest.importorskip("znh5md")
    source, out = tmp_path / "run.h5", tmp_path / "conv.h5"
    znh5md.IO(str(source)).extend(_md(4, stride=100))  # znh5md stores the steps as float64
    convert(source, out, show_progress=False)
    assert _steps(out) == [0, 100, 200, 300]


def test_an_empty_store_is_refused_by_older_asebytes_nodes(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    ASEIO(path).extend([])
    table = _table(path)
    assert table["version"] == 3
    with pytest.raises(FormatVersionError, match="upgrade asebytes-nodes"):
        check_format_record(str(path), table, FORMAT_NAME, 2, "H5MD")  # what versions before it check
    ASEIO(path).extend([bulk("Cu")] * 2)  # the placeholders go: an index-clock store is version 2
    assert _table(path)["version"] == 2 and _steps(path) == [0, 1]
    md = tmp_path / "md.h5"
    ASEIO(md).extend([])
    ASEIO(md).extend(_md(2))
    assert _table(md)["version"] == 3 and _steps(md) == [0, 10]
    assert ASEIO(md).backend.check() == []
