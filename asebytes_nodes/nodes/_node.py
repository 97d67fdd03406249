"""What every node shares: a validated configuration and lazy access to its output store.

Reading outputs through the node's state
----------------------------------------
ZnTrack 0.8 gives each node a ``state`` whose ``fs`` is the file system its outputs live
on: plain local files for a node built or run here, and DVC's file system
(``dvc.api.DVCFileSystem``) for ``zntrack.from_rev(name, rev=..., remote=...)``, which reads
the git tree at that revision and the data from the DVC cache or remote. ``state.rev`` and
``state.remote`` are both None in the first case. Our stores need real paths (LMDB maps a
file), so an output at another revision is fetched through ``state.fs.get`` into a temporary
directory, opened read-only there, and deleted when the returned ``ASEIO`` is garbage
collected. A local output is opened read-only in place; reading it changes no byte DVC tracks.
Its side files (LMDB's lock file) are listed in the folder's ``.gitignore`` first if DVC left
them out (an output restored from DVC's run cache), so a read leaves no untracked file.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import zntrack
from zntrack.config import ZNTRACK_LAZY_VALUE, NodeStatusEnum

from ..errors import ASEBytesError, PipelineSourceError, StoreNotFoundError
from ..io import ASEIO
from ..options import store_suffix
from ._ops import git_ignore, keep_ignored

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ._config import StoreSpec

__all__ = ["ConfiguredNode", "FramesNode", "from_rev", "open_output"]

#: Where this project's example builds its graph (named in messages when it exists).
_GRAPH_SCRIPT = "workflows/pipeline.py"


def from_rev(name: str, rev: str | None = None, remote: str | None = None, **kwargs: Any) -> Any:
    """``zntrack.from_rev`` that says what to do when the repository or revision is out of reach.

    ``remote=`` is a git repository (a URL or a path) holding the graph, ``rev=`` a commit, branch
    or tag in it; DVC remotes come from the repository's ``.dvc/config``. DVC reports a wrong
    ``remote=`` (say, a DVC remote's name) as a bare ``CloneError: SCM error``; this raises
    :class:`~asebytes_nodes.errors.PipelineSourceError` saying so instead.
    """
    from dvc.scm import CloneError, RevError

    try:
        return zntrack.from_rev(name, rev=rev, remote=remote, **kwargs)
    except CloneError as exc:
        raise PipelineSourceError(
            f"from_rev({name!r}, remote={remote!r}): cannot clone {remote!r} with git. remote= names "
            "a git repository (a URL such as https://github.com/org/repo or a path to a clone), not "
            "a DVC remote; a DVC remote is configured in the repository's .dvc/config (`dvc remote "
            "add -d NAME URL`) and used without remote=. Leave remote= out to read this repository."
        ) from exc
    except RevError as exc:
        where = "this repository" if remote is None else repr(remote)
        raise PipelineSourceError(
            f"from_rev({name!r}, rev={rev!r}): {where} has no revision {rev!r}; pass a commit, branch "
            "or tag that `git rev-parse` knows there (`git fetch --tags` after a fresh clone)"
        ) from exc


def open_output(node: zntrack.Node, path: str | Path, group: str | None = None) -> ASEIO:
    """A read-only ASEIO over one output store of ``node`` (its ``group``), at the node's revision.

    An output that is not there says what to run: ``dvc pull`` for the workspace, ``dvc fetch``
    for another revision, and what ``remote=`` means.
    """
    state = node.state
    if state.rev is None and state.remote is None:
        if not Path(path).exists():
            raise missing_output(node, path)
        keep_ignored(Path(path))
        return ASEIO(path, readonly=True, group=group)
    key = (id(node), str(path), group)
    known = _COPIES.get(key)
    if known is not None and known[0]() is node and (copied := known[1]()) is not None:
        return copied  # this node's output copied before and still in use: no second copy
    tmp = Path(tempfile.mkdtemp(prefix="asebytes-nodes-"))
    local = tmp / Path(path).name
    try:
        try:
            state.fs.get(Path(path).as_posix(), local.as_posix(), recursive=True)
        except Exception as exc:
            raise missing_output(node, path, exc) from exc
        frames = ASEIO(local, readonly=True, group=group)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weakref.finalize(frames, _discard, frames.backend, tmp)  # views keep frames alive (_View._owner)
    for stale in [k for k, (n, c) in _COPIES.items() if n() is None or c() is None]:
        del _COPIES[stale]
    _COPIES[key] = (weakref.ref(node), weakref.ref(frames))
    return frames


#: (node, output, group) -> the node and its output copied from another revision, both weakly.
_COPIES: dict[tuple[Any, ...], tuple[weakref.ref[Any], weakref.ref[ASEIO]]] = {}


def missing_output(node: zntrack.Node, path: str | Path, exc: Exception | None = None) -> StoreNotFoundError:
    """The error for an output of ``node`` that is not there, saying what to run: ``dvc pull``
    or ``dvc repro`` for the workspace, ``dvc fetch`` for another revision (``exc``: DVC's)."""
    if node.state.rev is None and node.state.remote is None:
        return StoreNotFoundError(
            f"{node.name}: its output {path} is not in this workspace; run `dvc pull {path}` "
            f"to fetch it from the DVC remote (after a fresh clone), or `dvc repro {node.name}` "
            "to make it"
        )
    return StoreNotFoundError(_fetch_hint(node, path, exc or FileNotFoundError(str(path))))


def _fetch_hint(node: zntrack.Node, path: str | Path, exc: Exception) -> str:
    """What to do when DVC cannot fetch an output at another revision."""
    state = node.state
    where = f"revision {state.rev}" if state.rev else "the default branch"
    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    hint = (
        f"{node.name}: DVC cannot fetch its output {path} at {where} ({cause}). DVC reads it from "
        "the local cache, else from the DVC remote configured at that revision: run "
        "`dvc fetch -T` (the data of every tag) or `dvc fetch -A` (of every commit) and read again; "
        "a tag made before the DVC remote was configured has no remote to fetch from"
    )
    if state.remote is not None:
        hint += f"; remote={state.remote!r} must name a git repository (a URL or a path), not a DVC remote"
    return hint


def _discard(backend: Any, tmp: Path) -> None:
    backend.close()
    shutil.rmtree(tmp, ignore_errors=True)


class ConfiguredNode(zntrack.Node):  # type: ignore[misc]  # zntrack has no type hints
    """A node whose ``config`` param is a plain dict checked against a Pydantic model.

    The dict is validated when the node is created (building the graph) and again by
    :meth:`settings` when the stage runs, where it was read back from ``params.yaml``.
    """

    _model: ClassVar[type[BaseModel]]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loading:
            return
        config = self.__dict__["config"]
        if not isinstance(config, self._model):
            config = self._model.model_validate(config)
        self.config = config.model_dump(mode="json")
        self.configured(config)

    def configured(self, config: Any) -> None:
        """Hook run once the configuration is validated, when the graph is built."""

    @property
    def loading(self) -> bool:
        """Is this instance being loaded (``from_rev``, ``zntrack run``) rather than built?"""
        return self.__dict__.get("config") is ZNTRACK_LAZY_VALUE

    @contextmanager
    def stage_errors(self) -> Iterator[None]:
        """Errors of the configuration meeting the data (an index out of range, a key no frame
        carries, an empty sample) raised inside get the node's name; a running stage exits with
        that message alone, as for an invalid config."""
        try:
            yield
        except (ASEBytesError, ValueError) as exc:
            if self.state.state is NodeStatusEnum.RUNNING:
                raise SystemExit(f"{self.name}: {exc}") from exc
            raise

    def settings(self) -> Any:
        """The configuration as a validated model.

        Raises Pydantic's ``ValidationError``; in a running stage (``zntrack run``) the stage
        exits instead with that message alone, not a traceback through ZnTrack's CLI.
        """
        from pydantic import ValidationError

        try:
            return self._model.model_validate(self.config)
        except ValidationError as exc:
            if self.state.state is NodeStatusEnum.RUNNING:
                raise SystemExit(f"{self.name}: invalid config in params.yaml\n{exc}") from exc
            raise


class FramesNode(ConfiguredNode):
    """A configured node that writes frames to ``frames_path`` and reads them as :attr:`frames`.

    The store is named ``<nwd>/frames<ext>`` after the backend the node is configured with
    (:meth:`output_store`), unless ``frames_path`` is given. Subclasses declare the
    ``frames_path`` output field with an empty list as default: "no store" (ZnTrack cannot
    pass None on as a dependency).
    """

    #: The config field that holds the output store.
    _store_field: ClassVar[str] = "store"

    if TYPE_CHECKING:
        frames_path: Path | list[Path]

    def configured(self, config: Any) -> None:
        store = self.output_store(config)
        if store is not None and not self.__dict__.get("frames_path"):
            self.frames_path = zntrack.nwd / f"frames{store_suffix(store.backend)}"

    @property
    def store_path(self) -> Path | None:
        """Path of the output store, or None if the node writes none."""
        path = self.frames_path
        return Path(path) if path else None  # type: ignore[arg-type]

    def output_store(self, config: Any) -> StoreSpec | None:
        """The store this node writes (backend, options, group), or None if it writes none."""
        store: StoreSpec | None = getattr(config, self._store_field)
        return store

    def _raw_store(self) -> dict[str, Any] | None:
        """The output store's settings as ``params.yaml`` has them, before validation."""
        config = self.config if isinstance(self.config, dict) else {}
        if self._store_field in config:
            raw = config[self._store_field]
            return raw if isinstance(raw, dict) else None
        default = self._model.model_fields[self._store_field].get_default(call_default_factory=True)
        return None if default is None else dict(default.model_dump())

    def settings(self) -> Any:
        """The configuration as a validated model, once the output store's name is checked.

        The output's name is fixed in ``dvc.yaml`` when the graph is built, so a backend
        changed later in ``params.yaml`` only is refused first, in one line, before the
        options are checked against the new backend.
        """
        raw = self._raw_store()
        path = self.store_path
        wanted = None if raw is None else str(raw.get("backend", "lmdb"))
        built = None if path is None else path.suffix
        expected = None if wanted is None else _suffix_or_none(wanted)
        if (wanted is None) != (built is None) or (expected and built and built != expected):
            where = _GRAPH_SCRIPT if Path(_GRAPH_SCRIPT).exists() else "the script that builds the graph"
            asked = f"a {wanted} store" if wanted else "no store"
            message = (
                f"{self.name}: params.yaml asks for {asked} but the graph was built with "
                f"{path or 'no output store'}; change it in {where} and run that script again "
                "(output names are part of dvc.yaml)"
            )
            if self.state.state is NodeStatusEnum.RUNNING:
                raise SystemExit(message)
            raise ValueError(message)
        return super().settings()

    def store_target(self, config: Any) -> Path:
        """The output store's path (checked by :meth:`settings`), its folder created."""
        store = self.output_store(config)
        path = self.store_path
        if store is None or path is None:
            raise ValueError(f"{self.name}: this node writes no store")
        path.parent.mkdir(parents=True, exist_ok=True)
        git_ignore(path, store.backend)
        return path

    @property
    def frames(self) -> ASEIO:
        """The output frames as a lazy, read-only ASEIO, at this node's revision."""
        path = self.store_path
        raw = self._raw_store()
        if path is None or raw is None:
            raise ValueError(f"{self.name}: this node writes no frames")
        return open_output(self, path, _written_group(raw))


def _written_group(raw: dict[str, Any]) -> str | None:
    """The group a stage configured with the store settings ``raw`` wrote to: ``group``, or
    H5MD's ``options.particles_group`` in a ``params.yaml`` edited by hand (:class:`StoreSpec`
    moves it to ``group``)."""
    from pydantic import ValidationError

    from ._config import StoreSpec

    try:
        return StoreSpec.model_validate(raw).group
    except ValidationError:  # the stage refused these settings: no store was written with them
        group = raw.get("group")
        return group if isinstance(group, str) else None


def _suffix_or_none(backend: str) -> str | None:
    try:
        return store_suffix(backend)
    except (KeyError, ValueError):  # an unknown backend: Pydantic reports it
        return None
