"""The row codec: exact types, no code execution on untrusted input, clear corruption errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from asebytes_nodes import SerializationError, StoreCorruptedError
from asebytes_nodes.codec import decode_row, decode_value, encode_row, encode_value
from asebytes_nodes.testing.frames import assert_values_equal

VALUES = [
    None, True, 0, -(2**63), 2**64 - 1, 1.5, float("nan"), "text", b"\x00bytes", 1 + 2j,
    [1, "a", [2.0]], (1, (2, "x")), {"a": {"b": [1, {"c": None}]}, 3: "int key"},
    np.float32(1.25), np.int16(-3), np.bool_(True), np.array([[1, 2]], dtype=">i4"),
    np.array(["ab", "c"]), np.zeros((2, 0, 3)), np.array(5.0), {"arr": np.arange(3)},
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_value_round_trip(value: object) -> None:
    assert_values_equal(value, decode_value(encode_value(value)))
    row = decode_row(encode_row({"info.v": value, "arrays.x": np.arange(4.0)}))
    assert_values_equal(value, row["info.v"])


def test_decoded_arrays_are_writable_and_independent() -> None:
    blob = encode_row({"arrays.a": np.arange(3.0), "arrays.b": np.ones(2, np.int32)})
    first, second = decode_row(blob), decode_row(blob)
    first["arrays.a"][:] = -1
    assert second["arrays.a"].tolist() == [0.0, 1.0, 2.0]
    assert decode_row(blob, ["arrays.b"]) == {"arrays.b": pytest.approx(np.ones(2))}


@pytest.mark.parametrize(
    "value", [object(), {1, 2}, np.array([None]), 2**70, np.zeros(2, dtype="V8")]
)
def test_unstorable_values_are_refused(value: object) -> None:
    with pytest.raises(SerializationError, match="'info.bad'"):
        encode_row({"info.ok": 1, "info.bad": value})


class _Boom:
    def __reduce__(self) -> tuple:
        return (print, ("code ran",))


def test_pickle_payloads_are_never_unpickled() -> None:
    """A hostile file may hold pickle bytes; decoding must not run them."""
    hostile = pickle.dumps(_Boom())
    with pytest.raises(StoreCorruptedError):
        decode_row(hostile)
    import msgpack

    with pytest.raises(StoreCorruptedError, match="extension type 42"):
        decode_value(msgpack.packb(msgpack.ExtType(42, hostile)))
    fake_object_array = msgpack.packb([{"k": None}, msgpack.packb(["k", "|O", [1], 0]), b"\0" * 8])
    with pytest.raises(StoreCorruptedError, match="dtype"):
        decode_row(fake_object_array)


def test_truncated_row_is_reported() -> None:
    blob = encode_row({"arrays.a": np.arange(100.0)})
    with pytest.raises(StoreCorruptedError):
        decode_row(blob[:-50])
