"""The console script's own flags (issue 18 item 8): ``--version``, ``--debug`` on either side of
the subcommand, ``--group``, and messages that name the flag to use, not a Python keyword."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, __version__
from tests.test_cli import run

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"asebytes-nodes {__version__}"


def test_debug_after_the_subcommand(tmp_path: Path) -> None:
    missing = tmp_path / "nope.lmdb"
    for args in (("--debug", "info", missing), ("validate", missing, "--debug")):
        done = run(*args)
        assert done.returncode == 1 and "Traceback" in done.stderr, args
    quiet = run("info", missing)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr


def test_messages_name_the_flags(tmp_path: Path) -> None:
    typo = tmp_path / "data.zar"
    typo.mkdir()
    done = run("info", typo)
    assert done.returncode == 1 and "--backend NAME" in done.stderr and "backend=" not in done.stderr
    converted = run("convert", typo, tmp_path / "out.lmdb")
    assert "--from-backend/--to-backend NAME" in converted.stderr and "backend=" not in converted.stderr


def test_group_flag(tmp_path: Path) -> None:
    path = tmp_path / "grouped.lmdb"
    ASEIO(path).extend([molecule("H2O")])
    ASEIO(path, group="train").extend([molecule("CH4")] * 3)
    assert json.loads(run("info", path, "--json").stdout)["frames"] == 1
    assert json.loads(run("info", path, "--group", "train", "--json").stdout)["frames"] == 3
    assert "CH4" in run("show", path, "2", "--group", "train").stdout
    assert run("validate", path, "--group", "train").returncode == 0


def test_group_message_names_the_flag() -> None:
    two = REALDATA / "h5md" / "vmdplugin_halmd_binary_mixture.h5"  # particle groups A and B
    if not two.exists():
        pytest.skip(f"{two} is absent (real third-party files live in ../shared/realdata/)")
    done = run("info", two)
    assert done.returncode == 1 and "--group NAME" in done.stderr and "group=" not in done.stderr
    assert run("info", two, "--group", "A").returncode == 0


def test_benchmark_table_has_three_significant_digits() -> None:
    """``benchmark.md`` (and ``bench``'s table) round every measure as the metrics do."""
    from asebytes_nodes.bench import markdown_table

    figures = {"write": 1193.4, "read_all": 56254.3, "random": 427.2, "column": 719662.0, "size": 0.85123}
    table = markdown_table({"frames": 10, "atoms_per_frame": 9.0, "lmdb": {**figures, "files": 2}})
    assert "| lmdb | 1,190 | 56,300 | 427 | 720,000 | 0.851 | 2 |" in table
