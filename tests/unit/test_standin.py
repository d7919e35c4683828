"""The stand-in's bounds: what it keeps for CloudWatch is capped, and no HTTP request can stop it."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from devstack.dataplane.standin import HOST, PENDING_CAP, App, Server


def test_unpublished_latencies_are_capped() -> None:
    """Without a publisher (no AWS_ENDPOINT_URL) nothing drains: the pending latencies keep the newest `cap`."""
    assert PENDING_CAP == 10_000
    app = App("i-1", "eu-west-1", cold_ms=0, warm_ms=0, keys=1, pending_cap=3)
    for ms in range(10):
        app._record(float(ms), failed=ms % 2 == 1)
    latencies, errors = app.drain()
    assert latencies == [7.0, 8.0, 9.0] and errors == 5
    assert app.served == 10 and app.drain() == ([], 0)


@pytest.fixture
def server() -> Iterator[tuple[Server, int]]:
    srv = Server(0, App("i-1", "eu-west-1", cold_ms=0, warm_ms=0, keys=1))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield srv, int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def _call(port: int, method: str, path: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, json.dumps({}).encode(), {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_no_http_request_stops_the_standin(server: tuple[Server, int]) -> None:
    """POST /shutdown is not a route (any local process could call it): the agent stops stand-ins by signal."""
    srv, port = server
    assert _call(port, "POST", "/shutdown") == 404
    assert not srv.stop.is_set()
    assert _call(port, "GET", "/health") == 200
