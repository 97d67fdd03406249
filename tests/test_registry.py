"""Backend resolution: instance, explicit name, scheme, extension, content sniffing, plugins."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from asebytes_nodes import (
    ASEIO,
    BackendEntry,
    BackendNotFoundError,
    InvalidDataError,
    LMDBBackend,
    MemoryBackend,
    MissingExtraError,
    UnsafeStoreError,
    list_backends,
    open_backend,
    register_backend,
    registry,
)


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(registry._TABLE)
    loaded = registry._plugins_loaded
    yield
    registry._TABLE.clear()
    registry._TABLE.update(saved)
    registry._plugins_loaded = loaded


class FirstH5(MemoryBackend):
    name = "first"


class SecondH5(MemoryBackend):
    name = "second"


def test_extension_scheme_and_pathlib(tmp_path: Path) -> None:
    assert isinstance(open_backend(tmp_path / "a.lmdb"), LMDBBackend)
    assert isinstance(open_backend(str(tmp_path / "b.LMDB")), LMDBBackend)
    assert isinstance(open_backend("memory://"), MemoryBackend)
    assert isinstance(open_backend(f"lmdb://{tmp_path}/c.lmdb"), LMDBBackend)
    assert isinstance(open_backend(tmp_path / "d.bin", backend="lmdb"), LMDBBackend)
    instance = MemoryBackend()
    assert ASEIO(instance).backend is instance


@pytest.mark.parametrize(
    "spelling",
    [
        *("a.zarr", "a.ZARR", "a.zarr/", "a.zarr//", "a.zarr/.", "./a.zarr", "x/../a.zarr", ".zarr", "a."),
        *("a..zarr", "a.tar.xyz", "a.xyz/.", "noext", "a.b/c"),
    ],
)
def test_extension_is_read_as_pathlib_reads_it(spelling: str) -> None:
    """The registry reads a path's extension without building a Path; it must agree with
    ``Path.suffix`` on trailing separators, dot files, a trailing "." part and double dots."""
    target = f"/nonexistent/{spelling}"
    suffix = Path(target).suffix.lower()
    expected = next((e.name for e in list_backends().values() if suffix and suffix in e.extensions), None)
    try:
        found = registry.resolve_backend(target).name
    except BackendNotFoundError:
        found = None
    assert found == expected


def test_unknown_targets_list_what_is_registered(tmp_path: Path) -> None:
    with pytest.raises(BackendNotFoundError, match=r"'.xyz9'.*lmdb \(.lmdb, lmdb://\)"):
        ASEIO(tmp_path / "frames.xyz9")
    with pytest.raises(BackendNotFoundError, match=r"'nope://'"):
        ASEIO("nope://dataset")
    with pytest.raises(BackendNotFoundError, match="no backend named 'zzz'"):
        ASEIO(tmp_path / "a.lmdb", backend="zzz")
    with pytest.raises(TypeError, match="instance of MemoryBackend"):
        ASEIO(MemoryBackend)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="options"):
        ASEIO(MemoryBackend(), map_size=1)


def test_ambiguous_extension_is_sniffed(tmp_path: Path, clean_registry: None) -> None:
    register_backend(BackendEntry("first", FirstH5, (".amb",), sniff=lambda p: p.read_bytes() == b"1"))
    register_backend(BackendEntry("second", SecondH5, (".amb",), sniff=lambda p: p.read_bytes() == b"2"))
    (tmp_path / "one.amb").write_bytes(b"1")
    (tmp_path / "two.amb").write_bytes(b"2")
    (tmp_path / "other.amb").write_bytes(b"3")
    assert registry.resolve_backend(tmp_path / "two.amb").name == "second"
    assert registry.resolve_backend(tmp_path / "one.amb").name == "first"
    assert registry.resolve_backend(tmp_path / "new.amb").name == "first"  # new file: first registered
    with pytest.raises(BackendNotFoundError, match="recognises its content"):
        registry.resolve_backend(tmp_path / "other.amb")


def test_registration_refuses_duplicates_and_table_is_read_only(clean_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backend(BackendEntry("lmdb", MemoryBackend))
    register_backend(BackendEntry("lmdb", MemoryBackend), override=True)
    assert list_backends()["lmdb"].load() is MemoryBackend
    with pytest.raises(TypeError):
        list_backends()["x"] = None  # type: ignore[index]


def test_missing_extra_names_the_install(tmp_path: Path, clean_registry: None) -> None:
    register_backend(BackendEntry("ghost", "no_such_module_xyz:Ghost", (".ghost",), extra="zarr"))
    with pytest.raises(MissingExtraError, match=r'pip install "asebytes-nodes\[zarr\]"') as info:
        ASEIO(tmp_path / "a.ghost")
    assert isinstance(info.value, ImportError)


def test_entry_point_plugins_load_and_broken_ones_warn(
    tmp_path: Path, clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_plugin.py").write_text(
        textwrap.dedent("""
        from asebytes_nodes import MemoryBackend

        class PluginBackend(MemoryBackend):
            name = "plugin"
            extensions = (".plug",)
            schemes = ("plug",)
    """)
    )
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[asebytes_nodes.backends]\nplugin = my_plugin:PluginBackend\nbroken = no_such_plugin_module:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._plugins_loaded = False
    with pytest.warns(RuntimeWarning, match="skipping backend plugin 'broken'"):
        table = list_backends()
    assert "plugin" in table and "broken" not in table
    db = ASEIO("plug://anything")
    assert type(db.backend).__name__ == "PluginBackend"
    assert registry.resolve_backend(tmp_path / "x.plug").name == "plugin"
    sys.modules.pop("my_plugin", None)


@pytest.mark.parametrize("entry", registry._BUILTIN, ids=lambda e: e.name)
def test_builtin_classes_declare_their_registry_row(entry: BackendEntry) -> None:
    try:
        cls = entry.load()
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    assert (cls.name, cls.extensions, cls.schemes) == (entry.name, entry.extensions, entry.schemes)
    assert registry.builtin(entry.name) is entry


@pytest.mark.parametrize("entry", registry._BUILTIN, ids=lambda e: e.name)
def test_builtin_constructors_are_uniform(entry: BackendEntry) -> None:
    """Every backend is built as ``cls(target, *, readonly=False, **options)``."""
    import inspect

    try:
        cls = entry.load()
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    first, *rest = inspect.signature(cls).parameters.values()
    assert first.name == "target" and first.kind is first.POSITIONAL_OR_KEYWORD
    assert rest and rest[0].name == "readonly" and rest[0].default is False
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in rest)


def test_builtin_targets_open_without_reading_entry_points(tmp_path: Path) -> None:
    """Issue 15: a cold open that the built-in table resolves never pays for plugin discovery."""
    script = textwrap.dedent(f"""
        import sys
        from asebytes_nodes import ASEIO, registry
        ASEIO({str(tmp_path / "a.lmdb")!r}).close()
        ASEIO("memory://")
        registry.resolve_backend({str(tmp_path / "b.h5")!r})
        assert not registry._plugins_loaded, "entry points were read"
        try:
            ASEIO({str(tmp_path / "c.nothing")!r})
        except Exception:
            pass
        assert registry._plugins_loaded, "entry points were not read when nothing matched"
    """)
    import subprocess

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_store_folder_opens_without_the_file_format_sniffers(tmp_path: Path) -> None:
    """Issue 15 item 3: opening a ``.zarr`` folder asks only folder sniffers (a shard manifest),
    so the ASE-file backend and ``ase.io`` are not imported by a cold open."""
    from ase import Atoms

    from asebytes_nodes import ASEIO

    ASEIO(tmp_path / "s.zarr").extend([Atoms("H")])
    script = textwrap.dedent(f"""
        import sys
        from asebytes_nodes import ASEIO
        db = ASEIO({str(tmp_path / "s.zarr")!r})
        assert type(db.backend).__name__ == "ZarrBackend" and len(db[0]) == 1
        assert "asebytes_nodes.backends._asefile" not in sys.modules
        assert "ase.io" not in sys.modules
        assert "asebytes_nodes.shards._manifest" not in sys.modules  # no manifest file: no sniffer
    """)
    import subprocess

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_shard_folder_marker_is_the_manifest_name() -> None:
    from asebytes_nodes.registry import builtin
    from asebytes_nodes.shards._manifest import MANIFEST

    assert builtin("shards").marker == MANIFEST


def test_plugins_are_read_when_nothing_else_matches(
    tmp_path: Path, clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "late_plugin.py").write_text(
        textwrap.dedent("""
        from asebytes_nodes import MemoryBackend

        class LateBackend(MemoryBackend):
            name = "late"
            extensions = (".late", ".xyz")
            schemes = ("late",)
    """)
    )
    dist = tmp_path / "late_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: late-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[asebytes_nodes.backends]\nlate = late_plugin:LateBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._plugins_loaded = False
    assert registry.resolve_backend(tmp_path / "a.xyz").name == "ase"  # the built-in table answers
    assert not registry._plugins_loaded
    assert type(ASEIO("late://x").backend).__name__ == "LateBackend"  # no match: entry points read
    assert registry._plugins_loaded
    assert registry.resolve_backend(tmp_path / "a.late").name == "late"
    sys.modules.pop("late_plugin", None)


def _plugin(tmp_path: Path, module: str, source: str, entry_points: str) -> None:
    """An installed-looking plugin: ``module`` on sys.path and a dist-info naming its entry points."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[asebytes_nodes.backends]\n{textwrap.dedent(entry_points)}")


