"""Training reads (issues 15 and 17): batches as arrays against atompack-db, and cold starts.

    python benchmarks/training.py                        # ethanol-20000, periodic-1000 + scale 1k/20k
    python benchmarks/training.py --scale 1000,20000,100000   # add issue 17's 100,000-frame set
    python benchmarks/training.py --quick                # tiny sizes, the smoke test's run

Writes ``training.md`` and ``training.json`` beside this file (or into ``--out-dir``). Parts:

* **warm** (one process, stores opened untimed, best of ``--repeats``): write, size, read-all
  as Atoms, 100 random frames, the energy column, and a shuffled epoch in batches of 32 as flat
  arrays (our ``db[idx].to_batch(BATCH_KEYS)``, atompack's ``get_molecules_flat``), with the
  largest error of positions and forces in a batch against the frames written;
* **cold** (``cold.py``: a fresh process per figure, imports untimed, open timed; median of
  ``--cold-repeats``): open + first frame, open + 100 random frames, open + energy column;
* **scale** (issue 17; our LMDB, Zarr, H5MD on generated periodic sets of 8-128 atoms per frame,
  written in a temporary folder and removed): cold 1,000 random ``db[i]``, shuffled batches of
  32 through ``to_batch`` (the first ``--scale-batches`` of an epoch), read-all, energy column.

Cold figures of one dataset are taken in alternating rounds over all its stores, each store's
files read once before its turn (``cold.rounds``): the stores compared meet the same machine
load and the same page cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    _HERE = Path(__file__).resolve().parent  # keep benchmarks/datasets.py from shadowing `datasets`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))
    __package__ = "benchmarks"

import argparse
import datetime
import gc
import importlib.util
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from ase import Atoms

from .batches import BATCH_KEYS, READERS, Reader, batch_indices
from .cold import compile_package, rounds
from .datasets import _attach_results, ethanol, periodic, random_indices
from .measure import best_of
from .training_report import render

HERE = Path(__file__).resolve().parent
OURS = ("ours (LMDB)", "ours (Zarr)", "ours (H5MD)")
SUFFIXES = {
    "ours (LMDB)": ".lmdb",
    "ours (Zarr)": ".zarr",
    "ours (H5MD)": ".h5",
    "asebytes (LMDB)": ".lmdb",
    "znh5md": ".h5",
    "atompack": ".atp",
}
N_RANDOM = 100
_SPECIES = np.array([1, 3, 6, 7, 8, 11, 12, 13, 14, 16, 26, 29])


@dataclass(frozen=True)
class Config:
    """What one run measures."""

    datasets: tuple[tuple[str, Callable[[int], list[Atoms]], int], ...]
    kinds: tuple[str, ...]
    scale_sizes: tuple[int, ...]
    repeats: int = 3
    cold_repeats: int = 5
    scale_repeats: int = 3
    scale_batches: int = 300
    scale_getitem: int = 1000
    scale_timeout: float = 180.0  # seconds per fresh process before a figure is reported as slower


FULL = Config(
    datasets=(("ethanol-20000", ethanol, 20_000), ("periodic-1000", periodic, 1000)),
    kinds=tuple(READERS),
    scale_sizes=(1000, 20_000),
)
QUICK = Config(
    datasets=(("periodic-60", periodic, 60),),
    kinds=("ours (LMDB)", "ours (H5MD)", "atompack"),
    scale_sizes=(100,),
    repeats=1,
    cold_repeats=1,
    scale_repeats=1,
    scale_batches=2,
    scale_getitem=20,
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def available(kind: str) -> bool:
    """Are ``kind``'s libraries installed?"""
    tops = {entry.partition(":")[0].split(".")[0] for entry in READERS[kind].modules}
    return all(importlib.util.find_spec(top) is not None for top in tops)


