"""LMDB batches gathered with numpy from row templates (``_lmdb_batch``) against batches
assembled from decoded rows: equal arrays and dtypes, every fallback, damage named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from batchkit import KEYS, assert_same_batch, batch_row, template_batch

from asebytes_nodes import LMDBBackend, StoreCorruptedError
from asebytes_nodes.batch import read_batch_default


def _row(rng: np.random.Generator, n: int, i: int, **extra: Any) -> dict[str, Any]:
    more = {"cell": np.eye(3) * 5.0, "pbc": np.array([True, False, True]), "info.flag": bool(i % 2)}
    return batch_row(rng, n, i, **more, **{"info.signed": -i, **extra})


def _store(tmp_path: Path, rows: list[dict[str, Any]]) -> LMDBBackend:
    backend = LMDBBackend(tmp_path / "b.lmdb")
    backend.extend(rows)
    return backend


@pytest.mark.parametrize("ragged", [False, True])
def test_batches_equal_decoded_rows(tmp_path: Path, ragged: bool) -> None:
    rng = np.random.default_rng(0)
    # indices 0-299 cross msgpack's int widths (fixint, uint8, uint16) and negative ones
    rows = [_row(rng, int(rng.integers(1, 12)) if ragged else 5, i) for i in range(300)]
    backend = _store(tmp_path, rows)
    order = np.random.default_rng(1).permutation(300)
    # [299, 256, 280]: every row's ints in msgpack's 16-bit forms, none in the first template's
    for idx in [order[:32], order[32:64], [5, 5, 299, 0, 5], [140], [299, 256, 280]]:
        for keys in [KEYS, None, ["info.index", "info.flag", "info.signed", "cell", "pbc"]]:
            fast = template_batch(backend, idx, keys)
            assert fast is not None, (idx, keys)
            assert_same_batch(fast, read_batch_default(backend, np.asarray(idx), keys))
            assert_same_batch(backend.read_batch(np.asarray(idx), keys), fast)
        selected = template_batch(backend, idx, KEYS, np.array([0, -1]))
        assert selected is not None
        assert_same_batch(
            selected, read_batch_default(backend, np.asarray(idx), KEYS, atoms=np.array([0, -1]))
        )


def test_text_lists_and_dicts_do_not_make_a_template_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id per frame (info.frame_id), a list of floats or a dict of numbers in info made every
    row a template of its own (the bytes of such values were fixed): a shuffled epoch ran at
    790-2,300 frames/s against 30-46k. Their characters and numbers are free; lengths and types
    still tell templates apart; the batches equal decoded rows."""
    from asebytes_nodes.backends import _lmdb_batch

    monkeypatch.setattr(_lmdb_batch, "_TABLES", _lmdb_batch.Tables())
    rng = np.random.default_rng(4)
    rows = [
        _row(
            rng,
            4,
            i,
            **{
                "info.frame_id": f"frame-{i:05d}",
                "info.vec": [float(v) for v in rng.normal(size=3)],
                "info.meta": {"seed": 100 + i % 20, "t": float(rng.normal()), "tag": f"t{i:03d}"},
            },
        )
        for i in range(120)
    ]
    backend = _store(tmp_path, rows)
    order = np.random.default_rng(5).permutation(120)
    for at in range(0, 120, 32):
        idx = order[at : at + 32]
        for keys in [KEYS, None]:
            fast = template_batch(backend, idx, keys)
            assert fast is not None
            assert_same_batch(fast, read_batch_default(backend, idx, keys))
    # a few kinds of rows: info.index and info.signed in msgpack's int widths, seed 100-119 one
    assert len(_lmdb_batch._TABLES.templates) - 1 <= 4
    assert backend.read_batch(np.array([7, 3]), ["info.frame_id"])["info.frame_id"] == [
        "frame-00007",
        "frame-00003",
    ]