def test_registration_spells_extensions_and_schemes_as_paths_are_matched(clean_registry: None) -> None:
    """A dotless or upper-case extension and an upper-case or '://' scheme registered, then never
    matched (the error even suggested 'rows' for '.rows')."""
    spellings = {
        "nodot": ({"extensions": ("rows",)}, "/nonexistent/x.rows"),
        "upper": ({"extensions": (".UPR",)}, "/nonexistent/x.upr"),
        "upsch": ({"schemes": ("MyDict",)}, "MyDict://q"),
        "sepsch": ({"schemes": ("sep://",)}, "sep://q"),
    }
    for name, (attrs, target) in spellings.items():
        entry = register_backend(type(name, (MemoryBackend,), {"name": name, **attrs}))
        assert registry.resolve_backend(target) is entry, name
    assert list_backends()["nodot"].extensions == (".rows",)
    assert list_backends()["sepsch"].schemes == ("sep",)
    refused = [
        ({"extensions": ".abc"}, r"extensions must be a tuple of strings, such as \('.abc',\)"),
        ({"schemes": "abc"}, "schemes must be a tuple"),
        ({"extensions": (".tar.gz",)}, "the extension '.tar.gz' can never match"),
        ({"extensions": (".",)}, "the extension '.' can never match"),
        ({"schemes": ("a/b",)}, "the scheme 'a/b' can never match"),
        ({"schemes": ("",)}, "the scheme '' can never match"),
    ]
    for attrs, message in refused:
        with pytest.raises(InvalidDataError, match=f"backend 'bad': {message}"):
            register_backend(type("Bad", (MemoryBackend,), {"name": "bad", **attrs}))
    assert "bad" not in list_backends()


