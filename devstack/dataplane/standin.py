"""Stand-in application for one emulated instance (stdlib HTTP server on 127.0.0.1).

    python -m devstack.dataplane.standin --port P --instance-id I --region R [--cold-ms 40 --warm-ms 2 --keys 200]

GET /health -> {instance_id, region, cached_keys, served}; GET /work?key=K -> slow (cold-ms) until K is cached,
fast (warm-ms) afterwards, the cache holding the `keys` most recently used keys; GET /stats -> requests, errors,
p50/p99 of the last requests; POST /fault {"mode": "none"|"errors"|"slow"}. Metrics go to CloudWatch (namespace
Shadowing/DataPlane) every few seconds when AWS_ENDPOINT_URL is set; publishing failures are logged, never fatal.
SIGTERM (what the agent sends: it owns the process) or SIGINT shuts it down cleanly; there is no HTTP shutdown,
which any local process could call.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

HOST = "127.0.0.1"
NAMESPACE = "Shadowing/DataPlane"
FAULTS = ("none", "errors", "slow")
SLOW_EXTRA_MS = 200.0
JITTER = (0.9, 1.25)
#: Latencies kept for the next CloudWatch publish: without a publisher (or while it fails) the oldest go.
PENDING_CAP = 10_000

log = logging.getLogger("shadowing.standin")


class App:
    """The stand-in's state: an LRU cache of keys, counters, recent latencies and the injected fault."""

    def __init__(
        self, instance_id: str, region: str, cold_ms: float, warm_ms: float, keys: int, window: int = 1000,
        pending_cap: int = PENDING_CAP,
    ) -> None:  # fmt: skip
        self.instance_id, self.region = instance_id, region
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
        else:
            self._reply(404, {"error": f"no route {url.path}"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/fault":
            try:
                self.server.app.set_fault(str(json.loads(body or b"{}").get("mode", "")))
            except (ValueError, AttributeError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            self._reply(200, {"fault": self.server.app.fault})
        else:
            self._reply(404, {"error": f"no route {url.path}"})

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
            import boto3  # only when publishing: keeps the stand-in's start-up fast
            from botocore.config import Config

            key = os.environ.get("AWS_ACCESS_KEY_ID") or "testing"
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or "testing"
            once = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)  # the next period retries
            self._client = boto3.client("cloudwatch", region_name=self._app.region, endpoint_url=self._endpoint,
                                        aws_access_key_id=key, aws_secret_access_key=secret, config=once)  # fmt: skip
        return self._client


def serve(args: argparse.Namespace) -> None:
    app = App(args.instance_id, args.region, args.cold_ms, args.warm_ms, args.keys)
    server = Server(args.port, app)
    signal.signal(signal.SIGTERM, lambda *_: server.stop.set())
    signal.signal(signal.SIGINT, lambda *_: server.stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    endpoint = args.aws_endpoint or os.environ.get("AWS_ENDPOINT_URL")
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
    p.add_argument("--aws-endpoint", default=None, help="default: AWS_ENDPOINT_URL; unset: no publishing")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process is no longer our parent")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(parse(argv))


if __name__ == "__main__":
    main()
