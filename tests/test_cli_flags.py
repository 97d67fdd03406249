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


def test_switch_flags_take_no_value(tmp_path: Path) -> None:
    """A boolean backend option is a switch (``--compress-all``, no value; the help's "10%" is
    printed as written), and a store written with it keeps Blosc on random positions, which
    the default stores plain; a backend without the option names the options it takes."""
    import numpy as np

    rng = np.random.default_rng(2)
    frames = [molecule("CH3CH2OH") for _ in range(300)]
    for atoms in frames:
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    ASEIO(tmp_path / "src.lmdb").extend(frames)
    helped = run("convert", "--help")
    assert helped.returncode == 0 and "--compress-all " in helped.stdout and "under 10%" in helped.stdout
    stages = {}
    for extra in ((), ("--compress-all",)):
        out = tmp_path / f"out{len(extra)}.zarr"
        assert run("convert", tmp_path / "src.lmdb", out, *extra, "-q").returncode == 0
        record = json.loads((out / "zarr.json").read_text())["attributes"]["asebytes_nodes"]
        array = out / record["columns"]["arrays.positions"]["id"] / "values" / "zarr.json"
        chain = json.loads(array.read_text())["codecs"][0]["configuration"]["codecs"]
        stages[extra] = [stage["name"] for stage in chain]
        assert len(ASEIO(out, readonly=True)) == len(frames)
    assert stages == {(): ["bytes", "crc32c"], ("--compress-all",): ["bytes", "blosc", "crc32c"]}
    refused = run("convert", tmp_path / "src.lmdb", tmp_path / "x.lmdb", "--compress-all")
    assert refused.returncode == 1 and "--compress-all" in refused.stderr


def test_split_of_a_dataset(tmp_path: Path) -> None:
    """``--split NAME`` picks the split of an hf:// source; a source of one split needs none."""
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    one = tmp_path / "one.parquet"
    pq.write_table(pa.table({"positions": [[[0.0, 0, 0]]], "atomic_numbers": [[1]], "energy": [1.0]}), one)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    for split, number in (("train", 1), ("test", 8)):
        table = pa.table({"positions": [[[0.0, 0.0, 0.0]]], "atomic_numbers": [[number]]})
        pq.write_table(table, tmp_path / "repo" / "data" / f"{split}-00000-of-00001.parquet")
    repo = f"colabfit://{tmp_path / 'repo'}"
    done = run("convert", f"colabfit://{one}", tmp_path / "one.lmdb", "-q")
    assert done.returncode == 0, done.stderr
    assert ASEIO(str(tmp_path / "one.lmdb"))[0].get_potential_energy() == 1.0
    refused = run("info", repo)
    assert refused.returncode == 1 and "choose one with --split NAME, e.g. --split train" in refused.stderr
    assert "O" in run("info", repo, "--split", "test", "--json").stdout
    assert "formula               O" in run("show", repo, "0", "--split", "test").stdout
    assert run("validate", repo, "--split", "train").returncode == 0
    done = run("convert", repo, tmp_path / "test.lmdb", "--split", "test", "-q")
    assert done.returncode == 0 and ASEIO(str(tmp_path / "test.lmdb"))[0].get_chemical_symbols() == ["O"]
    assert "has no split 'valid'" in run("validate", repo, "--split", "valid").stderr


def test_mistakes_name_the_flag_and_the_store(tmp_path: Path) -> None:
    """--frames 0 said "max_frames is 0"; a bad --backends was blamed on the source file; a group of
    a store without groups listed "[]"; a file opened as Zarr was "no such Zarr store"; --start past
    the end wrote an empty store and exited 0."""
    store = tmp_path / "ok.lmdb"
    ASEIO(store).extend([molecule("H2O")] * 5)
    for args, status, message in [
        (("bench", "--frames", "0"), 2, "argument --frames: must be 1 or more, got 0"),
        (("bench", store, "--backends", "memory"), 2, "argument --backends: takes a comma-separated list"),
        (("info", store, "--group", "nope"), 1, "no group 'nope' in this store (opened read-only); it has"),
        (("info", store, "--backend", "zarr"), 1, "a file, not a Zarr store (a folder)"),
        (("convert", store, tmp_path / "e.lmdb", "--start", "100"), 1, "select no frames of its 5 frames"),
    ]:  # fmt: skip
        done = run(*args)
        assert done.returncode == status and message in done.stderr, (args, done.stderr)
    assert not (tmp_path / "e.lmdb").exists()


def test_show_keeps_long_keys_apart_and_clevel_names_its_range(tmp_path: Path) -> None:
    """show printed "arrays.initial_magmomsfloat64[2]"; --clevel 30 said "above 22" and then 22 was
    refused as above 9 for the same compressor."""
    atoms = molecule("H2O")
    atoms.set_initial_magnetic_moments([1.0, 0.0, 0.0])
    store = tmp_path / "m.lmdb"
    ASEIO(store).extend([atoms])
    shown = run("show", store, "0").stdout
    assert "arrays.initial_magmoms  float64[3]" in shown
    done = run("convert", store, tmp_path / "c.zarr", "--compressor", "zstd", "--clevel", "30")
    assert done.returncode == 1 and "(0-9; up to 22 for 'zstd-raw')" in done.stderr, done.stderr


def test_a_cache_store_is_named_as_one(tmp_path: Path) -> None:
    """info on a cache_to store said "1 rows do not carry 'arrays.numbers' (rows 0)"; convert copied
    its header row as an empty frame and its rows in the order they were first read."""
    source = tmp_path / "src.lmdb"
    ASEIO(source).extend([molecule("H2O"), molecule("CH4")])
    cache = tmp_path / "cache.lmdb"
    ASEIO(source, readonly=True, cache_to=cache)[1]
    for args in (("info", cache), ("validate", cache), ("convert", cache, tmp_path / "out.lmdb")):
        done = run(*args)
        assert done.returncode == 1 and f"a cache_to store of {source}" in done.stderr, done.stderr
    assert not (tmp_path / "out.lmdb").exists()