def test_the_same_backend_registered_twice_is_a_no_op(clean_registry: None) -> None:
    class Twice(MemoryBackend):
        name = "twice"
        schemes = ("twice",)

    first = register_backend(Twice)
    assert register_backend(Twice) is first
    with pytest.raises(ValueError, match="'twice' is already registered"):
        register_backend(type("Other", (MemoryBackend,), {"name": "twice"}))
    with pytest.raises(TypeError, match="ReadableBackend subclass"):
        register_backend(len)  # type: ignore[arg-type]


def test_a_plugin_hook_that_raises_is_taken_as_not_mine(tmp_path: Path, clean_registry: None) -> None:
    """A plugin's naive sniff (text-only, files only) made every non-HDF5 .h5, unknown file and plain
    folder raise its UnicodeDecodeError / IsADirectoryError instead of BackendNotFoundError."""

    def naive_sniff(path: Path) -> bool:
        with open(path) as f:
            return f.read(4) == "JSON"

    def naive_accepts(obj: object) -> bool:
        return obj.startswith("JSON")  # type: ignore[attr-defined]

    register_backend(BackendEntry("naive", MemoryBackend, (".h5",), sniff=naive_sniff, fallback=True))
    register_backend(BackendEntry("naive_obj", MemoryBackend, accepts=naive_accepts))
    (tmp_path / "not_hdf5.h5").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "data.qqq").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "other.qqq").write_bytes(b"\xff\xfe\x00more")
    (tmp_path / "folder").mkdir()
    (tmp_path / "mine.json5").write_text("JSON")
    with pytest.warns(RuntimeWarning) as warned:
        for target in ("not_hdf5.h5", "data.qqq", "other.qqq", "folder", "data.qqq"):
            with pytest.raises(BackendNotFoundError):
                ASEIO(tmp_path / target)
        with pytest.raises(TypeError, match="cannot open a store from object"):
            ASEIO(object())  # type: ignore[arg-type]
    assert registry.resolve_backend(tmp_path / "mine.json5").name == "naive"  # the good path still claims
    warned = [w for w in warned if w.category is RuntimeWarning]
    messages = [str(w.message) for w in warned]
    assert len(messages) == 3, messages  # once per plugin and error type, not per call
    assert "'naive' backend's sniff hook" in messages[0] and "UnicodeDecodeError" in messages[0]
    assert "IsADirectoryError" in messages[1]
    assert "'naive_obj' backend's accepts hook" in messages[2] and "AttributeError" in messages[2]
    assert all(w.filename == __file__ for w in warned)  # the user's line, not the registry's
    (tmp_path / "script.py").write_text("print(1)\n")
    with pytest.raises(UnsafeStoreError, match="Python source"):  # a built-in hook's refusal propagates
        ASEIO(tmp_path / "script.py")


