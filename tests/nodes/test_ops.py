"""Plain functions behind the nodes: streamed copies, selections without copies (the core's
SelectedRows), fingerprints, side files in .gitignore, and the core benchmark the Benchmark node
runs, with its table and figure.

Matrix: copies into LMDB, Zarr (and H5MD when its backend is present) from an ASEIO (row dicts)
and from a list of Atoms; replacing an existing store; benchmark on two backends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from node_data import needs_h5md

from asebytes_nodes import ASEIO
from asebytes_nodes.backends import LMDBBackend, ReadableBackend
from asebytes_nodes.bench import Settings, Store, benchmark, figure, markdown_table
from asebytes_nodes.errors import ReadOnlyError
from asebytes_nodes.nodes import BenchmarkConfig, CacheConfig, StoreSpec
from asebytes_nodes.nodes._ops import as_aseio, fingerprint, git_ignore, write_store
from asebytes_nodes.nodes.cache import cache_frames
from asebytes_nodes.options import store_suffix
from asebytes_nodes.selection import SelectedRows
from asebytes_nodes.testing.frames import assert_atoms_equal

BACKENDS = ["lmdb", "zarr", pytest.param("h5md", marks=needs_h5md)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_copy_round_trip(tmp_path: Path, store: ASEIO, frames: list[Atoms], backend: str) -> None:
    target = tmp_path / f"out{store_suffix(backend)}"
    rows = np.array([3, 0, 30, 7])
    assert write_store(store, target, StoreSpec(backend=backend), chunk_size=3, rows=rows) == 4
    # the partial store was moved into place; nothing else is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["mixed.lmdb", "mixed.lmdb-lock", target.name]
    )
    with ASEIO(target, readonly=True) as out:
        assert len(out) == 4
        for j, i in enumerate(rows.tolist()):
            assert_atoms_equal(out[j], frames[i], where=f"row {j}")


def test_copy_from_atoms_replaces_the_old_store(tmp_path: Path, frames: list[Atoms]) -> None:
    target = tmp_path / "out.zarr"
    write_store(frames, target, StoreSpec(backend="zarr"), chunk_size=5)
    write_store(iter(frames[:3]), target, StoreSpec(backend="zarr", options={"compressor": "zstd"}))
    with ASEIO(target, readonly=True) as out:
        assert len(out) == 3
        assert_atoms_equal(out[2], frames[2])


def test_selected_rows_read_like_a_store(store: ASEIO, frames: list[Atoms]) -> None:
    view = ASEIO(SelectedRows(store, [5, 1, 5]))
    assert len(view) == 3
    assert_atoms_equal(view[0], frames[5])
    assert view["info.i"].to_list() == [5, 1, 5]
    assert [a.info["i"] for chunk in view.chunked(2) for a in chunk] == [5, 1, 5]
    with pytest.raises(ReadOnlyError, match="does not write"):  # a selection of rows is never written
        view.append(frames[0])


def test_fingerprint_follows_the_data(tmp_path: Path, frames: list[Atoms]) -> None:
    a, b = ASEIO(tmp_path / "a.lmdb"), ASEIO(tmp_path / "b.zarr")
    for db in (a, b):
        db.extend(frames[:4])
    prints = {fingerprint(a), fingerprint(b), fingerprint(ASEIO(SelectedRows(a, [0, 1])))}
    assert len(prints) == 3
    before = fingerprint(b)
    b.update(1, calc={"energy": 123.0})
    assert fingerprint(b) != before
    assert fingerprint(ASEIO(SelectedRows(a, [0, 1]))) != fingerprint(ASEIO(SelectedRows(a, [0, 2])))


class _Remote(ReadableBackend):
    """A user's backend of a remote source: known by its location, its rows costly to read."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def location(self) -> str:
        return "remote://bucket/frames"

    def __len__(self) -> int:
        return self.n

    def read_rows(self, indices, keys=None):  # noqa: ANN001, ANN201
        raise AssertionError("a fingerprint read rows")


def test_fingerprint_of_a_concatenation_is_its_parts(tmp_path: Path, frames: list[Atoms]) -> None:
    """db1 + db2 has no location: it was fingerprinted by reading every row of every part
    (2 x 20,000 frames: 1.8 s), and a part that is costly to read was read whole."""
    a, b = ASEIO(tmp_path / "a.lmdb"), ASEIO(tmp_path / "b.zarr")
    a.extend(frames[:3])
    b.extend(frames[3:6])
    remote = ASEIO(_Remote(4))
    before = fingerprint(a + b + remote)
    assert fingerprint(a + b + remote) == before
    assert fingerprint(b + a + remote) != before
    assert fingerprint(a + b + ASEIO(_Remote(5))) != before
    b.update(1, calc={"energy": 123.0})
    assert fingerprint(a + b + remote) != before


