"""What Load and Cache share: a ``source`` (a path or URI) copied into the node's store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zntrack

from ._node import FramesNode

__all__ = ["SourceNode", "source_dependency"]


def source_dependency(source: str) -> str | None:
    """The local path DVC should track for ``source``; None for URIs (``hf://...``)."""
    return None if "://" in source else source


class SourceNode(FramesNode):
    """A node that copies ``source`` into its output store; subclasses say how (:meth:`fetch`).

    A local ``source`` path is also a DVC dependency, so editing the file re-runs the stage.
    """

    source: str = zntrack.params()
    config: dict[str, Any] = zntrack.params(default_factory=dict)
    source_file: str | None = zntrack.deps_path(None)
    frames_path: Path | list[Path] = zntrack.outs_path(default_factory=list)

    def configured(self, config: Any) -> None:
        self.source_file = source_dependency(self.source)
        super().configured(config)

    def run(self) -> None:
        config = self.settings()
        if source_dependency(self.source) != self.source_file:
            raise SystemExit(
                f"{self.name}: source is {self.source!r} but the graph tracks {self.source_file!r}; "
                "change the source where the graph is built and build it again"
            )
        target = self.store_target(config)
        with self.stage_errors():
            count = self.fetch(config, target)
        print(f"{self.name}: {count} frames from {self.source} -> {target}")

    def fetch(self, config: Any, target: Path) -> int:
        """Write the source's frames to ``target``; returns the count."""
        raise NotImplementedError
