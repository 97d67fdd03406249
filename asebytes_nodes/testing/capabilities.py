"""What a backend's format can hold, as the contract suites skip by it (never by backend name)."""

from __future__ import annotations

from typing import ClassVar

import pytest

__all__ = ["KIND_NEEDS", "REQUIRED_KINDS", "DataCapabilities"]


class DataCapabilities:
    """What a backend's format can hold. Tests skip by these flags, never by backend name."""

    #: Frames of different atom counts (and topologies) in one store.
    holds_variable_atoms: ClassVar[bool] = True
    #: Every float64 comes back bit for bit (False: stored in a narrower type, such as float32).
    holds_exact_float64: ClassVar[bool] = True
    #: Any ``info``/``arrays``/``calc`` key with values of every storable kind (False: a fixed schema).
    holds_any_keys: ClassVar[bool] = True

    def require(self, *needs: str) -> None:
        """Skip the test unless the format holds every capability named (``"variable_atoms"``...)."""
        missing = [need for need in needs if not getattr(self, f"holds_{need}")]
        if missing:
            pytest.skip(f"the format cannot hold: {', '.join(missing)} (capability)")


#: The capabilities each kind of :data:`~asebytes_nodes.testing.frames.FRAME_KINDS` needs.
KIND_NEEDS: dict[str, tuple[str, ...]] = {
    "ethanol": ("any_keys", "exact_float64"),
    "no_calculator": ("variable_atoms", "exact_float64"),
    "all_calc_results": ("any_keys", "exact_float64"),
    "special_values": ("any_keys", "exact_float64"),
    "per_atom_arrays": ("any_keys", "exact_float64"),
    "periodic_variable_n": ("any_keys", "variable_atoms", "exact_float64"),
    "constraints": ("any_keys", "exact_float64"),
    "empty_and_single": ("variable_atoms", "exact_float64"),
    "keys_on_some_frames": ("any_keys", "variable_atoms", "exact_float64"),
}

#: The kinds every backend gives (overriding :meth:`ReadableContract.frames` where its format lacks a
#: capability they need): a missing one fails the tests that use it instead of skipping them.
REQUIRED_KINDS: dict[str, str] = {
    "ethanol": "4 frames of one atom count with an energy",
    "periodic_variable_n": "5 frames, of varying atom counts where the format allows",
}