def test_fingerprint_of_frames_in_memory_follows_their_content(frames: list[Atoms]) -> None:
    """An upstream node whose ``frames`` is a list of Atoms is copied into memory: its fingerprint
    is its content, so new energies of as many frames reach the selection (it was only the length,
    and stages downstream of a Subset were skipped)."""
    before = fingerprint(as_aseio(frames[:6]))
    assert fingerprint(as_aseio(frames[:6])) == before  # the same frames, the same digest
    changed = [atoms.copy() for atoms in frames[:6]]
    changed[2].calc = SinglePointCalculator(changed[2], energy=frames[2].get_potential_energy() + 0.5)
    assert fingerprint(as_aseio(changed)) != before
    changed[2].calc = frames[2].calc
    changed[4].positions[0, 1] += 1e-9
    assert fingerprint(as_aseio(changed)) != before
    assert fingerprint(as_aseio(frames[1:7])) != before
    selected = fingerprint(ASEIO(SelectedRows(as_aseio(frames[:6]), [1, 3])))
    assert fingerprint(ASEIO(SelectedRows(as_aseio(changed), [1, 3]))) != selected


def test_side_files_are_git_ignored_once(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("/frames.lmdb\n")
    for _ in range(2):
        git_ignore(tmp_path / "frames.lmdb", "lmdb")
    git_ignore(tmp_path / ".scratch.lmdb", "lmdb", itself=True)
    git_ignore(tmp_path / "frames.zarr", "zarr")  # a directory store keeps nothing beside itself
    sides = [f"/{p.name}" for p in LMDBBackend.side_files(tmp_path / "frames.lmdb")]
    scratch = [f"/{p.name}" for p in LMDBBackend.side_files(tmp_path / ".scratch.lmdb")]
    assert sides, "LMDB names its lock file"
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines == ["/frames.lmdb", *sides, "/.frames.*", "/.scratch.lmdb", *scratch]


def test_cache_resumes_a_partial_download(tmp_path: Path, store: ASEIO, frames: list[Atoms]) -> None:
    scratch = tmp_path / ".download.lmdb"
    with ASEIO(store.backend.location, readonly=True, cache_to=scratch) as partial:
        partial[3:7].to_list()  # an interrupted first run cached rows 3-6
    config = CacheConfig(store={"backend": "zarr"}, chunk_size=10)
    assert cache_frames(str(store.backend.location), config, tmp_path / "copy.zarr", scratch) == len(frames)
    assert not scratch.exists()
    with ASEIO(tmp_path / "copy.zarr", readonly=True) as copy:
        assert [a.info.get("i") for a in copy] == [a.info.get("i") for a in frames]
    other = ASEIO(tmp_path / "other.lmdb")
    other.extend(frames[:2])
    with ASEIO(other.backend.location, readonly=True, cache_to=scratch) as stale:
        stale[:].to_list()  # a scratch store left by another source is discarded
    assert cache_frames(str(store.backend.location), config, tmp_path / "copy.zarr", scratch) == len(frames)


def test_benchmark_outputs(tmp_path: Path, store: ASEIO) -> None:
    config = BenchmarkConfig(
        backends={
            "lmdb": {"backend": "lmdb"},
            "zarr-zstd": {"backend": "zarr", "options": {"compressor": "zstd"}},
        },
        max_frames=20,
        n_random=10,
        repeats=1,
        column="calc.forces",
    )
    settings = Settings(**config.model_dump(exclude={"backends"}))
    results = benchmark(store, config.backends, settings, workdir=tmp_path)
    assert results["frames"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.lmdb", "mixed.lmdb-lock"]  # stores removed
    for label in ("lmdb", "zarr-zstd"):
        figures = results[label]
        assert all(figures[k] > 0 for k in ("write", "read_all", "random", "column", "size"))
        assert figures["files"] >= 1
    assert results["lmdb"]["files"] == 1 + len(LMDBBackend.side_suffixes)  # the store and its lock file
    table = markdown_table(results)
    assert "| lmdb |" in table and "| zarr-zstd |" in table and "random reads (frames/s)" in table
    figure(results, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_store_options_are_checked() -> None:
    with pytest.raises(ValueError, match="the lmdb backend takes no compressor; it takes map_size"):
        Store("lmdb", {"compressor": "zstd"})
    with pytest.raises(ValueError, match="unknown backend 'sqlite' to write; use one of lmdb, zarr, h5md"):
        Store("sqlite")
