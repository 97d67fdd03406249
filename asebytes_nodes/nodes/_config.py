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
    PositiveInt,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from ..bench import Settings
from ..options import BACKEND_OPTIONS as CORE_OPTIONS
from ..options import option_fields

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
    "PartConfig",
    "Sample",
    "SliceSpec",
    "SplitConfig",
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


# -- backend options: Pydantic models derived from asebytes_nodes.options ---------------------
def _derived(options: type[Any]) -> type[_Model]:
    """The Pydantic model of an options dataclass (:mod:`asebytes_nodes.options`): the same
    fields, defaults, descriptions and limits, its cross-field rules run after validation."""
    fields: dict[str, Any] = {}
    for spec in option_fields(options):
        kind: Any = Literal[spec.choices] if spec.choices else spec.kind
        limits = dict(spec.limits)
        if "pattern" in limits:
            limits["pattern"] = f"^(?:{limits['pattern']})$"
        annotation = kind | None if spec.nullable else kind
        fields[spec.name] = (annotation, Field(default=spec.default, description=spec.help, **limits))

    names = [spec.name for spec in option_fields(options)]

    def rules(self: _Model) -> _Model:
        options(**{name: getattr(self, name) for name in names})
        return self

    return create_model(
        options.__name__,
        __base__=_Model,
        __doc__=options.__doc__,
        __module__=__name__,
        __validators__={"rules": model_validator(mode="after")(rules)},  # type: ignore[dict-item]
        **fields,
    )


#: Writable backends a node can write, with the Pydantic model of their options.
BACKEND_OPTIONS: dict[str, type[_Model]] = {name: _derived(cls) for name, cls in CORE_OPTIONS.items()}
LMDBOptions = BACKEND_OPTIONS["lmdb"]
ZarrOptions = BACKEND_OPTIONS["zarr"]
H5MDOptions = BACKEND_OPTIONS["h5md"]


