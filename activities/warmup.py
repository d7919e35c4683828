"""Warm-up of a fleet: wait until every instance is running and answers, then send synthetic traffic until warm.

`warm_fleet` first waits for EC2 to report the instances running and for each instance's endpoint to answer
`/health`, then sends rounds of `GET /work?key=K` sweeping the key space (what fills an application's caches).
An instance is warm when its round p99 is under the threshold and p50/p99 have settled (see `is_warm`). It
heartbeats after every poll and round; a retried attempt resumes from the details: same deadline, same key
offsets, warm instances skipped. Without an `Endpoints` (no data plane wired) it only waits for EC2's view.

Only the fleet's own instances (its four tags, as `activities.ec2.Owner` spells them) are warmed or counted healthy,
and every address is checked (`shadowing.endpoints.check_address`) before a request is sent to it: a crafted
`FleetRef` can neither aim synthetic traffic at the metadata service nor at someone else's instance.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import SYNTHETIC_KEY_PREFIX, ClientFactory
from activities.ec2 import DEFAULT_INSTALLATION, FleetInput, Owner, advertised_address
from activities.monitoring import check_addresses, checked_address, percentile
from shadowing.models import FleetRef, Frozen


class WarmupInput(FleetInput):
    """Warm-up of a fleet by synthetic traffic; a plain `FleetInput` decodes into it with these defaults.

    An instance is warm when the p99 of its last round of `window` requests is under `p99_threshold_ms` and its
    p50 and p99 moved less than `stable_ratio` (relative, or of the threshold) from the round before.
    """

    p99_threshold_ms: float = Field(25.0, gt=0, le=60_000)
    stable_ratio: float = Field(0.2, gt=0, lt=1)
    window: int = Field(50, ge=2, le=10_000)
    keys: int = Field(200, ge=1)
    concurrency: int = Field(4, ge=1, le=64)
    request_timeout_s: float = Field(2.0, gt=0, le=600)


class InstanceWarmup(Frozen):
    """One instance's warm-up: its last round's latencies (client-side, ms) and whether it is warm."""

    instance_id: str
    rounds: int = 0
    requests: int = 0
    errors: int = 0
    first_p99_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    warm: bool = False


class HealthReport(Frozen):
    healthy: bool
    healthy_count: int
    total: int
    detail: str = ""
    #: Filled by `warm_fleet` with a data plane: per-instance warm-up rounds (empty for EC2-only probes).
    instances: tuple[InstanceWarmup, ...] = ()


if TYPE_CHECKING:
    from shadowing.endpoints import Endpoints

POLL_S = 1.0
MAX_PARALLEL = 32  # HTTP requests in flight per activity, whatever the fleet size


class Progress(BaseModel):
    """What a heartbeat carries, so that a retried attempt resumes instead of starting over."""

    deadline: float
    instances: dict[str, InstanceWarmup] = {}

    @classmethod
    def resume(cls, details: Sequence[Any], timeout_s: float) -> Progress:
        first = details[0] if details else None
        if isinstance(first, dict):
            return cls.model_validate(first)
        if isinstance(first, int | float):  # an attempt of the EC2-only version heartbeated (deadline, count)
            return cls(deadline=float(first))
        return cls(deadline=time.time() + timeout_s)


def is_warm(prev: InstanceWarmup, p50: float | None, p99: float | None, errors: int, req: WarmupInput) -> bool:
    """Round p99 under the threshold, no errors, and p50/p99 within `stable_ratio` of the previous round.

    A change below `stable_ratio` of the threshold also counts as settled: at a few ms, scheduler noise alone
    moves a p99 by more than 20%, and such a fleet is warm by any measure that matters to the cutover.
    """
    if p50 is None or p99 is None or errors or p99 >= req.p99_threshold_ms:
        return False
    if prev.p50_ms is None or prev.p99_ms is None:
        return False
    floor = req.stable_ratio * req.p99_threshold_ms
    return all(abs(now - before) <= max(req.stable_ratio * before, floor)
               for now, before in ((p50, prev.p50_ms), (p99, prev.p99_ms)))  # fmt: skip


class WarmupActivities:
    """Warm-up and health of one installation's fleets; `loopback`: addresses may be loopback (local data plane)."""

    def __init__(
        self, clients: ClientFactory, endpoints: Endpoints | None = None, poll_s: float = POLL_S, *,
        installation: str = DEFAULT_INSTALLATION, loopback: bool = False,
    ) -> None:  # fmt: skip
        self._clients = clients
        self._endpoints = endpoints
        self._poll_s = poll_s
        self._installation = installation
        self._loopback = loopback

    def _owner(self, fleet: FleetRef) -> Owner:
        return Owner(self._installation, fleet.entity_id, fleet.fleet_id)

    @activity.defn(name="warm_fleet")
    def warm_fleet(self, req: WarmupInput) -> HealthReport:
        """Blocks until every instance is warm; non-retryable `InstanceNeverHealthy`/`FleetNotWarm` at the deadline,
        `InvalidRequest` at once for an address no request may go to."""
        check_addresses(req.fleet, self._loopback)
        if self._endpoints is None:
            return self._wait_ec2(req)
        if not isinstance(req, WarmupInput):  # called directly with a FleetInput (Temporal converts by itself)
            req = WarmupInput.model_validate(req.model_dump())
        progress = Progress.resume(activity.info().heartbeat_details, req.timeout_s)
        urls = self._wait_booted(req, progress)
        while True:
            todo = [i for i in req.fleet.instance_ids if not progress.instances[i].warm]
            if not todo:
                return _report(req, progress)
            if time.time() >= progress.deadline:
                raise _not_warm(req, progress, todo)
            self._round(req, progress, {i: urls[i] for i in todo})
            activity.heartbeat(progress.model_dump(mode="json"))

    @activity.defn(name="check_fleet_health")
    def check_fleet_health(self, req: FleetInput) -> HealthReport:
        """One probe of the fleet's health in EC2's view (used by the post-cutover watch)."""
        return self._probe(req)

    def _wait_booted(self, req: WarmupInput, progress: Progress) -> dict[str, str]:
        """Instance id -> base URL once EC2 says running and /health answers; InstanceNeverHealthy at the deadline."""
        assert self._endpoints is not None
        ids = list(req.fleet.instance_ids)
        for iid in ids:
            progress.instances.setdefault(iid, InstanceWarmup(instance_id=iid))
        while True:
            urls, problems = self._booted(req, ids)
            activity.heartbeat(progress.model_dump(mode="json"))
            if ids and not problems:
                return urls
            if time.time() >= progress.deadline:
                detail = "; ".join(f"{i}: {why}" for i, why in sorted(problems.items())) or "fleet has no instances"
                raise ApplicationError(
                    f"fleet {req.fleet.fleet_id} in {req.fleet.region}: instances never healthy within "
                    f"{req.timeout_s:.0f}s: {', '.join(sorted(problems))} ({detail})",
                    type="InstanceNeverHealthy", non_retryable=True,
                )  # fmt: skip
            time.sleep(self._poll_s)

    def instance_urls(self, fleet: FleetRef, ids: list[str]) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
        """Instance id -> (EC2's description, None when not found with the fleet's tags; base URL, None while it
        has none), for `ids`. Addresses are checked (`checked_address`) before they become URLs."""
        assert self._endpoints is not None
        seen = self._instances(fleet, ids) if ids else {}
        out: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
        for iid in ids:
            inst = seen.get(iid)
            address = advertised_address(inst) if inst else ""  # none yet while pending
            address = checked_address(address, f"{iid} address (EC2)", self._loopback) if address else ""
            out[iid] = inst, self._endpoints.url(iid, address) if inst else None
        return out

    def _booted(self, req: WarmupInput, ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        urls, problems = {}, {}
        for iid, (inst, url) in self.instance_urls(req.fleet, ids).items():
            state = inst["State"]["Name"] if inst else "not found with the fleet's tags"
            if state != "running":
                problems[iid] = f"state {state}"
            elif url is None:
                problems[iid] = "no endpoint yet"
            elif (status := _get(f"{url.rstrip('/')}/health", req.request_timeout_s)) != 200:
                problems[iid] = f"/health answered {status or 'nothing'}"
            else:
                urls[iid] = url.rstrip("/")
        return urls, problems

    def _round(self, req: WarmupInput, progress: Progress, urls: dict[str, str]) -> None:
        """`window` requests per instance, `concurrency` at a time each; updates every instance's progress."""
        jobs = []
        for j in range(req.window):  # interleaved, so that every instance has about `concurrency` in flight
            for iid, url in urls.items():
                key = (progress.instances[iid].rounds * req.window + j) % req.keys
                jobs.append((iid, f"{url}/work?key={SYNTHETIC_KEY_PREFIX}{key}"))
        workers = min(MAX_PARALLEL, req.concurrency * len(urls))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda job: (job[0], _timed_get(job[1], req.request_timeout_s)), jobs))
        for iid in urls:
            mine = [r for i, r in results if i == iid]
            latencies = [ms for status, ms in mine if status == 200]
            errors = sum(1 for status, _ in mine if status != 200)
            prev = progress.instances[iid]
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            progress.instances[iid] = prev.model_copy(update={
                "rounds": prev.rounds + 1, "requests": prev.requests + len(mine), "errors": prev.errors + errors,
                "first_p99_ms": prev.first_p99_ms if prev.rounds else p99, "p50_ms": p50, "p99_ms": p99,
                "warm": is_warm(prev, p50, p99, errors, req),
            })  # fmt: skip

    def _wait_ec2(self, req: FleetInput) -> HealthReport:
        """The EC2-only warm-up (no data plane): running with passing status checks."""
        details = activity.info().heartbeat_details
        deadline = Progress.resume(details, req.timeout_s).deadline
        while True:
            report = self._probe(req)
            activity.heartbeat(deadline, report.healthy_count)
            if report.healthy:
                return report
            if time.time() >= deadline:
                raise ApplicationError(
                    f"fleet {req.fleet.fleet_id} in {req.fleet.region} not healthy after {req.timeout_s:.0f}s: "
                    f"{report.detail}",
                    type="InstanceNeverHealthy",
                    non_retryable=True,
                )
            time.sleep(self._poll_s)

    def _instances(self, fleet: FleetRef, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Instance id -> EC2's description, for those of `ids` that carry the fleet's tags."""
        owner = self._owner(fleet)
        filters = [{"Name": "instance-id", "Values": ids}, *owner.filters()]
        pages = self._clients("ec2", fleet.region).get_paginator("describe_instances").paginate(Filters=filters)
        found = (i for p in pages for r in p["Reservations"] for i in r["Instances"])
        return {i["InstanceId"]: i for i in found if owner.owns(i)}

    def _probe(self, req: FleetInput) -> HealthReport:
        listed = list(req.fleet.instance_ids)
        if not listed:
            return HealthReport(healthy=False, healthy_count=0, total=0, detail="fleet has no instances")
        ids = sorted(self._instances(req.fleet, listed))  # an instance without the fleet's tags is never healthy
        ec2 = self._clients("ec2", req.fleet.region)
        found = ec2.describe_instance_status(InstanceIds=ids, IncludeAllInstances=True) if ids else {}
        statuses = found.get("InstanceStatuses", [])
        good = [
            s["InstanceId"]
            for s in statuses
            if s["InstanceState"]["Name"] == "running"
            and s.get("InstanceStatus", {}).get("Status", "ok") in ("ok", "not-applicable")
            and s.get("SystemStatus", {}).get("Status", "ok") in ("ok", "not-applicable")
        ]
        bad = sorted(set(listed) - set(good))
        return HealthReport(
            healthy=not bad,
            healthy_count=len(good),
            total=len(listed),
            detail=f"unhealthy: {', '.join(bad)}" if bad else "all instances running, status checks ok",
        )


def _report(req: WarmupInput, progress: Progress) -> HealthReport:
    warm = [progress.instances[i] for i in req.fleet.instance_ids]
    worst = max((w.p99_ms or 0.0) for w in warm)
    return HealthReport(
        healthy=all(w.warm for w in warm), healthy_count=sum(w.warm for w in warm), total=len(warm),
        detail=f"{len(warm)} instances warm after {max(w.rounds for w in warm)} rounds; worst p99 {worst:.1f} ms",
        instances=tuple(warm),
    )  # fmt: skip


def _not_warm(req: WarmupInput, progress: Progress, todo: list[str]) -> ApplicationError:
    state = ", ".join(f"{i} (p99 {progress.instances[i].p99_ms} ms after {progress.instances[i].rounds} rounds)"
                      for i in todo)  # fmt: skip
    return ApplicationError(
        f"fleet {req.fleet.fleet_id} in {req.fleet.region} not warm within {req.timeout_s:.0f}s "
        f"(p99 < {req.p99_threshold_ms} ms and settled): {state}",
        type="FleetNotWarm", non_retryable=True,
    )  # fmt: skip


def _timed_get(url: str, timeout_s: float) -> tuple[int | None, float]:
    started = time.perf_counter()
    status = _get(url, timeout_s)
    return status, (time.perf_counter() - started) * 1000


def _get(url: str, timeout_s: float) -> int | None:
    """HTTP status, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):  # refused, reset, timed out, bad URL
        return None