# -- data ------------------------------------------------------------------------------------------
def _scaled_frame(rng: np.random.Generator) -> Atoms:
    """A periodic cell of 8 to 128 random atoms (about 12 Å^3 each), sheared, with results."""
    k = int(rng.integers(8, 129))
    cell = (12.0 * k) ** (1 / 3) * (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3)))
    atoms = Atoms(numbers=rng.choice(_SPECIES, k), positions=rng.random((k, 3)) @ cell, cell=cell, pbc=True)
    return _attach_results(atoms, rng)


def scaled(n: int, chunk: int = 10_000, seed: int = 17) -> Iterator[list[Atoms]]:
    """Issue 17's periodic set of ``n`` frames, in chunks (never all in memory)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        yield [_scaled_frame(rng) for _ in range(min(chunk, n - start))]


# -- stores ----------------------------------------------------------------------------------------
def _write(kind: str, path: Path, chunks: Iterator[list[Atoms]]) -> None:
    if kind in OURS:
        from asebytes_nodes import ASEIO

        with ASEIO(path) as db:
            for frames in chunks:
                db.extend(frames, show_progress=False)
    elif kind == "asebytes (LMDB)":
        import asebytes

        backend = asebytes.LMDBObjectBackend(str(path))
        for frames in chunks:
            asebytes.ASEIO(backend).extend(frames)
        backend.env.close()
    elif kind == "znh5md":
        import znh5md

        io = znh5md.IO(path)
        for frames in chunks:
            io.extend(frames)
    elif kind == "atompack":
        import atompack

        _patch_atompack_stress()
        db = atompack.Database(str(path), overwrite=True)
        for frames in chunks:
            # copy_arrays=False: with it, 0.4.1 files a per-atom array such as initial_magmoms as a
            # fixed-size per-frame property and fails on the next frame of another atom count.
            atompack.add_ase_batch(db, frames, copy_arrays=False)
        db.flush()
    else:
        raise ValueError(f"no writer for {kind!r}")


def _patch_atompack_stress() -> None:
    """atompack 0.4.1 refuses ASE's 3x3 stress (a transposed, Fortran-ordered view): copy it to C order."""
    from atompack import ase_bridge

    get_stress = ase_bridge._get_stress
    if getattr(get_stress, "patched", False):
        return

    def contiguous(atoms: Atoms) -> np.ndarray | None:
        stress = get_stress(atoms)
        return None if stress is None else np.ascontiguousarray(stress)

    contiguous.patched = True  # type: ignore[attr-defined]
    ase_bridge._get_stress = contiguous


def write_store(kind: str, folder: Path, chunks: Callable[[], Iterator[list[Atoms]]]) -> dict[str, Any]:
    """Write ``chunks()`` into a fresh store of ``kind`` in its own folder; seconds and bytes."""
    (folder / kind).mkdir(parents=True)
    path = folder / kind / f"store{SUFFIXES[kind]}"
    start = time.perf_counter()
    _write(kind, path, chunks())
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (folder / kind).rglob("*") if p.is_file())
    return {"path": str(path), "write_s": seconds, "size_bytes": size}


# -- warm ------------------------------------------------------------------------------------------
def _batch_error(reader: Reader, frames: Sequence[Atoms], idx: np.ndarray) -> dict[str, Any]:
    """Largest |error| of positions and forces in one batch against the frames written."""
    expected_pos = np.concatenate([frames[i].positions for i in idx])
    expected_f = np.concatenate([frames[i].get_forces() for i in idx])
    if reader.kind == "atompack":
        flat = reader.db.get_molecules_flat(idx.tolist())  # type: ignore[attr-defined]
        pos, forces = flat["positions"], flat["forces"]
    else:
        batch = reader.db[idx].to_batch(list(BATCH_KEYS))  # type: ignore[attr-defined]
        pos, forces = batch["arrays.positions"], batch["calc.forces"]
    return {
        "positions_dtype": str(pos.dtype),
        "positions_max_err": float(np.abs(pos - expected_pos).max()),
        "forces_max_err": float(np.abs(forces - expected_f).max()),
    }


