"""Measurements: per-backend storage metrics, codec round trip, lookup scaling."""

from __future__ import annotations

import gc
import math
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .datasets import random_indices, tiny
from .peers import Peer

__all__ = ["bench_codec", "bench_dataset", "bench_lookup", "best_of"]

REPEATS = 3
BUDGET_S = 20.0  # a repeat slower than this is not repeated: one run is precise enough


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn: Callable[[], object], repeats: int = REPEATS, budget_s: float = BUDGET_S) -> float:
    """Fastest of up to ``repeats`` runs of ``fn``, in seconds."""
    best = math.inf
    for _ in range(repeats):
        elapsed = _timed(fn)
        best = min(best, elapsed)
        if elapsed > budget_s:
            break
    return best


def _map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def _energies(frames: Sequence[Atoms]) -> np.ndarray:
    return np.array([atoms.get_potential_energy() for atoms in frames])


def _check(peer: Peer, frames: Sequence[Atoms], indices: np.ndarray) -> list[str]:
    """Problems in what ``peer`` reads back (untimed; also warms the store)."""
    expected = _energies(frames)
    problems = []
    everything = peer.read_all()
    if len(everything) != len(frames) or not np.allclose(_energies(everything), expected):
        problems.append(f"read-all returned {len(everything)} frames or wrong energies")
    picked = peer.read_indices(indices)
    if not np.allclose(_energies(picked), expected[indices]):
        problems.append("random reads returned wrong frames")
    first = int(indices[0])
    if not np.allclose(picked[0].get_forces(), frames[first].get_forces()):
        problems.append("forces differ after the round trip")
    if not np.allclose(np.asarray(peer.energies(), dtype=float), expected):
        problems.append("energy column differs")
    return problems


def _write_fresh(
    cls: type[Peer], frames: Sequence[Atoms], workdir: Path, repeats: int
) -> tuple[Peer, float]:
    """Best write time over fresh stores; returns the last store's peer for reading."""
    best = math.inf
    peer: Peer | None = None
    for r in range(repeats):
        if peer is not None:
            shutil.rmtree(peer.path.parent)
        folder = workdir / f"{cls.__name__}-{r}"
        folder.mkdir()
        peer = cls(folder / f"store{cls.suffix}")
        elapsed = _timed(partial(peer.write, frames))
        best = min(best, elapsed)
        if elapsed > BUDGET_S:
            break
    assert peer is not None
    return peer, best


def _bench_peer(
    cls: type[Peer], frames: Sequence[Atoms], indices: np.ndarray, workdir: Path, repeats: int
) -> dict[str, Any]:
    n = len(frames)
    peer, write_s = _write_fresh(cls, frames, workdir, repeats)
    files = peer.files()
    size = None if files is None else sum(p.stat().st_size for p in files)
    peer.open()
    try:
        problems = _check(peer, frames, indices)
        read_s = best_of(peer.read_all, repeats)
        random_s = best_of(partial(peer.read_indices, indices), repeats)
        energy_s = best_of(peer.energies, repeats)
    finally:
        peer.close()
    shutil.rmtree(peer.path.parent)
    return {
        "write_fps": n / write_s,
        "read_all_fps": n / read_s,
        "random_fps": len(indices) / random_s,
        "energy_fps": n / energy_s,
        "size_bytes": size,
        "n_files": None if files is None else len(files),
        "seconds": {"write": write_s, "read_all": read_s, "random": random_s, "energy": energy_s},
        "problems": problems,
    }


def bench_dataset(
    frames: Sequence[Atoms],
    peers: Sequence[type[Peer]],
    workdir: Path,
    n_random: int = 100,
    repeats: int = REPEATS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every metric for every peer on one dataset. Errors of our own code propagate."""
    indices = random_indices(len(frames), n_random)
    results: dict[str, Any] = {}
    for cls in peers:
        start = time.perf_counter()
        try:
            results[cls.name] = _bench_peer(cls, frames, indices, workdir, repeats)
        except Exception:
            if cls.is_ours:
                raise
            results[cls.name] = {"error": traceback.format_exc(limit=4)}
        log(f"  {cls.name:<20} {time.perf_counter() - start:7.1f} s")
    return {
        "n_frames": len(frames),
        "n_atoms_total": int(sum(len(a) for a in frames)),
        "n_random": len(indices),
        "backends": results,
    }


def _keeps_energy(back: Atoms, original: Atoms) -> bool:
    energy = back.calc.results.get("energy") if back.calc is not None else None
    return energy is not None and bool(np.isclose(energy, original.get_potential_energy()))


def _codec_variants() -> dict[str, Callable[[Atoms], Atoms]]:
    import asebytes
    from ase.io.jsonio import decode, encode

    from asebytes_nodes import atoms_to_dict, dict_to_atoms

    return {
        "ours": lambda a: dict_to_atoms(atoms_to_dict(a)),
        "asebytes": lambda a: asebytes.dict_to_atoms(asebytes.atoms_to_dict(a)),
        "ase.io.jsonio": lambda a: decode(encode(a)),
    }


def bench_codec(frames: Sequence[Atoms], repeats: int = 30) -> dict[str, Any]:
    """µs per frame for an Atoms -> plain data -> Atoms round trip, ours vs peers.

    Measured twice: on the frames as given (with a calculator, which ase.io.jsonio drops)
    and on the same frames without calculator (like for like). Variants run interleaved,
    ``repeats`` rounds, fastest round each, so machine noise hits them alike.
    """
    bare = [atoms.copy() for atoms in frames]  # Atoms.copy() leaves the calculator behind
    result: dict[str, Any] = {"n_frames": len(frames)}
    for label, batch in (("with_calc", frames), ("without_calc", bare)):
        variants = _codec_variants()
        best = dict.fromkeys(variants, math.inf)
        for _ in range(repeats):
            for name, roundtrip in variants.items():
                best[name] = min(best[name], _timed(partial(_map, roundtrip, batch)))
        rows = {
            name: {
                "us_per_frame": best[name] / len(batch) * 1e6,
                "keeps_calc_results": _keeps_energy(variants[name](frames[0]), frames[0]),
            }
            for name in variants
        }
        for row in rows.values():
            row["ratio_vs_ours"] = row["us_per_frame"] / rows["ours"]["us_per_frame"]
        result[label] = rows
    return result


def bench_lookup(
    sizes: Sequence[int],
    workdir: Path,
    n_lookups: int = 2000,
    batch: int = 50_000,
    repeats: int = REPEATS,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """µs per ``db[i]`` on our LMDB store grown through ``sizes`` rows of a 2-atom frame."""
    from asebytes_nodes import ASEIO

    frames = tiny(min(batch, max(sizes)))
    path = workdir / "lookup" / "store.lmdb"
    path.parent.mkdir()
    rows = []
    with ASEIO(path) as db:
        for size in sorted(sizes):
            fill_s = 0.0
            while len(db) < size:
                chunk = frames[: min(batch, size - len(db))]
                fill_s += _timed(partial(db.extend, chunk))
            indices = random_indices(size, n_lookups)
            seconds = best_of(partial(_map, db.__getitem__, indices.tolist()), repeats)
            rows.append(
                {
                    "n_rows": size,
                    "us_per_lookup": seconds / len(indices) * 1e6,
                    "n_lookups": len(indices),
                    "fill_seconds": fill_s,
                    "size_bytes": sum(p.stat().st_size for p in path.parent.iterdir()),
                }
            )
            log(f"  {size:>9,} rows: {rows[-1]['us_per_lookup']:.1f} µs/lookup")
    return rows
