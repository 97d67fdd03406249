"""H5MD step/time from the frames' own ``info.step``/``info.time``; an empty store znh5md reads; units
of other programs' files kept as stored are named.

* A store whose frames all carry an integer, increasing ``info.step`` and a finite ``info.time``
  writes them as its H5MD step and time (fs), which MDAnalysis reads (an MD run's extxyz, an
  MDAnalysis file converted); before, every store had frame index x timestep. Appends and updates
  keep the clock, or turn the whole store to the index clock with a warning (never part each).
* ``extend([])`` made a 0-frame store that znh5md could not open (``KeyError: 'species'``).
* Observables with a unit the reader does not convert (K, kJ/mol on an info key) lost it silently.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk

h5py = pytest.importorskip("h5py")

from asebytes_nodes import ASEIO  # noqa: E402
from asebytes_nodes.backends.h5md import H5MDBackend  # noqa: E402
from asebytes_nodes.testing.frames import make_frames  # noqa: E402
from asebytes_nodes.transfer import convert  # noqa: E402

CLOCK = "parameters/asebytes_nodes/{}/{}"


def _md(n: int = 4, start: int = 0, stride: int = 100, dt: float = 50.0) -> list[Any]:
    """Frames of an MD run: info.step (int) and info.time (fs)."""
    frames = []
    for i in range(start, start + n):
        atoms = bulk("Cu", cubic=True)
        atoms.positions += 0.01 * i
        atoms.info.update(step=stride * i, time=dt * i)
        frames.append(atoms)
    return frames


def _clock(path: Path, group: str = "atoms") -> tuple[list[int], list[float], str, int]:
    """The store's step and time as another program reads them, the time unit, the layout version."""
    with h5py.File(path, "r") as f:
        position = f[f"particles/{group}/position"]
        table = f[CLOCK.format(group, "")[:-1]].attrs["asebytes_nodes"]
        version = int(table.split('"version": ')[1].split(",")[0])
        return (
            position["step"][()].tolist(),
            position["time"][()].tolist(),
            position["time"].attrs["unit"],
            version,
        )


def _quiet(call: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in found]


def test_the_frames_own_step_and_time_are_the_h5md_clock(tmp_path: Path) -> None:
    path = tmp_path / "md.h5"
    frames = _md()
    frames[1].info["time"] = 50  # an int time is a time too
    ASEIO(path, timestep=2.0).extend(frames)
    assert _clock(path) == ([0, 100, 200, 300], [0.0, 50.0, 100.0, 150.0], "fs", 3)
    with h5py.File(path, "r") as f:  # every element shares it
        assert f["observables/atoms/step/time"][()].tolist() == [0.0, 50.0, 100.0, 150.0]
    db = ASEIO(path, readonly=True)
    got = [(a.info["step"], a.info["time"]) for a in db]
    assert got == [(0, 0.0), (100, 50), (200, 100.0), (300, 150.0)]
    assert [type(t) for _, t in got] == [float, int, float, float]  # exactly as written
    assert db.backend.check() == []


@pytest.mark.parametrize(
    "change",
    [
        lambda fs: fs[2].info.pop("time"),  # one frame lacks it
        lambda fs: fs[2].info.update(step=0),  # steps do not increase (two runs)
        lambda fs: fs[2].info.update(step=200.5),  # not whole (200.0 is: znh5md writes floats)
        lambda fs: fs[2].info.update(step=True),
        lambda fs: fs[2].info.update(step=2**63),  # not an int64
        lambda fs: fs[2].info.update(time=float("nan")),
    ],
)
def test_frames_without_a_clock_keep_frame_indices(tmp_path: Path, change: Any) -> None:
    frames = _md()
    change(frames)
    path = tmp_path / "x.h5"
    assert _quiet(lambda: ASEIO(path, timestep=2.0).extend(frames)) == []
    assert _clock(path) == ([0, 1, 2, 3], [0.0, 2.0, 4.0, 6.0], "fs", 2)


