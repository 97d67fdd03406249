"""The backend registry: one table, one line per backend, resolved in a fixed order.

``open_backend(target)`` turns a backend-like value into a backend instance:

1. a backend instance is used as it is;
2. an explicit ``backend="name"`` argument picks that backend;
3. a URI scheme (``lmdb://``, ``memory://``, ``hf://`` ...) picks the backend registered for it;
4. a file extension registered by exactly one backend picks that backend;
5. an extension shared by several backends (``.h5``) is decided by each backend's
   content sniffer on an existing file, else the first one registered for it;
6. an existing file with an unregistered extension goes to the first *fallback*
   backend whose sniffer accepts it (ASE's reader, for every format ``ase.io`` reads
   without running code or touching other files; it refuses the others, such as Python
   source, with ``UnsafeStoreError`` saying why: see ``_asefile.UNSAFE_FORMATS``);
7. anything else is an error that lists what is registered.

Objects that are not paths (a ``datasets.Dataset``, say) go to the first backend
whose ``accepts(obj)`` predicate says yes.

Third-party backends register through the ``asebytes_nodes.backends`` entry-point
group: the entry point names a :class:`BackendEntry` or a backend class with
``name``, ``extensions`` and ``schemes`` attributes (a class that does not set its own
``name`` is registered under the entry point's). Entry points are read once per
process, and only when steps 2-5 find nothing in the table as it stands (before the
fallback of step 6), so opening a built-in store never pays for discovery;
:func:`list_backends` reads them too. A plugin that fails to load is skipped with a warning,
and a plugin's ``sniff`` or ``accepts`` hook that raises is taken as "not mine", with a warning
once per plugin and error type (a built-in hook's error propagates: some refuse a file on purpose).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import BackendNotFoundError, InvalidDataError, MissingExtraError, UnsupportedOperationError

if TYPE_CHECKING:
    from .backends._base import ReadableBackend

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendEntry",
    "keep_until_opened",
    "list_backends",
    "open_backend",
    "register_backend",
    "resolve_backend",
]

ENTRY_POINT_GROUP = "asebytes_nodes.backends"


@dataclass(frozen=True)
class BackendEntry:
    """One line of the registry.

    ``target`` is ``"module:Class"`` (imported on first use) or the class itself;
    ``extra`` names the ``pip install "asebytes-nodes[extra]"`` that provides it;
    ``sniff(path) -> bool`` decides ambiguous extensions by looking inside a file;
    ``fallback`` offers the backend, through its sniffer, for files no extension claims;
    ``folders`` says its sniffer recognises folders: a folder is offered to those first,
    whatever its extension (so opening a ``.zarr`` folder imports no file-format sniffer);
    ``marker`` names a file such a folder holds: a folder without it is not offered (nor the
    sniffer imported: a cold open of a ``.zarr`` folder pays for neither);
    ``accepts(obj) -> bool`` claims in-memory objects passed instead of a path.
    ``sniff`` and ``accepts`` may be ``"module:function"`` strings, imported on first use.
    """

    name: str
    target: str | type
    extensions: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ()
    extra: str | None = None
    sniff: Callable[[Path], bool] | str | None = field(default=None, compare=False)
    fallback: bool = False
    folders: bool = False
    marker: str | None = None
    accepts: Callable[[Any], bool] | str | None = field(default=None, compare=False)

    def load(self) -> type[ReadableBackend]:
        """Import and return the backend class."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except MissingExtraError:
            raise
        except ImportError as exc:
            if (exc.name or "").startswith("asebytes_nodes"):
                raise  # our own module is broken: not a missing extra
            hint = f'pip install "asebytes-nodes[{self.extra}]"' if self.extra else "its package"
            raise MissingExtraError(
                f"the {self.name!r} backend cannot be imported ({exc}); install it with: {hint}"
            ) from exc
        return getattr(module, attr)

    def sniffs(self, path: Path) -> bool:
        """Does this backend recognise the content of the existing file ``path``?"""
        try:  # free on the good path (zero-cost exceptions)
            return _call_hook(self.sniff, path)
        except Exception as exc:
            return _hook_failed(self, "sniff", exc, path)

    def takes(self, obj: Any) -> bool:
        """Does this backend open the in-memory object ``obj``?"""
        try:
            return _call_hook(self.accepts, obj)
        except Exception as exc:
            return _hook_failed(self, "accepts", exc, obj)


_OPENING = threading.local()  # what sniffers keep for the backend open_backend constructs next


