"""A steady stream of requests to an entity through its DNS name, as clients would send it (benchmarks, tests).

Each virtual client resolves the name like a stub resolver in front of Route53 weighted routing: one lookup
returns one record set, picked with probability weight / sum of weights (zero-weight sets only when every set
is zero), and the answer is cached for the record's TTL. The client then sends `GET /work?key=K` to one address
of that answer (through `Endpoints.resolve_ip`, so stand-ins on the local data plane and real instances alike).
Keys come from the hot set the warm-up sweeps (`warm-0` .. `warm-<keys-1>`).

With `write_ratio` > 0 that share of requests are writes, `PUT /items/<table>/w-<n>`, sent like reads to wherever
DNS sent the client: writes land in whichever region serves it, as a real multi-region service's do. The keys
`w-0` .. `w-<write_keys-1>` are shared by all clients, so that both regions may write one key during a cutover.

Every request is recorded with the phase the driver set when it was sent, so one run yields "steady",
"cutover" and "after" figures side by side. `summarise` covers the reads (its figures stay comparable with runs
that sent no writes), `summarise_writes` the writes, and `lost_writes` checks acknowledged writes against the
table that serves at the end.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shadowing.endpoints import Endpoints

PHASES = ("steady", "cutover", "after")


#: An acknowledged write's place in the conflict rule's order (activities/replication.py): (_v, _ts, _r).
Version = tuple[int, int, str]


@dataclass(frozen=True)
class Sample:
    """One request: a read (`GET /work`) or a write (`PUT /items/...`) by virtual client `client`, sent at
    `sent_at` (monotonic seconds); `version` is what an acknowledged write's reply said it wrote."""

    phase: str
    latency_ms: float
    ok: bool
    address: str
    error: str = ""
    kind: str = "read"
    client: int = 0
    key: str = ""
    sent_at: float = 0.0
    version: Version | None = None


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
    """`clients` threads sending `rate` requests per second in total to `dns_name` until `stop()`, a `write_ratio`
    share of them writes to `table` (required then) over `write_keys` keys."""

    route53: Callable[[], Any]  # a factory: one boto3 Route53 client per thread
    zone_id: str
    dns_name: str
    endpoints: Endpoints
    rate: float = 40.0
    clients: int = 8
    keys: int = 200
    timeout_s: float = 2.0
    seed: int = 0
    write_ratio: float = 0.0
    table: str | None = None
    write_keys: int = 300
    phase: str = "steady"
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadGenerator:
        if self.rate <= 0 or self.clients < 1:
            raise ValueError(f"rate must be > 0 and clients >= 1, got rate={self.rate}, clients={self.clients}")
        if not 0 <= self.write_ratio <= 1 or self.write_keys < 1:
            raise ValueError(f"write_ratio must be in [0, 1] and write_keys >= 1, got {self.write_ratio}, "
                             f"{self.write_keys}")  # fmt: skip
        if self.write_ratio > 0 and not self.table:
            raise ValueError("table is required when write_ratio > 0: writes go to PUT /items/<table>/<key>")
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
            sample = self._request(resolver, rng, phase, n)
            with self._lock:
                self.samples.append(sample)

    def _request(self, resolver: WeightedResolver, rng: random.Random, phase: str, n: int) -> Sample:
        # write_ratio 0 draws nothing here, so read-only runs pick the same answers and keys for a seed as before
        kind = "write" if self.write_ratio > 0 and rng.random() < self.write_ratio else "read"
        started = time.monotonic()
        try:
            addresses = resolver.resolve()
        except Exception as exc:  # a failed lookup fails the request, as it would for a client
            return Sample(phase, 0.0, False, "", f"resolve: {exc}", kind, n, sent_at=started)
        if not addresses:
            return Sample(phase, 0.0, False, "", "NXDOMAIN", kind, n, sent_at=started)
        address = rng.choice(addresses)
        base = self.endpoints.resolve_ip(address)
        if base is None:
            return Sample(phase, 0.0, False, address, "no endpoint for address", kind, n, sent_at=started)
        if kind == "write":
            key = f"w-{rng.randrange(self.write_keys)}"
            body = json.dumps({"value": {"client": n, "phase": phase}}).encode()
            request = urllib.request.Request(f"{base.rstrip('/')}/items/{quote(str(self.table))}/{key}", data=body,
                                             method="PUT", headers={"Content-Type": "application/json"})  # fmt: skip
        else:
            key = f"warm-{rng.randrange(self.keys)}"
            request = urllib.request.Request(f"{base.rstrip('/')}/work?key={key}")
        sent_at = time.monotonic()
        ok, error, payload = _send(request, self.timeout_s)
        latency_ms = (time.monotonic() - sent_at) * 1000
        version = _acked_version(payload) if ok and kind == "write" else None
        if ok and kind == "write" and version is None:
            ok, error = False, f"write acknowledged without v/ts/r: {payload[:200]!r}"
        return Sample(phase, latency_ms, ok, address, error, kind, n, key, sent_at, version)


