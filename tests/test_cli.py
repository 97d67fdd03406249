"""The installed ``asebytes-nodes`` console script, run as a user would, on real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asebytes_nodes import ASEIO
from asebytes_nodes.backends._lmdb import FORMAT_VERSION as LMDB_VERSION
from asebytes_nodes.backends._zarr import FORMAT_VERSION as ZARR_VERSION
from asebytes_nodes.backends._zarr_txn import seal
from asebytes_nodes.testing.frames import assert_atoms_equal, make_frames

SCRIPT = Path(sys.executable).with_name("asebytes-nodes")
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason=f"console script not installed at {SCRIPT}")


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    mixed = make_frames("keys_on_some_frames") + make_frames("periodic_variable_n")
    lmdb, zarr = root / "mixed.lmdb", root / "periodic.zarr"
    ASEIO(lmdb).extend(mixed)
    ASEIO(zarr).extend(make_frames("periodic_variable_n") * 4)
    return {"lmdb": lmdb, "zarr": zarr, "root": root}


def test_help_of_every_subcommand() -> None:
    top = run("--help")
    assert top.returncode == 0
    for command in ("info", "show", "convert", "validate", "bench"):
        assert command in top.stdout
        sub = run(command, "--help")
        assert sub.returncode == 0 and "usage: asebytes-nodes " + command in sub.stdout


def test_info_json_matches_the_store(stores: dict[str, Path]) -> None:
    done = run("info", stores["lmdb"], "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    db = ASEIO(stores["lmdb"], readonly=True)
    counts = [len(a) for a in db]
    assert data["backend"] == "lmdb" and data["frames"] == len(db)
    assert data["format"] == {"format": "asebytes_nodes.lmdb", "version": LMDB_VERSION}
    assert data["atoms_per_frame"]["min"] == min(counts) and data["atoms_per_frame"]["max"] == max(counts)
    assert data["atoms_per_frame"]["total"] == sum(counts)
    carried = sum("energy" in a.calc.results for a in db if a.calc is not None)
    assert data["columns"]["calc.energy"]["frames"] == carried < len(db)
    assert data["columns"]["calc.forces"]["shape"] == [-1, 3]
    symbols = {s for a in db for s in a.get_chemical_symbols()}
    assert set(data["elements"]) == symbols
    assert sum(data["pbc"].values()) == len(db)
    # the store with its lock file, as the backend counts them
    from asebytes_nodes.backends import LMDBBackend

    assert data["size_bytes"] == LMDBBackend.store_size(stores["lmdb"]) > stores["lmdb"].stat().st_size
    assert data["files"] == 1 + sum(side.exists() for side in LMDBBackend.side_files(stores["lmdb"]))


def test_info_text_names_every_column(stores: dict[str, Path]) -> None:
    done = run("info", stores["zarr"])
    assert done.returncode == 0, done.stderr
    assert f"zarr (format asebytes_nodes.zarr, version {ZARR_VERSION})" in done.stdout
    for key in ASEIO(stores["zarr"], readonly=True).columns:
        assert f"  {key} " in done.stdout
    assert "frames    20" in done.stdout and "per frame (min / mean / max)" in done.stdout


def test_show_prints_one_frame(stores: dict[str, Path]) -> None:
    frame = ASEIO(stores["zarr"], readonly=True)[-1]
    done = run("show", stores["zarr"], "-1")
    assert done.returncode == 0, done.stderr
    assert f"frame -1 of 20 in {stores['zarr']}" in done.stdout
    assert f"{frame.get_chemical_formula()} ({len(frame)} atoms)" in done.stdout
    assert f"calc.energy           {float(frame.get_potential_energy())!r}\n" in done.stdout
    assert "np.float64" not in done.stdout  # numpy scalars print as Python values


def test_convert_streams_a_selection_with_backend_options(stores: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "out.zarr"
    done = run(
        "convert",
        stores["zarr"],
        dst,
        "--compressor",
        "zstd",
        "--clevel",
        "9",
        "--start",
        "2",
        "--step",
        "3",
        "--chunk-size",
        "2",
    )
    assert done.returncode == 0, done.stderr
    source, out = ASEIO(stores["zarr"], readonly=True), ASEIO(dst, readonly=True)
    picked = list(range(2, len(source), 3))
    assert len(out) == len(picked) and f"wrote {len(picked)} frames" in done.stdout
    for i, j in enumerate(picked):
        assert_atoms_equal(source[j], out[i])
    meta = json.loads((dst / "n_atoms" / "zarr.json").read_text())
    assert "zstd" in json.dumps(meta["codecs"])
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal


def test_convert_refuses_to_clobber_and_replaces_on_request(stores: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "copy.lmdb"
    assert run("convert", stores["lmdb"], dst, "--stop", "2", "-q").returncode == 0
    again = run("convert", stores["lmdb"], dst)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert len(ASEIO(dst, readonly=True)) == 2
    assert run("convert", stores["lmdb"], dst, "--overwrite", "-q").returncode == 0
    assert len(ASEIO(dst, readonly=True)) == len(ASEIO(stores["lmdb"], readonly=True))
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_overwrite_replaces_stores_only(stores: dict[str, Path], tmp_path: Path) -> None:
    """--overwrite deleted any folder at DST: one of other files named like a store, the folder
    holding the source, the working folder (``convert src . --shards``)."""
    notes = tmp_path / "results.zarr"
    notes.mkdir()
    (notes / "notes.txt").write_text("precious")
    project = tmp_path / "project"
    project.mkdir()
    source = project / "src.lmdb"
    ASEIO(source).extend(make_frames("periodic_variable_n"))
    attempts = [
        (("convert", stores["lmdb"], notes, "--overwrite"), tmp_path, "is not a store (it holds notes.txt)"),
        (("convert", source, project, "--shards", "2", "--overwrite"), tmp_path, "is not a store"),
        (("convert", source, ".", "--shards", "2", "--overwrite"), project, "is not a store"),
    ]
    for args, cwd, message in attempts:
        done = run(*args, cwd=cwd)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert (notes / "notes.txt").read_text() == "precious" and len(ASEIO(source, readonly=True)) == 5
    shards = tmp_path / "shards"
    assert run("convert", source, shards, "--shards", "2", "-q").returncode == 0
    inside = shards / "inside.lmdb"
    ASEIO(inside).extend(make_frames("periodic_variable_n")[:1])
    for args, cwd, message in [
        (("convert", inside, shards, "--shards", "2", "--overwrite"), tmp_path, "would delete the source"),
        (("convert", source, ".", "--shards", "2", "--overwrite"), shards, "would delete the working folder"),
    ]:
        done = run(*args, cwd=cwd)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    assert inside.exists() and len(ASEIO(shards, readonly=True)) == 5
    done = run("convert", stores["lmdb"], shards, "--shards", "4", "--overwrite", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(ASEIO(shards, readonly=True)) == len(ASEIO(stores["lmdb"], readonly=True))


@pytest.mark.parametrize("suffix", [".zarr", ".h5", ".lmdb"])
def test_convert_reads_a_group_of_the_source(tmp_path: Path, suffix: str) -> None:
    """A source whose frames are all in a group: convert names the groups (it wrote 0 frames
    from a Zarr store and exited 0) and reads one with --from-group."""
    src = tmp_path / f"g{suffix}"
    frames = make_frames("periodic_variable_n")
    ASEIO(src, group="trajectory").extend(frames)
    refused = run("convert", src, tmp_path / "all.lmdb")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "trajectory" in refused.stderr and "--from-group" in refused.stderr
    done = run("convert", src, tmp_path / "traj.lmdb", "--from-group", "trajectory", "-q")
    assert done.returncode == 0, done.stderr
    for expected, got in zip(frames, ASEIO(tmp_path / "traj.lmdb", readonly=True), strict=True):
        assert_atoms_equal(expected, got)


def test_convert_names_options_the_backend_does_not_take(stores: dict[str, Path], tmp_path: Path) -> None:
    done = run("convert", stores["lmdb"], tmp_path / "x.lmdb", "--compressor", "zstd")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"asebytes-nodes: error: {tmp_path / 'x.lmdb'}: the lmdb backend takes no --compressor "
        "(it takes --map-size)"
    )
    done = run("convert", stores["lmdb"], tmp_path / "x.zarr", "--compressor", "zstd", "--clevel", "12")
    assert done.stderr.strip().endswith("x.zarr: clevel 12 is above 9, the maximum for 'zstd'")
    assert not (tmp_path / "x.zarr").exists()
    assert not (tmp_path / "x.lmdb").exists()


def test_validate_passes_a_good_store_and_lists_problems(stores: dict[str, Path], tmp_path: Path) -> None:
    ok = run("validate", stores["zarr"])
    assert ok.returncode == 0 and "ok (20 frames" in ok.stdout
    import shutil

    import zarr

    broken = tmp_path / "broken.zarr"
    shutil.copytree(stores["zarr"], broken)
    group = zarr.open_group(str(broken), mode="a")
    meta = dict(group.attrs["asebytes_nodes"])
    meta["columns"]["calc.energy"]["count"] = 7
    group.attrs["asebytes_nodes"] = meta  # the record's checksum no longer matches
    damaged = run("validate", broken)
    assert damaged.returncode == 1 and "does not match its checksum" in damaged.stderr
    meta.pop("crc", None)
    group.attrs["asebytes_nodes"] = seal(meta)  # checksum-valid, but inconsistent with the arrays
    bad = run("validate", broken)
    assert bad.returncode == 1
    assert f"{broken}: column 'calc.energy': no present flags, but 7 of 20 frames" in bad.stdout


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.lmdb"
    done = run("info", missing)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and str(missing) in done.stderr and "Traceback" not in done.stderr
    debug = run("--debug", "info", missing)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    out_of_range = run("show", tmp_path / "nope.zarr", "3")
    assert out_of_range.returncode == 1 and "Traceback" not in out_of_range.stderr


def test_convert_errors_name_the_right_path_and_flags(stores: dict[str, Path], tmp_path: Path) -> None:
    """A destination given with a trailing slash is named, not the source (the message holds
    it as an absolute path); Python keywords in a library message read as the command's flags."""
    first = run("convert", stores["lmdb"], tmp_path / "out", "--shards", "5")
    assert first.returncode == 0, first.stderr
    again = run("convert", stores["lmdb"], f"{tmp_path / 'out'}/", "--shards", "5")
    assert again.returncode == 1
    named = f"asebytes-nodes: error: {tmp_path / 'out'}: already exists; pass --overwrite"
    assert again.stderr.startswith(named), again.stderr
    subset = run("convert", stores["lmdb"], tmp_path / "part", "--shards", "5", "--stop", "3")
    assert subset.returncode == 1 and "drop --start/--stop/--step/--chunk-size" in subset.stderr
    assert "indices=" not in subset.stderr


