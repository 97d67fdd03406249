"""A user backend with only __len__ and read_rows works with every view.

It is seeded with rows built by ``atoms_to_dict`` and kept in a plain list, so the
read contract checks ASEIO's default batch, column, key and schema paths.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms

from asebytes_nodes import ASEIO, ReadableBackend, ReadOnlyError, atoms_to_dict
from asebytes_nodes.testing.contract import ReadableContract, StoreFactory


class ListBackend(ReadableBackend):
    """The smallest readable backend a user can write."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def read_rows(
        self, indices: Sequence[int] | np.ndarray, keys: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        picked = [{k: v for k, v in self.rows[int(i)].items() if keys is None or k in keys} for i in indices]
        return [{k: v.copy() if hasattr(v, "copy") else v for k, v in row.items()} for row in picked]


class ListStore(StoreFactory):
    def seed(self, frames: list[Atoms]) -> None:
        import copy

        self.rows = [copy.deepcopy(atoms_to_dict(a)) for a in frames]

    def open(self, readonly: bool = False) -> ListBackend:
        return ListBackend(self.rows)


class TestCustomBackendContract(ReadableContract):
    @pytest.fixture
    def store(self) -> StoreFactory:
        return ListStore()


def test_custom_backend_is_read_only() -> None:
    from ase.build import molecule

    db = ASEIO(ListBackend([atoms_to_dict(molecule("H2O"))]))
    assert db[0].get_chemical_formula() == "H2O"
    with pytest.raises(ReadOnlyError):
        db.append(molecule("H2O"))


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("arrays.positions", np.zeros((2, 3)), "'arrays.positions' 2"),
        ("arrays.momenta", np.zeros((5, 3)), "'arrays.momenta' 5"),
        ("calc.forces", np.zeros((4, 3)), "'calc.forces' 4"),
    ],
)
def test_a_row_whose_per_atom_values_disagree_is_named(key: str, value: np.ndarray, named: str) -> None:
    """Such a row became Atoms with 3 numbers and 2 positions (ase.Atoms itself refuses it)."""
    from ase.build import molecule

    from asebytes_nodes import StoreCorruptedError

    good = atoms_to_dict(molecule("H2O"))
    db = ASEIO(ListBackend([good, {**good, key: value}]))
    assert db[0].get_chemical_formula() == "H2O"
    for read in (lambda: db[1], lambda: list(db), lambda: db[[0, 1]].to_list()):
        with pytest.raises(StoreCorruptedError, match=f"row 1: .*{named}"):
            read()


def test_contract_failures_show_their_values(tmp_path: Path) -> None:
    """pytest rewrites the asserts of test files only: a user backend failing the installed contract
    suite got a bare ``AssertionError`` with no values."""
    (tmp_path / "test_user_backend.py").write_text(
        textwrap.dedent("""
        import pytest
        from asebytes_nodes import ReadableBackend, atoms_to_dict
        from asebytes_nodes.testing.contract import ReadableContract, StoreFactory

        class OffByOne(ReadableBackend):
            def __init__(self, rows):
                self.rows = rows
            def __len__(self):
                return len(self.rows) - 1  # the bug
            def read_rows(self, indices, keys=None):
                return [{k: v for k, v in self.rows[int(i)].items() if keys is None or k in keys}
                        for i in indices]

        class Store(StoreFactory):
            def seed(self, frames):
                self.rows = [atoms_to_dict(a) for a in frames]
            def open(self, readonly=False):
                return OffByOne(self.rows)

        class TestOffByOne(ReadableContract):
            @pytest.fixture
            def store(self):
                return Store()
    """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n0", "-q", "-o", "addopts="]
        + ["--tb=short", "-k", "test_chunked", "test_user_backend.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "1 failed" in done.stdout, done.stdout + done.stderr
    assert "assert [2, 2] == [2, 2, 1]" in done.stdout, done.stdout


def test_a_narrow_format_without_its_own_frames_fails_loudly() -> None:
    """``holds_exact_float64 = False`` without a ``frames()`` override passed green, 34 of 44 tests
    skipped: the kinds most tests use ("ethanol", "periodic_variable_n") must be given."""

    class Narrow(ReadableContract):
        holds_exact_float64 = False

    for kind in ("ethanol", "periodic_variable_n"):
        with pytest.raises(BaseException) as outcome:  # a skip is a BaseException too: catch it to fail
            Narrow().frames_of(kind)
        assert outcome.type is pytest.fail.Exception, outcome.value
        assert f"holds_exact_float64 = False leaves no {kind!r}" in str(outcome.value)
        assert "override frames(kind)" in str(outcome.value)
    with pytest.raises(pytest.skip.Exception, match="cannot hold 'special_values'"):
        Narrow().frames_of("special_values")  # the other kinds are skipped, as before
