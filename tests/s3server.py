"""A local S3-compatible server (moto) for tests of remote (fsspec) stores.

Nothing here talks to the internet: the server listens on 127.0.0.1 on a free port
chosen by the OS, and every client option points at it.

::

    with s3_bucket() as (prefix, storage_options):
        zarr.open_group(f"{prefix}/x.zarr", mode="w", storage_options=storage_options)

In the test suite, use the ``s3`` fixture from ``tests/conftest.py`` instead: one
server per session, a fresh bucket per test.

Pieces
------
* :func:`aws_test_env` sets dummy AWS credentials and disables every other source of
  credentials (profiles, config files, instance metadata) and any proxy for
  127.0.0.1, only while the context is open; the previous environment is restored.
* :class:`S3Server` runs moto's server app in a daemon thread (what
  ``moto.server.ThreadedMotoServer`` does, plus bounded waits, one ``Server``
  header per response and no per-request log lines, see below), makes buckets and
  hands out s3fs options.
* :func:`s3_bucket` combines both and yields ``(url_prefix, storage_options)``.

Why not ``ThreadedMotoServer`` itself
-------------------------------------
moto 5.2.5 sends two ``Server`` headers (its own ``server: amazon.com`` plus
werkzeug's), and aiohttp >= 3.14 (used by s3fs through aiobotocore) refuses such a
response: ``Duplicate 'Server' header found`` (getmoto/moto#9930,
aio-libs/aiohttp#12297). The same app, handler and ``make_server`` call as
``ThreadedMotoServer`` are used here, with a tiny WSGI wrapper dropping moto's copy.
``ThreadedMotoServer.start`` also waits without a timeout (forever if binding the
port fails in its thread) and ``stop`` joins without one; here the port is bound
before the thread starts and every wait is bounded.

This module imports only the standard library at import time (moto, werkzeug and
boto3 are imported when a server starts), so collecting it never needs them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "S3Server", "aws_test_env", "s3_bucket"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT = 10.0  # seconds to wait for the first answer
STOP_TIMEOUT = 10.0  # seconds to wait for the serving thread to end
CLIENT_CONNECT_TIMEOUT = 5  # botocore connect_timeout for every client made here
CLIENT_READ_TIMEOUT = 30  # botocore read_timeout

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    # No real credentials, profiles or instance-metadata lookups can leak in.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_REMOVED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _no_proxy_value(current: str | None) -> str:
    entries = [e.strip() for e in (current or "").split(",") if e.strip()]
    return ",".join([*entries, *(h for h in _LOCAL_HOSTS if h not in entries)])


@contextlib.contextmanager
def aws_test_env() -> Iterator[None]:
    """Dummy AWS credentials and no proxy for 127.0.0.1, restored on exit."""
    names = [*_DUMMY_ENV, *_REMOVED_ENV, "NO_PROXY", "no_proxy"]
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in _REMOVED_ENV:
            os.environ.pop(name, None)
        os.environ.update(_DUMMY_ENV)
        for name in ("NO_PROXY", "no_proxy"):
            os.environ[name] = _no_proxy_value(saved[name])
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _one_server_header(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI wrapper dropping the app's ``Server`` header; werkzeug adds its own."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() != "server"]
            return start_response(status, kept, exc_info)

        return app(environ, start)

    return wrapped


def _no_log(self: Any, *args: Any) -> None:
    """``log_request`` that logs nothing (errors are still logged by werkzeug)."""


class S3Server:
    """moto's S3 (and every other moto service) on ``host:port`` in a daemon thread.

    ``port=0`` lets the OS pick a free port; read it back from :attr:`port`. Use as a
    context manager, or call :meth:`start` and :meth:`stop`. Requests are logged (logger
    ``werkzeug``, INFO) only with ``log_requests=True`` or ``S3SERVER_LOG_REQUESTS=1``.

    Moto keeps its data in memory, global to the process: two servers in one process
    see the same buckets, and the data lives until the process ends. Hence a fresh
    bucket name per test (:meth:`create_bucket` with no name).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_requests: bool | None = None) -> None:
        self.host = host
        if log_requests is None:
            log_requests = os.environ.get("S3SERVER_LOG_REQUESTS", "") not in ("", "0")
        self.log_requests = log_requests
        self._requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> S3Server:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        app = _one_server_header(DomainDispatcherApplication(create_backend_app))
        handler = MotoRequestHandler
        if not self.log_requests:  # one INFO line per request floods a failing test's report
            handler = type("QuietMotoRequestHandler", (MotoRequestHandler,), {"log_request": _no_log})
        # Bind in this thread: a busy port raises here instead of in the thread.
        server = make_server(self.host, self._requested_port, app, threaded=True, request_handler=handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="moto-s3", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"{self.endpoint_url}/moto-api/data.json", timeout=2
                ):
                    return
            except OSError as exc:  # not accepting yet
                last = exc
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server on {self.endpoint_url} not ready after {START_TIMEOUT} s: {last}")

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        try:
            if thread is not None and thread.is_alive():
                # shutdown() blocks until serve_forever notices (poll_interval); the thread
                # is alive, so it is inside serve_forever or about to enter it.
                server.shutdown()
                thread.join(STOP_TIMEOUT)
                if thread.is_alive():  # pragma: no cover - only on a wedged server
                    raise RuntimeError(f"moto server thread did not stop within {STOP_TIMEOUT} s")
        finally:
            server.server_close()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and options -----------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """A new dict of s3fs options for this server (``extra`` is merged on top).

        Explicit credentials, never anonymous; bounded timeouts and retries so a dead
        server fails a test instead of hanging it.
        """
        options: dict[str, Any] = {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "anon": False,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            "config_kwargs": {
                "connect_timeout": CLIENT_CONNECT_TIMEOUT,
                "read_timeout": CLIENT_READ_TIMEOUT,
                "retries": {"max_attempts": 2, "mode": "standard"},
            },
        }
        options.update(copy.deepcopy(extra))
        return options

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                connect_timeout=CLIENT_CONNECT_TIMEOUT,
                read_timeout=CLIENT_READ_TIMEOUT,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name.

        boto3, not ``s3fs.mkdir``: s3fs sends ``LocationConstraint=us-east-1``, which S3
        and moto refuse for that region.
        """
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name


@contextlib.contextmanager
def s3_bucket(bucket: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Start a server, create ``bucket`` and yield ``("s3://<bucket>", storage_options)``."""
    with aws_test_env(), S3Server() as server:
        name = server.create_bucket(bucket)
        yield f"s3://{name}", server.storage_options()