def test_show_out_of_range_names_the_valid_range(stores: dict[str, Path]) -> None:
    done = run("show", stores["zarr"], "99")
    assert done.returncode == 1 and "out of range for 20 rows" in done.stderr


REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.mark.skipif(not REALDATA.exists(), reason=f"real files not found at {REALDATA}")
def test_real_third_party_files_through_the_cli(tmp_path: Path) -> None:
    import ase.io

    xyz = REALDATA / "extxyz" / "libatoms_extxyz_append.xyz"
    done = run("convert", xyz, tmp_path / "x.lmdb")
    assert done.returncode == 0, done.stderr
    expected = ase.io.read(xyz, ":")
    out = ASEIO(tmp_path / "x.lmdb", readonly=True)
    assert [len(a) for a in out] == [len(a) for a in expected] == [2, 4, 6]
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got.positions, want.positions)
        assert got.pbc.tolist() == want.pbc.tolist()
    traj = REALDATA / "mdtraj_hdf5" / "mdtraj_ala2.h5"
    info = json.loads(run("info", traj, "--json").stdout)
    assert info["backend"] == "mdtraj" and info["frames"] == 100
    assert info["atoms_per_frame"]["min"] == info["atoms_per_frame"]["max"] == 22
    assert run("validate", traj).returncode == 0


