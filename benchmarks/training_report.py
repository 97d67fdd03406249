"""Markdown report of benchmarks/training.py: tables, and ratios against issues 15 and 17's targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["render"]

#: (dataset part, ours, peer, metric, ratio needed) from issues 15 and 17; ratio = ours' speed / peer's
TRAINING_TARGETS = (
    ("ours (LMDB)", "atompack", "batches", 1.0),
    ("ours (Zarr)", "atompack", "batches", 1.0),
    ("ours (H5MD)", "atompack", "batches", 0.5),
    ("ours (LMDB)", "asebytes (LMDB)", "cold random", 1.0),
    ("ours (LMDB)", "asebytes (LMDB)", "cold energy", 3.0),
    ("ours (Zarr)", "asebytes (LMDB)", "cold random", 1.0),
    ("ours (Zarr)", "asebytes (LMDB)", "cold energy", 1.0),
    ("ours (H5MD)", "znh5md", "cold random", 1.0),
    ("ours (H5MD)", "znh5md", "cold energy", 1.0),
)
SCALE_TARGETS = (
    ("ours (Zarr)", "ours (LMDB)", "getitem", 0.3),
    ("ours (H5MD)", "ours (LMDB)", "getitem", 0.3),
    ("ours (Zarr)", "ours (LMDB)", "batches", 0.5),
    ("ours (H5MD)", "ours (LMDB)", "batches", 0.5),
)


def _ok(stores: dict[str, Any]) -> dict[str, Any]:
    """The rows that were measured (a row that raised is listed under Problems instead)."""
    return {kind: row for kind, row in stores.items() if "error" not in row}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = [header, ["---"] + ["---:"] * (len(header) - 1), *rows]
    return ["| " + " | ".join(line) + " |" for line in lines] + [""]


def _seconds(figure: dict[str, Any]) -> float:
    """A cold figure's median seconds; a timed-out one counts as its timeout (a lower bound)."""
    return figure["seconds"] if figure["seconds"] is not None else figure["timed_out_after"]


def _slow(figure: dict[str, Any]) -> bool:
    return figure.get("seconds", 0) is None


def _rate(value: float, slower: bool = False) -> str:
    text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return f"< {text} (timed out)" if slower else text


def _ms(seconds: float, slower: bool = False) -> str:
    return f"> {seconds * 1e3:,.0f} (timed out)" if slower else f"{seconds * 1e3:,.1f}"


def _speed(row: dict[str, Any], metric: str) -> float | None:
    """Higher-is-faster figure of ``metric`` in a training row (None: not measured)."""
    if metric == "batches":
        return row["warm"].get("batches_fps")
    return 1.0 / _seconds(row["cold"][metric.split()[1]])


