"""Fleet health signals: HTTP probes against a local server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.monitoring import MonitoringActivities, ProbeInput, percentile
from shadowing.models import DegradationPolicy, FleetRef
from workflows.verdict import judge

Serve = Callable[..., str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        time.sleep(self.server.delay_s)
        body = b"ok" if self.server.status < 400 else b"boom"
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status, self.delay_s, self.paths = status, delay_s, []


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts local HTTP servers answering `status` after `delay_s`; returns their base URLs."""
    servers: list[_Server] = []

    def start(status: int = 200, delay_s: float = 0.0) -> str:
        server = _Server(status, delay_s)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    start.servers = servers  # type: ignore[attr-defined]
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class StaticEndpoints:
    def __init__(self, urls: dict[str, str | None]) -> None:
        self.urls = urls
        self.asked: list[tuple[str, str]] = []

    def url(self, instance_id: str, private_ip: str) -> str | None:
        self.asked.append((instance_id, private_ip))
        return self.urls.get(instance_id)


def fleet(*ids: str) -> FleetRef:
    return FleetRef(fleet_id="shop:new", entity_id="shop", region="eu-west-1", instance_type="m5.large",
                    instance_ids=ids, addresses=tuple(f"10.1.0.{i}" for i in range(1, len(ids) + 1)))  # fmt: skip


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def probe(urls: dict[str, str | None], n: int = 5, timeout_s: float = 2.0) -> object:
    act = MonitoringActivities(StaticEndpoints(urls))
    req = ProbeInput(fleet=fleet(*sorted(urls)), requests_per_instance=n, timeout_s=timeout_s)
    return ActivityEnvironment().run(act.probe_fleet, req)


def test_probe_healthy_fleet(serve: Serve) -> None:
    """Every instance gets N GETs of /work with a key; a healthy fleet has no errors and measured latencies."""
    url = serve()
    endpoints = StaticEndpoints({"i-a": url, "i-b": url})
    act = MonitoringActivities(endpoints)
    signals = ActivityEnvironment().run(act.probe_fleet, ProbeInput(fleet=fleet("i-a", "i-b"), requests_per_instance=4))
    assert (signals.samples, signals.errors, signals.error_rate) == (8, 0, 0.0)
    assert signals.p50_ms is not None and signals.p99_ms is not None and signals.p50_ms <= signals.p99_ms
    assert [s.instance_id for s in signals.instances] == ["i-a", "i-b"]
    assert sorted(endpoints.asked) == [("i-a", "10.1.0.1"), ("i-b", "10.1.0.2")]
    paths = serve.servers[0].paths  # type: ignore[attr-defined]
    assert len(paths) == 8 and all(p.startswith("/work?key=warm-") for p in paths), "probes reuse the hot keys"


def test_probe_counts_500s_and_unreachable_instances_as_errors(serve: Serve) -> None:
    """HTTP 500s, a refused connection and an instance without endpoint are all errors, per instance."""
    signals = probe({"i-ok": serve(), "i-500": serve(status=500), "i-down": closed_port_url(), "i-none": None})
    by_id = {s.instance_id: s for s in signals.instances}  # type: ignore[attr-defined]
    assert {k: (s.samples, s.errors) for k, s in by_id.items()} == {
        "i-ok": (5, 0), "i-500": (5, 5), "i-down": (5, 5), "i-none": (5, 5),
    }  # fmt: skip
    assert "HTTP 500" in by_id["i-500"].detail and by_id["i-none"].detail == "no endpoint"
    assert by_id["i-down"].p99_ms is None, "no response, no latency"
    assert signals.errors == 15 and signals.error_rate == pytest.approx(0.75)  # type: ignore[attr-defined]


def test_probe_slow_instances_show_in_p99_and_time_out_as_errors(serve: Serve) -> None:
    """A slow instance raises p99 enough for the verdict to see it; one slower than the timeout counts as errors."""
    baseline = probe({"i-a": serve(), "i-b": serve()}, n=10)
    slow = probe({"i-a": serve(), "i-b": serve(delay_s=0.08)}, n=10)
    assert slow.p99_ms >= 80  # type: ignore[attr-defined]
    policy = DegradationPolicy(min_samples=10, latency_floor_ms=40)
    assert not judge(baseline, baseline, policy).degraded  # type: ignore[arg-type]
    verdict = judge(baseline, slow, policy)  # type: ignore[arg-type]
    assert verdict.degraded and "p99" in verdict.reasons[0]
    timed_out = probe({"i-a": serve(delay_s=0.3)}, n=2, timeout_s=0.05)
    assert (timed_out.samples, timed_out.errors) == (2, 2)  # type: ignore[attr-defined]


def test_probe_of_an_empty_fleet_has_no_samples() -> None:
    """A fleet without instances yields samples=0 and no latencies, not a healthy-looking zero."""
    act = MonitoringActivities(StaticEndpoints({}))
    signals = ActivityEnvironment().run(act.probe_fleet, ProbeInput(fleet=fleet()))
    assert (signals.samples, signals.error_rate, signals.p99_ms) == (0, None, None)


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "224.0.0.1", "127.0.0.1", "latest"])
def test_probe_refuses_an_address_that_is_not_an_instances_before_any_request(address: str) -> None:
    """A fleet address aimed at the metadata service, a multicast group, loopback (off the local data plane) or no IP
    at all fails the probe non-retryably, naming the field, and no request is sent anywhere. (`model_copy` skips
    the model's own check, as a payload from a worker without it would.)"""
    crafted = fleet("i-a", "i-b").model_copy(update={"addresses": ("10.1.0.1", address)})
    endpoints = StaticEndpoints({"i-a": "http://127.0.0.1:9", "i-b": "http://127.0.0.1:9"})
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(MonitoringActivities(endpoints).probe_fleet, ProbeInput(fleet=crafted))
    assert err.value.type == "InvalidRequest" and err.value.non_retryable
    assert err.value.message.startswith("fleet.addresses[1]: ") and address in err.value.message
    assert endpoints.asked == [], "nothing was asked for, nothing probed"


def test_probe_accepts_loopback_addresses_on_the_local_data_plane(serve: Serve) -> None:
    """The local data plane's stand-ins listen on loopback: there (and only there) a loopback address is fine."""
    url = serve()
    local = fleet("i-a").model_copy(update={"addresses": ("127.0.0.1",)})
    act = MonitoringActivities(StaticEndpoints({"i-a": url}), loopback=True)
    signals = ActivityEnvironment().run(act.probe_fleet, ProbeInput(fleet=local, requests_per_instance=2))
    assert (signals.samples, signals.errors) == (2, 0)


def test_percentile_nearest_rank() -> None:
    """p50 and p99 by nearest rank; no values gives None."""
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile([], 0.5)) == (50, 99, None)
