"""Pydantic models that configure the nodes.

A node keeps its configuration in ``params.yaml`` as a plain dict (ZnTrack writes params with
``yaml.safe_dump``, which cannot represent a model). The node validates that dict against the
models below twice: when the graph is built and again when the stage runs, so a bad value set
by hand or by ``dvc exp run -S`` fails with Pydantic's message naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "BACKEND_OPTIONS",
    "BenchmarkConfig",
    "CacheConfig",
    "ConvertConfig",
    "Filters",
    "H5MDOptions",
    "LMDBOptions",
    "LoadConfig",
    "Range",
    "Sample",
    "SliceSpec",
    "Split",
    "StoreSpec",
    "SubsetConfig",
    "ZarrOptions",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_key(key: str) -> None:
    """A flat-namespace key, reported as a ValueError so that Pydantic names the field."""
    from ..errors import UnknownKeyError
    from ..validation import check_key

    try:
        check_key(key)
    except UnknownKeyError as exc:
        raise ValueError(str(exc)) from None


# -- backend options -------------------------------------------------------------------------
class LMDBOptions(_Model):
    """Options of the LMDB backend."""

    map_size: int = Field(
        default=0, ge=0, description="Initial address space in bytes; 0 lets the backend choose."
    )


_BLOSC = ("lz4", "lz4hc", "zstd", "zlib", "blosclz")


class ZarrOptions(_Model):
    """Options of the Zarr backend: compression, chunk and shard sizes."""

    compressor: Literal["lz4", "lz4hc", "zstd", "zlib", "blosclz", "gzip", "zstd-raw"] | None = Field(
        default="lz4",
        description="Codec: Blosc with the named compressor, 'gzip', plain 'zstd-raw', or null.",
    )
    clevel: int = Field(
        default=5, ge=0, le=22, description="Compression level (0-9; up to 22 for 'zstd-raw')."
    )
    chunk_frames: PositiveInt | None = Field(
        default=None, description="Rows per chunk (default: from chunk_bytes)."
    )
    shard_frames: PositiveInt | None = Field(
        default=None, description="Rows per shard (default: from shard_bytes)."
    )
    chunk_bytes: PositiveInt = Field(default=64 << 10, description="Target bytes per chunk.")
    shard_bytes: PositiveInt = Field(default=32 << 20, description="Target bytes per shard file.")

    @model_validator(mode="after")
    def _consistent(self) -> ZarrOptions:
        if self.compressor in (*_BLOSC, "gzip") and self.clevel > 9:
            raise ValueError(f"clevel {self.clevel} is above 9, the maximum for {self.compressor!r}")
        if self.chunk_frames and self.shard_frames and self.shard_frames < self.chunk_frames:
            raise ValueError("shard_frames must be at least chunk_frames")
        if self.shard_bytes < self.chunk_bytes:
            raise ValueError("shard_bytes must be at least chunk_bytes")
        return self


class H5MDOptions(_Model):
    """Options of the H5MD backend; unset ones keep the backend's defaults."""

    author_name: str | None = Field(default=None, description="Author recorded in the file's /h5md group.")
    author_email: str | None = Field(default=None, description="Author e-mail recorded in the /h5md group.")
    compression: Literal["gzip", "lzf"] | None = Field(
        default=None, description="HDF5 filter of the datasets (the backend's default: gzip); null for none."
    )
    compression_opts: int | None = Field(default=None, ge=0, le=9, description="gzip level.")
    particles_group: str | None = Field(
        default=None, pattern=r"^[^/]+$", description="Name of the group under /particles."
    )
    timestep: PositiveFloat | None = Field(default=None, description="Time between frames, in fs.")

    @model_validator(mode="after")
    def _level_needs_gzip(self) -> H5MDOptions:
        if self.compression_opts is not None and self.compression == "lzf":
            raise ValueError("compression_opts (the gzip level) does not apply to lzf")
        return self


#: Writable backends a node can write, with the model of their options.
BACKEND_OPTIONS: dict[str, type[_Model]] = {"lmdb": LMDBOptions, "zarr": ZarrOptions, "h5md": H5MDOptions}


class StoreSpec(_Model):
    """Where a node writes frames: a backend and its options (validated per backend)."""

    backend: Literal["lmdb", "zarr", "h5md"] = Field(
        default="lmdb", description="Backend of the output store."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Options of that backend.")

    @field_validator("options")
    @classmethod
    def _check_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = BACKEND_OPTIONS.get(info.data.get("backend", ""))
        if model is None:  # the backend itself failed validation and is reported
            return options
        # Keep only what the user set: unset options keep the backend's own defaults.
        return model.model_validate(options).model_dump(exclude_unset=True)


# -- node configurations ---------------------------------------------------------------------
_CHUNK = Field(default=1000, description="Frames per read/write batch; bounds the memory in use.")


class CacheConfig(_Model):
    """Configuration of :class:`~asebytes_nodes.nodes.Cache`."""

    source_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for opening the source, e.g. {split: train} for hf://."
    )
    store: StoreSpec = Field(default=StoreSpec(), description="Backend of the local copy.")
    chunk_size: PositiveInt = _CHUNK


class SliceSpec(_Model):
    """A Python slice ``start:stop:step`` over rows."""

    start: int | None = Field(default=None, description="First row (negative counts from the end).")
    stop: int | None = Field(default=None, description="Row to stop before (negative counts from the end).")
    step: PositiveInt | None = Field(default=None, description="Stride.")

    def to_slice(self) -> slice:
        return slice(self.start, self.stop, self.step)