def test_bench_prints_a_table_for_each_backend(stores: dict[str, Path]) -> None:
    done = run("bench", "--dataset", "periodic", "--frames", "30", "--backends", "lmdb,zarr")
    assert done.returncode == 0, done.stderr
    assert "Benchmark on 30 frames" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| lmdb", "| zarr"))]
    assert len(rows) == 2
    data = json.loads(run("bench", stores["lmdb"], "--backends", "zarr", "--json").stdout)
    assert data["frames"] == len(ASEIO(stores["lmdb"], readonly=True)) and data["zarr"]["write"] > 0
    bad = run("bench", "--backends", "lmdb,nope")
    assert bad.returncode == 2 and "got 'lmdb,nope'" in bad.stderr  # a usage error, as argparse reports


def test_bench_and_convert_run_without_pydantic(stores: dict[str, Path], tmp_path: Path) -> None:
    """The core command line needs no pydantic: bench and convert run with it blocked."""
    code = (
        "import sys; sys.modules['pydantic'] = None\n"
        "from asebytes_nodes.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    bench = subprocess.run(
        [sys.executable, "-c", code, "bench", "--frames", "10", "--backends", "lmdb,zarr", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["zarr"]["read_all"] > 0
    dst = tmp_path / "out.zarr"
    args = ["convert", str(stores["lmdb"]), str(dst), "-q", "--compressor", "zstd", "--clevel", "3"]
    converted = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert converted.returncode == 0, converted.stderr
    assert len(ASEIO(dst, readonly=True)) == len(ASEIO(stores["lmdb"], readonly=True))


def test_write_flags_come_from_the_option_descriptions() -> None:
    """Every option of asebytes_nodes.options is a convert flag, and every one the backend takes."""
    import inspect

    from asebytes_nodes.options import BACKEND_OPTIONS, option_fields
    from asebytes_nodes.registry import list_backends

    help_text = run("convert", "--help").stdout
    for backend, cls in BACKEND_OPTIONS.items():
        accepted = inspect.signature(list_backends()[backend].load()).parameters
        for spec in option_fields(cls):
            assert "--" + spec.name.replace("_", "-") in help_text, spec.name
            assert spec.name in accepted, f"{backend} does not take {spec.name}"