def test_entry_points_self_registering_not_a_backend_and_nameless(
    tmp_path: Path, clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that registered itself on import was warned about as 'already registered'; a function
    entry point was registered as a backend; a class without its own name was 'custom' (or clashed
    with the built-in it subclasses); the warnings pointed at registry.py."""
    _plugin(
        tmp_path,
        "ep_oddities",
        """
        from asebytes_nodes import MemoryBackend, register_backend

        class SelfReg(MemoryBackend):
            name = "selfreg"
            schemes = ("selfreg",)

        register_backend(SelfReg)

        class Nameless(MemoryBackend):
            schemes = ("nameless",)

        def helper(x):
            return x
        """,
        """
        selfreg = ep_oddities:SelfReg
        notabackend = ep_oddities:helper
        epname = ep_oddities:Nameless
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._plugins_loaded = False
    with pytest.warns(RuntimeWarning) as warned:
        table = list_backends()
    messages = [str(w.message) for w in warned]
    assert len(messages) == 1, messages
    assert "skipping backend plugin 'notabackend' (ep_oddities:helper of ep_oddities)" in messages[0]
    assert warned[0].filename == __file__
    assert "notabackend" not in table and "helper" not in table
    assert type(ASEIO("selfreg://x").backend).__name__ == "SelfReg"
    assert table["epname"].schemes == ("nameless",)
    assert type(ASEIO("nameless://x").backend).__name__ == "Nameless"
    sys.modules.pop("ep_oddities", None)