def test_rows_no_template_describes_are_served_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bytes value unique to each row (its bytes stay fixed in a template) made a template per
    row, each copying the tables: past _PER_LENGTH templates of a row length, its rows are served
    decoded (6,000 frames: 1-2k -> 15-21k frames/s). A store of many atom counts (a template per
    length) read after it still learns its own and is served by them."""
    from asebytes_nodes.backends import _lmdb_batch

    monkeypatch.setattr(_lmdb_batch, "_TABLES", _lmdb_batch.Tables())
    rng = np.random.default_rng(6)
    rows = [_row(rng, 3, 40 + i % 40, **{"info.blob": rng.bytes(6)}) for i in range(160)]
    backend = _store(tmp_path, rows)
    for seed in range(2):
        order = np.random.default_rng(seed).permutation(160)
        for at in range(0, 160, 16):
            idx = order[at : at + 16]
            assert_same_batch(backend.read_batch(idx, KEYS), read_batch_default(backend, idx, KEYS))
    tables = _lmdb_batch._TABLES
    assert set(tables.depth.values()) == {_lmdb_batch._PER_LENGTH}
    assert len(tables.templates) - 1 == _lmdb_batch._PER_LENGTH * len(tables.depth)
    ragged = LMDBBackend(tmp_path / "ragged.lmdb")
    ragged.extend([_row(rng, n, 0) for n in range(1, 41)])  # 40 atom counts, a template each
    idx = np.random.default_rng(2).permutation(40)
    assert template_batch(ragged, idx, KEYS) is not None
    assert len(_lmdb_batch._TABLES.templates) - len(tables.templates) == 40


def test_fallbacks_give_the_decoded_answer(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = [_row(rng, 4, i) for i in range(10)]
    rows[3] = _row(rng, 4, 3, **{"info.label": "x"})
    rows[4].pop("calc.energy")
    rows[5]["calc.energy"] = np.float32(1.5)  # a numpy scalar: an extension type, not a template slot
    backend = _store(tmp_path, rows)
    assert template_batch(backend, [4, 5], ["calc.energy"]) is None  # a key some rows lack
    assert template_batch(backend, [3], ["info.label"]) is None  # not a number
    assert template_batch(backend, [5, 6], ["calc.energy"]) is None  # mixed types
    with pytest.raises(KeyError, match="rows 4"):
        backend.read_batch(np.array([4, 6]), ["calc.energy"])
    filled = backend.read_batch(np.array([4, 6]), ["calc.energy"], fill={"calc.energy": 0.0})
    assert filled["calc.energy"][0] == 0.0 and filled["calc.energy"][1] == rows[6]["calc.energy"]
    assert backend.read_batch(np.array([3]), ["info.label"])["info.label"] == ["x"]


def test_a_flipped_bit_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    backend = _store(tmp_path, [_row(rng, 3, i) for i in range(20)])
    backend.read_batch(np.arange(20), KEYS)  # templates learnt
    backend.close()
    path = tmp_path / "b.lmdb"
    data = bytearray(path.read_bytes())
    target = np.asarray(_row(np.random.default_rng(3), 3, 0)["arrays.positions"]).tobytes()
    at = bytes(data).find(target)
    assert at > 0
    data[at + 3] ^= 0x10
    path.write_bytes(bytes(data))
    backend = LMDBBackend(path, readonly=True)
    with pytest.raises(StoreCorruptedError, match="row 0 fails its checksum"):
        backend.read_batch(np.array([7, 0]), KEYS)
    assert backend.read_batch(np.array([7, 1]), KEYS)["n_atoms"].tolist() == [3, 3]
    backend.close()


def test_a_row_matching_another_template_of_its_length(tmp_path: Path) -> None:
    """Rows of one byte length but different structure: each gets its own template."""
    rng = np.random.default_rng(4)
    a = _row(rng, 2, 1)
    b = {**_row(rng, 2, 1), "info.flag": 1}  # a fixint where ``a`` has a bool: same length
    backend = _store(tmp_path, [a, b, a, b])
    keys = [*KEYS, "info.index"]
    for idx in [[0, 1, 2, 3], [1], [0], [3, 0]]:
        fast = template_batch(backend, idx, keys)
        assert fast is not None
        assert_same_batch(fast, read_batch_default(backend, np.asarray(idx), keys))
    assert template_batch(backend, [0, 1], ["info.flag"]) is None  # a bool and an int: decoded rows decide
    assert_same_batch(
        backend.read_batch(np.array([0, 1]), None), read_batch_default(backend, np.array([0, 1]), None)
    )