def _send(request: urllib.request.Request, timeout_s: float) -> tuple[bool, str, bytes]:
    """(ok, error, reply body); a write's error carries the app's reason, a read's only the status (as before)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            payload = resp.read()
            return resp.status < 400, "" if resp.status < 400 else f"HTTP {resp.status}", payload
    except urllib.error.HTTPError as exc:
        reason = _reply_error(exc.read()) if request.get_method() == "PUT" else ""
        return False, f"HTTP {exc.code}{f': {reason}' if reason else ''}", b""
    except (OSError, urllib.error.URLError) as exc:
        return False, str(exc), b""


def _reply_error(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("error", ""))
    except (ValueError, AttributeError):
        return ""


def _acked_version(payload: bytes) -> Version | None:
    try:
        reply = json.loads(payload)
        return int(reply["v"]), int(reply["ts"]), str(reply["r"])
    except (ValueError, KeyError, TypeError):
        return None


def summarise(samples: list[Sample]) -> dict[str, Any]:
    """{"sent", "failed", "p50_ms": {phase: x}, "p99_ms": {phase: x}, "errors": first few} over the phases, of
    the reads only: a run with writes keeps figures comparable with one without."""
    samples = [s for s in samples if s.kind == "read"]
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


def summarise_writes(samples: list[Sample]) -> dict[str, Any]:
    """{"sent", "acked", "failed", "max_unavailable_ms", "by_phase": {phase: {"sent", "acked", "failed"}}} of the
    writes; see `max_unavailable_ms`."""
    writes = [s for s in samples if s.kind == "write"]
    phases = dict.fromkeys([*PHASES, *(s.phase for s in writes)])
    return {
        "sent": len(writes), "acked": sum(s.ok for s in writes), "failed": sum(not s.ok for s in writes),
        "max_unavailable_ms": max_unavailable_ms(writes),
        "by_phase": {phase: {"sent": sum(s.phase == phase for s in writes),
                             "acked": sum(s.phase == phase and s.ok for s in writes),
                             "failed": sum(s.phase == phase and not s.ok for s in writes)} for phase in phases},
    }  # fmt: skip


def max_unavailable_ms(writes: list[Sample]) -> float:
    """The longest time one client went without an acknowledged write while trying: from the send of the first
    write of a run of failures to the ack of the next write that succeeded (a write acked at once counts its own
    latency). A run of failures that no ack ends counts to the end of its last attempt: a run that stopped during
    an outage does not hide it."""
    worst = 0.0
    for client in {s.client for s in writes}:
        since: float | None = None  # send time of the first failed write not yet followed by an ack
        for s in sorted((s for s in writes if s.client == client), key=lambda s: s.sent_at):
            start = s.sent_at if since is None else since
            worst = max(worst, s.sent_at + s.latency_ms / 1000 - start)
            since = None if s.ok else start
    return round(worst * 1000, 2)


def lost_writes(samples: list[Sample], items: dict[str, dict[str, Any]]) -> list[str]:
    """Keys of acknowledged writes that `items` (the serving region's table at the end: key -> item, DynamoDB JSON)
    lost: the key is missing, or holds an older (v, ts, r) than the acknowledged write. A newer one is no loss: a
    later write won under the conflict rule."""
    lost = {s.key for s in samples if s.kind == "write" and s.ok and s.version is not None
            and (s.key not in items or _stored_version(items[s.key]) < s.version)}  # fmt: skip
    return sorted(lost)


def _stored_version(item: dict[str, Any]) -> Version:
    """An item's (_v, _ts, _r); an unversioned item sorts before every versioned write, as the conflict rule has it."""
    number = lambda name: int(item[name]["N"]) if name in item else 0  # noqa: E731
    return number("_v"), number("_ts"), str(item.get("_r", {}).get("S", ""))
