"""The Part node: one part of a Split, as a selection and optionally a store of its own."""

from __future__ import annotations

from typing import Any

import zntrack

from ..io import ASEIO
from ._config import PartConfig
from ._ops import as_aseio, frames_of
from .subset import SelectionNode

__all__ = ["Part"]


class Part(SelectionNode):
    """One part of a :class:`~asebytes_nodes.nodes.Split`, as ``selection.json`` and optionally a store.

    ``split`` is the Split node; ``config.part`` names the part. A part name the split does
    not have is refused when the graph is built, and again when the stage runs.
    """

    _model = PartConfig

    split: Any = zntrack.deps()

    def configured(self, config: PartConfig) -> None:
        fractions = _split_fractions(self.split)
        if fractions is not None and config.part not in fractions:
            raise ValueError(
                f"{self.name}: part {config.part!r} is not one of the split's {sorted(fractions)}"
            )
        super().configured(config)

    def upstream(self) -> ASEIO:
        return as_aseio(frames_of(self.split.data))

    def run(self) -> None:
        config: PartConfig = self.settings()
        try:
            rows = self.split.part(config.part)
        except KeyError as exc:
            raise SystemExit(f"{self.name}: {exc.args[0]}") from exc
        self.write_selection(self.upstream(), rows, config, digest=self.split.record()["source"])


def _split_fractions(split: Any) -> dict[str, float] | None:
    """The fractions of a Split node being built (None if they cannot be read yet)."""
    config = getattr(split, "__dict__", {}).get("config")
    return config.get("fractions") if isinstance(config, dict) else None
