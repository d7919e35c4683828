"""Post-cutover health signals of a fleet: direct HTTP probes of its instances, and its CloudWatch data-plane metrics.

Both return `FleetSignals`; `workflows.verdict.judge` compares them with the baseline. Missing data is reported as
`samples=0` with latencies None, never as invented zeros, so that "no traffic" cannot pass for "healthy".
A fleet's addresses come from a payload: each is checked (`shadowing.endpoints.check_address`) before any probe, and
one that is not an instance's (the metadata service, multicast, loopback off the local data plane) fails the
activity non-retryably, naming the field.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import SYNTHETIC_KEY_PREFIX, ClientFactory
from shadowing.endpoints import check_address
from shadowing.errors import InvalidRequest
from shadowing.models import FleetRef, FleetSignals, InstanceSignals, MetricsInput, ProbeInput

MAX_PARALLEL = 8


class Endpoints(Protocol):
    """Where an instance serves (the data plane's `shadowing/endpoints.py` implements it)."""

    def url(self, instance_id: str, private_ip: str) -> str | None:
        """Base URL (scheme://host:port) of the instance, or None when it has none."""
        ...


def checked_address(address: str, field: str, loopback: bool = False) -> str:
    """`check_address` as an activity failure: a non-retryable `InvalidRequest` ApplicationError naming `field`."""
    try:
        return check_address(address, field, loopback=loopback)
    except InvalidRequest as exc:
        raise ApplicationError(str(exc), type="InvalidRequest", non_retryable=True) from None


def check_addresses(fleet: FleetRef, loopback: bool = False) -> tuple[str, ...]:
    """Every `fleet.addresses[i]`, checked before the first request goes anywhere."""
    return tuple(checked_address(a, f"fleet.addresses[{n}]", loopback) for n, a in enumerate(fleet.addresses))


class MonitoringActivities:
    """Probes and metrics; `loopback`: addresses may be loopback (the local data plane's stand-ins)."""

    def __init__(self, clients: ClientFactory, endpoints: Endpoints, *, loopback: bool = False) -> None:
        self._clients = clients
        self._endpoints = endpoints
        self._loopback = loopback

    @activity.defn(name="probe_fleet")
    def probe_fleet(self, req: ProbeInput) -> FleetSignals:
        """`requests_per_instance` GETs of `path` per instance; non-2xx/3xx, timeouts and no endpoint are errors.
        An address that is not an instance's is a non-retryable `InvalidRequest` before any request."""
        fleet = req.fleet
        addresses = check_addresses(fleet, self._loopback)
        if not fleet.instance_ids:
            return FleetSignals(fleet_id=fleet.fleet_id, source="probe", detail="fleet has no instances")
        ips = addresses if len(addresses) == len(fleet.instance_ids) else ("",) * fleet.size
        results: list[tuple[InstanceSignals, list[float]]] = []
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, fleet.size)) as pool:
            futures = [
                pool.submit(self._probe_instance, req, i, ip) for i, ip in zip(fleet.instance_ids, ips, strict=True)
            ]
            for future in as_completed(futures):
                results.append(future.result())
                activity.heartbeat(len(results))
        results.sort(key=lambda r: r[0].instance_id)
        latencies = [ms for _, lat in results for ms in lat]
        instances = tuple(sig for sig, _ in results)
        return FleetSignals(
            fleet_id=fleet.fleet_id,
            source="probe",
            samples=sum(s.samples for s in instances),
            errors=sum(s.errors for s in instances),
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            instances=instances,
        )

    @activity.defn(name="fleet_metrics")
    def fleet_metrics(self, req: MetricsInput) -> FleetSignals:
        """Requests, Errors and LatencyMs (dimension InstanceId) of each instance over the window."""
        end = req.end or datetime.now(UTC)
        start = end - timedelta(seconds=req.window_s)
        cw = self._clients("cloudwatch", req.fleet.region)
        instances = []
        for instance_id in req.fleet.instance_ids:
            instances.append(_instance_metrics(cw, req, instance_id, start, end))
            activity.heartbeat(len(instances))
        with_data = [s for s in instances if s.samples]
        samples = sum(s.samples for s in with_data)
        p50s = [(s.p50_ms, s.samples) for s in with_data if s.p50_ms is not None]
        p99s = [s.p99_ms for s in with_data if s.p99_ms is not None]
        return FleetSignals(
            fleet_id=req.fleet.fleet_id,
            source="cloudwatch",
            samples=samples,
            errors=sum(s.errors for s in with_data),
            # Percentiles do not add up across instances: weight the medians, keep the worst p99.
            p50_ms=sum(p * n for p, n in p50s) / sum(n for _, n in p50s) if p50s else None,
            p99_ms=max(p99s) if p99s else None,
            instances=tuple(instances),
            detail=f"{len(with_data)}/{len(instances)} instances reported {req.namespace} metrics",
        )

    def _probe_instance(self, req: ProbeInput, instance_id: str, ip: str) -> tuple[InstanceSignals, list[float]]:
        n = req.requests_per_instance
        base = self._endpoints.url(instance_id, ip)
        if base is None:
            return InstanceSignals(instance_id=instance_id, samples=n, errors=n, detail="no endpoint"), []
        latencies: list[float] = []
        errors, last_error = 0, ""
        for k in range(n):
            url = f"{base.rstrip('/')}{req.path}{'&' if '?' in req.path else '?'}key={SYNTHETIC_KEY_PREFIX}{k}"
            started = time.perf_counter()
            status, problem = _get(url, req.timeout_s)
            if status is not None:
                latencies.append((time.perf_counter() - started) * 1000)
            if problem:
                errors, last_error = errors + 1, problem
        signal = InstanceSignals(
            instance_id=instance_id, samples=n, errors=errors, p50_ms=percentile(latencies, 0.5),
            p99_ms=percentile(latencies, 0.99), detail=last_error,
        )  # fmt: skip
        return signal, latencies


