"""Shared fixtures: a private index cache, and a local S3 server (moto) for tests of remote stores.

The extxyz index cache goes to a temporary folder for the whole session (and the
processes it starts), never to the user's ``~/.cache``.

``s3`` yields ``(url_prefix, storage_options)`` for a fresh, empty bucket on a moto
server at 127.0.0.1 (one server per test session, started on first use). Tests skip
when moto's server extra, s3fs or boto3 is missing. Nothing contacts the internet.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_index_cache() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="asebytes-nodes-cache-")
    before = os.environ.get("ASEBYTES_NODES_CACHE_DIR")
    os.environ["ASEBYTES_NODES_CACHE_DIR"] = folder
    yield folder
    if before is None:
        del os.environ["ASEBYTES_NODES_CACHE_DIR"]
    else:
        os.environ["ASEBYTES_NODES_CACHE_DIR"] = before
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """One moto server for the session, with dummy AWS credentials set while it runs."""
    pytest.importorskip("moto.server", reason="needs moto[server] for a local S3 server")
    pytest.importorskip("s3fs", reason="needs s3fs for s3:// URLs")
    pytest.importorskip("boto3", reason="needs boto3 to create buckets")
    from s3server import S3Server, aws_test_env

    with aws_test_env(), S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server: Any) -> tuple[str, dict[str, Any]]:
    """``("s3://<fresh bucket>", storage_options)``; the options dict is new for each test."""
    bucket = s3_server.create_bucket()
    return f"s3://{bucket}", s3_server.storage_options()
