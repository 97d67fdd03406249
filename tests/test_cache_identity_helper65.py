"""``cache_to`` of ``datasets`` stream objects: a cache is served only to the source that filled it.

A stream (``IterableDataset``) has no fingerprint; it is known by its data files (with size and
modification time) or the fingerprints of the datasets it streams, and a transformed one by its
instance. Two streams of different files once shared one identity and read each other's rows.
Also here: a mistyped local path is named at once, never looked up on the Hub; a cache_to that cannot
be written and a source that grew are named for what they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

datasets = pytest.importorskip("datasets")

from asebytes_nodes import ASEIO, HFBackend  # noqa: E402
from asebytes_nodes.backends._arrow import write_parquet  # noqa: E402
from asebytes_nodes.errors import (  # noqa: E402
    CacheMismatchError,
    StoreNotFoundError,
    UnsupportedOperationError,
)


def _parquet(path: Path, first_energy: float) -> Path:
    frames = []
    for i in range(4):
        atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + i / 10]])
        atoms.calc = SinglePointCalculator(atoms, energy=first_energy + i)
        frames.append(atoms)
    write_parquet(frames, path)
    return path


def _stream(path: Path, tmp_path: Path) -> object:
    return datasets.load_dataset(
        "parquet", data_files=str(path), split="train", streaming=True, cache_dir=str(tmp_path / "hf")
    )


def _energies(db: ASEIO) -> list[float]:
    return [atoms.get_potential_energy() for atoms in db]


def test_streams_of_other_files_never_share_a_cache(tmp_path: Path) -> None:
    a, b = _parquet(tmp_path / "a.parquet", 0.0), _parquet(tmp_path / "b.parquet", 100.0)
    cache = str(tmp_path / "c.lmdb")
    assert _energies(ASEIO(HFBackend(_stream(a, tmp_path)), cache_to=cache)) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(CacheMismatchError, match="b.parquet"):
        ASEIO(HFBackend(_stream(b, tmp_path)), cache_to=cache)
    again = ASEIO(HFBackend(_stream(a, tmp_path)), cache_to=cache)  # the same file: the cache serves it
    assert _energies(again) == [0.0, 1.0, 2.0, 3.0]
    _parquet(a, 50.0)  # the file changes: its size or time does too
    with pytest.raises(CacheMismatchError, match="another source"):
        ASEIO(HFBackend(_stream(a, tmp_path)), cache_to=cache)


def test_streams_of_other_datasets_never_share_a_cache(tmp_path: Path) -> None:
    a, b = _parquet(tmp_path / "a.parquet", 0.0), _parquet(tmp_path / "b.parquet", 100.0)
    first = datasets.Dataset.from_parquet(str(a), cache_dir=str(tmp_path / "hf")).to_iterable_dataset()
    other = datasets.Dataset.from_parquet(str(b), cache_dir=str(tmp_path / "hf")).to_iterable_dataset()
    cache = str(tmp_path / "c.lmdb")
    assert _energies(ASEIO(HFBackend(first), cache_to=cache)) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(CacheMismatchError, match="another source"):
        ASEIO(HFBackend(other), cache_to=cache)


def test_a_transformed_stream_is_known_by_its_instance(tmp_path: Path) -> None:
    a = _parquet(tmp_path / "a.parquet", 0.0)
    shuffled = _stream(a, tmp_path).shuffle(seed=1)  # type: ignore[attr-defined]
    cache = str(tmp_path / "c.lmdb")
    db = ASEIO(HFBackend(shuffled), cache_to=cache)
    assert sorted(_energies(db)) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(CacheMismatchError, match="known only by its instance.*hf://"):
        ASEIO(HFBackend(_stream(a, tmp_path).shuffle(seed=2)), cache_to=cache)  # type: ignore[attr-defined]


@pytest.mark.parametrize("rest", ["data/cf.parquett", "cf.arow", "./frames", "~/nope65.jsonl"])
def test_a_missing_local_path_is_named_without_asking_the_hub(
    rest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``colabfit://data/cf.parquett`` retried the Hub for about 25 s and never named the file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # without the check: a Hub error
    with pytest.raises(StoreNotFoundError, match=r"no such local file or folder: '/.*"):
        ASEIO(f"colabfit://{rest}")


@pytest.mark.parametrize("rest", ["user/three.js", "user/ds.v2", "org/set.jsn"])
def test_hub_ids_with_dots_are_not_taken_for_local_files(rest: str) -> None:
    """``.js`` was a close enough match for ``.json`` that ``hf://user/three.js`` never reached the Hub."""
    from asebytes_nodes.backends._hf import _looks_local

    assert not _looks_local(rest)


def test_cache_to_an_ase_file_or_a_grown_source_says_what_is_wrong(tmp_path: Path) -> None:
    """cache_to="c.xyz" said "no such file; ASE files are opened read-only and must exist"."""
    source = tmp_path / "s.lmdb"
    ASEIO(source).extend([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])] * 3)
    with pytest.raises(
        UnsupportedOperationError, match=r"cache_to needs a writable store, got '.*c.xyz': the"
    ):
        ASEIO(source, cache_to=tmp_path / "c.xyz")
    assert not (tmp_path / "c.xyz").exists()
    ASEIO(source, cache_to=tmp_path / "c.lmdb")[0]
    ASEIO(source).append(Atoms("H"))
    with pytest.raises(CacheMismatchError, match=r"length: 3 there, 4 here; the source grew or shrank"):
        ASEIO(source, cache_to=tmp_path / "c.lmdb")