def cpu_per_wall(fn: Callable[[], object], at_least_s: float = 0.2) -> float:
    """CPU seconds of this process (all its threads) per wall second while ``fn`` runs,
    repeated for at least ``at_least_s``: 1.0 is one busy thread, more means ``fn`` runs on
    threads of its own (atompack-db's batches run on a Rayon pool, one thread per core)."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall < at_least_s:
        fn()
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def warm(kind: str, path: Path, frames: Sequence[Atoms], repeats: int) -> dict[str, Any]:
    """In-process rates (frames/s) with the store opened untimed; checksums of what was read."""
    n = len(frames)
    indices = random_indices(n, N_RANDOM)
    epoch = batch_indices(n)
    reader = READERS[kind](path)
    try:
        checks = {"read_all": reader.read_all(), "energy": reader.energy()}  # also warms caches
        figures = {
            "read_all_fps": n / best_of(reader.read_all, repeats),
            "random_fps": N_RANDOM / best_of(partial(reader.random, indices), repeats),
            "energy_fps": n / best_of(reader.energy, repeats),
        }
        if kind in OURS or kind == "atompack":
            checks["batches"] = reader.batches(epoch)
            figures["batches_fps"] = n / best_of(partial(reader.batches, epoch), repeats)
            figures["batches_cpu_per_wall"] = cpu_per_wall(partial(reader.batches, epoch))
            figures.update(_batch_error(reader, frames, epoch[0]))
    finally:
        reader.close()
    return {**figures, "checks": checks}


def _guarded(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or ``{"error": ...}`` when it raises: one broken store must not lose the run."""
    start = time.perf_counter()
    try:
        row = fn()
    except Exception:
        row = {"error": traceback.format_exc(limit=-3)}
    _log(f"  {label:<32} {time.perf_counter() - start:6.1f} s{'  ERROR' if 'error' in row else ''}")
    return row


def _training_row(kind: str, frames: list[Atoms], config: Config, folder: Path) -> dict[str, Any]:
    """Write the store (kept for the cold rounds) and its warm figures."""
    store = write_store(kind, folder, lambda: iter([frames]))
    path = Path(store["path"])
    row = {**store, "write_fps": len(frames) / store["write_s"]}
    row["warm"] = warm(kind, path, frames, config.repeats)
    expected = float(sum(a.get_potential_energy() for a in frames))
    row["problems"] = [
        f"{op} checksum {v!r} != {expected!r}"
        for op, v in row["warm"]["checks"].items()
        if not np.isclose(v, expected, rtol=1e-9)
    ]
    return row


