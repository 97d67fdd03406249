"""Package-level promises: a light import, lazy backends, errors under one root."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import asebytes_nodes
from asebytes_nodes import errors

HEAVY = ("zarr", "h5py", "lmdb", "datasets", "pydantic", "zntrack", "dvc", "torch", "msgpack")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_import_is_light() -> None:
    loaded = _modules_after("import asebytes_nodes")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert "ase" not in loaded and "numpy" not in loaded


def test_backends_import_only_when_used(tmp_path) -> None:
    loaded = _modules_after("from asebytes_nodes import ASEIO\nASEIO('memory://')")
    assert "lmdb" not in loaded and "zarr" not in loaded
    loaded = _modules_after(f"from asebytes_nodes import ASEIO\nASEIO({str(tmp_path / 'a.lmdb')!r})")
    assert "lmdb" in loaded


def test_public_names_resolve() -> None:
    for name in asebytes_nodes.__all__:
        assert getattr(asebytes_nodes, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        asebytes_nodes.nope  # noqa: B018


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.UnknownKeyError, KeyError),
        (errors.RowIndexError, IndexError),
        (errors.MissingExtraError, ImportError),
        (errors.InvalidDataError, ValueError),
        (errors.SerializationError, ValueError),
        (errors.UnsupportedOperationError, io.UnsupportedOperation),
        (errors.ReadOnlyError, io.UnsupportedOperation),
        (errors.StoreNotFoundError, FileNotFoundError),
        (errors.StoreCorruptedError, OSError),
        (errors.BackendNotFoundError, ValueError),
    ],
)
def test_errors_inherit_root_and_builtin(cls: type, builtin: type) -> None:
    assert issubclass(cls, errors.ASEBytesError) and issubclass(cls, builtin)
    assert getattr(asebytes_nodes, cls.__name__) is cls


def test_unknown_key_message_is_not_quoted_twice() -> None:
    assert str(errors.UnknownKeyError("no row carries 'x'")) == "no row carries 'x'"
