"""Hostile and damaged files never reach outside the store, run code, or claim absurd memory.

Test matrix:

* HDF5 (H5MD written by us, a foreign H5MD file from MDAnalysis, MDTraj written by us) x
  {external link to another HDF5 file, external link to a system file, virtual dataset whose
  source is another file, external raw storage in a system file, dangling soft link}: refused
  with ``UnsafeStoreError`` naming the object, before any data is read; the check follows no
  link (a link to a FIFO would block); soft links inside the file still read.
* zarrmd (H5MD in Zarr v2): symbolic links leaving the store, FIFOs, ``..`` paths.
* extxyz: an absurd atom count (first or later frame), truncation at every offset of the last
  frame and at random offsets elsewhere (clean error or exact frames); the offset cache against
  planted links, FIFOs, crafted tables and over-long names.
* ``ase.io`` fallback: a ``.py`` file and a CASTEP ``.cell`` file run nothing (marker files),
  an HDF5 file read through another library is checked first.
* ``.traj``: truncation at random offsets gives a clean error or exact frames; bit flips never
  crash (ULM has no checksums, so a flip in array bytes cannot be detected: see the report).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from asebytes_nodes import ASEIO, StoreCorruptedError, UnsafeStoreError
from asebytes_nodes.backends import _xyzindex
from asebytes_nodes.backends._asefile import ASEFileBackend
from asebytes_nodes.testing.frames import assert_values_equal

h5py = pytest.importorskip("h5py")

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
FOREIGN_H5MD = REALDATA / "h5md" / "mdanalysis_test.h5md"
ZARRMD = REALDATA / "zarrmd" / "COORDINATES_VARIED_STEPS_ZARRMD.zarrmd"


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The extxyz index cache, inside the test's own folder."""
    monkeypatch.setenv(_xyzindex.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _frames(n: int = 6, forces: bool = True) -> list:
    frames = []
    for i in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += 0.01 * i
        results = {"forces": np.full((len(atoms), 3), 0.1 * i)} if forces else {}
        atoms.calc = SinglePointCalculator(atoms, energy=-1.5 * i, **results)
        frames.append(atoms)
    return frames


def assert_rows_equal(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert sorted(a) == sorted(b), f"frame {i}"
        for key in a:
            assert_values_equal(a[key], b[key], f"frame {i} {key}")


# -- HDF5 ---------------------------------------------------------------------------------------
# (how to open the store, the dataset replaced by a hostile object, what the reader reads there)
LAYOUTS = {
    "h5md-own": ("own.h5", {}, "particles/atoms/position/value"),
    "h5md-foreign": ("foreign.h5md", {}, "particles/trajectory/position/value"),
    "mdtraj-own": ("traj.h5", {"backend": "mdtraj"}, "coordinates"),
}
HOSTILE = ["external-link-hdf5", "external-link-system", "virtual", "external-storage", "dangling-soft"]


def _store(tmp_path: Path, layout: str) -> tuple[Path, dict, str]:
    name, options, target = LAYOUTS[layout]
    path = tmp_path / "store" / name
    path.parent.mkdir()
    if layout == "h5md-foreign":
        shutil.copy(FOREIGN_H5MD, path)
    else:
        with ASEIO(path, **options) as db:  # closed: h5py must reopen the file for writing
            db.extend(_frames(forces=layout != "mdtraj-own"))  # MDTraj keeps no forces
    return path, options, target


def _plant(path: Path, target: str, kind: str, outside: Path) -> None:
    """Replace the dataset ``target`` of ``path`` by a hostile object of the same shape."""
    outside.mkdir(exist_ok=True)
    other = outside / "other.h5"
    with h5py.File(path, "a") as f:
        data = f[target][()]
        del f[target]
        if kind in ("external-link-hdf5", "virtual"):
            with h5py.File(other, "w") as o:
                o["data"] = data + 1  # what a leak would return
        if kind == "external-link-hdf5":
            f[target] = h5py.ExternalLink(str(other), "/data")
        elif kind == "external-link-system":
            f[target] = h5py.ExternalLink("/etc/passwd", "/data")
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(other), "data", shape=data.shape)
            f.create_virtual_dataset(target, layout)
        elif kind == "external-storage":
            system = [("/etc/passwd", 0, data.nbytes)]
            f.create_dataset(target, shape=data.shape, dtype=data.dtype, external=system)
        else:
            f[target] = h5py.SoftLink("/no/such/object")


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_hdf5_pointing_outside_is_refused_naming_the_object(tmp_path: Path, layout: str, kind: str) -> None:
    path, options, target = _store(tmp_path, layout)
    _plant(path, target, kind, tmp_path / "outside")
    with pytest.raises(UnsafeStoreError, match=rf"{path}: the HDF5 object '/{target}' .*refuses"):
        db = ASEIO(path, readonly=True, **options)
        db[:].to_list()  # before the check existed: the other file's bytes, or a low-level error


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_soft_links_inside_the_file_still_read(tmp_path: Path, layout: str) -> None:
    path, options, target = _store(tmp_path, layout)
    with ASEIO(path, readonly=True, **options) as db:
        expected = db[:]
    with h5py.File(path, "a") as f:
        f.move(target, "moved")
        f[target] = h5py.SoftLink("/moved")
    assert len(ASEIO(path, readonly=True, **options)[:]) == len(expected)


def test_a_file_that_passed_is_checked_again_once_changed(tmp_path: Path) -> None:
    path, options, target = _store(tmp_path, "h5md-own")
    for _ in range(2):  # the second open is answered from what this process remembers
        with ASEIO(path, readonly=True) as db:
            assert len(db[:]) == 6
    _plant(path, target, "virtual", tmp_path / "outside")
    with pytest.raises(UnsafeStoreError, match="virtual dataset"):
        ASEIO(path, readonly=True)[:].to_list()  # refused when the dataset is first opened


def _in_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_the_check_follows_no_link(tmp_path: Path) -> None:
    """An external link to a FIFO would block whoever opens it: the check must return at once."""
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["h5md"] = h5py.ExternalLink(str(fifo), "/h5md")
        f["x"] = h5py.ExternalLink(str(fifo), "/x")
    code = (
        "import h5py, sys\n"
        "from asebytes_nodes.backends._hdf5_guard import refuse_outside_links\n"
        "from asebytes_nodes.backends.h5md import sniff, H5MDBackend\n"
        f"assert not sniff({str(path)!r})\n"
        "try:\n"
        f"    H5MDBackend.list_groups({str(path)!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        f"refuse_outside_links(h5py.File({str(path)!r}, 'r'), 'f')\n"
    )
    done = _in_child(code)
    assert "UnsafeStoreError: f: the HDF5 object '/h5md' is an external link" in done.stderr, done.stderr


def test_hdf5_check_costs_little_per_open(tmp_path: Path) -> None:
    from asebytes_nodes.backends._hdf5_guard import refuse_outside_links

    path = tmp_path / "own.h5"
    ASEIO(path).extend(_frames())
    with h5py.File(path, "r") as f:
        start = time.perf_counter()
        for _ in range(20):
            refuse_outside_links(f, path)
        per_open = (time.perf_counter() - start) / 20
    assert per_open < 0.02  # measured about 0.3 ms on a loaded 2-core machine


# -- zarrmd -------------------------------------------------------------------------------------
def _zarrmd(tmp_path: Path) -> Path:
    if not ZARRMD.is_dir():
        pytest.skip("the zarrmd sample is not available")
    pytest.importorskip("zarr")
    path = tmp_path / "store" / ZARRMD.name
    shutil.copytree(ZARRMD, path)
    return path


def _a_chunk(store: Path) -> Path:
    files = sorted((store / "particles").rglob("*"))
    return next(p for p in files if p.is_file() and not p.name.startswith("."))


def test_zarrmd_symlink_leaving_the_store_is_refused(tmp_path: Path) -> None:
    store = _zarrmd(tmp_path)
    chunk = _a_chunk(store)
    outside = tmp_path / "secret"
    outside.write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(outside)
    with pytest.raises(UnsafeStoreError, match=rf"{chunk} is a symbolic link to {outside}, outside"):
        ASEIO(store, readonly=True)[:]


def test_zarrmd_symlink_inside_the_store_reads(tmp_path: Path) -> None:
    store = _zarrmd(tmp_path)
    with ASEIO(store, readonly=True) as db:
        expected = db[:]
    chunk = _a_chunk(store)
    copy = store / "copy-of-a-chunk"
    chunk.rename(copy)
    chunk.symlink_to(copy)
    assert len(ASEIO(store, readonly=True)[:]) == len(expected)


def test_zarrmd_fifo_and_dotdot_paths_are_refused(tmp_path: Path) -> None:
    store = _zarrmd(tmp_path)
    chunk = _a_chunk(store)
    chunk.unlink()
    os.mkfifo(chunk)  # reading it would block forever
    with pytest.raises(UnsafeStoreError, match="neither a directory nor a regular file"):
        ASEIO(store, readonly=True)
    chunk.unlink()
    from asebytes_nodes.backends.h5md._zarrmd import open_zarr

    shutil.rmtree(store)
    group = open_zarr(_zarrmd(tmp_path / "again"))
    with pytest.raises(UnsafeStoreError, match=r"the path '\.\./victim' has an empty, '\.' or '\.\.'"):
        group["../victim"]


# -- extxyz: absurd counts, truncation, the offset cache --------------------------------------------
def _xyz(tmp_path: Path, n: int = 6) -> tuple[Path, list[dict]]:
    path = tmp_path / "f.xyz"
    ase.io.write(path, _frames(n))
    with ASEFileBackend(path, index_cache=False) as db:
        return path, db.read_rows(range(len(db)))


@pytest.mark.parametrize("frame", [0, 3])
def test_absurd_atom_count_is_refused_at_once(tmp_path: Path, frame: int) -> None:
    path, _ = _xyz(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    line = frame * (9 + 2)  # ethanol: 9 atom lines, a count and a comment line per frame
    lines[line] = f"{10**12}\n"
    path.write_text("".join(lines))
    start = time.perf_counter()
    where = rf"{path}: frame {frame} \(line {line + 1}, byte \d+\)"
    with pytest.raises(StoreCorruptedError, match=rf"{where} declares 1000000000000 atoms"):
        ASEIO(path)
    assert time.perf_counter() - start < 5


def test_absurd_atom_count_in_a_compressed_file_is_refused_at_once(tmp_path: Path) -> None:
    """Compressed files go to ase.io, whose reader loops once per declared atom: walked first."""
    path, expected = _xyz(tmp_path)
    for atoms in ase.io.read(path, ":"):
        atoms.pbc = True
        atoms.cell = [5, 6, 7]
        ase.io.write(tmp_path / "vec.xyz.gz", atoms, format="extxyz", vec_cell=True, append=True)
    plain = gzip.compress(path.read_bytes())
    (tmp_path / "f.xyz.gz").write_bytes(plain)
    with ASEFileBackend(tmp_path / "f.xyz.gz") as db:
        assert_rows_equal(db.read_rows(range(len(db))), expected)
    assert len(ASEFileBackend(tmp_path / "vec.xyz.gz")) == len(expected)
    (tmp_path / "cut.xyz.gz").write_bytes(gzip.compress(path.read_bytes()[:-7]))
    with pytest.warns(UserWarning, match=r"cut.xyz.gz: frame 5 \(line 66\) ends in a line without"):
        ASEFileBackend(tmp_path / "cut.xyz.gz")
    (tmp_path / "absurd.xyz.gz").write_bytes(gzip.compress(f"{10**12}\ncomment\nH 0 0 0\n".encode()))
    done = _in_child(
        "from asebytes_nodes.backends._asefile import ASEFileBackend\n"
        f"ASEFileBackend({str(tmp_path / 'absurd.xyz.gz')!r})\n"
    )
    assert "frame 0 (line 1) declares 1000000000000 atoms, but the file ends" in done.stderr, done.stderr


def _truncation_outcome(path: Path, size: int, original: bytes, expected: list[dict]) -> str:
    path.write_bytes(original[:size])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with ASEFileBackend(path, index_cache=False) as db:
                rows = db.read_rows(range(len(db)))
        except StoreCorruptedError as exc:
            assert str(path) in str(exc)
            return "error"
    if any("without a line end" in str(w.message) for w in caught):  # cut inside the last line
        assert_rows_equal(rows[:-1], expected[: len(rows) - 1])  # the frames before it are exact
        return "warned"
    assert_rows_equal(rows, expected[: len(rows)])  # never a shorter or changed frame
    return "exact"


def test_truncated_extxyz_gives_a_clean_error_or_exact_frames(tmp_path: Path) -> None:
    path, expected = _xyz(tmp_path)
    original = path.read_bytes()
    start_of_last_frame = sum(len(x) for x in original.splitlines(keepends=True)[: 5 * 11])
    offsets = set(range(start_of_last_frame, len(original)))  # every offset in the last frame
    offsets |= set(random.Random(12).sample(range(start_of_last_frame), 60))
    outcomes = {size: _truncation_outcome(path, size, original, expected) for size in sorted(offsets)}
    exact_inside_last = {s for s, got in outcomes.items() if got == "exact" and s > start_of_last_frame}
    assert exact_inside_last == set()  # a cut inside the last frame is an error, or a warning
    assert "warned" in outcomes.values()  # a cut inside a line: read, with a warning
    assert "exact" in outcomes.values()  # a cut between frames leaves the earlier ones, exact


def test_truncated_frame_error_names_the_frame(tmp_path: Path) -> None:
    path, _ = _xyz(tmp_path)
    original = path.read_bytes()
    path.write_bytes(original[: len(original) - 7])  # inside the last atom line of frame 5
    with pytest.warns(UserWarning, match=rf"{path}: frame 5 \(line 56, byte \d+\) .*without a line end"):
        ASEIO(path)
    path.write_bytes(original[: original.rfind(b"\n", 0, len(original) - 1) + 1])  # its last line gone
    with pytest.raises(StoreCorruptedError, match=rf"{path}: frame 5 .*declares 9 atoms, but"):
        ASEIO(path)


def test_index_cache_ignores_planted_links_fifos_and_crafted_tables(tmp_path: Path, cache_home: Path) -> None:
    path, expected = _xyz(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = cache_home / "extxyz-index" / _xyzindex._cache_name(str(path))
    target.parent.mkdir(parents=True)
    for pid in range(os.getpid() - 50, os.getpid() + 50):  # the temporary names used to be predictable
        target.with_name(f"{target.name}.{pid}.tmp").symlink_to(victim)
    target.symlink_to(victim)
    with ASEFileBackend(path) as db:
        assert_rows_equal(db.read_rows(range(len(db))), expected)
    assert victim.read_text() == "precious"
    assert target.is_file() and not target.is_symlink()
    stamp, table = _xyzindex._load(target, str(path))  # type: ignore[misc]
    crafted = np.array([[0, 10**12, 0], [table[-1, 0], 0, 0]], dtype=np.int64)
    _xyzindex._save(target, str(path), stamp, crafted)  # the right stamp, an absurd table
    with ASEFileBackend(path) as db:
        assert_rows_equal(db.read_rows(range(len(db))), expected)
    target.unlink()
    os.mkfifo(target)  # reading a FIFO would block forever
    done = _in_child(
        "from asebytes_nodes.backends._asefile import ASEFileBackend\n"
        f"print(len(ASEFileBackend({str(path)!r})))\n"
    )
    assert done.stdout.strip() == str(len(expected)), done.stderr


def test_index_cache_survives_an_overlong_file_name(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 240 + ".xyz")  # the cache file name would exceed 255 bytes
    ase.io.write(path, _frames(2))
    assert len(ASEIO(path)) == 2


# -- ase.io fallback: nothing runs ------------------------------------------------------------------
def test_python_file_is_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    path = tmp_path / "structure.py"
    path.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    with pytest.raises(UnsafeStoreError, match=rf"{path}: ase.io would read it as 'py', and it is Python"):
        ASEIO(path)
    with pytest.raises(UnsafeStoreError, match="Python source"):
        ASEFileBackend(path, format="py")
    assert not marker.exists()


def test_castep_cell_runs_no_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ASE's CASTEP reader runs ``castep`` to build its keyword file: a fake one leaves a marker."""
    marker = tmp_path / "MARKER"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "castep"
    fake.write_text(f"#!/bin/sh\necho ran > {marker}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "a.cell"
    path.write_text("%BLOCK LATTICE_CART\n3 0 0\n0 3 0\n0 0 3\n%ENDBLOCK LATTICE_CART\n"
                    "%BLOCK POSITIONS_FRAC\nH 0 0 0\n%ENDBLOCK POSITIONS_FRAC\n")
    with pytest.raises(UnsafeStoreError, match="castep-cell"):
        ASEIO(path)
    assert not marker.exists() and not (tmp_path / "castep_keywords.json").exists()


def test_hdf5_read_through_another_library_is_checked_first(tmp_path: Path) -> None:
    path, _, target = _store(tmp_path, "h5md-foreign")
    _plant(path, target, "external-storage", tmp_path / "outside")
    renamed = path.rename(path.with_suffix(".dat"))  # no backend claims .dat: ase.io's znh5md reader
    with pytest.raises(UnsafeStoreError, match="external file"):
        ASEFileBackend(renamed, format="znh5md")


# -- .traj --------------------------------------------------------------------------------------------
def test_damaged_traj_gives_a_clean_error_or_exact_frames(tmp_path: Path) -> None:
    path = tmp_path / "t.traj"
    ase.io.write(path, _frames(10))
    original = path.read_bytes()
    with ASEFileBackend(path) as db:
        expected = db.read_rows(range(len(db)))
    rng = random.Random(7)
    outcomes = {"error": 0, "exact": 0, "changed": 0}
    for size in rng.sample(range(len(original)), 60):
        outcomes[_truncation_outcome(path, size, original, expected)] += 1
    for offset in rng.sample(range(len(original)), 60):
        damaged = bytearray(original)
        damaged[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            with ASEFileBackend(path) as db:
                rows = db.read_rows(range(len(db)))
        except StoreCorruptedError:
            outcomes["error"] += 1
            continue
        try:  # ULM keeps no checksums: a flip inside array bytes reads as a changed number
            assert_rows_equal(rows, expected)
            outcomes["exact"] += 1
        except AssertionError:
            outcomes["changed"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 120


# -- hf:// local folders --------------------------------------------------------------------------
def _hf_variants(tmp_path: Path) -> dict[str, Path]:
    """Folders that would make ``datasets`` read ``secret`` (outside them), by kind."""
    datasets = pytest.importorskip("datasets")
    secret = datasets.Dataset.from_dict({"a": [666]})
    secret.save_to_disk(tmp_path / "secret")
    secret.to_parquet(tmp_path / "secret.parquet")
    plain = datasets.Dataset.from_dict({"a": [1, 2]})
    folders = {}
    for kind in ("state-dotdot", "state-absolute", "split-dotdot", "readme-dotdot", "readme-absolute",
                 "readme-url", "symlink"):
        folder = folders[kind] = tmp_path / kind
        if kind.startswith("state"):
            plain.save_to_disk(folder)
            state = json.loads((folder / "state.json").read_text())
            name = "secret/data-00000-of-00001.arrow"
            name = "../" + name if kind == "state-dotdot" else str(tmp_path / name)
            state["_data_files"] = [{"filename": name}]
            (folder / "state.json").write_text(json.dumps(state))
        elif kind == "split-dotdot":
            datasets.DatasetDict({"train": plain}).save_to_disk(folder)
            (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["../secret"]}))
        else:
            folder.mkdir()
            plain.to_parquet(folder / "data.parquet")
            pattern = {
                "readme-dotdot": "../secret.parquet",
                "readme-absolute": str(tmp_path / "secret.parquet"),
                "readme-url": "https://example.invalid/secret.parquet",
                "symlink": "*.parquet",
            }[kind]
            card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            card += f"    path: {pattern}\n---\n"
            (folder / "README.md").write_text(card)
            if kind == "symlink":
                (folder / "leak.parquet").symlink_to(tmp_path / "secret.parquet")
    return folders


def test_local_hf_folders_read_nothing_outside_themselves(tmp_path: Path) -> None:
    for kind, folder in _hf_variants(tmp_path).items():
        with pytest.raises(UnsafeStoreError, match=rf"{tmp_path}/{kind}.*(leaves the folder|not a plain name|"
                           "not a file name inside|outside the store)"):
            ASEIO(f"hf://{folder}", split="train")


@pytest.mark.slow
def test_every_truncation_of_an_extxyz_file_is_an_error_or_exact(tmp_path: Path) -> None:
    """Cut at every byte: exact frames only at a frame's end; a cut inside a line is read with a
    warning (the earlier frames exact, as the regular test above allows); anything else an error."""
    path, expected = _xyz(tmp_path, n=4)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    frame_ends = {sum(map(len, lines[: 11 * k])) for k in range(5)}
    line_ends = {sum(map(len, lines[:k])) for k in range(len(lines) + 1)}
    for size in range(len(original)):
        outcome = _truncation_outcome(path, size, original, expected)
        if size in frame_ends:
            assert outcome == "exact", size
        elif size in line_ends:
            assert outcome == "error", size
        else:
            assert outcome in ("error", "warned"), size


@pytest.mark.slow
def test_many_truncations_and_flips_of_a_traj_never_crash(tmp_path: Path) -> None:
    path = tmp_path / "t.traj"
    ase.io.write(path, _frames(10))
    original = path.read_bytes()
    with ASEFileBackend(path) as db:
        expected = db.read_rows(range(len(db)))
    for size in range(0, len(original), 7):
        _truncation_outcome(path, size, original, expected)  # asserts: an error or exact frames
    for offset in range(0, len(original), 11):
        damaged = bytearray(original)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:  # a clean error or frames (ULM has no checksums); never another exception
            with ASEFileBackend(path) as db:
                db.read_rows(range(len(db)))
        except StoreCorruptedError:
            pass