def _get(url: str, timeout_s: float) -> tuple[int | None, str]:
    """(status or None when no response, problem or "")."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        return None, f"{url}: {exc}"
    return status, ("" if 200 <= status < 400 else f"{url}: HTTP {status}")


def _instance_metrics(cw: Any, req: MetricsInput, instance_id: str, start: datetime, end: datetime) -> InstanceSignals:
    def stats(metric: str, **kind: Any) -> list[dict]:
        return list(
            cw.get_metric_statistics(
                Namespace=req.namespace, MetricName=metric, Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
                StartTime=start, EndTime=end, Period=req.period_s, **kind,
            )["Datapoints"]
        )  # fmt: skip

    requests = stats("Requests", Statistics=["Sum"])
    if not requests:
        return InstanceSignals(instance_id=instance_id, detail="no Requests datapoints in the window")
    errors = stats("Errors", Statistics=["Sum"])
    latency = stats("LatencyMs", Statistics=["Average", "Maximum", "SampleCount"], ExtendedStatistics=["p50", "p99"])
    p50, p99, note = _latency(latency)
    return InstanceSignals(
        instance_id=instance_id, samples=round(sum(d["Sum"] for d in requests)),
        errors=round(sum(d["Sum"] for d in errors)), p50_ms=p50, p99_ms=p99, detail=note,
    )  # fmt: skip


def _latency(points: list[dict]) -> tuple[float | None, float | None, str]:
    """Percentiles when CloudWatch has them; else Average and Maximum (an upper bound of p99)."""
    if not points:
        return None, None, "no LatencyMs datapoints"
    weights = [float(d.get("SampleCount", 1)) for d in points]
    if all("p50" in d.get("ExtendedStatistics", {}) for d in points):
        p50 = sum(d["ExtendedStatistics"]["p50"] * w for d, w in zip(points, weights, strict=True)) / sum(weights)
        return p50, max(d["ExtendedStatistics"]["p99"] for d in points), ""
    p50 = sum(d["Average"] * w for d, w in zip(points, weights, strict=True)) / sum(weights)
    return p50, max(d["Maximum"] for d in points), "no percentiles: p50 ~ Average, p99 ~ Maximum"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
