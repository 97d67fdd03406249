"""Render benchmark results (the dict written to results.json) as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["figure", "render"]

COMPARISONS = (  # (ours, peer): ratios reported when both ran without error
    ("ours (LMDB)", "asebytes (LMDB)"),
    ("ours (Zarr)", "asebytes (Zarr)"),
    ("ours (Zarr)", "asebytes (LMDB)"),
    ("ours (Zarr)", "znh5md"),
    ("ours (H5MD)", "znh5md"),
)
_METRICS = (  # (result key, column title)
    ("write_fps", "write/s"),
    ("read_all_fps", "read-all/s"),
    ("random_fps", "random/s"),
    ("energy_fps", "energy/s"),
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _mb(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:,.2f}"


def _count(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _backend_row(name: str, result: dict[str, Any]) -> list[str]:
    if "error" in result:
        return [name, *["error"] * (len(_METRICS) + 2)]
    rates = (_rate(result[key]) for key, _ in _METRICS)
    return [name, *rates, _mb(result["size_bytes"]), _count(result.get("n_files"))]


def _issue(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error\n```\n{result['error']}```"
    return "; ".join(result["problems"])


def _dataset_section(name: str, data: dict[str, Any]) -> str:
    backends = data["backends"]
    header = ["backend", *(title for _, title in _METRICS), "size MB", "files"]
    table = _table(header, [_backend_row(b, r) for b, r in backends.items()])
    title = (
        f"### {name}: {data['n_frames']:,} frames, {data['n_atoms_total']:,} atoms, "
        f"{data['n_random']} random indices"
    )
    issues = [f"- **{b}**: {_issue(r)}" for b, r in backends.items() if _issue(r)]
    return "\n\n".join([title, table, *(["\n".join(issues)] if issues else [])])


def _ratios_section(datasets: dict[str, Any]) -> str:
    header = ["ours / peer", "dataset", *(title for _, title in _METRICS)]
    rows = []
    for ours_name, peer_name in COMPARISONS:
        for name, data in datasets.items():
            ours, peer = data["backends"].get(ours_name, {}), data["backends"].get(peer_name, {})
            if "error" in ours or "error" in peer or not ours or not peer:
                continue
            ratios = (f"{ours[key] / peer[key]:.2f}×" for key, _ in _METRICS)
            rows.append([f"{ours_name} / {peer_name}", name, *ratios])
    if not rows:
        return ""
    intro = "Throughput of ours divided by the peer's, where both ran: above 1 means ours is faster."
    return "\n\n".join(["## Ratios", intro, _table(header, rows)])


def _codec_section(codec: dict[str, Any]) -> str:
    header = ["frames", "round trip", "µs/frame", "µs / ours µs", "keeps calc results"]
    rows = [
        [
            label.replace("_", " "),
            name,
            f"{row['us_per_frame']:.1f}",
            f"{row['ratio_vs_ours']:.2f}",
            ("yes" if row["keeps_calc_results"] else "no") if label == "with_calc" else "n/a",
        ]
        for label in ("with_calc", "without_calc")
        for name, row in codec[label].items()
    ]
    intro = (
        f"`dict_to_atoms(atoms_to_dict(a))` (ours, asebytes) and `decode(encode(a))` "
        f"(ase.io.jsonio) on {codec['n_frames']:,} ethanol frames, measured first in a fresh "
        "process, variants interleaved, fastest of 30 rounds. With a calculator, ours and "
        "asebytes also carry energy, forces and stress, which ASE's jsonio drops; without "
        "one, all three do the same work."
    )
    return "\n\n".join(["## Codec round trip", intro, _table(header, rows)])


def _lookup_section(rows: list[dict[str, Any]], repeats: int) -> str:
    if not rows:
        return ""
    cells = [
        [
            f"{r['n_rows']:,}",
            f"{r['us_per_lookup']:.1f}",
            f"{r['fill_seconds']:.1f}",
            _mb(r["size_bytes"]),
        ]
        for r in rows
    ]
    table = _table(["rows", "µs/lookup", "fill s", "size MB"], cells)
    intro = (
        f"`db[i]` for {rows[0]['n_lookups']:,} random `i` on our LMDB store of 2-atom frames "
        f"(best of {repeats}); should stay flat as the store grows."
    )
    return "\n\n".join(["## Lookup scaling (ours, LMDB)", intro, table])


def _notes_section(notes: dict[str, str]) -> str:
    lines = [f"- **{name}**: {note}" for name, note in notes.items()]
    return "\n".join(["## How each backend is called", "", *lines])


def _skipped_section(skipped: dict[str, str]) -> str:
    if not skipped:
        return ""
    lines = [f"- **{name}**: {reason}" for name, reason in skipped.items()]
    return "\n".join(["## Skipped backends", "", *lines])


def render(results: dict[str, Any]) -> str:
    """The whole report as one Markdown document."""
    meta = results["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    commit = meta["git"]
    repeats = meta.get("repeats", 3)
    if meta.get("git_at_end", commit) != commit:
        commit += f" (the package changed to {meta['git_at_end']} during the run)"
    head = (
        f"# Storage benchmark ({meta['mode']})\n\n"
        f"{meta['date']} · {meta['platform']} · {meta['cpus']} CPUs · "
        f"Python {meta['python']} · total {results['runtime_seconds']:.0f} s · "
        f"commit {commit}\n\n{versions}\n\n"
        f"Frames per second (higher is better), best of up to {repeats} repeats, warm page cache. "
        "Size and files count every file the store created, recursively (MB = 10^6 bytes; "
        "DVC cost grows with the file count). The machine is noisy: "
        "compare rows within one run, not across runs."
    )
    sections = [head, "## Storage"]
    sections += [_dataset_section(n, d) for n, d in results["datasets"].items()]
    sections += [
        _ratios_section(results["datasets"]),
        _codec_section(results["codec"]),
        _lookup_section(results["lookup_scaling"], repeats),
        _notes_section(results["notes"]),
        _skipped_section(results.get("skipped", {})),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def figure(results: dict[str, Any], path: Any) -> bool:
    """Bar charts (log scale), one row of panels per dataset, saved as a PNG; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    datasets = results["datasets"]
    names = [b for b in next(iter(datasets.values()))["backends"]]
    fig, axes = plt.subplots(
        len(datasets),
        len(_METRICS),
        figsize=(3.4 * len(_METRICS), 0.32 * len(names) * len(datasets) + 1.5),
        squeeze=False,
    )
    for row, (dataset, data) in zip(axes, datasets.items(), strict=True):
        for ax, (key, title) in zip(row, _METRICS, strict=True):
            labels = [b for b in names if "error" not in data["backends"].get(b, {"error": 1})]
            values = [data["backends"][b][key] for b in labels]
            colors = ["tab:orange" if b.startswith("ours") else "tab:gray" for b in labels]
            ax.barh(labels, values, color=colors)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{dataset}: {title}", fontsize=9)
            ax.invert_yaxis()
            ax.tick_params(labelsize=7)
            if ax is not row[0]:
                ax.set_yticklabels([])
    fig.suptitle("frames per second, higher is better (orange: asebytes-nodes)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
