"""The ``asebytes-nodes`` command: look into, convert, check and benchmark stores of frames.

Every subcommand takes paths or URIs that :class:`~asebytes_nodes.ASEIO` opens. Errors
print one line naming the file and the problem and exit with status 1 (2 for usage
errors); ``--debug`` (before or after the subcommand) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .options import BACKEND_OPTIONS, OptionField, option_fields

__all__ = ["main"]

PROG = "asebytes-nodes"


def _write_flags() -> dict[str, OptionField]:
    """The backend options offered by ``convert``, by option name, from :mod:`asebytes_nodes.options`
    (an option of several backends appears once)."""
    flags: dict[str, OptionField] = {}
    for cls in BACKEND_OPTIONS.values():
        for spec in option_fields(cls):
            flags.setdefault(spec.name, spec)
    return flags


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _store_flags(parser: argparse.ArgumentParser) -> None:
    """How info, show and validate open their store."""
    parser.add_argument("--backend", help="backend name, when the extension is not enough")
    parser.add_argument("--group", help="a group of the store (info lists them)")
    _split_flag(parser)


def _split_flag(parser: argparse.ArgumentParser, of: str = "the dataset") -> None:
    parser.add_argument(
        "--split", metavar="NAME",
        help=f"split of {of} (hf://, colabfit://, optimade://); needed when it has several",
    )  # fmt: skip


def _add_write_flags(parser: argparse.ArgumentParser) -> None:
    owners = {
        name: [b for b, cls in BACKEND_OPTIONS.items() if any(f.name == name for f in option_fields(cls))]
        for name in _write_flags()
    }
    for name, spec in _write_flags().items():
        choices = None
        if spec.choices is not None:
            choices = [*spec.choices, *(["none"] if spec.nullable else [])]
        default = "" if spec.default is None else f" (default {spec.default})"
        text = spec.help.rstrip(".").replace("%", "%%")  # argparse formats help with %
        if spec.kind is bool:  # a switch: absent leaves the backend's default
            parser.add_argument(
                _flag(name), dest=name, action="store_true", default=None,
                help=f"{', '.join(owners[name])}: {text}",
            )  # fmt: skip
            continue
        parser.add_argument(
            _flag(name),
            dest=name,
            type=spec.kind,
            choices=choices,
            default=None,
            help=f"{', '.join(owners[name])}: {text}{default}",
            metavar=None if choices else name.upper(),
        )


def _open(target: str, backend: str | None = None, group: str | None = None, split: str | None = None) -> Any:
    """A store opened read-only; ``split`` is passed to its backend only when given."""
    from .cache import HEADER_KEY, source_of
    from .io import ASEIO

    options = {} if split is None else {"split": split}
    db = ASEIO(target, backend=backend, group=group, readonly=True, **options)
    try:
        cache = db.backend.length_known() and len(db) > 0 and HEADER_KEY in db.backend.columns(0)
    except (OSError, ValueError):  # a damaged first row: validate reports it, others fail on it
        cache = False
    if cache:
        raise ValueError(  # its rows are another store's, in the order first read, after a header row
            f"{target}: a cache_to store of {source_of(db.backend)}, not a dataset; read it as "
            f"ASEIO(<that source>, cache_to={target!r}), or convert the source itself"
        )
    return db


# -- info ----------------------------------------------------------------------------------------
def _size_on_disk(target: str, backend: Any) -> tuple[int, int] | None:
    """(bytes, files) of a local store with its side files, as its backend counts them; None
    for URIs and in-memory stores."""
    from .bench import disk_usage

    path = Path(target).expanduser()
    if "://" in target or not path.exists():
        return None
    return disk_usage(type(backend), path)


def _scan(db: Any, chunk: int = 2_000) -> dict[str, Any]:
    """Atom counts, elements, pbc patterns and cell volumes, read column by column in chunks
    (memory: one chunk's columns), with a progress bar."""
    import numpy as np

    from .indexing import distinct
    from .progress import stepped

    counts: list[np.ndarray] = []
    elements: set[int] = set()
    pbc: dict[str, int] = {}
    volumes: list[np.ndarray] = []
    keys = set(db.columns)
    for start in stepped(len(db), chunk, "reading frames"):
        rows = db[start : start + chunk]
        if "arrays.numbers" in keys:
            ragged = rows["arrays.numbers"].to_ragged()
            counts.append(np.diff(ragged.offsets))
            elements.update(distinct(ragged.values).tolist())
        if "pbc" in keys:
            for value in rows["pbc"].to_list():
                label = "none" if value is None else " ".join("T" if p else "F" for p in value)
                pbc[label] = pbc.get(label, 0) + 1
        if "cell" in keys:
            cells = [c for c in rows["cell"].to_list() if c is not None]
            if cells:
                det = np.abs(np.linalg.det(np.asarray(cells, dtype=float)))
                volumes.append(det[det > 0])
    n = np.concatenate(counts) if counts else np.zeros(0, int)
    vol = np.concatenate(volumes) if volumes else np.zeros(0)
    return {"atoms": n, "elements": sorted(elements), "pbc": pbc, "volumes": vol}


def info(
    target: str, backend: str | None = None, group: str | None = None, split: str | None = None
) -> dict[str, Any]:
    """Everything ``asebytes-nodes info`` reports, as a JSON-ready dict."""
    from ase.data import chemical_symbols

    with _open(target, backend, group, split) as db:
        scan = _scan(db)
        counts, schema, carried = scan["atoms"], db.schema, db.backend.key_counts()
        size = _size_on_disk(target, db.backend)
        atoms = (
            {
                "min": int(counts.min()),
                "mean": float(counts.mean()),
                "max": int(counts.max()),
                "total": int(counts.sum()),
            }
            if len(counts)
            else None
        )
        vol = scan["volumes"]
        return {
            "path": target,
            "backend": db.backend.name,
            "format": db.backend.format_info(),
            "groups": db.list_groups(target, backend),
            "frames": len(db),
            "atoms_per_frame": atoms,
            "elements": [chemical_symbols[z] for z in scan["elements"]],
            "pbc": scan["pbc"],
            "cell": {
                "frames_with_cell": int(len(vol)),
                "volume_min": float(vol.min()) if len(vol) else None,
                "volume_max": float(vol.max()) if len(vol) else None,
            },
            "size_bytes": size[0] if size else None,
            "files": size[1] if size else None,
            "columns": {
                key: {
                    "dtype": col.dtype,
                    "shape": list(col.shape),
                    "per_atom": col.per_atom,
                    "frames": carried.get(key, 0),
                }
                for key, col in schema.items()
            },
        }


def _frames(n: int) -> str:
    return "1 frame" if n == 1 else f"{n:,} frames"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    raise AssertionError("unreachable")


def _print_info(data: dict[str, Any]) -> None:
    fmt = data["format"]
    known = [f"{k} {fmt[k]}" for k in ("format", "version") if fmt.get(k) is not None]
    version = f" ({', '.join(known)})" if known else ""
    atoms = data["atoms_per_frame"]
    lines = [
        ("path", data["path"]),
        ("backend", data["backend"] + version),
        ("frames", f"{data['frames']:,}"),
        ("groups", ", ".join(data["groups"]) or "none"),
        (
            "atoms",
            f"{atoms['min']} / {atoms['mean']:.1f} / {atoms['max']} per frame (min / mean / max), "
            f"{atoms['total']:,} in all"
            if atoms
            else "none",
        ),
        ("elements", " ".join(data["elements"]) or "none"),
        ("pbc", ", ".join(f"[{k}] on {_frames(v)}" for k, v in data["pbc"].items()) or "not stored"),
    ]
    cell = data["cell"]
    if cell["frames_with_cell"]:
        lines.append(
            (
                "cell",
                f"on {_frames(cell['frames_with_cell'])}, volume "
                f"{cell['volume_min']:.4g} to {cell['volume_max']:.4g} Å³",
            )
        )
    else:
        lines.append(("cell", "none"))
    if data["size_bytes"] is not None:
        lines.append(("size", f"{_human_bytes(data['size_bytes'])} in {data['files']} file(s)"))
    for label, value in lines:
        print(f"{label:<10}{value}")
    print("columns")
    width = max([len(k) for k in data["columns"]] + [3])
    print(f"  {'key':<{width}}  {'dtype':<9} {'shape':<10} frames")
    for key, col in data["columns"].items():
        shape = (
            "("
            + ", ".join("n" if s == -1 else str(s) for s in col["shape"])
            + ("," if len(col["shape"]) == 1 else "")
            + ")"
        )
        print(f"  {key:<{width}}  {col['dtype']:<9} {shape:<10} {col['frames']:,}")


# -- show ----------------------------------------------------------------------------------------
def _print_frame(
    target: str, index: int, backend: str | None, group: str | None = None, split: str | None = None
) -> None:
    import numpy as np

    from .rows import atoms_to_dict

    with _open(target, backend, group, split) as db:
        n = len(db)
        atoms = db[index]
        row = atoms_to_dict(atoms)
    print(f"frame {index} of {n:,} in {target}")
    w = max([22, *(len(key) + 2 for key in row)])  # a column as wide as the longest key
    print(f"  {'formula':<{w}}{atoms.get_chemical_formula() or '(empty)'} ({len(atoms)} atoms)")
    with np.printoptions(precision=6, suppress=True, threshold=30, edgeitems=3, linewidth=100):
        for key in sorted(row, key=lambda k: (k.startswith("arrays."), k)):
            value = row[key]
            if isinstance(value, np.ndarray):
                text = np.array2string(value, prefix=" " * (w + 4))
                print(f"  {key:<{w}}{value.dtype}{list(value.shape)}\n{' ' * (w + 4)}{text}")
            else:  # numpy scalars as Python values: -288.75, not np.float64(-288.75)
                print(f"  {key:<{w}}{(value.item() if isinstance(value, np.generic) else value)!r}")


# -- convert -------------------------------------------------------------------------------------
def _convert(args: argparse.Namespace) -> None:
    from .errors import UnknownKeyError
    from .transfer import convert

    options = {name: getattr(args, name) for name in _write_flags() if getattr(args, name) is not None}
    options = {name: None if value == "none" else value for name, value in options.items()}
    shard_frames, shard_bytes = args.shards or (None, None)
    sharded = bool(args.shards or args.workers > 1 or args.scheduler)
    _check_options(args.dst, args.to_backend or ("lmdb" if sharded else None), options)
    if args.to_backend and not sharded:
        options["backend"] = args.to_backend
    source: Any = _open(args.src, args.from_backend, args.from_group, args.split)
    if args.from_group is None and source.backend.length_known() and not len(source):
        groups = source.list_groups(args.src, args.from_backend) if source.backend.supports_groups else []
        if groups:  # its frames are all in groups: copying the empty default store is no conversion
            names = ", ".join(groups)
            raise UnknownKeyError(f"{args.src}: no frames outside its groups ({names}); pass --from-group")
    selected = (args.start, args.stop, args.step) != (None, None, None)
    if selected and source.backend.length_known():
        picked = len(range(len(source))[slice(args.start, args.stop, args.step)])
        if not picked:
            raise ValueError(
                f"{args.src}: --start/--stop/--step select no frames of its {_frames(len(source))}"
            )
    count = convert(
        source,
        args.dst,
        indices=slice(args.start, args.stop, args.step) if selected else None,
        overwrite=args.overwrite,
        destination_options=options,
        chunk_size=args.chunk_size,
        show_progress=False if args.quiet else None,
        backend=args.to_backend if sharded else None,
        shard_frames=shard_frames,
        shard_bytes=shard_bytes,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    if not args.quiet:
        print(f"wrote {_frames(count)} to {args.dst}")


def _at_least_one(text: str) -> int:
    """A whole number of 1 or more (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _backend_list(text: str) -> list[str]:
    """``--backends lmdb,zarr``: the names, each a backend the benchmark measures."""
    backends = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKEND_OPTIONS]
    if unknown or not backends:
        raise argparse.ArgumentTypeError(
            f"takes a comma-separated list of {', '.join(BACKEND_OPTIONS)}; got {text!r}"
        )
    return backends


def _shard_size(text: str) -> tuple[int | None, int | None]:
    """``--shards``: ``100000`` frames per shard, or ``128MiB`` (bytes with a unit) per shard."""
    from .shards import shard_size

    try:
        return shard_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_options(target: str, backend: str | None, options: dict[str, Any]) -> None:
    """Refuse flags the destination's backend does not take, naming those it does, and values
    its options do not allow."""
    from .options import check_options
    from .registry import resolve_backend

    if not options:
        return
    name = resolve_backend(target, backend).name
    taken = [spec.name for spec in option_fields(BACKEND_OPTIONS[name])] if name in BACKEND_OPTIONS else []
    unknown = [option for option in options if option not in taken]
    if unknown:
        raise ValueError(
            f"{target}: the {name} backend takes no {', '.join(map(_flag, unknown))}"
            + (f" (it takes {', '.join(map(_flag, taken))})" if taken else "")
        )
    try:
        check_options(name, options)
    except ValueError as exc:
        raise ValueError(f"{target}: {exc}") from None


# -- validate ------------------------------------------------------------------------------------
def _validate(args: argparse.Namespace) -> int:
    with _open(args.path, args.backend, args.group, args.split) as db:
        problems = db.backend.check()
        n = len(db)
    for problem in problems:
        print(f"{args.path}: {problem}")
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: ok ({_frames(n)}, {db.backend.name} backend)")
    return 0


# -- the parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render help in the docs)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look into, convert, check and benchmark stores of ASE frames "
        "(.lmdb, .zarr, .h5/.h5md, .xyz/.extxyz/.traj, hf://...).",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # --debug after the subcommand too; SUPPRESS keeps the top-level value when it is not given there
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "info",
        parents=[common],
        help="what a store holds: frames, atoms, elements, columns, size",
        description="Summarise a store: backend and format version, frames, atoms per "
        "frame, elements, pbc and cell, every column with dtype, shape and how many "
        "frames carry it, and size on disk.",
    )
    p.add_argument("path", help="path or URI of the store")
    _store_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON for machines")

    p = sub.add_parser(
        "show", parents=[common], help="print one frame", description="Print one frame, key by key."
    )
    p.add_argument("path", help="path or URI of the store")
    p.add_argument("index", type=int, help="frame number (negative counts from the end)")
    _store_flags(p)

    p = sub.add_parser(
        "convert",
        parents=[common],
        help="copy frames into a new store of any backend",
        description="Stream frames from SRC into a new store at DST, in chunks, with a "
        "progress bar. DST is written under a temporary name and moved into place "
        "when complete. The backend of DST follows its extension.",
    )
    p.add_argument("src", help="source path or URI")
    p.add_argument("dst", help="destination path (its extension picks the backend)")
    p.add_argument("--start", type=int, default=None, help="first frame (default 0)")
    p.add_argument("--stop", type=int, default=None, help="stop before this frame (default: the end)")
    p.add_argument("--step", type=int, default=None, help="take every STEP-th frame")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--chunk-size", type=int, default=None, help="frames per write (default 1000+)")
    p.add_argument("--from-backend", help="backend name for SRC")
    p.add_argument("--from-group", help="the group of SRC to read (info SRC lists them)")
    _split_flag(p, "SRC")
    p.add_argument("--to-backend", help="backend name for DST (of its shards, with the flags below)")
    p.add_argument(
        "--shards", type=_shard_size, default=None, metavar="SIZE",
        help="write DST as a folder of shard stores (a sharded dataset): SIZE frames per shard, or "
        "bytes with a unit (128MiB); not Zarr's own --shard-frames inside one store",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=1,
        help="sharded, written by W Dask worker processes on this machine "
        "(pip install 'asebytes-nodes[dask]')",
    )  # fmt: skip
    p.add_argument(
        "--scheduler", default=None,
        help="sharded, on the running Dask cluster at ADDRESS "
        "(tcp://host:8786, e.g. a dask-jobqueue SLURMCluster)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    _add_write_flags(p)

    p = sub.add_parser(
        "validate",
        parents=[common],
        help="check a store's consistency; exit 1 on problems",
        description="Check a store: its layout's own invariants (lengths, offsets, "
        "schema; H5MD conformance for H5MD files) and every frame. Each problem "
        "is printed with its location; the exit status is 0 when there are none.",
    )
    p.add_argument("path", help="path or URI of the store")
    _store_flags(p)

    p = sub.add_parser(
        "bench",
        parents=[common],
        help="benchmark the backends on a file or a built-in dataset",
        description="Write, read all, random reads, energy column and size, for each "
        "backend, on the frames of PATH or on a built-in dataset; prints a table.",
    )
    p.add_argument("path", nargs="?", help="frames to benchmark (default: a built-in dataset)")
    p.add_argument(
        "--dataset",
        choices=("ethanol", "periodic"),
        default="ethanol",
        help="built-in dataset when no PATH is given",
    )
    p.add_argument("--frames", type=_at_least_one, default=1000, help="frames to use (default 1000)")
    _split_flag(p, "PATH")
    every = ",".join(BACKEND_OPTIONS)
    p.add_argument(
        "--backends", type=_backend_list, default=every,
        help=f"comma-separated backends to measure (default {every})",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        data = info(args.path, args.backend, args.group, args.split)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            _print_info(data)
    elif args.command == "show":
        _print_frame(args.path, args.index, args.backend, args.group, args.split)
    elif args.command == "convert":
        _convert(args)
    elif args.command == "validate":
        return _validate(args)
    elif args.command == "bench":
        from .bench import print_bench

        print_bench(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``asebytes-nodes`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:
        if args.debug:
            raise
        message = str(exc) if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError) and exc.args:
            message = str(exc.args[0])
        named = [getattr(args, a, None) for a in ("path", "src", "dst")]
        where = next((w for w in named if w), None)
        if where and not any(form in message for w in named if w for form in _spellings(w)):
            message = f"{where}: {message}"
        print(f"{PROG}: error: {_as_flags(message.splitlines()[0], args.command)}", file=sys.stderr)
        return 1


def _spellings(path: str) -> tuple[str, ...]:
    """How a message may name the path given as ``path`` (``out/`` is ``/abs/out`` there)."""
    if "://" in path:
        return (path,)
    return (path, os.path.normpath(path), os.path.abspath(path))


def _as_flags(message: str, command: str) -> str:
    """A library message's Python keywords (``backend=...``, ``group='A'``) as this command's flags."""
    message = message.replace("drop indices=/chunk_size=", "drop --start/--stop/--step/--chunk-size")
    message = message.replace("overwrite=True (--overwrite)", "--overwrite")
    backend = "--from-backend/--to-backend" if command == "convert" else "--backend"
    message = re.sub(r"\bbackend=(?:\.\.\.|'(\w+)')", lambda m: f"{backend} {m.group(1) or 'NAME'}", message)
    group = "--from-group" if command == "convert" else "--group"  # convert reads a group of SRC
    message = re.sub(r"\bsplit=(?:\.\.\.|'([\w.-]+)')", lambda m: f"--split {m.group(1) or 'NAME'}", message)
    return re.sub(r"\bgroup=(?:\.\.\.|'([\w.-]+)')", lambda m: f"{group} {m.group(1) or 'NAME'}", message)


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
