"""Stand-in application for one emulated instance (stdlib HTTP server on 127.0.0.1).

    python -m devstack.dataplane.standin --port P --instance-id I --region R [--cold-ms 40 --warm-ms 2 --keys 200]
        [--write-region R2]

GET /health -> {instance_id, region, cached_keys, served}; GET /work?key=K -> slow (cold-ms) until K is cached,
fast (warm-ms) afterwards, the cache holding the `keys` most recently used keys; GET /stats -> requests, errors,
p50/p99 of the last requests, writes served and failed; POST /fault {"mode": "none"|"errors"|"slow"}.

Items, as a real multi-region service serves them from its own region's table: PUT /items/<table>/<key>
{"value": ...} writes the item with the conflict rule's metadata (`_v`, `_ts`, `_r`: see activities/replication.py)
into the table in the write region (default: --region); GET /items/<table>/<key> reads it back, consistently.
The write fence (docs/your-application.md, "Writes and the write fence"): POST /admin/writes {"state": "held",
"deadline_ms": ...} holds new writes and answers once those in flight finished; {"state": "open", "region": ...}
releases them, into `region`'s table; GET /admin/writes says where it stands. Past its deadline a hold opens by
itself. Reads are never held.

Metrics go to CloudWatch (namespace Shadowing/DataPlane) every few seconds when AWS_ENDPOINT_URL is set;
publishing failures are logged, never fatal. SIGTERM (what the agent sends: it owns the process) or SIGINT shuts it
down cleanly; there is no HTTP shutdown, which any local process could call.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

HOST = "127.0.0.1"
NAMESPACE = "Shadowing/DataPlane"
FAULTS = ("none", "errors", "slow")
SLOW_EXTRA_MS = 200.0
JITTER = (0.9, 1.25)
#: Latencies kept for the next CloudWatch publish: without a publisher (or while it fails) the oldest go.
PENDING_CAP = 10_000
#: A write whose conditional put keeps losing to concurrent writers gives up (503) after this many reads.
WRITE_ATTEMPTS = 5
#: The longest hold a fence request may ask for: a bad deadline cannot freeze writes for longer.
MAX_HOLD_MS = 3_600_000
#: The conflict rule's attributes (activities/replication.py): version, hybrid timestamp (ms), writer region.
V, TS, R = "_v", "_ts", "_r"
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")

#: region -> DynamoDB client (boto3's, or moto's in tests).
DynamoFactory = Callable[[str], Any]

log = logging.getLogger("shadowing.standin")


class App:
    """The stand-in's state: an LRU cache of keys, counters, recent latencies and the injected fault."""

    def __init__(
        self, instance_id: str, region: str, cold_ms: float, warm_ms: float, keys: int, window: int = 1000,
        pending_cap: int = PENDING_CAP, *, write_region: str | None = None, dynamodb: DynamoFactory | None = None,
    ) -> None:  # fmt: skip
        self.instance_id, self.region = instance_id, region
        self.fence = WriteFence(write_region or region)
        self.items = Items(instance_id, self.fence, dynamodb or (lambda r: aws_client("dynamodb", r, None)))
        self.cold_ms, self.warm_ms, self.capacity = cold_ms, warm_ms, keys
        self.fault = "none"
        self._cache: OrderedDict[str, None] = OrderedDict()
        self._recent: deque[float] = deque(maxlen=window)
        self._pending: deque[float] = deque(maxlen=pending_cap)  # latencies not yet published
        self._pending_errors = 0
        self.served = self.errors = 0
        self._lock = threading.Lock()

    def work(self, key: str) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        with self._lock:
            hit = key in self._cache
            fault = self.fault
        base = self.warm_ms if hit else self.cold_ms
        delay_ms = base * random.uniform(*JITTER) + (SLOW_EXTRA_MS if fault == "slow" else 0.0)
        time.sleep(delay_ms / 1000)
        failed = fault == "errors"
        with self._lock:
            if not failed:
                self._cache[key] = None
                self._cache.move_to_end(key)
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        self._record((time.perf_counter() - started) * 1000, failed)
        if failed:
            return 500, {"error": "injected fault", "instance_id": self.instance_id}
        return 200, {"instance_id": self.instance_id, "key": key, "cached": hit}

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"instance_id": self.instance_id, "region": self.region, "cached_keys": len(self._cache),
                    "served": self.served}  # fmt: skip

    def stats(self) -> dict[str, Any]:
        with self._lock:
            recent = sorted(self._recent)
            return {
                "instance_id": self.instance_id, "requests": self.served, "errors": self.errors,
                "window": len(recent), "p50_ms": _pct(recent, 0.5), "p99_ms": _pct(recent, 0.99),
                "fault": self.fault, "cached_keys": len(self._cache),
                "writes_served": self.items.served, "writes_failed": self.items.failed,
            }  # fmt: skip

    def set_fault(self, mode: str) -> None:
        if mode not in FAULTS:
            raise ValueError(f"fault mode must be one of {', '.join(FAULTS)}, not {mode!r}")
        with self._lock:
            self.fault = mode

    def drain(self) -> tuple[list[float], int]:
        """Latencies and error count since the last call (what the next CloudWatch publish carries)."""
        with self._lock:
            pending, errors = list(self._pending), self._pending_errors
            self._pending.clear()
            self._pending_errors = 0
            return pending, errors

    def _record(self, ms: float, failed: bool) -> None:
        with self._lock:
            self.served += 1
            self.errors += int(failed)
            self._pending_errors += int(failed)
            self._recent.append(ms)
            self._pending.append(ms)


