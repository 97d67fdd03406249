"""Shared fixtures: a local S3 server (moto) for tests of remote stores.

``s3`` yields ``(url_prefix, storage_options)`` for a fresh, empty bucket on a moto
server at 127.0.0.1 (one server per test session, started on first use). Tests skip
when moto's server extra, s3fs or boto3 is missing. Nothing contacts the internet.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