def keep_until_opened(release: Callable[[], None]) -> None:
    """For a sniffer: call ``release`` once :func:`open_backend` has constructed the backend (at
    once outside it), so what the sniff opened (an HDF5 handle) serves the backend too."""
    kept = getattr(_OPENING, "kept", None)
    if kept is None:
        release()
    else:
        kept.append(release)


@contextmanager
def _opening() -> Iterator[None]:
    outer = getattr(_OPENING, "kept", None)
    kept: list[Callable[[], None]] = []
    _OPENING.kept = kept
    try:
        yield
    finally:
        _OPENING.kept = outer
        for release in reversed(kept):
            release()


def _call_hook(hook: Callable[[Any], bool] | str | None, arg: Any) -> bool:
    if hook is None:
        return False
    if isinstance(hook, str):
        module_name, _, attr = hook.partition(":")
        try:
            hook = getattr(importlib.import_module(module_name), attr)
        except ImportError:  # its extra is not installed: it cannot claim anything
            return False
    return bool(hook(arg))  # type: ignore[operator]


def _hook_failed(entry: BackendEntry, which: str, exc: Exception, arg: Any) -> bool:
    """A plugin's hook that raised answers False (warned once per plugin and error type), so one
    broken plugin cannot stop the files and objects it does not read from opening."""
    if any(entry is row for row in _BUILTIN):
        raise exc  # the built-in sniffers refuse some files on purpose (UnsafeStoreError), saying why
    if (entry.name, type(exc)) not in _HOOK_WARNED:
        _HOOK_WARNED.add((entry.name, type(exc)))
        _warn(
            f"asebytes_nodes: the {entry.name!r} backend's {which} hook ({_dotted(getattr(entry, which))}) "
            f"raised {exc!r} on {arg!r}; taken as not that backend's, and not warned again for this "
            "backend and error type: make the hook return False for what it does not read"
        )
    return False


_HOOK_WARNED: set[tuple[str, type[BaseException]]] = set()
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _dotted(obj: Any) -> str:
    """``module:qualname`` of a function or class (what an entry point names), else its repr."""
    if isinstance(obj, str):
        return obj
    name = getattr(obj, "__qualname__", None)
    return f"{obj.__module__}:{name}" if name and getattr(obj, "__module__", None) else repr(obj)


