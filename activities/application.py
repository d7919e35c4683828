"""The entity's own application: the write fence it exposes for single-writer migrations.

The admin contract (docs/your-application.md, "Writes and the write fence"): `POST /admin/writes {"state": "held",
"deadline_ms": <unix ms>}` holds new writes and answers once the writes in flight have finished; `{"state": "open",
"region": <region>}` releases them, into that region's table; `GET /admin/writes` says where the app stands. Past
its deadline an app opens by itself, so a migration that died never freezes writes for good.

`check_write_fence` asks every instance before any traffic moves, so an app without the contract is named then,
not mid-cutover; `set_write_fence` holds or opens the whole fleet, in parallel. Instances are found as warm-up finds
them (`WarmupActivities`): only those carrying the fleet's tags, through addresses `check_address` accepts, and a
redirect is never followed (an app's 3xx cannot send the worker's request to another host).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ClientFactory
from activities.ec2 import DEFAULT_INSTALLATION
from activities.monitoring import check_addresses
from activities.warmup import MAX_PARALLEL, WarmupActivities
from shadowing.models import FleetRef, Frozen, Region

if TYPE_CHECKING:
    from shadowing.endpoints import Endpoints

PATH = "/admin/writes"
CONTRACT = "policy.consistency 'fenced' needs the app's admin contract (docs/your-application.md)"


class FenceInput(Frozen):
    """Where the fleet's write fence should stand: `held` (the app opens by itself `deadline_s` later) or `open`
    (into `region`'s table when given, else where the app wrote before)."""

    fleet: FleetRef
    state: Literal["held", "open"] = "held"
    region: Region | None = None
    deadline_s: float = Field(10.0, gt=0, le=3600)
    request_timeout_s: float = Field(2.0, gt=0, le=600)

    @model_validator(mode="after")
    def _region_only_when_opening(self) -> FenceInput:
        if self.region is not None and self.state != "open":
            raise ValueError("region: only an 'open' fence says where writes go")
        return self


class FenceResult(Frozen):
    """The fleet's fence: `held_ms` is the longest hold an instance reported on opening; `region` the write
    region(s) the instances named, comma-separated when they differ."""

    state: str
    instances: int
    in_flight: int = 0
    region: str = ""
    held_ms: float = 0
    detail: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx stays an answer (HTTPError), never a request to wherever it points


_OPENER = urllib.request.build_opener(_NoRedirect)


class ApplicationActivities:
    """The write fence of one installation's fleets; `loopback`: addresses may be loopback (local data plane)."""

    def __init__(
        self, clients: ClientFactory, endpoints: Endpoints, *, loopback: bool = False,
        installation: str = DEFAULT_INSTALLATION,
    ) -> None:  # fmt: skip
        # Warm-up already finds a fleet's own instances in EC2; the fence asks it rather than a copy of it.
        self._fleet = WarmupActivities(clients, endpoints, installation=installation, loopback=loopback)
        self._loopback = loopback

    @activity.defn(name="check_write_fence")
    def check_write_fence(self, req: FenceInput) -> FenceResult:
        """GET /admin/writes on every instance; one that does not answer, or not as the contract says, is a
        non-retryable `FenceUnavailable` naming it and its URL."""
        replies = self._ask(req, None, non_retryable=True)
        held = [r for r in replies.values() if r["state"] == "held"]
        return _result("held" if held else "open", replies, f"{len(replies)} instances answer {PATH}")

    @activity.defn(name="set_write_fence")
    def set_write_fence(self, req: FenceInput) -> FenceResult:
        """POST /admin/writes to every instance in parallel. Held: returns once every instance replied that its
        writes in flight are done. An instance that does not answer, or answers another state, is a retryable
        `FenceUnavailable` naming it (setting the same state again is harmless; the workflow decides)."""
        if req.state == "held":
            body: dict[str, Any] = {"state": "held", "deadline_ms": int((time.time() + req.deadline_s) * 1000)}
        else:
            body = {"state": "open", **({"region": req.region} if req.region else {})}
        replies = self._ask(req, body, non_retryable=False)
        return _result(req.state, replies, f"{len(replies)} instances {req.state}")

    def _ask(self, req: FenceInput, body: dict[str, Any] | None, *, non_retryable: bool) -> dict[str, dict]:
        """Every instance's reply; FenceUnavailable naming each instance that gave none usable."""
        urls, problems = self._urls(req.fleet)
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(urls)))) as pool:
            sent = {iid: pool.submit(_exchange, url, body, req.request_timeout_s) for iid, url in urls.items()}
        answers = {iid: future.result() for iid, future in sent.items()}
        replies = {iid: reply for iid, (reply, _) in answers.items() if reply is not None}
        problems |= {iid: f"at {urls[iid]} {why}" for iid, (reply, why) in answers.items() if reply is None}
        if body is not None:
            problems |= {iid: f"at {urls[iid]} answered state {r['state']!r}, not {body['state']!r} "
                              f"({r.get('in_flight', 0)} writes in flight)"
                         for iid, r in replies.items() if r["state"] != body["state"]}  # fmt: skip
        if problems:
            detail = "; ".join(f"{iid} {why}" for iid, why in sorted(problems.items()))
            raise ApplicationError(f"write fence: {detail}; {CONTRACT}", type="FenceUnavailable",
                                   non_retryable=non_retryable)  # fmt: skip
        return replies

    def _urls(self, fleet: FleetRef) -> tuple[dict[str, str], dict[str, str]]:
        """Instance id -> its /admin/writes URL, and what keeps the others from having one."""
        check_addresses(fleet, self._loopback)
        urls, problems = {}, {}
        for iid, (inst, url) in self._fleet.instance_urls(fleet, list(fleet.instance_ids)).items():
            if inst is None:
                problems[iid] = "is not found with the fleet's tags"
            elif url is None:
                problems[iid] = "has no endpoint"
            else:
                urls[iid] = f"{url.rstrip('/')}{PATH}"
        return urls, problems


def _result(state: str, replies: dict[str, dict], detail: str) -> FenceResult:
    regions = sorted({str(r.get("region", "")) for r in replies.values()} - {""})
    return FenceResult(
        state=state, instances=len(replies), in_flight=int(sum(_number(r, "in_flight") for r in replies.values())),
        region=",".join(regions), held_ms=max((_number(r, "held_ms") for r in replies.values()), default=0),
        detail=detail if replies else "fleet has no instances",
    )  # fmt: skip


def _number(reply: dict[str, Any], name: str) -> float:
    value = reply.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _exchange(url: str, body: dict[str, Any] | None, timeout_s: float) -> tuple[dict[str, Any] | None, str]:
    """The app's reply (a GET, or a POST of `body`), or None and why there is no usable one."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout_s) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        return None, f"answered HTTP {exc.code}{_error_of(exc)}"
    except (OSError, ValueError) as exc:  # refused, reset, timed out
        return None, f"did not answer ({getattr(exc, 'reason', exc)})"
    try:
        reply = json.loads(payload)
    except ValueError:
        return None, "answered something that is not JSON"
    if not isinstance(reply, dict) or reply.get("state") not in ("held", "open"):
        return None, "answered without a state 'held' or 'open'"
    return reply, ""


def _error_of(exc: urllib.error.HTTPError) -> str:
    """': <the app's error>' from a JSON error body (what a 400 names), else nothing."""
    try:
        error = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {str(error)[:200]}" if error else ""