def _pct(ordered: list[float], q: float) -> float | None:
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3) if ordered else None


def _now_ms() -> int:
    return int(time.time() * 1000)


class WriteFence:
    """Holds writes while a migration switches regions, so that one region at a time writes the entity's items.

    Writes wait while held (they never fail for it) and go, once it opens, into the table of whatever region the
    fence names then. A hold carries a deadline past which it opens by itself: an orchestrator that died
    mid-migration can never freeze writes for good.
    """

    def __init__(self, region: str) -> None:
        self.region = region
        self._cond = threading.Condition()
        self._held_since_ms: int | None = None
        self._deadline_ms = 0
        self._held_ms = 0
        self._in_flight = self._waiting = 0

    @contextmanager
    def write(self) -> Iterator[str]:
        """Waits while writes are held, then counts one in flight; yields the region whose table it goes to."""
        with self._cond:
            self._waiting += 1
            while self._held():
                self._cond.wait((self._deadline_ms - _now_ms()) / 1000)
            self._waiting -= 1
            self._in_flight += 1
            region = self.region
        try:
            yield region
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def hold(self, deadline_ms: int) -> dict[str, Any]:
        """Holds new writes until `deadline_ms` (unix ms); returns once the writes in flight have finished, or the
        hold lapsed first (then the state says "open"). Holding again moves the deadline, not the start."""
        with self._cond:
            if self._held_since_ms is None:
                self._held_since_ms = _now_ms()
            self._deadline_ms = deadline_ms
            while self._in_flight and self._held():
                self._cond.wait((self._deadline_ms - _now_ms()) / 1000)
            return self._state()

    def open(self, region: str | None) -> dict[str, Any]:
        """Releases the waiting writes, into `region`'s table when given; `held_ms` is how long the last hold lasted."""
        with self._cond:
            if self._held_since_ms is not None:
                self._held_ms = _now_ms() - self._held_since_ms
                self._held_since_ms = None
            self.region = region or self.region
            self._cond.notify_all()
            return {"state": "open", "region": self.region, "held_ms": self._held_ms}

    def state(self) -> dict[str, Any]:
        with self._cond:
            self._held()
            return self._state()

    def _state(self) -> dict[str, Any]:
        held = self._held_since_ms is not None
        return {"state": "held" if held else "open", "region": self.region, "in_flight": self._in_flight,
                "waiting": self._waiting, "held_since_ms": self._held_since_ms}  # fmt: skip

    def _held(self) -> bool:
        """Whether writes are held, opening the fence once its deadline has passed (the caller holds the lock)."""
        if self._held_since_ms is not None and _now_ms() >= self._deadline_ms:
            self._held_ms = self._deadline_ms - self._held_since_ms
            self._held_since_ms = None
            self._cond.notify_all()
            log.warning("write fence: the hold passed its deadline after %d ms; writes released", self._held_ms)
        return self._held_since_ms is not None