def _warn(message: str) -> None:
    """A RuntimeWarning attributed to the first caller outside this package: the user's line that
    opened a store or listed the backends, not the registry's (its depth below it varies)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


_B = "asebytes_nodes.backends."
#: The built-in backends. These rows are the one place their extensions and schemes are
#: written: each class reads its own row (``extensions = builtin("lmdb").extensions``).
_BUILTIN = (
    BackendEntry(
        name="lmdb", target=_B + "_lmdb:LMDBBackend", extensions=(".lmdb",), schemes=("lmdb",), extra="lmdb"
    ),
    BackendEntry(name="memory", target=_B + "_memory:MemoryBackend", schemes=("memory",)),
    BackendEntry(
        name="zarr",
        target=_B + "_zarr:ZarrBackend",
        extensions=(".zarr",),
        schemes=("s3", "gs", "gcs", "az", "abfs"),
        extra="zarr",
    ),
    # .h5 is shared: an existing file is sniffed (an /h5md group, or MDTraj's "Pande"
    # conventions); a new .h5 file is H5MD, the first one listed.
    BackendEntry(
        name="h5md",
        target=_B + "h5md:H5MDBackend",
        extensions=(".h5", ".h5md", ".hdf5", ".zarrmd"),
        extra="h5md",
        sniff=_B + "h5md:sniff",
    ),
    BackendEntry(
        name="mdtraj",
        target=_B + "_mdtraj:MDTrajBackend",
        extensions=(".h5",),
        extra="h5md",
        sniff=_B + "_mdtraj:sniff",
    ),
    BackendEntry(
        name="ase",
        target=_B + "_asefile:ASEFileBackend",
        extensions=(".xyz", ".extxyz", ".traj"),
        sniff=_B + "_asefile:sniff",
        fallback=True,
    ),
    BackendEntry(
        name="hf",
        target=_B + "_hf:HFBackend",
        schemes=("hf", "colabfit", "optimade"),
        extra="hf",
        accepts=_B + "_hf:accepts",
    ),
    # A folder holding a shard manifest, whatever its name (asebytes_nodes.shards).
    BackendEntry(
        name="shards",
        target="asebytes_nodes.shards._backend:ShardedBackend",
        sniff="asebytes_nodes.shards._manifest:sniff",
        fallback=True,
        folders=True,
        marker="asebytes-shards.json",  # shards._manifest.MANIFEST (a test keeps them equal)
    ),
)


def builtin(name: str) -> BackendEntry:
    """The built-in registry row ``name`` (plugins and overrides do not change it)."""
    for entry in _BUILTIN:
        if entry.name == name:
            return entry
    raise KeyError(f"no built-in backend named {name!r}")


_TABLE: dict[str, BackendEntry] = {entry.name: entry for entry in _BUILTIN}
_NAMED: set[type] = set()  # user classes whose name the registry gave (their entries hold them too)
_plugins_loaded = False


def register_backend(entry: BackendEntry | type, *, override: bool = False) -> BackendEntry:
    """Add a backend (a :class:`BackendEntry` or a backend class) to the table.

    Refuses a name already taken by another backend unless ``override`` (the same backend again is
    a no-op). Extensions and schemes are spelt as paths are matched: lower case, an extension with
    its dot (``"rows"`` is taken as ``".rows"``), a scheme without ``://``; a spelling that could
    never match (a bare string, ``".tar.gz"``, ``"a/b"``) raises :class:`InvalidDataError`.
    """
    if not isinstance(entry, BackendEntry):
        entry = _entry_of(entry, default_name=getattr(entry, "__name__", ""))
    entry = _normalised(entry)
    existing = _TABLE.get(entry.name)
    if existing is not None and not override:
        if existing == entry:
            return existing
        raise ValueError(
            f"a backend named {entry.name!r} is already registered; pass override=True to replace it"
        )
    _TABLE[entry.name] = entry
    return entry


def _entry_of(cls: Any, default_name: str) -> BackendEntry:
    """The registry row of a backend class; ``default_name`` names (and becomes the ``name`` of) one
    without a name of its own: ``"custom"``, a built-in's, or one the registry gave a parent class."""
    from .backends._base import ReadableBackend

    if not (isinstance(cls, type) and issubclass(cls, ReadableBackend)):
        raise TypeError(f"a backend is a BackendEntry or a ReadableBackend subclass, not {cls!r}")
    owner = next(c for c in cls.__mro__ if "name" in vars(c) and (c is cls or c not in _NAMED))
    given = owner.__module__.startswith("asebytes_nodes.") or owner in _NAMED  # ours, or one we gave
    if given and not cls.__module__.startswith("asebytes_nodes."):  # not a subclass's to inherit
        cls.name = default_name
        _NAMED.add(cls)
    return BackendEntry(
        name=default_name if given else cls.name,
        target=cls,
        extensions=cls.extensions,
        schemes=cls.schemes,
        sniff=getattr(cls, "sniff", None),
    )


def _normalised(entry: BackendEntry) -> BackendEntry:
    """``entry`` with its extensions and schemes spelt as :func:`resolve_backend` compares them."""
    name = entry.name
    extensions = tuple(_extension(name, e) for e in _strings(name, "extensions", entry.extensions))
    schemes = tuple(_scheme(name, s) for s in _strings(name, "schemes", entry.schemes))
    if (extensions, schemes) == (entry.extensions, entry.schemes):
        return entry
    return dataclasses.replace(entry, extensions=extensions, schemes=schemes)


def _strings(name: str, field_name: str, values: Any) -> list[str]:
    if not isinstance(values, (tuple, list)) or not all(isinstance(v, str) for v in values):
        example = (values,) if isinstance(values, str) else ("rows",)
        raise InvalidDataError(
            f"backend {name!r}: {field_name} must be a tuple of strings, such as {example!r}, not {values!r}"
        )
    return list(values)


def _extension(name: str, extension: str) -> str:
    spelt = extension.lower() if extension.startswith(".") else "." + extension.lower()
    if len(spelt) < 2 or any(c in spelt[1:] for c in "./" + os.sep):
        raise InvalidDataError(
            f"backend {name!r}: the extension {extension!r} can never match: a path's extension is "
            "its last '.'-part ('.gz' of 'a.tar.gz'), such as '.rows'"
        )
    return spelt


def _scheme(name: str, scheme: str) -> str:
    spelt = scheme.lower().removesuffix("://")
    if not spelt or any(c in spelt for c in ":/") or spelt != spelt.strip():
        raise InvalidDataError(
            f"backend {name!r}: the scheme {scheme!r} can never match: a scheme is the part of a URI "
            "before '://' ('rows' for rows://name)"
        )
    return spelt


