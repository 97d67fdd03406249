"""Local ``hf://`` folders are read only from inside themselves.

``datasets`` trusts the names a folder records: ``load_from_disk`` joins each split name of
``dataset_dict.json`` and each ``_data_files`` file name of ``state.json`` to the folder, and
``load_dataset(folder)`` reads the ``data_files`` patterns of the ``configs`` in its README's YAML
header. ``../other/data.arrow``, an absolute path or a URL there makes it read files elsewhere,
or download (measured with datasets 5.2: all three returned the other file's rows). So before a
local folder is handed to ``datasets`` every such name is checked, and the folder walked for
symbolic links leaving it and for FIFOs (:mod:`._confine`). Nothing is read but small JSON files
and the README header.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import StoreCorruptedError, UnsafeStoreError
from ._confine import is_plain_name, is_relative_inside, refuse_escapes

__all__ = ["refuse_unsafe_folder"]


def _unsafe(where: str, problem: str) -> UnsafeStoreError:
    return UnsafeStoreError(
        f"{where} {problem}; a local dataset folder may name only files inside itself, so it was "
        "not read: fix or remove that entry, or copy the data it names into the folder"
    )


def refuse_unsafe_folder(folder: Path) -> None:
    """Raise :class:`UnsafeStoreError` when the folder would make ``datasets`` read elsewhere."""
    refuse_escapes(folder, _unsafe)
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits", [])
        for split in splits if isinstance(splits, list) else [splits]:
            if not is_plain_name(split):
                raise _unsafe(f"{folder / 'dataset_dict.json'}: the split {split!r}", "is not a plain name")
            _check_state(folder / split)
    elif (folder / "state.json").is_file():
        _check_state(folder)
    readme = folder / "README.md"
    if readme.is_file():
        for pattern in _data_file_patterns(_front_matter(readme)):
            if not is_relative_inside(pattern):
                raise _unsafe(f"{readme}: the data_files pattern {pattern!r}", "leaves the folder")


def _json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreCorruptedError(f"{path}: not readable JSON ({exc}); the dataset folder is damaged") from (
            exc
        )
    return found if isinstance(found, dict) else {}


def _check_state(folder: Path) -> None:
    state = folder / "state.json"
    if not state.is_file():
        return
    for entry in _json(state).get("_data_files") or []:
        name = entry.get("filename") if isinstance(entry, dict) else entry
        if not is_plain_name(name):
            raise _unsafe(f"{state}: the data file {name!r}", "is not a file name inside the folder")


def _front_matter(readme: Path) -> Any:
    """The YAML header of a dataset card (between the first two ``---`` lines), or None."""
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    import yaml  # a dependency of datasets

    try:
        return yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None  # datasets ignores a header it cannot parse as well


def _data_file_patterns(header: Any) -> Iterator[Any]:
    """Every path, pattern and ``data_dir`` the ``configs`` of a card header name."""
    configs = header.get("configs") if isinstance(header, dict) else None
    for config in configs if isinstance(configs, list) else []:
        if not isinstance(config, dict):
            continue
        if "data_dir" in config:
            yield config["data_dir"]
        yield from _leaves(config.get("data_files"))


def _leaves(value: Any) -> Iterator[Any]:
    """The patterns of a ``data_files`` value: a string, a list, ``{split, path}`` items or a mapping."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "split":
                yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif value is not None:
        yield value