class LoadConfig(CacheConfig):
    """Configuration of :class:`~asebytes_nodes.nodes.Load`."""

    split: str | None = Field(
        default=None, description="Dataset split to read (hf://, colabfit://, optimade://)."
    )
    mapping: dict[str, Any] | None = Field(default=None, description="Column mapping for dataset sources.")
    frames: SliceSpec = Field(default=SliceSpec(), description="Range of source frames to keep.")


class ConvertConfig(_Model):
    """Configuration of :class:`~asebytes_nodes.nodes.Convert`."""

    store: StoreSpec = Field(default=StoreSpec(), description="Backend and options of the output.")
    chunk_size: PositiveInt = _CHUNK


class Range(_Model):
    """A closed interval; either end may be left open."""

    min: float | None = Field(default=None, description="Lowest allowed value (inclusive).")
    max: float | None = Field(default=None, description="Highest allowed value (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Filters(_Model):
    """Conditions every selected frame meets; unset ones select everything."""

    n_atoms: Range | None = Field(default=None, description="Allowed atom counts.")
    elements: list[str] | None = Field(default=None, description="Chemical symbols a frame may contain.")
    energy_per_atom: Range | None = Field(default=None, description="Allowed calc.energy / atoms (eV/atom).")
    max_force: float | None = Field(
        default=None, gt=0, description="Largest allowed per-atom force norm (eV/Å)."
    )
    has_keys: list[str] | None = Field(
        default=None, description="Keys every frame must carry, e.g. calc.forces."
    )

    @model_validator(mode="after")
    def _known(self) -> Filters:
        from ase.data import atomic_numbers

        unknown = [s for s in self.elements or () if s not in atomic_numbers or s == "X"]
        if unknown:
            raise ValueError(f"unknown chemical symbols {unknown}; write them like 'H', 'Cu'")
        for key in self.has_keys or ():
            _check_key(key)
        return self


class Sample(_Model):
    """A seeded random sample of ``n`` frames or of a ``fraction`` of them."""

    n: PositiveInt | None = Field(default=None, description="Number of frames to draw.")
    fraction: float | None = Field(default=None, gt=0, le=1, description="Share of the frames to draw.")
    seed: int = Field(default=0, description="Seed of the random generator.")

    @model_validator(mode="after")
    def _one(self) -> Sample:
        if (self.n is None) == (self.fraction is None):
            raise ValueError("give exactly one of n and fraction")
        return self


class Split(_Model):
    """A seeded split into named parts by fraction; the node keeps ``part``."""

    fractions: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="Share of the frames in each part, at most 1 in all (cut in alphabetical name order).",
    )
    part: str = Field(default="train", description="The part this node selects.")
    seed: int = Field(
        default=0, description="Seed of the shuffle; every part of one split must use the same."
    )

    @model_validator(mode="after")
    def _valid(self) -> Split:
        if not self.fractions:
            raise ValueError("fractions must name at least one part")
        if sum(self.fractions.values()) > 1 + 1e-9:
            raise ValueError(f"fractions sum to {sum(self.fractions.values()):g}, more than 1")
        if self.part not in self.fractions:
            raise ValueError(f"part {self.part!r} is not one of {sorted(self.fractions)}")
        return self


class SubsetConfig(_Model):
    """Configuration of :class:`~asebytes_nodes.nodes.Subset`.

    Rows are picked in this order: ``indices`` or ``slice`` (else every row), then
    ``filters``, then ``sample`` or ``split``.
    """

    indices: list[int] | None = Field(
        default=None, description="Explicit rows (negative counts from the end)."
    )
    slice: SliceSpec | None = Field(default=None, description="A range of rows.")
    filters: Filters = Field(default=Filters(), description="Conditions on each frame.")
    sample: Sample | None = Field(default=None, description="Seeded random sample of the filtered rows.")
    split: Split | None = Field(
        default=None, description="Seeded train/validation/test split of the filtered rows."
    )
    materialize: StoreSpec | None = Field(
        default=None, description="Also write the selected frames to a store of this backend."
    )
    chunk_size: PositiveInt = Field(default=4096, description="Rows per read while filtering and copying.")

    @model_validator(mode="after")
    def _exclusive(self) -> SubsetConfig:
        if self.indices is not None and self.slice is not None:
            raise ValueError("give either indices or slice, not both")
        if self.sample is not None and self.split is not None:
            raise ValueError("give either sample or split, not both")
        return self


class BenchmarkConfig(_Model):
    """Configuration of :class:`~asebytes_nodes.nodes.Benchmark`."""

    backends: dict[str, StoreSpec] = Field(
        default_factory=lambda: {"lmdb": StoreSpec(backend="lmdb"), "zarr": StoreSpec(backend="zarr")},
        min_length=1,
        description="Stores to compare, by label.",
    )
    max_frames: PositiveInt | None = Field(default=None, description="Use at most this many upstream frames.")
    n_random: PositiveInt = Field(default=200, description="Frames read one by one in random order.")
    repeats: PositiveInt = Field(default=3, description="Read timings are the best of this many runs.")
    seed: int = Field(default=0, description="Seed of the random read order.")
    column: str = Field(default="calc.energy", description="Key read as one column.")
    chunk_size: PositiveInt = _CHUNK

    @model_validator(mode="after")
    def _known_column(self) -> BenchmarkConfig:
        _check_key(self.column)
        return self