def _load_plugins() -> bool:
    """Read the entry points once per process; True if this call read them."""
    global _plugins_loaded
    if _plugins_loaded:
        return False
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            if any(row.target is loaded for row in _TABLE.values()):
                continue  # the plugin registered its class itself when imported
            register_backend(loaded if isinstance(loaded, BackendEntry) else _entry_of(loaded, ep.name))
        except Exception as exc:  # a broken plugin must never break the package
            dist = f" of {ep.dist.name}" if ep.dist is not None else ""
            _warn(f"asebytes_nodes: skipping backend plugin {ep.name!r} ({ep.value}{dist}): {exc!r}")
    return True


def list_backends() -> Mapping[str, BackendEntry]:
    """A read-only view of the registry, plugins included."""
    _load_plugins()
    return MappingProxyType(_TABLE)


def _describe() -> str:
    lines = []
    for entry in _TABLE.values():
        what = ", ".join([*entry.extensions, *(s + "://" for s in entry.schemes)]) or "instances only"
        lines.append(f"{entry.name} ({what})")
    return "; ".join(lines)


def resolve_backend(target: str | os.PathLike[str], backend: str | None = None) -> BackendEntry:
    """The registry line for a path or URI, in the documented order.

    Plugins (entry points) are read only when the table as it stands matches nothing,
    once per process: opening a store of a built-in backend never pays for discovery.
    """
    try:
        return _match(target, backend, fallback=False)
    except BackendNotFoundError:
        _load_plugins()
    return _match(target, backend, fallback=True)


def _match(target: str | os.PathLike[str], backend: str | None, *, fallback: bool) -> BackendEntry:
    if backend is not None:
        try:
            return _TABLE[backend]
        except KeyError:
            raise BackendNotFoundError(f"no backend named {backend!r}; registered: {_describe()}") from None
    text = os.fspath(target)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        for entry in _TABLE.values():
            if scheme in entry.schemes:
                _refuse_foreign_extension(text, scheme, entry)
                return entry
        raise BackendNotFoundError(
            f"no backend for the URI scheme {scheme + '://'!r} in {text!r}; registered: {_describe()}"
        )
    local = os.path.expanduser(text)  # os.path, not pathlib: a cold open pays every microsecond
    if os.path.isdir(local):  # a folder that names its own format (a shard manifest) wins over its extension
        path = Path(local)
        for entry in _TABLE.values():
            if (
                entry.folders
                and (entry.marker is None or (path / entry.marker).exists())
                and entry.sniffs(path)
            ):
                return entry
    suffix = _suffix(local)
    matches = [e for e in _TABLE.values() if suffix and suffix in e.extensions]
    if len(matches) == 1:
        return matches[0]
    path = Path(local)  # what sniffers are given
    if matches:
        if path.exists() and not _empty_file(path):  # an empty file (a NamedTemporaryFile) is a new store
            for entry in matches:
                if entry.sniffs(path):
                    return entry
            raise BackendNotFoundError(_unrecognised(path, suffix, matches))
        return matches[0]
    if fallback and path.exists():  # files no extension claims, and folders of plugins' formats
        for entry in _TABLE.values():
            if entry.fallback and entry.sniffs(path):
                return entry
    known = sorted({ext for entry in _TABLE.values() for ext in entry.extensions})
    close = difflib.get_close_matches(suffix, known, n=1, cutoff=0.75) if suffix else []
    raise BackendNotFoundError(
        f"{text!r}: no backend for the extension {suffix or '(none)'!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; use a registered extension or URI scheme, or pass backend=... Registered: {_describe()}"
    )


def _refuse_foreign_extension(text: str, scheme: str, entry: BackendEntry) -> None:
    """A URI of a file format's scheme (``s3://``: Zarr) whose name ends in another backend's
    extension (``s3://bucket/x.lmdb``) names a file that backend reads only from a local path:
    refused, rather than opened (or made) as a store of the scheme's backend."""
    suffix = _suffix(text)
    if not entry.extensions or not suffix or suffix in entry.extensions:
        return
    owners = [e.name for e in _TABLE.values() if suffix in e.extensions]
    if owners:
        raise BackendNotFoundError(
            f"{text!r}: {suffix} files belong to the {' or '.join(owners)} backend, which reads local "
            f"paths only; on {scheme}:// the {entry.name} backend keeps stores (name one "
            f"{entry.extensions[0]}), or copy the file to a local path first"
        )


def _suffix(text: str) -> str:
    """``Path(text).suffix.lower()`` without building the Path."""
    name = os.path.basename(text.rstrip("/" + os.sep))
    if name == ".":  # pathlib drops a trailing "." part
        return Path(text).suffix.lower()
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _empty_file(path: Path) -> bool:
    """Is ``path`` a regular file of 0 bytes (one that ``tempfile`` made, say)?"""
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def _hdf5_signature(path: Path) -> bool:
    """Does ``path`` carry the HDF5 signature where libhdf5 looks: byte 0, 512, 1024, 2048, ...?"""
    with open(path, "rb") as f:
        at = 0
        while True:
            f.seek(at)
            head = f.read(8)
            if head == b"\x89HDF\r\n\x1a\n":
                return True
            if len(head) < 8:
                return False
            at = 512 if at == 0 else 2 * at


