"""A steady stream of requests to an entity through its DNS name, as clients would send it (benchmarks, tests).

Each virtual client resolves the name like a stub resolver in front of Route53 weighted routing: one lookup
returns one record set, picked with probability weight / sum of weights (zero-weight sets only when every set
is zero), and the answer is cached for the record's TTL. The client then sends `GET /work?key=K` to one address
of that answer (through `Endpoints.resolve_ip`, so stand-ins on the local data plane and real instances alike).
Keys come from the hot set the warm-up sweeps (`warm-0` .. `warm-<keys-1>`).

Every request is recorded with the phase the driver set when it was sent, so one run yields "steady",
"cutover" and "after" figures side by side.
"""

from __future__ import annotations

import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowing.endpoints import Endpoints

PHASES = ("steady", "cutover", "after")


@dataclass(frozen=True)
class Sample:
    phase: str
    latency_ms: float
    ok: bool
    address: str
    error: str = ""


class WeightedResolver:
    """Route53 weighted answers for one name, cached for their TTL (one resolver per virtual client)."""

    def __init__(self, route53: Any, zone_id: str, name: str, rng: random.Random, clock: Callable[[], float]) -> None:
        self._r53, self._zone, self._name = route53, zone_id, name.rstrip(".") + "."
        self._rng, self._clock = rng, clock
        self._answer: tuple[str, ...] = ()
        self._expires = 0.0

    def resolve(self) -> tuple[str, ...]:
        """The cached answer's addresses, or a fresh weighted pick once its TTL ran out; () for NXDOMAIN."""
        now = self._clock()
        if now < self._expires and self._answer:
            return self._answer
        sets = self._weighted_sets()
        if not sets:
            self._answer, self._expires = (), now
            return ()
        total = sum(weight for weight, _, _ in sets)
        candidates = sets if total == 0 else [s for s in sets if s[0] > 0]
        pick = self._rng.uniform(0, total) if total else 0.0
        chosen = candidates[-1]
        for weight, ttl, addresses in candidates:
            if total == 0 or pick < weight:
                chosen = (weight, ttl, addresses)
                break
            pick -= weight
        self._answer, self._expires = chosen[2], now + chosen[1]
        return self._answer

    def _weighted_sets(self) -> list[tuple[int, int, tuple[str, ...]]]:
        page = self._r53.list_resource_record_sets(
            HostedZoneId=self._zone, StartRecordName=self._name, StartRecordType="A", MaxItems="100"
        )
        return [
            (int(rr.get("Weight", 0)), int(rr.get("TTL", 60)), tuple(r["Value"] for r in rr["ResourceRecords"]))
            for rr in page["ResourceRecordSets"]
            if rr["Name"] == self._name and rr["Type"] == "A" and "SetIdentifier" in rr
        ]


@dataclass
class LoadGenerator:
    """`clients` threads sending `rate` requests per second in total to `dns_name` until `stop()`."""

    route53: Callable[[], Any]  # a factory: one boto3 Route53 client per thread
    zone_id: str
    dns_name: str
    endpoints: Endpoints
    rate: float = 40.0
    clients: int = 8
    keys: int = 200
    timeout_s: float = 2.0
    seed: int = 0
    phase: str = "steady"
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadGenerator:
        if self.rate <= 0 or self.clients < 1:
            raise ValueError(f"rate must be > 0 and clients >= 1, got rate={self.rate}, clients={self.clients}")
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), name=f"loadgen-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        return list(self.samples)

    def _client(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        resolver = WeightedResolver(self.route53(), self.zone_id, self.dns_name, rng, time.monotonic)
        interval = self.clients / self.rate
        next_at = time.monotonic() + rng.uniform(0, interval)  # spread the clients over one interval
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            next_at += interval
            phase = self.phase
            sample = self._request(resolver, rng, phase)
            with self._lock:
                self.samples.append(sample)

    def _request(self, resolver: WeightedResolver, rng: random.Random, phase: str) -> Sample:
        try:
            addresses = resolver.resolve()
        except Exception as exc:  # a failed lookup fails the request, as it would for a client
            return Sample(phase, 0.0, False, "", f"resolve: {exc}")
        if not addresses:
            return Sample(phase, 0.0, False, "", "NXDOMAIN")
        address = rng.choice(addresses)
        base = self.endpoints.resolve_ip(address)
        if base is None:
            return Sample(phase, 0.0, False, address, "no endpoint for address")
        url = f"{base.rstrip('/')}/work?key=warm-{rng.randrange(self.keys)}"
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                resp.read()
                ok, error = 200 <= resp.status < 400, "" if resp.status < 400 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            ok, error = False, f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            ok, error = False, str(exc)
        return Sample(phase, (time.perf_counter() - began) * 1000, ok, address, error)


def summarise(samples: list[Sample]) -> dict[str, Any]:
    """{"sent", "failed", "p50_ms": {phase: x}, "p99_ms": {phase: x}, "errors": first few} over the phases."""
    out: dict[str, Any] = {"sent": len(samples), "failed": sum(not s.ok for s in samples), "p50_ms": {}, "p99_ms": {}}
    for phase in PHASES:
        lat = sorted(s.latency_ms for s in samples if s.phase == phase and s.ok)
        out["p50_ms"][phase] = round(_pct(lat, 0.50), 2) if lat else None
        out["p99_ms"][phase] = round(_pct(lat, 0.99), 2) if lat else None
        out.setdefault("sent_by_phase", {})[phase] = sum(s.phase == phase for s in samples)
    out["errors"] = sorted({s.error for s in samples if not s.ok})[:5]
    return out


def _pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[min(len(sorted_values), max(1, math.ceil(q * len(sorted_values)))) - 1]