class Items:
    """The app's items, read and written in the write region's DynamoDB table with the conflict rule's metadata.

    Each write is the stored item's successor: `_v` + 1, `_ts` past both the clock and the stored `_ts`, `_r` the
    write region, put on condition that the stored item did not change meanwhile, so two regions writing one key
    leave versions that activities/replication.py orders the same way everywhere.
    """

    def __init__(self, instance_id: str, fence: WriteFence, dynamodb: DynamoFactory) -> None:
        self._instance_id, self._fence, self._factory = instance_id, fence, dynamodb
        self._clients: dict[str, Any] = {}
        self._hash_keys: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.served = self.failed = 0

    def put(self, table: str, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Waits while the fence holds writes, then writes; 200 only once the item is in the table."""
        try:
            value = _value(body)
        except ValueError as exc:
            status, payload = 400, {"error": str(exc)}
        else:
            with self._fence.write() as region:
                status, payload = self._call(
                    region, table, lambda ddb, pk: self._put(ddb, region, table, pk, key, value)
                )
        with self._lock:
            self.served += status == 200
            self.failed += status != 200
        return status, payload

    def get(self, table: str, key: str) -> tuple[int, dict[str, Any]]:
        """A consistent read from the write region's table (never held)."""
        region = self._fence.region
        return self._call(region, table, lambda ddb, pk: _read(ddb, region, table, pk, key))

    def _call(self, region: str, table: str, op: Callable[[Any, str], tuple[int, dict[str, Any]]]) -> tuple[int, dict]:
        try:
            ddb = self._client(region)
            if (region, table) not in self._hash_keys:
                schema = ddb.describe_table(TableName=table)["Table"]["KeySchema"]
                self._hash_keys[region, table] = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
            return op(ddb, self._hash_keys[region, table])
        except Exception as exc:  # DynamoDB refused or could not be reached: the client is told which and why
            if _code(exc) == "ResourceNotFoundException":
                return 404, {"error": f"table {table} does not exist in {region}"}
            return 503, {"error": f"DynamoDB table {table} in {region}: {exc}"}

    def _put(self, ddb: Any, region: str, table: str, pk: str, key: str, value: Any) -> tuple[int, dict[str, Any]]:
        for _ in range(WRITE_ATTEMPTS):
            stored = ddb.get_item(TableName=table, Key={pk: {"S": key}}, ConsistentRead=True).get("Item")
            item, condition = _successor(stored or {}, pk, key, value, region)
            try:
                ddb.put_item(TableName=table, Item=item, **condition)
            except Exception as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    continue  # another writer got in between: build on its version instead
                raise
            v, ts = int(item[V]["N"]), int(item[TS]["N"])
            return 200, {"key": key, "v": v, "ts": ts, "r": region, "region": region, "instance_id": self._instance_id}
        return 503, {"error": f"item {key!r} of {table} in {region}: {WRITE_ATTEMPTS} concurrent writes won in a row"}

    def _client(self, region: str) -> Any:
        with self._lock:  # boto3 clients are made one at a time: its default session is not thread-safe
            if region not in self._clients:
                self._clients[region] = self._factory(region)
            return self._clients[region]


def _successor(stored: dict[str, Any], pk: str, key: str, value: Any, region: str) -> tuple[dict, dict[str, Any]]:
    """The item that follows `stored`, and the put's condition that `stored` is still what the table holds."""
    version = int(stored[V]["N"]) if V in stored else 0
    ts = max(_now_ms(), int(stored[TS]["N"]) + 1 if TS in stored else 0)
    item = {pk: {"S": key}, "value": {"S": json.dumps(value)}, V: {"N": str(version + 1)}, TS: {"N": str(ts)},
            R: {"S": region}}  # fmt: skip
    names = {"#pk": pk, "#v": V}
    if V in stored:
        return item, {"ConditionExpression": "attribute_not_exists(#pk) OR #v = :v", "ExpressionAttributeNames": names,
                      "ExpressionAttributeValues": {":v": stored[V]}}  # fmt: skip
    # absent or unversioned (made by someone else): any versioned write since then wins over this one
    return item, {"ConditionExpression": "attribute_not_exists(#pk) OR attribute_not_exists(#v)",
                  "ExpressionAttributeNames": names}  # fmt: skip


def _read(ddb: Any, region: str, table: str, pk: str, key: str) -> tuple[int, dict[str, Any]]:
    item = ddb.get_item(TableName=table, Key={pk: {"S": key}}, ConsistentRead=True).get("Item")
    if item is None:
        return 404, {"error": f"no item {key!r} in table {table} in {region}"}
    value = json.loads(item["value"]["S"]) if "S" in item.get("value", {}) else None
    number = lambda name: int(item[name]["N"]) if name in item else None  # noqa: E731
    return 200, {"key": key, "value": value, "v": number(V), "ts": number(TS), "r": item.get(R, {}).get("S")}


def _value(body: bytes) -> Any:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise ValueError('body: not JSON (send {"value": <any JSON>})') from None
    if not isinstance(doc, dict) or "value" not in doc:
        raise ValueError('value: missing (send {"value": <any JSON>})')
    return doc["value"]


def _code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def fence_request(fence: WriteFence, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST /admin/writes: {"state": "held", "deadline_ms": ...} or {"state": "open"[, "region": ...]}."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return 400, {"error": "body: not JSON"}
    if not isinstance(doc, dict):
        return 400, {"error": "body: not a JSON object"}
    state, deadline, region = doc.get("state"), doc.get("deadline_ms"), doc.get("region")
    if state == "held":
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not _ahead(deadline):
            return 400, {"error": f"deadline_ms: {deadline!r} is not a unix time in ms within the next hour"}
        return 200, fence.hold(int(deadline))
    if state == "open":
        if region is not None and not (isinstance(region, str) and REGION.fullmatch(region)):
            return 400, {"error": f"region: {region!r} is not an AWS region"}
        return 200, fence.open(region)
    return 400, {"error": f"state: must be 'held' or 'open', not {state!r}"}


def _ahead(deadline_ms: float) -> bool:
    """In the future, and not so far that a bad request could freeze writes for long (NaN is neither)."""
    return 0 < deadline_ms - _now_ms() <= MAX_HOLD_MS


def item_route(path: str) -> tuple[str, str]:
    """(table, key) of /items/<table>/<key>; ValueError naming the part that is wrong."""
    table, _, key = path.removeprefix("/items/").partition("/")
    if not TABLE.fullmatch(table):
        raise ValueError(f"table: {table!r} is not a DynamoDB table name")
    if not unquote(key):
        raise ValueError("key: missing (/items/<table>/<key>)")
    return table, unquote(key)


def aws_client(service: str, region: str, endpoint: str | None) -> Any:
    """A boto3 client, made on first use (keeps start-up fast) that tries once: the next period or request
    retries. An emulator (`endpoint`) gets "testing" credentials when none are set."""
    import boto3
    from botocore.config import Config

    creds = {}
    if endpoint:
        creds = {"aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID") or "testing",
                 "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or "testing"}  # fmt: skip
    once = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)
    return boto3.client(service, region_name=region, endpoint_url=endpoint, config=once, **creds)


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        app = self.server.app
        if url.path == "/health":
            self._reply(200, app.health())
        elif url.path == "/stats":
            self._reply(200, app.stats())
        elif url.path == "/work":
            key = parse_qs(url.query).get("key", [""])[0]
            self._reply(*app.work(key))
        elif url.path == "/admin/writes":
            self._reply(200, app.fence.state())
        elif url.path.startswith("/items/"):
            self._item(url.path, app.items.get)
        else:
            self._reply(404, {"error": f"no route {url.path}"})

    def do_PUT(self) -> None:
        url = urlparse(self.path)
        body = self._body()
        if url.path.startswith("/items/"):
            self._item(url.path, lambda table, key: self.server.app.items.put(table, key, body))
        else:
            self._reply(404, {"error": f"no route {url.path}"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        body = self._body()
        if url.path == "/admin/writes":
            self._reply(*fence_request(self.server.app.fence, body))
        elif url.path == "/fault":
            try:
                self.server.app.set_fault(str(json.loads(body or b"{}").get("mode", "")))
            except (ValueError, AttributeError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200, {"fault": self.server.app.fault})
        else:
            self._reply(404, {"error": f"no route {url.path}"})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _item(self, path: str, op: Callable[[str, str], tuple[int, dict[str, Any]]]) -> None:
        try:
            table, key = item_route(path)
        except ValueError as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(*op(table, key))

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request would drown the log
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, app: App) -> None:
        self.app = app
        self.stop = threading.Event()
        super().__init__((HOST, port), Handler)


class Publisher(threading.Thread):
    """Puts Requests, Errors and LatencyMs to CloudWatch every `every_s`; failures are logged and skipped."""

    def __init__(self, app: App, endpoint: str, every_s: float, stop: threading.Event) -> None:
        super().__init__(name="cloudwatch-publisher", daemon=True)
        self._app, self._endpoint, self._every_s, self._stop = app, endpoint, every_s, stop
        self._client: Any = None

    def run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.publish()

    def publish(self) -> None:
        latencies, errors = self._app.drain()
        if not latencies:
            return
        try:
            self._cloudwatch().put_metric_data(Namespace=NAMESPACE, MetricData=self._data(latencies, errors))
        except Exception as exc:  # never fatal: the stand-in serves whether or not metrics get through
            log.warning("publishing %d datapoints to %s failed: %s", len(latencies), self._endpoint, exc)

    def _data(self, latencies: list[float], errors: int) -> list[dict[str, Any]]:
        # One series per instance. moto matches a query's dimensions as a subset, so a query by InstanceId alone
        # finds it; real CloudWatch matches exactly, and a second InstanceId-only series
        # would be counted twice here.
        dims = [{"Name": "InstanceId", "Value": self._app.instance_id}, {"Name": "Region", "Value": self._app.region}]
        values: dict[float, int] = {}
        for ms in latencies:
            values[round(ms, 1)] = values.get(round(ms, 1), 0) + 1
        vals = list(values.items())[:150]  # PutMetricData takes at most 150 distinct values per datum
        return [
            {"MetricName": "Requests", "Dimensions": dims, "Value": float(len(latencies)), "Unit": "Count"},
            {"MetricName": "Errors", "Dimensions": dims, "Value": float(errors), "Unit": "Count"},
            {"MetricName": "LatencyMs", "Dimensions": dims, "Values": [v for v, _ in vals],
             "Counts": [float(c) for _, c in vals], "Unit": "Milliseconds"},
        ]  # fmt: skip

    def _cloudwatch(self) -> Any:
        if self._client is None:
            self._client = aws_client("cloudwatch", self._app.region, self._endpoint)
        return self._client


def serve(args: argparse.Namespace) -> None:
    endpoint = args.aws_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    app = App(args.instance_id, args.region, args.cold_ms, args.warm_ms, args.keys, write_region=args.write_region,
              dynamodb=lambda region: aws_client("dynamodb", region, endpoint))  # fmt: skip
    server = Server(args.port, app)
    signal.signal(signal.SIGTERM, lambda *_: server.stop.set())
    signal.signal(signal.SIGINT, lambda *_: server.stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    publisher = Publisher(app, endpoint, args.publish_s, server.stop) if endpoint else None
    if publisher:
        publisher.start()
    log.info("stand-in %s (%s) listening on %s:%d", args.instance_id, args.region, HOST, args.port)
    while not server.stop.wait(0.2):
        if args.parent_pid and os.getppid() != args.parent_pid:  # the agent died without stopping us
            log.warning("parent %d is gone; stopping", args.parent_pid)
            break
    server.shutdown()
    server.server_close()
    if publisher:
        publisher.publish()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devstack.dataplane.standin", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--instance-id", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--cold-ms", type=float, default=40.0, help="latency of a key not yet cached")
    p.add_argument("--warm-ms", type=float, default=2.0, help="latency of a cached key")
    p.add_argument("--keys", type=int, default=200, help="cache capacity (keys)")
    p.add_argument("--publish-s", type=float, default=5.0, help="CloudWatch publishing period")
    p.add_argument("--write-region", default=None, help="region whose tables items are written to (default: --region)")
    p.add_argument("--aws-endpoint", default=None, help="default: AWS_ENDPOINT_URL; unset: no publishing")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process is no longer our parent")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(parse(argv))


if __name__ == "__main__":
    main()