def _cold_rounds(
    label: str,
    rows: dict[str, dict[str, Any]],
    specs: dict[str, dict[str, Any]],
    repeats: int,
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """The cold figures of every store written without error (:func:`.cold.rounds`), per kind."""
    start = time.perf_counter()
    paths = {kind: Path(row["path"]) for kind, row in rows.items() if "error" not in row}
    figures = rounds(paths, specs, repeats, timeout)
    _log(f"  {label + ' cold, in rounds':<32} {time.perf_counter() - start:6.1f} s")
    return figures


def bench_training(name: str, frames: list[Atoms], config: Config, workdir: Path) -> dict[str, Any]:
    """Every store of ``config.kinds`` on one dataset: write and warm reads store by store, then
    the cold reads of all of them in alternating rounds."""
    folder = workdir / name
    rows = {
        kind: _guarded(f"{name} {kind}", partial(_training_row, kind, frames, config, folder))
        for kind in config.kinds
    }
    specs = {"first": {}, "random": {"n_rows": len(frames), "count": N_RANDOM}, "energy": {}}
    for kind, figures in _cold_rounds(name, rows, specs, config.cold_repeats, config.scale_timeout).items():
        rows[kind] = figures if "error" in figures else {**rows[kind], "cold": figures}
    shutil.rmtree(folder, ignore_errors=True)
    return {"n_frames": len(frames), "n_atoms": int(sum(len(a) for a in frames)), "stores": rows}


# -- scale (issue 17) ------------------------------------------------------------------------------
def _scale_store(kind: str, n: int, folder: Path) -> dict[str, Any]:
    store = write_store(kind, folder, partial(scaled, n))
    return {"write_fps": n / store["write_s"], "size_bytes": store["size_bytes"], "path": store["path"]}


def bench_scale(n: int, config: Config, workdir: Path) -> dict[str, Any]:
    """Our LMDB, Zarr, H5MD on the generated set of ``n`` frames, every figure cold."""
    folder = workdir / f"scale-{n}"
    n_batches = min(config.scale_batches, -(-n // 32))
    specs = {
        "getitem": {"n_rows": n, "count": config.scale_getitem},
        "batches": {"n_rows": n, "count": n_batches},
        "read_all": {},
        "energy": {},
    }
    rows = {
        kind: _guarded(f"scale-{n} {kind}", partial(_scale_store, kind, n, folder))
        for kind in OURS
        if kind in config.kinds
    }
    cold = _cold_rounds(f"scale-{n}", rows, specs, config.scale_repeats, config.scale_timeout)
    for kind, figures in cold.items():
        rows[kind] = figures if "error" in figures else {**rows[kind], **figures}
        rows[kind].pop("path", None)
    shutil.rmtree(folder, ignore_errors=True)
    count = {"getitem": config.scale_getitem, "batches": min(n_batches * 32, n), "read_all": n, "energy": n}
    return {"n_frames": n, "counts": count, "stores": rows}


# -- run -------------------------------------------------------------------------------------------
def run(config: Config, workdir: Path, scale_only: bool = False) -> dict[str, Any]:
    """Every part of ``config``, as one JSON-ready dict."""
    start = time.perf_counter()
    compile_package()
    kinds = tuple(k for k in config.kinds if available(k))
    skipped = [k for k in config.kinds if k not in kinds]
    config = Config(**{**config.__dict__, "kinds": kinds})
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": os.getloadavg(),
            "cpus": os.cpu_count(),
            "repeats": config.repeats,
            "cold_repeats": config.cold_repeats,
            "scale_repeats": config.scale_repeats,
            "cold_rounds": True,
            "skipped": skipped,
        },
        "training": {},
        "scale": {},
    }
    for name, build, n in () if scale_only else config.datasets:
        _log(f"{name}: building")
        results["training"][name] = bench_training(name, build(n), config, workdir)
    for n in config.scale_sizes:
        _log(f"scale-{n}: building")
        results["scale"][str(n)] = bench_scale(n, config, workdir)
    results["meta"]["load_average_end"] = os.getloadavg()
    results["runtime_seconds"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test's run)")
    parser.add_argument("--scale", default=None, help="issue 17 sizes, comma separated (default 1000,20000)")
    parser.add_argument("--scale-only", action="store_true", help="skip the training sets")
    parser.add_argument("--cold-repeats", type=int, help="fresh processes per cold figure (default 5)")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where training.md/.json go")
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: /tmp)")
    parser.add_argument("--render", type=Path, help="only render this training.json again")
    parser.add_argument(
        "--training-from",
        type=Path,
        help="take the training sets' figures from this training.json, run the scale part",
    )
    args = parser.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    config = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.scale is not None:
        changes["scale_sizes"] = tuple(int(s) for s in args.scale.split(",") if s)
    if args.cold_repeats:
        changes["cold_repeats"] = args.cold_repeats
    if changes:
        config = Config(**{**config.__dict__, **changes})
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="asebytes-training-", dir=args.workdir) as tmp:
        results = run(config, Path(tmp), scale_only=args.scale_only or args.training_from is not None)
    if args.training_from:
        earlier = json.loads(args.training_from.read_text())
        results["training"] = earlier["training"]
        results["meta"]["training_measured"] = earlier["meta"]
    markdown = render(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "training.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "training.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
