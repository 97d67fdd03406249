"""A frame a conversion refuses is named by its source row, whatever chunk of the conversion it
is written in (backends name it by its place in one write)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from asebytes_nodes import ASEIO, convert
from asebytes_nodes.errors import ColumnTypeError

pytest.importorskip("h5py")


def _source(path: Path, bad: int) -> None:
    frames = [molecule("H2O") for _ in range(300)]
    frames[bad].arrays["positions"] = frames[bad].positions.astype(np.float32)  # H5MD keeps one dtype
    ASEIO(path).extend(frames)


@pytest.mark.parametrize(
    ("indices", "named"),
    [
        (None, "writing 100 source rows (200-299): frame 34 (source row 234)"),
        ([3, 250, 234, 9], "frame 2 (source row 234)"),
        (slice(0, 100), None),
    ],
    ids=["later chunk", "picked rows", "first chunk"],
)
def test_a_refused_frame_is_named_by_its_source_row(
    tmp_path: Path, indices: object, named: str | None
) -> None:
    _source(tmp_path / "src.lmdb", bad=234 if named else 40)
    with pytest.raises(ColumnTypeError) as caught:
        convert(
            tmp_path / "src.lmdb", tmp_path / "out.h5md", indices=indices, chunk_size=100, show_progress=False
        )
    text = str(caught.value)
    if named is None:  # frame j of the first chunk is source row j: the message stays as the backend gave it
        assert text.startswith("frame 40:") or ": frame 40:" in text, text
        assert "source row" not in text
    else:
        assert named in text, text
    assert not (tmp_path / "out.h5md").exists()
