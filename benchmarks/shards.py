"""Benchmark of issue 16: a periodic extxyz converted into sharded LMDB and Zarr with 1 and 2 workers.

    python -m benchmarks.shards --frames 200000 --shard-frames 20000 --backends lmdb zarr
    python -m benchmarks.shards --frames 10000 100000 1000000 --output benchmarks/shards-scaling

The source holds periodic frames of 8-128 atoms with energy, forces, stress and a per-frame
``frame`` number (text blocks of a pool of 1,000 random structures, so writing it is cheap).
Each configuration runs in a fresh process: today's single-store ``convert`` (LMDB), and
``convert_sharded`` with the serial engine (1 worker) and with a ``LocalCluster`` of 2 worker
processes set up as ``convert_sharded(workers=2)`` sets up its own (``shards._engines.local_cluster``;
started before the clock, its start reported apart). Peak memory is the ``VmHWM`` of the
converting process or of each Dask worker (see :func:`_peak_mib`); CPU seconds add the driver's
and the workers' (on a busy machine, frames per CPU second show what wall time hides).
Several ``--frames`` sizes show how time and memory grow; ``--repeat`` keeps the best wall time
of that many runs per configuration (run in rounds of every configuration, so that a drift of
the machine meets them all). The end prints the ratio sharded 1 worker / single-store
``convert`` per size and, on paper, what 10^8 frames cost on 8, 64 and 512 workers
(:func:`estimate`); ``--output PATH`` writes the results (``PATH.json``) and tables (``PATH.md``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_POOL = 1000


def make_source(path: Path, frames: int, seed: int = 7) -> None:
    """An extxyz of ``frames`` periodic frames (8-128 atoms), cycling through a pool of structures."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(_POOL):
        n = int(rng.integers(8, 129))
        cell = np.diag(rng.uniform(8.0, 14.0, 3)) + rng.uniform(-0.5, 0.5, (3, 3))
        atoms = Atoms(rng.integers(1, 84, n), positions=rng.uniform(0, 1, (n, 3)) @ cell, cell=cell, pbc=True)
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=float(rng.normal(-4 * n, 1)),
            forces=rng.normal(0, 0.5, (n, 3)),
            stress=rng.normal(0, 0.01, 6),
        )
        atoms.info["frame"] = -1
        text = io.StringIO()
        ase.io.write(text, atoms, format="extxyz")
        blocks.append(text.getvalue())
    with open(path, "w") as f:
        for i in range(frames):
            f.write(blocks[i % _POOL].replace("frame=-1", f"frame={i}", 1))


def _peak_mib() -> float:
    """This process's peak resident memory: ``VmHWM`` on Linux. Not ``ru_maxrss``, which also
    counts the process image before ``exec``: a Dask worker spawned from a driver holding 400 MiB
    reports 459 MiB there and 62 MiB here (the driver's byte-offset index grows with the frames)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    """One conversion in this process; its wall time and peak memory."""
    from asebytes_nodes import ASEIO
    from asebytes_nodes.shards import convert_sharded
    from asebytes_nodes.transfer import convert

    source, target = config["source"], config["target"]
    len(ASEIO(source))  # the byte-offset index is built (and cached) before the clock starts
    result: dict[str, Any] = dict(config)
    cpu = _cpu_s()
    if config["workers"] == 1:
        start = time.perf_counter()
        if config["mode"] == "single":
            convert(source, target)
        else:
            convert_sharded(source, target, backend=config["backend"], shard_frames=config["shard_frames"])
        result["seconds"] = time.perf_counter() - start
        result["cpu_s"] = _cpu_s() - cpu
        result["peak_mib"] = [_peak_mib()]
        return result
    from distributed import Client

    from asebytes_nodes.shards._engines import local_cluster

    started = time.perf_counter()
    imports = ["asebytes_nodes.shards._convert", f"asebytes_nodes.backends._{config['backend']}"]
    with local_cluster(config["workers"], imports) as cluster:  # the cluster convert_sharded starts
        result["cluster_start_s"] = time.perf_counter() - started
        with Client(cluster) as client:
            worker_cpu, cpu = sum(client.run(_cpu_s).values()), _cpu_s()
            start = time.perf_counter()
            convert_sharded(
                source, target, backend=config["backend"], shard_frames=config["shard_frames"],
                scheduler=cluster.scheduler_address,
            )  # fmt: skip
            result["seconds"] = time.perf_counter() - start
            result["driver_cpu_s"] = _cpu_s() - cpu
            result["cpu_s"] = sum(client.run(_cpu_s).values()) - worker_cpu + result["driver_cpu_s"]
            result["peak_mib"] = sorted(client.run(_peak_mib).values())
    return result


def _run_config(config: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh process (this module with ``--one``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.shards", "--one", json.dumps(config)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = [load, os.getloadavg()[0]]  # 1-minute load average before and after
    target = Path(config["target"])
    if target.is_dir():  # files DVC would track (the manifest, shards, atom counts)
        result["files"] = sum(1 for p in target.rglob("*") if p.is_file())
        result["bytes"] = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        shutil.rmtree(target)
    else:
        result["files"], result["bytes"] = 1, target.stat().st_size
        target.unlink()
    return result


def _index_seconds(source: Path) -> float:
    """Wall time of the driver's one scan of the extxyz (its byte-offset index), cache off."""
    from asebytes_nodes.backends._asefile import ASEFileBackend

    start = time.perf_counter()
    with ASEFileBackend(source, index_cache=False) as db:
        len(db)
    return time.perf_counter() - start


