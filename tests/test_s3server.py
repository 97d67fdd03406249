"""The local S3 server (tests/s3server.py) works with plain zarr and s3fs.

Independent of asebytes_nodes: if these fail, the remote-store tests of a backend
cannot be trusted either. Everything runs against moto on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")


def test_zarr_sharded_group_round_trip(s3: tuple[str, dict[str, Any]]) -> None:
    prefix, options = s3
    url = f"{prefix}/probe.zarr"
    values = np.arange(200 * 3, dtype="float64").reshape(200, 3) / 7.0

    group = zarr.open_group(url, mode="w", storage_options=options, zarr_format=3)
    group.attrs["note"] = "written through s3fs"
    array = group.create_array("x", shape=values.shape, chunks=(10, 3), shards=(50, 3), dtype="float64")
    array[:] = values
    group.create_array("n", shape=(0,), chunks=(8,), dtype="int64")

    fresh = zarr.open_group(url, mode="r", storage_options=options)
    assert fresh.metadata.zarr_format == 3
    assert fresh.attrs["note"] == "written through s3fs"
    assert sorted(fresh.array_keys()) == ["n", "x"]
    x = fresh["x"]
    assert x.shards == (50, 3) and x.chunks == (10, 3)
    np.testing.assert_array_equal(x[:], values)
    np.testing.assert_array_equal(x[37:113], values[37:113])  # spans shards
    assert fresh["n"].shape == (0,)

    import s3fs

    bucket = prefix.removeprefix("s3://")
    fs = s3fs.S3FileSystem(**options)
    assert fs.ls(bucket, refresh=True) == [f"{bucket}/probe.zarr"]
    # 4 shards of x, no chunk objects: sharding packs 5 chunks into each shard object.
    assert sorted(fs.ls(f"{bucket}/probe.zarr/x/c", refresh=True)) == [
        f"{bucket}/probe.zarr/x/c/{i}" for i in range(4)
    ]


def test_resizing_is_seen_by_a_fresh_handle(s3: tuple[str, dict[str, Any]]) -> None:
    """Appending (resize + write) through one handle, reading through another."""
    prefix, options = s3
    url = f"{prefix}/grow.zarr"
    group = zarr.open_group(url, mode="w", storage_options=options)
    a = group.create_array("a", shape=(0, 2), chunks=(4, 2), shards=(8, 2), dtype="int32")
    for start in range(0, 20, 5):
        a.resize((start + 5, 2))
        a[start:] = np.arange(start * 2, (start + 5) * 2, dtype="int32").reshape(5, 2)
    # A separate s3fs instance (own listing cache), as another process would have.
    other = zarr.open_group(url, mode="r", storage_options={**options, "skip_instance_cache": True})
    np.testing.assert_array_equal(other["a"][:], np.arange(40, dtype="int32").reshape(20, 2))


def test_helper_restores_environment_and_stops() -> None:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from s3server import s3_bucket

    before = dict(os.environ)
    with s3_bucket("helper-probe") as (prefix, options):
        assert prefix == "s3://helper-probe"
        assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
        assert options["anon"] is False and options["key"] == "testing"
        endpoint = options["client_kwargs"]["endpoint_url"]
        assert endpoint.startswith("http://127.0.0.1:")
        port = int(endpoint.rsplit(":", 1)[1])
        import s3fs

        assert s3fs.S3FileSystem(**options, skip_instance_cache=True).ls("helper-probe") == []
    assert dict(os.environ) == before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