def test_appends_follow_the_clock_or_turn_the_store_to_indices(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    db = ASEIO(path, timestep=2.0)
    db.extend(_md(2))
    db.extend(_md(2, start=2))
    assert _clock(path) == ([0, 100, 200, 300], [0.0, 50.0, 100.0, 150.0], "fs", 3)
    late = _md(1, start=1)  # step 100 after 300
    messages = _quiet(lambda: db.extend(late))
    assert (
        len(messages) == 1
        and "x.h5, group 'atoms': frame 0: info.step 100 does not come after " in messages[0]
    )
    assert "every frame are now frame index x timestep" in messages[0]
    assert _clock(path) == ([0, 1, 2, 3, 4], [0.0, 2.0, 4.0, 6.0, 8.0], "fs", 2)
    db.extend(_md(1, start=9))  # an index store stays one
    assert _clock(path)[0] == [0, 1, 2, 3, 4, 5]
    assert ASEIO(path, readonly=True)["info.step"].to_list() == [0, 100, 200, 300, 100, 900]
    assert db.backend.check() == []


def test_a_frame_without_step_turns_the_store_to_indices(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    ASEIO(path).extend(_md(3))
    messages = _quiet(lambda: ASEIO(path).extend(make_frames("ethanol")[:1]))
    assert len(messages) == 1 and "frame 0 has no info.step" in messages[0]
    assert _clock(path)[:2] == ([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0])


def test_an_index_store_stays_one(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    ASEIO(path).extend(make_frames("ethanol")[:2])
    ASEIO(path).extend(_md(2, start=5))
    assert _clock(path) == ([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0], "fs", 2)


def test_updates_rewrite_their_rows_of_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    db = ASEIO(path)
    db.extend(_md(4))
    db.update(1, info={"time": 55.5})
    replaced = _md(1, start=2)[0]
    replaced.info.update(step=250, time=125.0)
    db[2] = replaced
    db.update(3, calc={"energy": -1.0})  # no clock key: the clock stays
    assert _clock(path) == ([0, 100, 250, 300], [0.0, 55.5, 125.0, 150.0], "fs", 3)
    messages = _quiet(lambda: db.update(3, info={"step": 250}))
    assert len(messages) == 1 and "row 3: info.step 250 does not come after step 250" in messages[0]
    assert _clock(path)[:2] == ([0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0])
    assert db["info.step"].to_list() == [0, 100, 250, 250] and db.backend.check() == []


def test_dropping_the_step_turns_the_store_to_indices(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    ASEIO(path).extend(_md(3))
    backend = H5MDBackend(path)
    messages = _quiet(lambda: backend.drop_keys([1], ["info.step"]))
    backend.close()
    assert len(messages) == 1 and "row 1 has no info.step" in messages[0]
    assert _clock(path)[:2] == ([0, 1, 2], [0.0, 1.0, 2.0])


def test_mdanalysis_and_znh5md_see_an_md_runs_times(tmp_path: Path) -> None:
    """An extxyz an MD run wrote, converted: MDAnalysis reads its times (ps) and steps."""
    mda = pytest.importorskip("MDAnalysis")
    znh5md = pytest.importorskip("znh5md")
    from ase.io import write

    source = tmp_path / "md.extxyz"
    write(source, _md(4, stride=10, dt=5.0))
    out = tmp_path / "md.h5md"
    options = {"particles_group": "trajectory"}
    convert(source, out, destination_options=options, chunk_size=3, show_progress=False)  # two writes
    universe = mda.Universe(str(out))
    seen = [(ts.data["step"], ts.time) for ts in universe.trajectory]
    universe.trajectory.close()
    assert seen == [(0, 0.0), (10, 0.005), (20, 0.01), (30, pytest.approx(0.015))]
    assert [(a.info["step"], a.info["time"]) for a in znh5md.IO(out)[:]] == [
        (0, 0.0),
        (10, 5.0),
        (20, 10.0),
        (30, 15.0),
    ]


def test_an_mdanalysis_file_converted_keeps_its_times(tmp_path: Path) -> None:
    mda = pytest.importorskip("MDAnalysis")
    from MDAnalysis.coordinates.memory import MemoryReader

    n, count = 3, 4
    positions = np.random.default_rng(0).normal(size=(count, n, 3)).astype(np.float32)
    universe = mda.Universe.empty(n, trajectory=True)
    dims = np.array([[10, 10, 10, 90, 90, 90]] * count, np.float32)
    universe.load_new(positions, format=MemoryReader, dimensions=dims, dt=0.5)
    source = tmp_path / "mda.h5md"
    with mda.Writer(str(source), n_atoms=n, format="H5MD", timeunit="ps", lengthunit="Angstrom") as writer:
        for _ in universe.trajectory:
            writer.write(universe)
    out = tmp_path / "copy.h5md"
    convert(source, out, destination_options={"particles_group": "trajectory"}, show_progress=False)
    times = {}
    for name in (source, out):
        other = mda.Universe(str(name))
        times[name] = [(ts.data["step"], ts.time) for ts in other.trajectory]
        other.trajectory.close()
    assert [s for s, _ in times[out]] == [s for s, _ in times[source]] == [0, 1, 2, 3]
    np.testing.assert_allclose([t for _, t in times[out]], [0.0, 0.5, 1.0, 1.5], rtol=1e-12)


def test_an_empty_store_reads_in_znh5md_as_no_frames(tmp_path: Path) -> None:
    znh5md = pytest.importorskip("znh5md")
    path = tmp_path / "x.h5"
    ASEIO(path, particles_group="pg").extend([])
    io = znh5md.IO(path)
    assert len(io) == 0 and io[:] == [] and list(io) == []
    backend = H5MDBackend(path, group="pg", readonly=True)
    assert len(backend) == 0 and backend.keys() == [] and backend.check() == []
    backend.close()
    frames = make_frames("periodic_variable_n")[:3]
    ASEIO(path, particles_group="pg").extend(frames)
    read = znh5md.IO(path)[:]
    assert [a.get_chemical_formula() for a in read] == [a.get_chemical_formula() for a in frames]
    np.testing.assert_array_equal(read[1].cell.array, frames[1].cell.array)
    assert H5MDBackend(path, group="pg").check() == []
    empty = tmp_path / "empty.h5"  # what a node converting an empty selection writes
    options = {"particles_group": "pg"}
    convert(path, empty, indices=[], source_options=options, destination_options=options, show_progress=False)
    assert len(znh5md.IO(empty)) == 0


def test_units_read_as_stored_are_named_once(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_group("h5md").attrs["version"] = np.array([1, 1])
        f["h5md"].create_group("creator").attrs["name"] = "someone"
        f["particles/atoms/position/value"] = np.zeros((2, 1, 3))
        f["particles/atoms/position/step"] = np.array([0, 1])
        for name, unit in (("temperature", "K"), ("kinetic_energy", "kJ mol-1"), ("bias", "eV"), ("n", "")):
            f[f"observables/atoms/{name}/value"] = np.array([300.0, 310.0])
            f[f"observables/atoms/{name}/step"] = np.array([0, 1])
            f[f"observables/atoms/{name}/value"].attrs["unit"] = unit
    messages = _quiet(lambda: ASEIO(path, readonly=True))
    assert messages == [
        f"{path}: values read as stored, in the file's units (not converted to ASE units; the unit is not "
        "kept with the value): observables/atoms/kinetic_energy/value in 'kJ mol-1' -> info.kinetic_energy; "
        "observables/atoms/temperature/value in 'K' -> info.temperature"
    ]
    assert _quiet(lambda: ASEIO(path, readonly=True)) == []  # once per file and dataset
    assert ASEIO(path, readonly=True)[1].info["temperature"] == 310.0