def _measure(frames: int, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    source = folder / f"source-{frames}.extxyz"
    make_source(source, frames)
    index_s = _index_seconds(source)
    configs = [{"mode": "single", "backend": "lmdb", "workers": 1, "shard_frames": None}]
    configs += [
        {"mode": "sharded", "backend": b, "workers": w, "shard_frames": args.shard_frames}
        for b in args.backends
        for w in args.workers
    ]
    size = source.stat().st_size / 2**20
    print(
        f"\n{frames} frames, {size:.0f} MiB of extxyz (index scan {index_s:.1f} s); "
        f"shards of {args.shard_frames}"
    )
    print(_HEADER)
    for k, config in enumerate(configs):
        config.update(
            source=os.fspath(source),
            target=os.fspath(folder / f"out{k}{'.lmdb' if config['mode'] == 'single' else ''}"),
        )
    runs: list[list[dict[str, Any]]] = [[] for _ in configs]
    for round_ in range(args.repeat):  # rounds of every configuration: a drift of the machine meets all
        for k, config in enumerate(configs):
            runs[k].append(_run_config(config))
            if args.repeat > 1:
                print(f"  round {round_ + 1}: {_row({**runs[k][-1], 'frames': frames})}", flush=True)
    results = [min(rs, key=lambda r: r["seconds"]) for rs in runs]  # CPU seconds of that run
    for r in results:
        r.update(frames=frames, index_s=index_s, source_mib=size)
        print(_row(r), flush=True)
    source.unlink()
    single = results[0]
    for r in results[1:]:
        if r["workers"] == 1 and r["backend"] == "lmdb":
            print(
                f"sharded lmdb 1 worker / single-store convert: wall {r['seconds'] / single['seconds']:.3f}, "
                f"CPU s {r['cpu_s'] / single['cpu_s']:.3f}"
            )
    ones = {r["backend"]: r for r in results[1:] if r["workers"] == 1}
    for r in results[1:]:
        if r["workers"] > 1 and r["backend"] in ones:
            print(
                f"sharded {r['backend']} {r['workers']} workers / 1 worker: "
                f"rate {ones[r['backend']]['seconds'] / r['seconds']:.3f}x"
            )
    return results


_HEADER = "{:>9} {:8} {:7} {:>7} {:>9} {:>8} {:>7} {:>6} {:>22}".format(
    "frames", "mode", "backend", "workers", "frames/s", "seconds", "CPU s", "files", "peak MiB per process"
)


def _row(r: dict[str, Any]) -> str:
    extra = f"  load {r['load'][0]:.1f}-{r['load'][1]:.1f}" if "load" in r else ""
    if "cluster_start_s" in r:
        extra += f"  (cluster start {r['cluster_start_s']:.1f} s; driver CPU {r['driver_cpu_s']:.1f} s)"
    peaks = ", ".join(f"{m:.0f}" for m in r["peak_mib"])
    return (
        f"{r['frames']:>9} {r['mode']:8} {r['backend']:7} {r['workers']:>7} "
        f"{r['frames'] / r['seconds']:>9.0f} "
        f"{r['seconds']:>8.1f} {r['cpu_s']:>7.1f} {r['files']:>6} {peaks:>22}{extra}"
    )


def estimate(
    results: list[dict[str, Any]], frames: int = 10**8, workers: tuple[int, ...] = (8, 64, 512)
) -> list[str]:
    """On paper, from the largest measured size: ``frames`` converted by ``workers`` workers.

    Each worker converts shards at the 1-worker sharded rate times the parallel efficiency
    measured with the most workers here (rate of W workers / (W x rate of 1), W counting only
    workers that had a shard; at most 1); the shards go out
    in rounds of ``workers`` (the last round may be part-full); the driver's serial index scan of
    the extxyz and the cluster start come first. DVC tracks one manifest plus, per shard, its
    store's files and its atom-count file (the file counts measured here, per shard). Memory per
    worker is the largest Dask worker's peak in the run with the most workers (a 1-worker run's
    process is also the driver, holding the whole index).
    """
    largest = max(r["frames"] for r in results)
    at = [r for r in results if r["frames"] == largest]
    lines = [
        f"On paper: {frames:.0e} frames, from the {largest}-frame figures "
        f"(index scan {at[0]['index_s'] / largest * frames / 3600:.1f} h in the driver, "
        f"{24 * frames / 2**30:.1f} GiB of index there)",
        "{:7} {:>7} {:>8} {:>10} {:>10} {:>12} {:>10}".format(
            "backend", "workers", "shards", "DVC files", "TiB", "wall h", "MiB/worker"
        ),
    ]
    for backend in sorted({r["backend"] for r in at if r["mode"] == "sharded"}):
        runs = {r["workers"]: r for r in at if r["mode"] == "sharded" and r["backend"] == backend}
        if 1 not in runs:
            continue
        one = runs[1]
        most = max(runs)
        shard_frames = one["shard_frames"]
        shards = -(-frames // shard_frames)
        measured_shards = -(-largest // shard_frames)
        busy = min(most, measured_shards)  # workers that had a shard to write
        efficiency = min(1.0, one["seconds"] / (runs[most]["seconds"] * busy))
        per_shard_s = one["seconds"] * shard_frames / largest / efficiency
        files_per_shard = (one["files"] - 1) / measured_shards
        start_s = max((r.get("cluster_start_s", 0.0) for r in runs.values()), default=0.0)
        for w in workers:
            wall = at[0]["index_s"] / largest * frames + start_s + -(-shards // w) * per_shard_s
            lines.append(
                f"{backend:7} {w:>7} {shards:>8} {int(1 + files_per_shard * shards):>10} "
                f"{one['bytes'] / largest * frames / 2**40:>10.2f} {wall / 3600:>12.2f} "
                f"{max(max(r['peak_mib']) for w_, r in runs.items() if w_ == most):>10.0f}"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="+", type=int, default=[200_000], help="one or more sizes")
    parser.add_argument("--shard-frames", type=int, default=20_000)
    parser.add_argument("--backends", nargs="+", default=["lmdb", "zarr"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per configuration; the best wall time counts"
    )
    parser.add_argument("--output", type=Path, help="also write the results here (.json) and the table (.md)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        results = [r for frames in args.frames for r in _measure(frames, args, folder)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    paper = estimate(results)
    print("\n" + "\n".join(paper))
    if args.output:
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
        table = [_HEADER, *map(_row, results), "", *paper]
        args.output.with_suffix(".md").write_text("```\n" + "\n".join(table) + "\n```\n")


if __name__ == "__main__":
    main()