class StoreSpec(_Model):
    """Where a node writes frames: a backend, a group and the backend's options (validated per
    backend). H5MD's ``particles_group`` option is that backend's name for ``group``: it is moved
    to ``group``, so the node reads the frames from the group it wrote them to."""

    backend: Literal[tuple(BACKEND_OPTIONS)] = Field(  # type: ignore[valid-type]
        default="lmdb", description="Backend of the output store."
    )
    group: str | None = Field(
        default=None, description="Group of the store to write the frames to (backends with groups)."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Options of that backend.")

    @model_validator(mode="before")
    @classmethod
    def _particles_group_is_group(cls, data: Any) -> Any:
        """``options.particles_group`` moved to ``group`` (a different ``group`` is refused by
        :meth:`_check_options`); None, H5MD's default, dropped."""
        options = data.get("options") if isinstance(data, dict) and data.get("backend") == "h5md" else None
        if not isinstance(options, dict) or "particles_group" not in options:
            return data  # other backends refuse the option as unknown
        rest = {k: v for k, v in options.items() if k != "particles_group"}
        named, group = options["particles_group"], data.get("group")
        if named is None or group is None or group == named:
            return {**data, "options": rest, "group": group if named is None else named}
        return data

    @field_validator("group")
    @classmethod
    def _check_group(cls, group: str | None, info: ValidationInfo) -> str | None:
        if group is None:
            return None
        from ..backends._base import check_group_name
        from ..errors import InvalidDataError
        from ..registry import list_backends

        backend = info.data.get("backend")
        try:
            check_group_name("the output store (group, or options.particles_group)", group)
        except InvalidDataError as exc:
            raise ValueError(str(exc)) from None
        if backend is not None and not list_backends()[backend].load().supports_groups:
            raise ValueError(f"the {backend} backend has no groups; remove group or choose another backend")
        return group

    @field_validator("options")
    @classmethod
    def _check_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = BACKEND_OPTIONS.get(info.data.get("backend", ""))
        if model is None:  # the backend itself failed validation and is reported
            return options
        # Keep only what the user set: unset options keep the backend's own defaults.
        checked = model.model_validate(options).model_dump(exclude_unset=True)
        if "particles_group" in checked:  # left here by _particles_group_is_group: group differs
            raise ValueError(
                f"particles_group {checked['particles_group']!r} and group {info.data.get('group')!r} "
                "both name the H5MD particle group; give it once, as group"
            )
        return checked


# -- node configurations ---------------------------------------------------------------------
_CHUNK = Field(default=1000, description="Frames per read/write batch; bounds the memory in use.")


class SliceSpec(_Model):
    """A Python slice ``start:stop:step`` over rows."""

    start: int | None = Field(default=None, description="First row (negative counts from the end).")
    stop: int | None = Field(default=None, description="Row to stop before (negative counts from the end).")
    step: PositiveInt | None = Field(default=None, description="Stride.")

    def to_slice(self) -> slice:
        return slice(self.start, self.stop, self.step)

    def picks_none(self, n: int) -> str:
        """Why a slice that picks no row of ``n`` upstream frames is refused."""
        given = (self.start, self.stop) if self.step is None else (self.start, self.stop, self.step)
        shown = ":".join("" if v is None else str(v) for v in given)
        return (
            f"the slice {shown} picks none of the {n} upstream frames (a typo, or a source that shrank); "
            "an empty store is never what a pipeline stage wants"
        )


class _SourceConfig(_Model):
    """What Load and Cache share: how to open the source and the store to write."""

    source_options: dict[str, Any] = Field(
        default_factory=dict, description="Options for opening the source, e.g. {split: train} for hf://."
    )
    store: StoreSpec = Field(default=StoreSpec(), description="Backend of the output store.")
    chunk_size: PositiveInt = _CHUNK


class CacheConfig(_SourceConfig):
    """Configuration of :class:`~asebytes_nodes.nodes.Cache`: the whole source, as it is."""


class LoadConfig(_SourceConfig):
    """Configuration of :class:`~asebytes_nodes.nodes.Load`."""

    split: str | None = Field(
        default=None, description="Dataset split to read (hf://, colabfit://, optimade://)."
    )
    mapping: dict[str, Any] | None = Field(default=None, description="Column mapping for dataset sources.")
    frames: SliceSpec = Field(default=SliceSpec(), description="Range of source frames to keep.")

    def open_options(self) -> dict[str, Any]:
        """``source_options`` with the split and mapping, when set."""
        extra = {k: v for k, v in (("split", self.split), ("mapping", self.mapping)) if v}
        return {**self.source_options, **extra}


class _Sharding(_Model):
    """A sharded output and Dask workers (shared by Convert and Subset)."""

    shards: PositiveInt | str | None = Field(
        default=None,
        description="Write a sharded dataset (a folder of store.backend shards): frames per shard "
        "(100000) or bytes with a unit ('128MiB'); see asebytes_nodes.shards.",
    )
    workers: PositiveInt = Field(default=1, description="Dask worker processes writing the shards.")
    scheduler: str | None = Field(
        default=None, description="Address of a running Dask cluster writing the shards (tcp://host:8786)."
    )

    @field_validator("shards")
    @classmethod
    def _check_shards(cls, shards: int | str | None) -> int | str | None:
        from ..shards import shard_size

        if shards is not None:
            shard_size(shards)  # a ValueError names what is allowed
        return shards

    @property
    def sharded(self) -> bool:
        """Is the output a sharded dataset?"""
        return bool(self.shards or self.workers > 1 or self.scheduler)


class ConvertConfig(_Sharding):
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

    @field_validator("elements")
    @classmethod
    def _known_elements(cls, elements: list[str] | None) -> list[str] | None:
        from ase.data import atomic_numbers

        unknown = [s for s in elements or () if s not in atomic_numbers or s == "X"]
        if unknown:
            raise ValueError(f"unknown chemical symbols {unknown}; write them like 'H', 'Cu'")
        return elements

    @field_validator("has_keys")
    @classmethod
    def _known_keys(cls, keys: list[str] | None) -> list[str] | None:
        for key in keys or ():
            _check_key(key)
        return keys


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


class _RowsConfig(_Model):
    """Rows picked from upstream frames: ``indices`` or ``slice`` (else every row), then ``filters``."""

    indices: list[int] | None = Field(
        default=None, description="Explicit rows (negative counts from the end)."
    )
    slice: SliceSpec | None = Field(default=None, description="A range of rows.")
    filters: Filters = Field(default=Filters(), description="Conditions on each frame.")
    chunk_size: PositiveInt = Field(default=4096, description="Rows per read while filtering and copying.")

    @model_validator(mode="after")
    def _exclusive(self) -> _RowsConfig:
        if self.indices is not None and self.slice is not None:
            raise ValueError("give either indices or slice, not both")
        return self


_MATERIALIZE = Field(default=None, description="Also write the selected frames to a store of this backend.")


class SubsetConfig(_RowsConfig, _Sharding):
    """Configuration of :class:`~asebytes_nodes.nodes.Subset`: picked rows, then optionally a
    seeded ``sample`` of them. To cut data into train/validation/test parts use
    :class:`~asebytes_nodes.nodes.Split` and :class:`~asebytes_nodes.nodes.Part`. With
    ``workers > 1`` or a ``scheduler`` the filters run on Dask, one task per upstream shard
    (or block of rows), and ``materialize`` writes a sharded dataset, as with ``shards``."""

    sample: Sample | None = Field(default=None, description="Seeded random sample of the filtered rows.")
    materialize: StoreSpec | None = _MATERIALIZE

    @model_validator(mode="before")
    @classmethod
    def _no_split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "split" in data:
            raise ValueError(
                "a Subset does not split: one Split node cuts the rows once and a Part node per part "
                "reads its rows, so the parts stay disjoint whatever their parameters"
            )
        return data


class SplitConfig(_RowsConfig):
    """Configuration of :class:`~asebytes_nodes.nodes.Split`: picked rows cut into disjoint parts."""

    fractions: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="Share of the frames in each part, at most 1 in all (cut in alphabetical name order).",
    )
    seed: int = Field(default=0, description="Seed of the shuffle.")

    @field_validator("fractions")
    @classmethod
    def _valid(cls, fractions: dict[str, float]) -> dict[str, float]:
        if not fractions:
            raise ValueError("fractions must name at least one part")
        if sum(fractions.values()) > 1 + 1e-9:
            raise ValueError(f"fractions sum to {sum(fractions.values()):g}, more than 1")
        return fractions

    @field_validator("indices")
    @classmethod
    def _once(cls, indices: list[int] | None) -> list[int] | None:
        """A row listed twice could land in two parts (``-1`` and ``n - 1`` are caught when the
        stage runs, once ``n`` is known)."""
        from collections import Counter

        repeated = sorted(i for i, count in Counter(indices or ()).items() if count > 1)
        if repeated:
            raise ValueError(f"rows {repeated} are listed more than once; a split takes each row once")
        return indices


class PartConfig(_Model):
    """Configuration of :class:`~asebytes_nodes.nodes.Part`: one part of a Split."""

    part: str = Field(description="Name of the part, one of the Split's fractions.")
    materialize: StoreSpec | None = _MATERIALIZE
    chunk_size: PositiveInt = Field(default=4096, description="Rows per read while copying.")


class BenchmarkConfig(_derived(Settings)):  # type: ignore[misc]  # a model made at import
    """Configuration of :class:`~asebytes_nodes.nodes.Benchmark`: the stores to compare, and how
    they are measured (the fields of :class:`asebytes_nodes.bench.Settings`)."""

    backends: dict[str, StoreSpec] = Field(
        default_factory=lambda: {"lmdb": StoreSpec(backend="lmdb"), "zarr": StoreSpec(backend="zarr")},
        min_length=1,
        description="Stores to compare, by label.",
    )

    @field_validator("column")
    @classmethod
    def _known_column(cls, column: str) -> str:
        _check_key(column)
        return column
