"""Row templates of one process and the plans of where keys sit in them (for :mod:`._lmdb_batch`).

:class:`Tables` holds every template learnt (:mod:`._lmdb_templates`) as 8-byte word masks, so
that all rows of a batch are compared with their templates in one numpy comparison; a
:class:`Plan` says, per template, where each key of a batch sits, and a :class:`Record` is the
numpy record dtype of rows that hold the keys alike (gathered in one fancy index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._keys import is_per_atom
from ._lmdb_templates import Field, Template

__all__ = ["Plan", "Record", "Tables", "ValueType"]

_MAX_PLANS = 64


@dataclass(frozen=True)
class ValueType:
    """What a key holds in some templates: a number (``kind`` ``f``/``i``/``b``) or an array
    (``kind`` None) of ``dtype`` and, beyond the atom axis of per-atom keys, ``shape``."""

    kind: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    width: int = field(init=False, compare=False)  # bytes of one value (per atom for per-atom keys)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", self.dtype.itemsize * math.prod(self.shape))


def _field(key: str, template: Template) -> Field | None:
    """Where ``key`` sits in ``template``; None if absent, not a number, or a per-atom key
    without one value per atom (assembled from decoded rows)."""
    f = template.fields.get(key)
    if f is None or key not in template.numeric:
        return None
    if is_per_atom(key) and (f.kind is not None or f.shape[:1] != (template.n_atoms,)):
        return None
    return f


@dataclass(frozen=True)
class Record:
    """Rows of templates that hold the keys of a plan alike (same types, same offsets from the
    first of them, same atom count) as numpy sees them: ``dtype`` (a field per key) and
    ``(key, type, per-atom)`` of every field; ``layout`` is what makes two templates alike."""

    layout: tuple[Any, ...]
    dtype: np.dtype[Any]
    fields: tuple[tuple[str, ValueType, bool], ...]

    @classmethod
    def of(cls, plan: Plan, offsets: list[int], kinds: list[int], n_atoms: int) -> Record | None:
        """The record of rows with the plan's keys at ``offsets`` as ``kinds``; None if some key
        is absent, not served or empty."""
        if min(kinds, default=-1) < 0:
            return None
        types = [known[k] for known, k in zip(plan.types, kinds, strict=True)]
        if not all(t.width for t in types):
            return None
        atoms = plan.per_atom.tolist()
        shapes = [(n_atoms, *t.shape) if a else t.shape for t, a in zip(types, atoms, strict=True)]
        formats = [
            np.dtype(np.uint8) if t.kind == "b" else np.dtype((t.dtype, shape))
            for t, shape in zip(types, shapes, strict=True)
        ]
        base = min(offsets)
        at = [o - base for o in offsets]
        dtype = np.dtype(
            {
                "names": list(plan.keys),
                "formats": formats,
                "offsets": at,
                "itemsize": max(a + f.itemsize for a, f in zip(at, formats, strict=True)),
            }
        )
        fields = tuple(zip(plan.keys, types, plan.per_atom.tolist(), strict=True))
        return cls((tuple(at), tuple(kinds), n_atoms), dtype, fields)


@dataclass(frozen=True)
class Plan:
    """Where ``keys`` sit in every template: ``offsets`` and ``kinds`` (templates x keys; a
    kind indexes ``types[key]``, -1: absent or not served); per template the index of its
    record in ``records`` (-1: none), the offset of its first key (``bases``) and the number of
    its row of kinds in ``alike`` (-1: a key absent or not served), so that a batch learns that
    its rows hold every key as the same type from one comparison."""

    keys: tuple[str, ...]
    per_atom: np.ndarray
    offsets: np.ndarray
    kinds: np.ndarray
    types: tuple[tuple[ValueType, ...], ...]
    records: tuple[Record, ...] = ()
    record_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bases: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    alike: tuple[tuple[int, ...], ...] = ()
    signatures: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, keys: tuple[str, ...], templates: tuple[Template | None, ...]) -> Plan:
        empty = np.zeros((0, len(keys)), np.int64)
        plan = cls(keys, np.array([is_per_atom(k) for k in keys], bool), empty, empty, ((),) * len(keys))
        return plan.extended(templates)

    def extended(self, templates: tuple[Template | None, ...]) -> Plan:
        """The plan with rows for ``templates`` appended (None: the sentinel, nothing served)."""
        types = [{t: k for k, t in enumerate(known)} for known in self.types]  # type -> its number
        offsets = np.zeros((len(templates), len(self.keys)), np.int64)
        kinds = np.full((len(templates), len(self.keys)), -1, np.int64)
        for i, template in enumerate(templates):
            for j, key in enumerate(self.keys):
                f = None if template is None else _field(key, template)
                if f is not None:
                    kind = ValueType(f.kind, f.dtype, f.shape[1:] if self.per_atom[j] else f.shape)
                    offsets[i, j], kinds[i, j] = f.offset, types[j].setdefault(kind, len(types[j]))
        plan = Plan(
            self.keys,
            self.per_atom,
            np.concatenate([self.offsets, offsets]),
            np.concatenate([self.kinds, kinds]),
            tuple(tuple(known) for known in types),  # in the order of their numbers
        )
        records = list(self.records)
        known = {r.layout: j for j, r in enumerate(records)}
        ids = []
        for template, at, numbers in zip(templates, offsets.tolist(), kinds.tolist(), strict=True):
            record = None if template is None else Record.of(plan, at, numbers, template.n_atoms)
            if record is not None and record.layout not in known:
                known[record.layout] = len(records)
                records.append(record)
            ids.append(-1 if record is None else known[record.layout])
        bases = offsets.min(axis=1) if len(self.keys) else np.zeros(len(templates), np.int64)
        alike = list(self.alike)
        numbered = {row: j for j, row in enumerate(alike)}
        signatures = []
        for row in map(tuple, kinds.tolist()):
            if min(row, default=0) < 0:
                signatures.append(-1)
                continue
            if row not in numbered:
                numbered[row] = len(alike)
                alike.append(row)
            signatures.append(numbered[row])
        return Plan(
            *(plan.keys, plan.per_atom, plan.offsets, plan.kinds, plan.types),
            tuple(records),
            np.concatenate([self.record_ids, np.array(ids, np.int64)]),
            np.concatenate([self.bases, bases]),
            tuple(alike),
            np.concatenate([self.signatures, np.array(signatures, np.int64)]),
        )


@dataclass(frozen=True)
class Tables:
    """Templates learnt in this process, never changed: learning one makes new tables.

    Template 0 is a sentinel no row matches (rows of a length without template point there).
    ``mask``/``value``: every template's bytes as 8-byte words (templates x widest), padded
    with "any byte"; ``older``: the next older template of the same length (0: none)."""

    templates: tuple[Template | None, ...] = (None,)
    primary: dict[int, int] = field(default_factory=dict)  # row length -> newest template
    depth: dict[int, int] = field(default_factory=dict)  # row length -> templates of that length
    older: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    mask: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.uint64))
    value: np.ndarray = field(default_factory=lambda: np.ones((1, 1), np.uint64))
    n_atoms: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # row bytes, no checksum
    steps: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # where each word starts
    plans: dict[tuple[str, ...], Plan] = field(default_factory=dict)  # a cache, filled as asked

    def add(self, template: Template) -> Tables:
        """These tables with ``template`` (newest of its length)."""
        j, known = len(self.templates), self.mask.shape[1]
        width = max(-(-len(template.mask) // 8), known)
        mask, value = np.zeros((2, j + 1, width), np.uint64)  # padded with "any byte"
        mask[:j, :known], value[:j, :known] = self.mask, self.value
        mask[j].view(np.uint8)[: len(template.mask)] = template.mask
        value[j].view(np.uint8)[: len(template.value)] = template.value
        return Tables(
            (*self.templates, template),
            {**self.primary, template.length: j},
            {**self.depth, template.length: self.depth.get(template.length, 0) + 1},
            np.append(self.older, self.primary.get(template.length, 0)),
            mask,
            value,
            np.append(self.n_atoms, template.n_atoms),
            np.append(self.lengths, template.length),
            np.arange(0, 8 * width, 8),
            {k: p.extended((template,)) for k, p in list(self.plans.items())},  # a copy: others may add
        )

    def plan(self, keys: tuple[str, ...]) -> Plan:
        found = self.plans.get(keys)
        if found is None:
            if len(self.plans) >= _MAX_PLANS:
                self.plans.clear()
            self.plans[keys] = found = Plan.of(keys, self.templates)
        return found
