"""The stand-in's bounds (what it keeps for CloudWatch is capped, no HTTP request stops it), its items and its
write fence."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.dataplane.standin import HOST, PENDING_CAP, WRITE_ATTEMPTS, App, DynamoFactory, Server


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


# Items and the write fence, against moto's in-process DynamoDB. Nothing here waits on time: a write that must be
# held is seen waiting in GET /admin/writes, and every wait for a thread has a deadline that only a bug reaches.

EU, US = "eu-west-1", "us-east-1"


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoFactory]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        for region in (EU, US):
            boto3.client("dynamodb", region_name=region).create_table(
                TableName="orders", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
            )  # fmt: skip
        yield lambda region: boto3.client("dynamodb", region_name=region)


def serve_app(app: App) -> Iterator[int]:
    srv = Server(0, app)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def app(dynamodb: DynamoFactory) -> App:
    return App("i-1", EU, cold_ms=0, warm_ms=0, keys=1, dynamodb=dynamodb)


@pytest.fixture
def port(app: App) -> Iterator[int]:
    yield from serve_app(app)


def send(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def stored(region: str, key: str) -> dict | None:
    got = boto3.client("dynamodb", region_name=region).get_item(TableName="orders", Key={"id": {"S": key}})
    return got.get("Item")


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10  # only a bug reaches it
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def test_a_put_writes_the_next_version_durably_and_a_get_reads_it_back(port: int, app: App) -> None:
    """Each acknowledged PUT is in the table with `_v` + 1, a later `_ts` and the write region in `_r`."""
    status, first = send(port, "PUT", "/items/orders/a%20b", {"value": {"n": 1}})
    assert status == 200 and (first["key"], first["v"], first["r"], first["region"]) == ("a b", 1, EU, EU)
    assert first["instance_id"] == "i-1"
    status, second = send(port, "PUT", "/items/orders/a%20b", {"value": [2]})
    assert status == 200 and second["v"] == 2 and second["ts"] > first["ts"]
    item = stored(EU, "a b")
    assert item == {"id": {"S": "a b"}, "value": {"S": "[2]"}, "_v": {"N": "2"}, "_ts": {"N": str(second["ts"])},
                    "_r": {"S": EU}}  # fmt: skip
    assert send(port, "GET", "/items/orders/a%20b") == (
        200, {"key": "a b", "value": [2], "v": 2, "ts": second["ts"], "r": EU})  # fmt: skip
    assert send(port, "GET", "/items/orders/nothing")[0] == 404
    stats = send(port, "GET", "/stats")[1]
    assert (stats["writes_served"], stats["writes_failed"], stats["requests"]) == (2, 0, 0)


def test_a_write_builds_on_an_unversioned_item_and_a_stored_timestamp_ahead_of_the_clock(port: int) -> None:
    """An item someone else wrote without `_v` becomes version 1; a `_ts` in the future still grows."""
    ahead = int(time.time() * 1000) + 60_000
    boto3.client("dynamodb", region_name=EU).put_item(
        TableName="orders", Item={"id": {"S": "k"}, "_ts": {"N": str(ahead)}, "legacy": {"S": "x"}}
    )
    status, reply = send(port, "PUT", "/items/orders/k", {"value": None})
    assert status == 200 and reply["v"] == 1 and reply["ts"] == ahead + 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "names"),
    [
        ("PUT", "/items/nope/k", {"value": 1}, 404, "table nope does not exist in eu-west-1"),
        ("GET", "/items/nope/k", None, 404, "table nope does not exist in eu-west-1"),
        ("PUT", "/items/orders/k", {"val": 1}, 400, "value: missing"),
        ("PUT", "/items/orders/k", [1], 400, "value: missing"),
        ("PUT", "/items/orders/", {"value": 1}, 400, "key: missing"),
        ("PUT", "/items/x/k", {"value": 1}, 400, "table: 'x'"),
        ("POST", "/admin/writes", {"state": "shut"}, 400, "state: must be 'held' or 'open'"),
        ("POST", "/admin/writes", {"state": "held"}, 400, "deadline_ms: None"),
        ("POST", "/admin/writes", {"state": "held", "deadline_ms": 5}, 400, "deadline_ms: 5 "),
        ("POST", "/admin/writes", {"state": "held", "deadline_ms": True}, 400, "deadline_ms: True"),
        ("POST", "/admin/writes", {"state": "open", "region": "mars-1"}, 400, "region: 'mars-1'"),
        ("POST", "/admin/writes", ["held"], 400, "body: not a JSON object"),
    ],
)
def test_bad_requests_are_refused_naming_the_field_or_table(
    port: int, method: str, path: str, body: object, status: int, names: str
) -> None:
    """Unknown tables answer 404 naming table and region; bad bodies and routes answer 400 naming the field."""
    got, reply = send(port, method, path, body)
    assert got == status and names in reply["error"], reply
    assert send(port, "GET", "/admin/writes")[1]["state"] == "open"


def test_a_put_of_unparseable_json_names_the_body(port: int) -> None:
    """A body that is not JSON at all is a 400 naming the body, counted as a failed write."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.request("PUT", "/items/orders/k", b"{oops", {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and json.loads(resp.read())["error"].startswith("body: not JSON")
    conn.close()
    assert send(port, "GET", "/stats")[1]["writes_failed"] == 1


class Racing:
    """A DynamoDB client whose first `races` puts lose to another writer that got in just before them."""

    def __init__(self, inner: Any, races: int) -> None:
        self._inner, self.races = inner, races

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put_item(self, **kw: Any) -> Any:
        if self.races:
            self.races -= 1
            self._inner.update_item(TableName=kw["TableName"], Key={"id": kw["Item"]["id"]},
                                    UpdateExpression="ADD #v :one", ExpressionAttributeNames={"#v": "_v"},
                                    ExpressionAttributeValues={":one": {"N": "1"}})  # fmt: skip
        return self._inner.put_item(**kw)


@pytest.mark.parametrize(("races", "status", "final_v"), [(2, 200, 4), (WRITE_ATTEMPTS, 503, 1 + WRITE_ATTEMPTS)])
def test_a_write_that_loses_its_condition_rereads_and_retries_a_bounded_number_of_times(
    dynamodb: DynamoFactory, races: int, status: int, final_v: int
) -> None:
    """A concurrent write between read and put fails the condition: the write builds on the newer version; after
    WRITE_ATTEMPTS lost races it answers 503 naming the item and the other writers' item stays."""
    dynamodb(EU).put_item(TableName="orders", Item={"id": {"S": "k"}, "_v": {"N": "1"}, "_ts": {"N": "1"}})
    racing = Racing(dynamodb(EU), races)
    app = App("i-1", EU, cold_ms=0, warm_ms=0, keys=1, dynamodb=lambda _: racing)
    got, reply = app.items.put("orders", "k", b'{"value": 1}')
    assert got == status and racing.races == 0
    assert stored(EU, "k")["_v"] == {"N": str(final_v)}
    if status == 200:
        assert reply["v"] == final_v and stored(EU, "k")["value"] == {"S": "1"}
    else:
        assert "'k' of orders in eu-west-1" in reply["error"] and "value" not in stored(EU, "k")


def test_a_hold_blocks_new_writes_until_open_and_never_reads(port: int) -> None:
    """While held a PUT waits (it does not fail) and GETs answer; open releases it into the table."""
    send(port, "PUT", "/items/orders/k", {"value": "before"})
    deadline = int(time.time() * 1000) + 60_000
    status, held = send(port, "POST", "/admin/writes", {"state": "held", "deadline_ms": deadline})
    assert status == 200 and (held["state"], held["in_flight"], held["region"]) == ("held", 0, EU)
    replies: list[tuple[int, dict]] = []
    writer = threading.Thread(target=lambda: replies.append(send(port, "PUT", "/items/orders/k", {"value": "after"})))
    writer.start()
    wait_until(lambda: send(port, "GET", "/admin/writes")[1]["waiting"] == 1)
    assert send(port, "GET", "/items/orders/k")[1]["value"] == "before" and not replies
    status, opened = send(port, "POST", "/admin/writes", {"state": "open"})
    writer.join(10)
    assert status == 200 and opened["state"] == "open" and opened["region"] == EU and opened["held_ms"] >= 0
    assert replies and replies[0][0] == 200 and replies[0][1]["v"] == 2
    assert send(port, "GET", "/items/orders/k")[1]["value"] == "after"


class Gated:
    """A DynamoDB client whose puts wait for `gate`: a write kept in flight for as long as a test needs."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.gate, self.entered = inner, threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put_item(self, **kw: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(10)
        return self._inner.put_item(**kw)


def test_a_hold_answers_only_once_the_writes_in_flight_have_finished(dynamodb: DynamoFactory) -> None:
    """The hold's reply means drained: it comes after the write already in flight is in the table."""
    gated = Gated(dynamodb(EU))
    app = App("i-1", EU, cold_ms=0, warm_ms=0, keys=1, dynamodb=lambda _: gated)
    writer = threading.Thread(target=app.items.put, args=("orders", "k", b'{"value": 1}'))
    writer.start()
    assert gated.entered.wait(10)
    holds: list[dict] = []
    holder = threading.Thread(target=lambda: holds.append(app.fence.hold(int(time.time() * 1000) + 60_000)))
    holder.start()
    wait_until(lambda: app.fence.state()["state"] == "held")
    assert holder.is_alive() and app.fence.state()["in_flight"] == 1, "the hold answered with a write in flight"
    gated.gate.set()
    holder.join(10)
    writer.join(10)
    assert holds and holds[0]["state"] == "held" and holds[0]["in_flight"] == 0
    assert stored(EU, "k") is not None


def test_a_hold_past_its_deadline_opens_by_itself(port: int, caplog: pytest.LogCaptureFixture) -> None:
    """A dead orchestrator cannot freeze writes: past the deadline the waiting write goes through, and the hold's
    measured duration is up to its deadline."""
    deadline = int(time.time() * 1000) + 300
    held = send(port, "POST", "/admin/writes", {"state": "held", "deadline_ms": deadline})[1]
    with caplog.at_level(logging.WARNING):
        status, reply = send(port, "PUT", "/items/orders/k", {"value": 1})
    assert status == 200 and reply["ts"] >= deadline
    assert send(port, "GET", "/admin/writes")[1] == {"state": "open", "region": EU, "in_flight": 0, "waiting": 0,
                                                      "held_since_ms": None}  # fmt: skip
    assert "passed its deadline" in caplog.text
    assert send(port, "POST", "/admin/writes", {"state": "open"})[1]["held_ms"] == deadline - held["held_since_ms"]


def test_open_with_a_region_sends_the_held_writes_to_that_regions_table(port: int) -> None:
    """The migration points the old fleet at the new region: writes waiting at the fence land there, not here."""
    deadline = int(time.time() * 1000) + 60_000
    send(port, "POST", "/admin/writes", {"state": "held", "deadline_ms": deadline})
    replies: list[tuple[int, dict]] = []
    writer = threading.Thread(target=lambda: replies.append(send(port, "PUT", "/items/orders/k", {"value": 1})))
    writer.start()
    wait_until(lambda: send(port, "GET", "/admin/writes")[1]["waiting"] == 1)
    assert send(port, "POST", "/admin/writes", {"state": "open", "region": US})[1]["region"] == US
    writer.join(10)
    assert replies and replies[0][1]["r"] == US and stored(US, "k")["_r"] == {"S": US} and stored(EU, "k") is None
    assert send(port, "GET", "/items/orders/k")[1]["r"] == US, "reads follow the write region"
    assert send(port, "GET", "/admin/writes")[1]["region"] == US


def test_a_write_region_other_than_the_apps_own(dynamodb: DynamoFactory) -> None:
    """--write-region points a stand-in at another region's table from the start."""
    app = App("i-1", EU, cold_ms=0, warm_ms=0, keys=1, write_region=US, dynamodb=dynamodb)
    assert app.items.put("orders", "k", b'{"value": 1}')[1]["r"] == US and stored(US, "k") is not None


def test_dynamodb_unreachable_is_a_503_with_the_reason() -> None:
    """An AWS failure other than a missing table is a 503 naming table and region, counted as a failed write."""

    def unreachable(region: str) -> Any:
        raise ConnectionError(f"dynamodb.{region} unreachable")

    app = App("i-1", EU, cold_ms=0, warm_ms=0, keys=1, dynamodb=unreachable)
    status, reply = app.items.put("orders", "k", b'{"value": 1}')
    assert status == 503 and "orders in eu-west-1" in reply["error"] and "unreachable" in reply["error"]
    assert app.stats()["writes_failed"] == 1
