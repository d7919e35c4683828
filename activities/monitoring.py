"""Post-cutover health signals of a fleet: direct HTTP probes of its instances.

They return `FleetSignals`; `workflows.verdict.judge` compares them with the baseline. Missing data is reported as
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
from typing import Literal, Protocol

from pydantic import Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import SYNTHETIC_KEY_PREFIX
from shadowing.endpoints import check_address
from shadowing.errors import InvalidRequest
from shadowing.models import FleetRef, Frozen

# ---- post-cutover monitoring ------------------------------------------------------------------------------


class ProbeInput(Frozen):
    """`requests_per_instance` direct GETs of `path` on each instance of the fleet."""

    fleet: FleetRef
    requests_per_instance: int = Field(10, ge=1, le=1000)
    path: str = "/work"
    timeout_s: float = Field(2.0, gt=0, le=600)


class InstanceSignals(Frozen):
    instance_id: str
    samples: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    detail: str = ""


class FleetSignals(Frozen):
    """Health of a fleet over a window. `samples == 0` means no data: rates and latencies are then None."""

    fleet_id: str
    source: Literal["probe", "cloudwatch"]
    samples: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    instances: tuple[InstanceSignals, ...] = ()
    detail: str = ""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.samples if self.samples else None


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
    """Probes; `loopback`: addresses may be loopback (the local data plane's stand-ins)."""

    def __init__(self, endpoints: Endpoints, *, loopback: bool = False) -> None:
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


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
