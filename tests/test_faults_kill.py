"""Kill -9 at a random moment of every write operation, on every writable file backend.

Matrix: backends (LMDB, Zarr, H5MD) x operations (extend, append, ``db[i] = atoms`` with a
new atom count, slice assignment, ``update``, ``insert``, ``del``, ``drop``; each skipped
only where the backend's ``supports_*`` flag says it cannot) x kill moments drawn uniformly
over the operation's measured duration (2 seeds in the regular run, 10 with ``-m slow``).

After each kill the store must open (read-only first, then writable), hold exactly the
frames it held before the operation or exactly those it holds after it (a plain in-memory
store running the same operation is the model), pass ``check()``, and take a new write.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultkit import child_seconds, copy_store, kill_delay, kill_during, versioned_frame

from asebytes_nodes import ASEIO

BASE = 120  # frames in the store before the operation
GROW = 1500  # frames an extend adds


def op_extend(db: ASEIO) -> None:
    db.extend([versioned_frame(i, 1) for i in range(BASE, BASE + GROW)])


def op_append(db: ASEIO) -> None:
    db.append(versioned_frame(BASE, 1))


def op_setitem(db: ASEIO) -> None:
    db[7] = versioned_frame(7, 1)  # another molecule: a new atom count


def op_slice(db: ASEIO) -> None:
    db[20:60] = [versioned_frame(i, 1) for i in range(20, 60)]


def op_update(db: ASEIO) -> None:
    db.update(11, calc={"energy": -1.5}, info={"version": 2, "note": "relaxed"})


def op_insert(db: ASEIO) -> None:
    db.insert(5, versioned_frame(999, 1))


def op_delete(db: ASEIO) -> None:
    del db[5]


def op_drop(db: ASEIO) -> None:
    db.drop(["info.version"], [3, 4, 5])


OPS: dict[str, tuple[Callable[[ASEIO], None], str | None]] = {
    "extend": (op_extend, None),
    "append": (op_append, None),
    "setitem": (op_setitem, None),
    "slice": (op_slice, None),
    "update": (op_update, None),
    "insert": (op_insert, "supports_insert"),
    "delete": (op_delete, "supports_delete"),
    "drop": (op_drop, "supports_drop_keys"),
}
SUFFIXES = {".lmdb": "lmdb", ".zarr": "zarr", ".h5": "h5py"}


def signature(atoms: Any) -> tuple[Any, ...]:
    """Everything a frame holds, comparable exactly (NaN-free frames)."""
    calc = atoms.calc.results if atoms.calc is not None else {}
    return (
        atoms.numbers.tobytes(),
        atoms.positions.tobytes(),
        tuple(sorted((k, np.asarray(v).tobytes()) for k, v in calc.items())),
        tuple(sorted((k, repr(v)) for k, v in atoms.info.items())),
    )


def signatures(db: ASEIO) -> list[tuple[Any, ...]]:
    return [signature(a) for a in db]


def run_op(path: str, name: str) -> None:
    """Child process: open the store and run one operation."""
    with ASEIO(path) as db:
        OPS[name][0](db)


def model(name: str) -> tuple[list[Any], list[Any]]:
    """Frame signatures before and after the operation, on an in-memory store."""
    db = ASEIO("memory://")
    db.extend([versioned_frame(i) for i in range(BASE)])
    before = signatures(db)
    OPS[name][0](db)
    return before, signatures(db)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A store of BASE frames per suffix, built once; tests work on copies."""
    made: dict[str, Path] = {}

    def get(suffix: str) -> Path:
        if suffix not in made:
            path = tmp_path_factory.mktemp("seed") / f"base{suffix}"
            with ASEIO(path) as db:
                db.extend([versioned_frame(i) for i in range(BASE)])
            made[suffix] = path
        return made[suffix]

    return get


def _trial(seed_path: Path, work: Path, suffix: str, name: str, delay: float) -> bool:
    path = copy_store(seed_path, work / f"s{suffix}")
    landed = kill_during(run_op, (str(path), name), delay)
    before, after = model(name)
    with ASEIO(path, readonly=True) as db:
        got = signatures(db)
    if got not in (before, after):
        pytest.fail(
            f"{suffix} {name}: after a kill {delay * 1e3:.2f} ms in, the store holds neither the frames "
            f"before nor those after it ({len(got)} rows; {len(before)} before, {len(after)} after)"
        )
    with ASEIO(path) as db:
        assert signatures(db) in (before, after)
        assert db.backend.check() == []
        db.append(versioned_frame(5000, 3))
        assert signature(db[-1]) == signature(versioned_frame(5000, 3))
        assert len(db) == len(got) + 1
    return landed


def _kill_matrix(tmp_path: Path, seeded: Callable[[str], Path], suffix: str, name: str, trials: int) -> None:
    pytest.importorskip(SUFFIXES[suffix])
    seed_path = seeded(suffix)
    with ASEIO(seed_path, readonly=True) as probe:
        flag = OPS[name][1]
        if flag and not getattr(probe.backend, flag):
            pytest.skip(f"{type(probe.backend).__name__}.{flag} is False")
    # How long the operation takes here, measured on a copy in this process.
    probe_path = copy_store(seed_path, tmp_path / f"probe{suffix}")
    duration = child_seconds(run_op, str(probe_path), name)  # open + operation, as the trials' children
    rng = random.Random(f"{suffix}-{name}")
    landed = 0
    for k in range(trials):
        work = tmp_path / f"t{k}"
        work.mkdir()
        landed += _trial(seed_path, work, suffix, name, kill_delay(rng, duration, k))
    assert landed > 0, f"no kill landed during {name} ({duration * 1e3:.2f} ms); the test tested nothing"


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("suffix", list(SUFFIXES))
def test_kill_during_write(tmp_path: Path, seeded: Callable[[str], Path], suffix: str, name: str) -> None:
    _kill_matrix(tmp_path, seeded, suffix, name, trials=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("suffix", list(SUFFIXES))
def test_kill_during_write_many(
    tmp_path: Path, seeded: Callable[[str], Path], suffix: str, name: str
) -> None:
    _kill_matrix(tmp_path, seeded, suffix, name, trials=10)