def _unrecognised(path: Path, suffix: str, matches: list[BackendEntry]) -> str:
    """Why no backend claims the existing file ``path`` of an extension several share."""
    names = ", ".join(e.name for e in matches)
    size = path.stat().st_size if path.is_file() else None
    if size is not None and suffix in (".h5", ".hdf5") and not _hdf5_signature(path):
        return (
            f"{path}: not an HDF5 file (it has no HDF5 signature), so none of the backends for "
            f"{suffix!r} files ({names}) can read it: check that it is the file you meant and that "
            "it is complete"
        )
    return (
        f"{path}: none of the backends for {suffix!r} files ({names}) recognises its content; "
        "pass backend=..."
    )


def open_backend(
    target: Any, *, backend: str | None = None, readonly: bool = False, **options: Any
) -> ReadableBackend:
    """Turn a backend-like value into a backend instance.

    ``target`` is a backend instance (returned as is; no options allowed), a
    path (``str`` or ``os.PathLike``) or a URI. ``backend`` names a registered
    backend explicitly. ``readonly`` and ``options`` go to the backend's constructor;
    a ``group`` option is checked first (a valid name, a backend with groups).
    """
    if type(target) is str or isinstance(target, PurePath):  # the usual case: no ABC checks (30 us cold)
        return _open_path(target, backend, readonly, options)
    from .backends._base import ReadableBackend

    if isinstance(target, ReadableBackend):
        if options or backend is not None:
            raise TypeError(
                "options and backend= apply only when opening a path or URI, not a backend instance"
            )
        return target
    if isinstance(target, type) and issubclass(target, ReadableBackend):
        raise TypeError(f"pass an instance of {target.__name__}, not the class")
    if target is None:
        target = "memory://"
    if not isinstance(target, (str, os.PathLike)):
        for _ in range(2):
            for entry in _TABLE.values():
                if entry.takes(target):
                    cls = entry.load()
                    _check_group(cls, type(target).__name__, options)
                    return cls(target, readonly=readonly, **options)
            if not _load_plugins():
                break
        raise TypeError(
            f"cannot open a store from {type(target).__name__}; pass a path, a URI or a backend instance"
        )
    return _open_path(target, backend, readonly, options)


def _open_path(
    target: str | os.PathLike[str], backend: str | None, readonly: bool, options: dict[str, Any]
) -> ReadableBackend:
    with _opening():
        entry = resolve_backend(target, backend)
        text = os.fspath(target)
        scheme = text.split("://", 1)[0].lower() if "://" in text else None
        if scheme is not None and scheme not in entry.schemes:  # backend= named one for local paths
            owners = [e.name for e in _TABLE.values() if scheme in e.schemes] or ["no registered"]
            raise BackendNotFoundError(
                f"{text!r}: the {entry.name} backend opens local paths, not {scheme}:// URIs "
                f"({' or '.join(owners)} backend opens those)"
            )
        cls = entry.load()
        _check_group(cls, os.fspath(target), options)
        return _construct(entry, cls, os.fspath(target), readonly, options)


def _construct(
    entry: BackendEntry, cls: type[ReadableBackend], target: str, readonly: bool, options: dict[str, Any]
) -> ReadableBackend:
    try:
        return cls(target, readonly=readonly, **options)
    except TypeError as exc:
        from .options import constructor_options, unknown_options  # the error path only

        unknown = unknown_options(cls, options)
        if not unknown:
            raise
        raise TypeError(
            f"the {entry.name} backend has no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(constructor_options(cls)) or 'none'}: check the spelling, or pass backend=... "
            "to use another"
        ) from exc


def _check_group(cls: type[ReadableBackend], where: str, options: dict[str, Any]) -> None:
    """Refuse ``group=`` for a backend without groups, and an invalid group name."""
    from .backends._base import check_group_name

    if "group" not in options:
        return
    if not cls.supports_groups:
        raise UnsupportedOperationError(
            f"{where}: the {cls.name} backend keeps one dataset per store and cannot open "
            f"group {options['group']!r}; leave out group=, or use a backend with groups "
            "(supports_groups: the built-in LMDB, Zarr and H5MD backends)"
        )
    check_group_name(where, options["group"])

