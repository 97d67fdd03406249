"""Write options of the backends that nodes, the command line and the benchmark write: declared once.

Each backend's options are a frozen dataclass whose fields carry a help text and their
allowed values (:func:`option`). From these descriptions

* ``asebytes-nodes convert`` makes its flags (``--compressor``, ``--clevel``...),
* ``asebytes-nodes bench`` and the benchmark take their list of backends (:data:`BACKEND_OPTIONS`),
* :mod:`asebytes_nodes.nodes` derives its Pydantic models (``ZarrOptions``...).

The descriptions need no pydantic, so the core command line does not either. A field left
at ``None`` means "the backend's own default"; an options dict holds only what a user set.

>>> check_options("zarr", {"compressor": "zstd", "clevel": 12})
Traceback (most recent call last):
...
ValueError: clevel 12 is above 9, the maximum for 'zstd'
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "BACKEND_OPTIONS",
    "BLOSC_COMPRESSORS",
    "ZARR_COMPRESSORS",
    "H5MDOptions",
    "LMDBOptions",
    "OptionField",
    "Options",
    "StoreLike",
    "ZarrOptions",
    "check_options",
    "constructor_options",
    "option",
    "option_fields",
    "store_suffix",
    "unknown_options",
]

#: Compressors the Zarr backend runs inside Blosc (with byte shuffle).
BLOSC_COMPRESSORS = ("lz4", "lz4hc", "zstd", "zlib", "blosclz")
#: Every compressor name the Zarr backend takes (``None`` for no compression).
ZARR_COMPRESSORS = (*BLOSC_COMPRESSORS, "gzip", "zstd-raw")


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    pattern: str | None = None,
) -> Any:
    """A dataclass field of an options class: its default, help text and allowed values."""
    limits = {"choices": choices, "ge": ge, "le": le, "gt": gt, "pattern": pattern}
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class OptionField:
    """One option as the command line and the Pydantic models see it."""

    name: str
    kind: type  # int, float, str or bool
    nullable: bool
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    limits: dict[str, Any]  # ge / le / gt / pattern that are set


class Options:
    """Base of an options dataclass: checks every field's allowed values, then :meth:`check`."""

    def __post_init__(self) -> None:
        for spec in option_fields(type(self)):
            value = getattr(self, spec.name)
            if value is None:
                if not spec.nullable:
                    raise ValueError(f"{spec.name} must be set")
                continue
            _check_value(spec, value)
        self.check()

    def check(self) -> None:
        """Rules between fields; raises ValueError."""


def _check_value(spec: OptionField, value: Any) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{spec.name} is {value!r}; use one of {', '.join(map(repr, spec.choices))}")
    limits = spec.limits
    if "ge" in limits and value < limits["ge"]:
        raise ValueError(f"{spec.name} is {value}, below {limits['ge']} ({spec.help.rstrip('.')})")
    if "le" in limits and value > limits["le"]:  # the help says where a limit depends on another option
        raise ValueError(f"{spec.name} is {value}, above {limits['le']} ({spec.help.rstrip('.')})")
    if "gt" in limits and value <= limits["gt"]:
        raise ValueError(f"{spec.name} is {value}; it must be greater than {limits['gt']}")
    if "pattern" in limits and not re.fullmatch(limits["pattern"], str(value)):
        raise ValueError(f"{spec.name} {value!r} does not match {limits['pattern']}")


@dataclass(frozen=True, kw_only=True)
class LMDBOptions(Options):
    """Options of the LMDB backend."""

    map_size: int = option(0, "Initial address space in bytes; 0 lets the backend choose.", ge=0)


