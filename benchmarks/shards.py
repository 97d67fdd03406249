"""Benchmark of issue 16: a periodic extxyz converted into sharded LMDB and Zarr with 1 and 2 workers.

    python -m benchmarks.shards --frames 200000 --shard-frames 20000 --backends lmdb zarr

The source holds periodic frames of 8-128 atoms with energy, forces, stress and a per-frame
``frame`` number (text blocks of a pool of 1,000 random structures, so writing it is cheap).
Each configuration runs in a fresh process: today's single-store ``convert`` (LMDB), and
``convert_sharded`` with the serial engine (1 worker) and with a ``LocalCluster`` of 2 worker
processes set up as ``convert_sharded(workers=2)`` sets up its own (``shards._engines.local_cluster``;
started before the clock, its start reported apart). Peak
memory is the ``ru_maxrss`` of the converting process or of each Dask worker; CPU seconds add
the driver's and the workers' (on a busy machine, frames per CPU second show what wall time hides).
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


def _maxrss_mib() -> float:
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
        result["peak_mib"] = [_maxrss_mib()]
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
            result["peak_mib"] = sorted(client.run(_maxrss_mib).values())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--shard-frames", type=int, default=20_000)
    parser.add_argument("--backends", nargs="+", default=["lmdb", "zarr"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        source = folder / "source.extxyz"
        make_source(source, args.frames)
        configs = [{"mode": "single", "backend": "lmdb", "workers": 1, "shard_frames": None}]
        configs += [
            {"mode": "sharded", "backend": b, "workers": w, "shard_frames": args.shard_frames}
            for b in args.backends
            for w in args.workers
        ]
        size = source.stat().st_size / 2**20
        print(f"{args.frames} frames, {size:.0f} MiB of extxyz; shards of {args.shard_frames}")
        header = ("mode", "backend", "workers", "frames/s", "seconds", "CPU s", "peak MiB per process")
        print("{:8} {:7} {:>7} {:>9} {:>8} {:>7} {:>22}".format(*header))
        for k, config in enumerate(configs):
            config.update(
                source=os.fspath(source),
                target=os.fspath(folder / f"out{k}{'.lmdb' if config['mode'] == 'single' else ''}"),
            )
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
            }
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.shards", "--one", json.dumps(config)],
                capture_output=True, text=True, check=True, env=env,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            extra = ""
            if "cluster_start_s" in r:
                extra = (
                    f"  (cluster start {r['cluster_start_s']:.1f} s; driver CPU {r['driver_cpu_s']:.1f} s)"
                )
            peaks = ", ".join(f"{m:.0f}" for m in r["peak_mib"])
            print(
                f"{r['mode']:8} {r['backend']:7} {r['workers']:>7} {args.frames / r['seconds']:>9.0f} "
                f"{r['seconds']:>8.1f} {r['cpu_s']:>7.1f} {peaks:>22}{extra}",
                flush=True,
            )
            shutil.rmtree(folder / f"out{k}", ignore_errors=True)
            Path(folder / f"out{k}.lmdb").unlink(missing_ok=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