def _ratio(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def _verdict(ratio: float, needed: float) -> str:
    return "pass" if ratio >= needed else f"**FAIL** ({_ratio(ratio / needed)} of the target)"


def _training_section(name: str, data: dict[str, Any]) -> list[str]:
    stores = _ok(data["stores"])
    lines = [
        f"## {name} ({data['n_frames']:,} frames, {data['n_atoms']:,} atoms)",
        "",
        "Warm: one process, store opened untimed, best of the repeats; frames/s. Batches: a shuffled",
        "epoch in batches of 32 as flat arrays (positions, numbers, energy, forces); errors: largest",
        "|difference| in one batch against the frames written. CPU/wall: CPU seconds of the process",
        "(all threads) per wall second of batches; above 1, the batches run on more than one core.",
        "",
    ]
    atompack = stores.get("atompack", {}).get("warm", {}).get("batches_fps")
    rows = []
    for kind, row in stores.items():
        w = row["warm"]
        batches = w.get("batches_fps")
        rows.append(
            [
                kind,
                _rate(row["write_fps"]),
                f"{row['size_bytes'] / 1e6:,.2f}",
                _rate(w["read_all_fps"]),
                _rate(w["random_fps"]),
                _rate(w["energy_fps"]),
                "–" if batches is None else _rate(batches),
                "–" if batches is None or not atompack else _ratio(batches / atompack),
                "–" if "batches_cpu_per_wall" not in w else f"{w['batches_cpu_per_wall']:.2f}",
                w.get("positions_dtype", "–"),
                "–" if batches is None else f"{w['positions_max_err']:.1e} / {w['forces_max_err']:.1e}",
            ]
        )
    lines += _table(
        [
            "store",
            "write/s",
            "size MB",
            "read-all/s",
            "100 random/s",
            "energy/s",
            "batches/s",
            "vs atompack",
            "CPU/wall",
            "positions",
            "max err pos / forces",
        ],
        rows,
    )
    lines += [
        "Cold: a fresh process per figure, imports untimed, store opened inside the timing;",
        "median milliseconds.",
        "",
    ]
    rows = [
        [
            kind,
            *(_ms(_seconds(row["cold"][op]), _slow(row["cold"][op])) for op in ("first", "random", "energy")),
        ]
        for kind, row in stores.items()
    ]
    lines += _table(["store", "open + first frame", "open + 100 random", "open + energy column"], rows)
    return lines


def _training_targets(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, data in results["training"].items():
        stores = _ok(data["stores"])
        for ours, peer, metric, needed in TRAINING_TARGETS:
            if ours not in stores or peer not in stores:
                continue
            ratio = _speed(stores[ours], metric) / _speed(stores[peer], metric)  # type: ignore[operator]
            rows.append(
                [
                    name,
                    f"{metric}: {ours} vs {peer}",
                    _ratio(ratio),
                    f"{needed:.1f}",
                    _verdict(ratio, needed),
                ]
            )
    if not rows:
        return []
    return [
        "## Issue 15 targets (speed ratio ours / peer, one run)",
        "",
        *_table(["dataset", "figure", "ratio", "target", "verdict"], rows),
    ]


_ROUNDS = (
    " (cold figures taken in alternating rounds over a dataset's stores, each store's files read"
    " just before its turn)"
)


def _scale_section(results: dict[str, Any]) -> list[str]:
    if not results["scale"]:
        return []
    lines = [
        "## Issue 17: generated periodic sets (8-128 atoms per frame), every figure cold",
        "",
        "Fresh process per figure (store opened inside the timing), median; frames/s except the",
        "energy column (ms). Batches: the first shuffled batches of 32 of an epoch through `to_batch`.",
        "",
    ]
    rows, targets = [], []
    for size, data in results["scale"].items():
        counts = data["counts"]
        for kind, row in _ok(data["stores"]).items():
            fps = {
                op: _rate(counts[op] / _seconds(row[op]), _slow(row[op]))
                for op in ("getitem", "batches", "read_all")
            }
            rows.append(
                [
                    f"{int(size):,}",
                    kind,
                    _rate(row["write_fps"]),
                    f"{row['size_bytes'] / 1e6:,.1f}",
                    fps["getitem"],
                    fps["batches"],
                    fps["read_all"],
                    _ms(_seconds(row["energy"]), _slow(row["energy"])),
                ]
            )
        for ours, peer, op, needed in SCALE_TARGETS:
            stores = _ok(data["stores"])
            if ours in stores and peer in stores:
                ratio = _seconds(stores[peer][op]) / _seconds(stores[ours][op])
                bound = "< " if _slow(stores[ours][op]) else "> " if _slow(stores[peer][op]) else ""
                targets.append(
                    [
                        f"{int(size):,}",
                        f"{op}: {ours} vs {peer}",
                        f"{bound}{_ratio(ratio)}",
                        f"{needed:.1f}",
                        _verdict(ratio, needed),
                    ]
                )
    lines += _table(
        [
            "frames",
            "store",
            "write/s",
            "size MB",
            "1,000 random db[i]/s",
            "batches/s",
            "read-all/s",
            "energy ms",
        ],
        rows,
    )
    return lines + [
        "### Issue 17 targets",
        "",
        *_table(["frames", "figure", "ratio", "target", "verdict"], targets),
    ]


def render(results: dict[str, Any]) -> str:
    """The Markdown report of one run."""
    meta = results["meta"]
    load = ", ".join(f"{x:.1f}" for x in meta["load_average"])
    lines = [
        "# Training reads: batches, cold starts, scale",
        "",
        f"Run {meta['date']}, {meta['cpus']} CPUs, load average at start {load} (other jobs ran on the",
        "machine: compare figures within this run, not across runs). Warm figures: best of "
        f"{meta['repeats']}; cold: median of {meta['cold_repeats']} fresh processes; scale: median of "
        f"{meta['scale_repeats']}{_ROUNDS if meta.get('cold_rounds') else ''}. "
        f"Runtime {results['runtime_seconds']:.0f} s. Load average at the end "
        + ", ".join(f"{x:.1f}" for x in meta.get("load_average_end", ()))
        + ".",
        "",
        'Rerun (`pip install -e ".[bench]"`; stores are built in a temporary folder and removed):',
        "",
        "```bash",
        "python benchmarks/training.py                     # this report: both sets + scale 1k/20k",
        "python benchmarks/training.py --scale 1000,20000,100000 --workdir /tmp   # with issue 17's 100k set",
        "python benchmarks/training.py --render benchmarks/training.json > benchmarks/training.md",
        "```",
        "",
        "atompack-db is written with `add_ase_batch(db, frames, copy_arrays=False)` (with per-atom arrays",
        "copied, 0.4.1 fails on ragged frames) and a C-ordered copy of ASE's 3x3 stress (0.4.1 refuses",
        "ASE's transposed view); its positions and forces are float32, ours keep float64 (errors below).",
        "",
    ]
    if "training_measured" in meta:
        earlier = meta["training_measured"]
        lines += [
            f"The training sets' figures are from an earlier run ({earlier['date']}, load average "
            f"{earlier['load_average'][0]:.1f}); the scale part is from this one.",
            "",
        ]
    if meta["skipped"]:
        lines += [f"Not installed, skipped: {', '.join(meta['skipped'])}.", ""]
    for name, data in results["training"].items():
        lines += _training_section(name, data)
    lines += _training_targets(results)
    lines += _scale_section(results)
    problems = [
        f"- {name} {kind}: {p}"
        for name, data in results["training"].items()
        for kind, row in data["stores"].items()
        for p in row.get("problems", ())
    ]
    problems += [
        f"- {part} {kind}: error\n\n```\n{row['error'].rstrip()}\n```\n"
        for group in ("training", "scale")
        for part, data in results[group].items()
        for kind, row in data["stores"].items()
        if "error" in row
    ]
    if problems:
        lines += ["## Problems", "", *problems, ""]
    return "\n".join(lines)