@dataclass(frozen=True, kw_only=True)
class ZarrOptions(Options):
    """Options of the Zarr backend: compression, chunk and shard sizes."""

    compressor: str | None = option(
        "lz4",
        "Codec: Blosc with the named compressor, 'gzip', plain 'zstd-raw', or none.",
        choices=ZARR_COMPRESSORS,
    )
    clevel: int = option(5, "Compression level (0-9; up to 22 for 'zstd-raw').", ge=0, le=22)
    compress_all: bool = option(
        False, "Keep the compressor on arrays it shrinks by under 10% (smallest store, slower reads)."
    )
    chunk_frames: int | None = option(None, "Rows per chunk (default: from chunk_bytes).", gt=0)
    shard_frames: int | None = option(None, "Rows per shard file (default: from shard_bytes).", gt=0)
    chunk_bytes: int = option(
        8 << 10, "Target bytes per chunk (per-frame values of over 8 bytes: up to 8 times this).", gt=0
    )
    shard_bytes: int = option(16 << 20, "Target bytes per shard file.", gt=0)

    def check(self) -> None:
        if self.compressor in (*BLOSC_COMPRESSORS, "gzip") and self.clevel > 9:
            raise ValueError(f"clevel {self.clevel} is above 9, the maximum for {self.compressor!r}")
        if self.chunk_frames and self.shard_frames and self.shard_frames < self.chunk_frames:
            raise ValueError("shard_frames must be at least chunk_frames")
        if self.shard_bytes < self.chunk_bytes:
            raise ValueError("shard_bytes must be at least chunk_bytes")


@dataclass(frozen=True, kw_only=True)
class H5MDOptions(Options):
    """Options of the H5MD backend; unset ones keep the backend's defaults."""

    author_name: str | None = option(None, "Author recorded in the file's /h5md group.")
    author_email: str | None = option(None, "Author e-mail recorded in the /h5md group.")
    compression: str | None = option(
        None,
        "HDF5 filter of the datasets (the backend's default: gzip), or none.",
        choices=("gzip", "lzf"),
    )
    compression_opts: int | None = option(None, "gzip level.", ge=0, le=9)
    particles_group: str | None = option(None, "Name of the group under /particles.", pattern=r"[^/]+")
    timestep: float | None = option(None, "Time between frames, in fs.", gt=0)

    def check(self) -> None:
        if self.compression_opts is not None and self.compression == "lzf":
            raise ValueError("compression_opts (the gzip level) does not apply to lzf")


#: Backends that nodes, ``convert`` and the benchmark write, with the description of their options.
BACKEND_OPTIONS: dict[str, type[Options]] = {"lmdb": LMDBOptions, "zarr": ZarrOptions, "h5md": H5MDOptions}


def option_fields(cls: type) -> list[OptionField]:
    """The options of one options class, with their plain type resolved from the annotation."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        args = typing.get_args(hints[item.name])
        nullable = isinstance(hints[item.name], types.UnionType) and type(None) in args
        kind = next(a for a in args if a is not type(None)) if nullable else hints[item.name]
        meta = item.metadata
        limits = {k: meta[k] for k in ("ge", "le", "gt", "pattern") if meta.get(k) is not None}
        found.append(
            OptionField(item.name, kind, nullable, item.default, meta["help"], meta["choices"], limits)
        )
    return found


def check_options(backend: str, options: Mapping[str, Any]) -> None:
    """Refuse options that ``backend`` does not take or values it does not allow (ValueError)."""
    cls = BACKEND_OPTIONS.get(backend)
    if cls is None:
        raise ValueError(f"unknown backend {backend!r} to write; use one of {', '.join(BACKEND_OPTIONS)}")
    known = [spec.name for spec in option_fields(cls)]
    unknown = [name for name in options if name not in known]
    if unknown:
        raise ValueError(f"the {backend} backend takes no {', '.join(unknown)}; it takes {', '.join(known)}")
    cls(**options)


class StoreLike(Protocol):
    """A store to write: a backend name and the options set for it (``nodes.StoreSpec`` is one)."""

    @property
    def backend(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


def store_suffix(backend: str) -> str:
    """The file extension that the registry maps to ``backend`` alone (``.h5md``, not ``.h5``)."""
    from .registry import list_backends

    table = list_backends()
    for ext in table[backend].extensions:
        if sum(ext in entry.extensions for entry in table.values()) == 1:
            return ext
    raise ValueError(f"the {backend!r} backend has no extension of its own; name the output explicitly")


def constructor_options(cls: type) -> list[str]:
    """Keyword options a backend's constructor takes (besides ``readonly``)."""
    import inspect

    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "readonly"]


def unknown_options(cls: type, options: Mapping[str, Any]) -> list[str]:
    """The names in ``options`` a backend's constructor does not take (none if it takes ``**``)."""
    import inspect

    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    known = {p.name for p in params}
    return [name for name in options if name not in known]
