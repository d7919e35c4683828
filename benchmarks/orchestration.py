"""`make bench-orchestration`: what orchestrating one migration costs, and how that grows with the number of entities.

    python -m benchmarks.orchestration [--entities 10 100 1000] [--budget-s 1200] [--json PATH]

For each N, on fresh embedded services (Temporal dev server, moto server, the local data plane: `services()`, started
by devstack.stack's functions as `shadowctl up` starts them, the stand-ins publishing their CloudWatch metrics
hourly instead of every 5 s), N EntitySchedule workflows are registered in us-east-1 with a one-instance fleet.
Setup, not measured: seeding, registration, and every entity's bootstrap (its first fleet provisioned, warmed and
routed). Then every entity gets ONE slice in eu-west-1 through the `update_schedule` endpoint, all starting at the
same moment, so all N forecast, lease, provision, wait for the slice start, switch traffic, watch and retire their
old fleet in the same minutes: one migration per entity. Over that window only it measures, per migration:

- worker CPU-seconds (this process: workflow tasks, SDK, activities), with the forecast activity's own CPU (its
  threads' CPU time, by a worker interceptor) shown apart and subtracted: `orchestration = worker - forecast`;
- dev-server database growth: SQLite pages in use (page_count - freelist_count) x page size, read through SQLite
  (file sizes are noisy: the WAL is reused between checkpoints);
- Temporal actions, counted from every workflow's history (entities, migrations, the FleetCoordinator), as Temporal
  Cloud bills them: workflow started (client, child, continue-as-new, signal-with-start), activity attempts (the
  started event's attempt number), timers started (incl. the implicit ones of `wait_condition(timeout=...)`),
  signals (each delivered signal once, at the receiver), search-attribute upserts (one per command; start-time
  attributes are free), updates (accepted; all are the benchmark's `update_schedule`, the trigger, shown apart and
  left out of the per-migration figure). Heartbeats are billed when recorded but are not in histories: the same
  interceptor counts the activities' heartbeat calls, printed apart (recorded <= calls: the SDK sends the first at
  once, then at most one per 0.8 x heartbeat timeout). Queries are billed too: the benchmark sends none. Not billed,
  not counted: workflow tasks, patch markers, completion events;
- the delay from the slice start to the traffic switch (`MigrationResult.cutover_at`: after the last `set_weights`).

Orchestration is isolated from forecasting: the product's forecast costs about 3.4 CPU-s per entity with 14 days of
history (darts candidates, two metrics: `make bench-entity-forecast`), which is not orchestration. Entities here
have 60 hours of hourly history, so only the two seasonal-naive candidates apply (the engine picks candidates by
history length; nothing in the product was changed), and `readiness_threshold=0` lets such a short history act.
Settings for migrations to complete on 2 cores: fleets of 1 instance (`max_instances=1`), no warm-up of the shadows
(they wait for health only), a watch of `--watch-s` seconds judged with a latency floor of 1 s (a cold stand-in
answers in ~40 ms against a warm one's 2 ms: the default 50 ms floor rolls such migrations back, see the
load benchmark), record TTL 1 s, no re-forecast while waiting. A lead time of `max(--min-lead-s,
--lead-per-entity-s x N)` leaves the N preparations time to finish before the slice starts.

An N is not run, and says why, when a linear projection from the previous N's time (setup + window) exceeds
`--budget-s`, or when 2N instances at the previous N's measured memory per instance would not fit in memory (each
emulated instance is a stand-in process). A run still going at 1.5 x `--budget-s` is stopped and reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities.monitoring import percentile
from benchmarks.load import cpu_seconds, own_cpu
from shadowing import search
from shadowing.models import DegradationPolicy, EntityPolicy, EntitySpec, EntityStatus, MigrationResult

HOME, TARGET = "us-east-1", "eu-west-1"
ZONE = "orchestration.shadowing."
HISTORY_HOURS = 60  # >= 48: seasonal_naive_24h and last_value only (engine.CANDIDATES' min_history)
ALLOWANCE_S = 5.0  # + 0.05 s per entity: time to send the N schedule updates before the first forecast is due
PUBLISH_S = 3600  # stand-ins' CloudWatch publishing period (default 5 s): the migration path never reads it
BILLED = ("workflow started", "activity attempts", "timers", "signals", "search-attribute upserts")
Progress = Callable[[str], None]


@dataclass
class Options:
    min_lead_s: float = 30.0
    lead_per_entity_s: float = 1.5
    watch_s: float = 3.0
    setup_per_entity_s: float = 3.0  # bootstrap deadline: 120 s + this x N
    stop_after_s: float | None = None  # safety stop: the slice window ends here even if entities still migrate

    def lead_s(self, n: int) -> float:
        return max(self.min_lead_s, self.lead_per_entity_s * n)

    def slice_s(self, n: int) -> float:
        return max(300.0, 2 * self.lead_s(n))


# ---- the worker interceptor: activity CPU by type, heartbeat calls ----------------------------------------------


class ActivityMeter(Interceptor):
    """Thread CPU time of every synchronous activity by type, and its heartbeat calls (heartbeats are billed but
    are not in histories). `reset()` starts a window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cpu: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()
        self._beats: dict[tuple[str, str, int], list[float]] = {}  # (workflow, activity id, attempt) -> stats

    def reset(self) -> None:
        with self._lock:
            self.cpu.clear()
            self.runs.clear()
            self._beats.clear()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _MeteredActivity(next, self)

    def add_cpu(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.cpu[kind] += seconds
            self.runs[kind] += 1

    def beat(self, info: activity.Info) -> None:
        now = time.monotonic()
        timeout = info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else 0.0
        interval = 0.8 * timeout if timeout else 30.0  # the SDK's throttle: 0.8 x timeout, else its default
        key = (info.workflow_id or "", info.activity_id, info.attempt)
        with self._lock:
            stats = self._beats.setdefault(key, [0, now, now, interval])
            stats[0] += 1
            stats[2] = now

    def heartbeats(self) -> tuple[int, int]:
        """(heartbeat calls, estimated heartbeats recorded by the server)."""
        with self._lock:
            calls = sum(int(s[0]) for s in self._beats.values())
            # the first goes at once; later ones at most one per throttle interval (a buffered one that the
            # activity's completion overtakes is dropped)
            sent = sum(min(int(s[0]), 1 + math.floor((s[2] - s[1]) / s[3])) for s in self._beats.values())
        return calls, sent


class _MeteredActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, meter: ActivityMeter) -> None:
        super().__init__(next)
        self._meter = meter

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_MeteredOutbound(outbound, self._meter))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        fn = input.fn
        if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(fn.__call__)):
            meter = self._meter

            def timed(*args: Any) -> Any:  # runs in the activity's thread: thread_time is that activity's CPU
                started = time.thread_time()
                try:
                    return fn(*args)
                finally:
                    meter.add_cpu(activity.info().activity_type, time.thread_time() - started)

            input.fn = timed
        return await self.next.execute_activity(input)


class _MeteredOutbound(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor, meter: ActivityMeter) -> None:
        super().__init__(next)
        self._meter = meter

    def heartbeat(self, *details: Any) -> None:
        self._meter.beat(self.info())
        self.next.heartbeat(*details)


# ---- measuring processes and the database -------------------------------------------------------------------------


def db_bytes(state: Path) -> tuple[int, int]:
    """(bytes in use in the dev server's SQLite database, bytes of its files incl. the WAL)."""
    files = sum(p.stat().st_size for p in state.glob("temporal.db*"))
    try:
        uri = f"file:{state / 'temporal.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            page, count, free = (db.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("page_size", "page_count", "freelist_count"))  # fmt: skip
        return (count - free) * page, files
    except sqlite3.Error:
        return files, files


def services(settings: Any) -> contextlib.AbstractContextManager[Any]:
    """`devstack.stack.embedded_services` (moto, the local data plane, the dev server), except that the stand-ins
    publish to CloudWatch once an hour instead of every 5 s: nothing on the migration path reads those metrics
    (`probe_fleet` asks the instances), and at 600 stand-ins the puts saturate moto and each stand-in's boto3
    import costs ~35 MB (measured: 22 GB in use at N=300)."""
    from devstack import stack as local

    return local.embedded_services(settings, standin_args=("--publish-s", str(PUBLISH_S)))


def mem_available_mb() -> float:
    """MemAvailable from /proc/meminfo (Linux), in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- setup -------------------------------------------------------------------------------------------------------


def seed_usage(clients: Any, entity_ids: Sequence[str], end: datetime) -> None:
    """HISTORY_HOURS of hourly CPU and memory (a daily sine) per entity, the hours before `end`, in CloudWatch."""
    from activities.forecast import DIMENSION
    from forecasting.data import METRICS

    namespace = EntitySpec.model_fields["metrics_namespace"].default
    hours = [end - timedelta(hours=h) for h in range(HISTORY_HOURS, 0, -1)]
    cw = clients("cloudwatch", HOME)
    for eid in entity_ids:
        for metric, level in (("cpu_mhz", 900.0), ("memory_kb", 2.0e6)):
            data = [{"MetricName": METRICS[metric].cloudwatch_name, "Dimensions": [{"Name": DIMENSION, "Value": eid}],
                     "Timestamp": t, "Value": round(level * (1 + 0.3 * math.sin(2 * math.pi * t.hour / 24)), 1),
                     "Unit": "None"} for t in hours]  # fmt: skip
            cw.put_metric_data(Namespace=namespace, MetricData=data)


def policy(lead_s: float, watch_s: float) -> EntityPolicy:
    return EntityPolicy(
        warm_up=False, max_instances=1, readiness_threshold=0.0, lead_time_s=lead_s, prepare_s=10,
        warmup_timeout_s=300, warm_p99_ms=1000, watch_s=watch_s, record_ttl_s=1, catch_up_interval_s=60,
        reforecast_interval_s=86400, degradation=DegradationPolicy(latency_floor_ms=1000),
    )  # fmt: skip


def entity_ids(n: int) -> list[str]:
    return [f"orch-{i:04d}" for i in range(n)]


def registration(eid: str, zone_id: str, pol: EntityPolicy, start: datetime, slice_s: float) -> tuple[EntitySpec, dict]:
    spec = EntitySpec(
        entity_id=eid, home_region=HOME, instance_types=("m5.large",), initial_instances=1,
        dns_name=f"{eid}.{ZONE}", hosted_zone_id=zone_id, policy=pol,
    )  # fmt: skip
    return spec, {"slices": [one_slice(start, slice_s)]}


def one_slice(start: datetime, slice_s: float) -> dict:
    return {"start": start, "end": start + timedelta(seconds=slice_s), "region": TARGET}


async def gather_gated(calls: Sequence[Callable[[], Any]], width: int = 20) -> list[Any]:
    """Runs the coroutine factories at most `width` at a time; exceptions are returned, not raised."""
    gate = asyncio.Semaphore(width)

    async def one(call: Callable[[], Any]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


async def poll_until(
    client: Any, query: str, done: Callable[[int], bool], deadline: float, progress: Progress, what: str,
    also: Callable[[], Any] | None = None,
) -> bool:  # fmt: skip
    began, last = time.monotonic(), 0.0
    while time.monotonic() < deadline:
        count = (await client.count_workflows(query)).count
        if also is not None:
            await also()
        if done(count):
            return True
        if time.monotonic() - last >= 15:
            progress(f"  {time.monotonic() - began:5.0f}s: {what}: {count}")
            last = time.monotonic()
        await asyncio.sleep(2)
    return False


# ---- one N ---------------------------------------------------------------------------------------------------------


async def measure(n: int, opts: Options, progress: Progress = print, keep_state: bool = False) -> dict:
    """Runs N entities through one migration each on fresh embedded services; returns the figures."""
    from devstack.stack import free_port
    from shadowing.client import ShadowingClient
    from shadowing.connect import connect
    from shadowing.settings import Settings
    from workers.aws import AwsClients
    from workers.main import build_worker

    state = Path(tempfile.mkdtemp(prefix=f"bench-orchestration-{n}-"))
    base = Settings(
        temporal_address=None, aws_endpoint_url=None, state_dir=state, moto_port=free_port(),
        temporal_port=free_port(), temporal_ui_port=free_port(), data_plane_poll_s=0.5, log_level="WARNING",
        max_concurrent_migrations=n + 10, max_concurrent_activities=32, region_shadow_quota=2 * n + 10,
        data_plane_regions=(HOME, TARGET),
    )  # fmt: skip
    lead, slice_s = opts.lead_s(n), opts.slice_s(n)
    ids = entity_ids(n)
    began = time.monotonic()
    fig: dict[str, Any] = {"entities": n, "lead_s": lead, "watch_s": opts.watch_s, "problems": []}
    try:
        with services(base) as svc:
            settings = svc.settings(base)
            pids = {s.name: s.process.pid for s in svc.started}
            agent = svc.data_plane.process.pid if svc.data_plane else None
            client = await connect(settings.temporal_address or "", settings.temporal_namespace, settings=settings)
            sdk = ShadowingClient(client, settings.task_queue, settings.pseudonyms())
            clients = AwsClients(settings)
            meter = ActivityMeter()

            def snapshot() -> dict[str, float]:
                snap = {"worker": own_cpu(), **{name: cpu_seconds(pid) for name, pid in pids.items()}}
                if agent is not None:
                    snap["data plane"] = cpu_seconds(agent, tree=True)
                snap["db"], snap["db files"] = db_bytes(state)
                return snap

            async with build_worker(client, settings, clients, interceptors=[meter]):
                mem0 = low = mem_available_mb()  # services and worker up, no instance yet
                # -- setup: seed, register, every entity bootstrapped (serving from us-east-1) --
                progress(f"N={n}: seeding {HISTORY_HOURS} h of usage per entity, registering, bootstrapping ...")
                end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                chunks = [ids[i : i + 25] for i in range(0, n, 25)]
                seeded = await gather_gated(
                    [lambda c=c: asyncio.to_thread(seed_usage, clients, c, end) for c in chunks], 4
                )
                if errors := [r for r in seeded if isinstance(r, BaseException)]:
                    raise RuntimeError(f"seeding CloudWatch failed: {errors[0]}")
                from shadowctl.demo import hosted_zone

                zone_id = await asyncio.to_thread(hosted_zone, clients("route53", HOME), ZONE)
                pol = policy(lead, opts.watch_s)
                later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
                regs = [registration(eid, zone_id, pol, later, slice_s) for eid in ids]
                failed = [r for r in await gather_gated([lambda r=r: sdk.register_entity(*r) for r in regs])
                          if isinstance(r, BaseException)]  # fmt: skip
                if failed:
                    raise RuntimeError(f"{len(failed)} registrations failed: {failed[0]}")
                waiting = f'WorkflowType = "EntitySchedule" AND {search.PHASE.name} = "waiting"'
                deadline = time.monotonic() + 120 + opts.setup_per_entity_s * n
                if not await poll_until(client, waiting, lambda c: c >= n, deadline, progress, "bootstrapped"):
                    raise RuntimeError(f"not every entity bootstrapped within {120 + opts.setup_per_entity_s * n:.0f}s")
                fig["setup_s"] = round(time.monotonic() - began, 1)

                # -- the window: one slice each, all starting at `start` --
                meter.reset()
                before, t0, window = snapshot(), datetime.now(UTC), time.monotonic()
                start = (t0 + timedelta(seconds=ALLOWANCE_S + 0.05 * n + lead)).replace(microsecond=0)
                fig["slice_start"] = start.isoformat()
                progress(f"N={n}: setup {fig['setup_s']} s; slice at {start:%H:%M:%S} (lead {lead:.0f} s) ...")
                updates = await gather_gated(
                    [lambda e=e: sdk.update_schedule(e, {"slices": [one_slice(start, slice_s)]}) for e in ids]
                )
                bad = [u for u in updates if isinstance(u, BaseException)]
                if bad:
                    fig["problems"].append(f"{len(bad)} schedule updates failed: {bad[0]}")
                fig["updates_s"] = round(time.monotonic() - window, 1)
                peak = 0

                async def running_migrations() -> None:
                    nonlocal peak, low
                    q = 'WorkflowType = "ShadowMigration" AND ExecutionStatus = "Running"'
                    peak = max(peak, (await client.count_workflows(q)).count)
                    low = min(low, mem_available_mb())

                running = 'WorkflowType = "EntitySchedule" AND ExecutionStatus = "Running"'
                deadline = time.monotonic() + (start - datetime.now(UTC)).total_seconds() + slice_s + 300
                if opts.stop_after_s is not None:
                    deadline = min(deadline, began + opts.stop_after_s)
                finished = await poll_until(client, running, lambda c: c == 0, deadline, progress,
                                            "entities still migrating", running_migrations)  # fmt: skip
                after, wall = snapshot(), time.monotonic() - window
                if not finished:
                    fig["problems"].append(f"stopped after {time.monotonic() - began:.0f} s with entities still "
                                           "migrating (the safety stop, or the slice's end + 300 s)")  # fmt: skip
                activity_cpu = dict(meter.cpu)
                fig["activity_runs"] = dict(meter.runs)
                fig["heartbeat_calls"], fig["heartbeats_est"] = meter.heartbeats()
            progress(f"N={n}: window {wall:.0f} s; reading the histories ...")
            fig.update(await analyse(client, t0, start))
    finally:
        if not keep_state:
            shutil.rmtree(state, ignore_errors=True)
    fig["wall_s"] = round(wall, 1)
    fig["mem_available_mb"] = {"before": round(mem0), "lowest": round(low)}
    # 2N instances at the peak (old fleets and shadows), with what moto, the dev server and the worker grew by
    fig["mem_per_instance_mb"] = round(max(mem0 - low, 0.0) / (2 * n), 1)
    fig["peak_running_migrations"] = peak
    fig["cpu_s"] = {k: round(after[k] - before[k], 2) for k in before if not k.startswith("db")}
    fig["db_growth_bytes"] = int(after["db"] - before["db"])
    fig["db_file_growth_bytes"] = int(after["db files"] - before["db files"])
    fig["db_bytes_after"] = int(after["db"])
    fig["activity_cpu_s"] = {k: round(v, 3) for k, v in sorted(activity_cpu.items(), key=lambda kv: -kv[1])}
    fig["forecast_cpu_s"] = round(activity_cpu.get("forecast_demand", 0.0), 2)
    return fig


# ---- reading the histories ---------------------------------------------------------------------------------------


def _at(ev: Any) -> datetime:
    return ev.event_time.ToDatetime(tzinfo=UTC)


def actions(events: Sequence[Any], since: datetime) -> tuple[Counter[str], Counter[str]]:
    """Billable actions of one history: (in the window since `since`, before it)."""
    window, setup = Counter[str](), Counter[str]()
    for ev in events:
        t, bucket = ev.event_type, (window if _at(ev) >= since else setup)
        if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            bucket["workflow started"] += 1
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            bucket["activity attempts"] += max(1, ev.activity_task_started_event_attributes.attempt)
        elif t == EventType.EVENT_TYPE_TIMER_STARTED:
            bucket["timers"] += 1
        elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            bucket["signals"] += 1
        elif t == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = ev.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if set(fields) - {"TemporalChangeVersion"}:
                bucket["search-attribute upserts"] += 1
        elif t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            bucket["schedule updates"] += 1  # the benchmark's trigger, not part of a migration
        bucket["history events"] += 1
    return window, setup


def _phases(events: Sequence[Any]) -> dict[str, datetime]:
    """A migration's ShadowingPhase upserts: phase -> first time."""
    out: dict[str, datetime] = {}
    for ev in events:
        if ev.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            field = ev.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields.get(
                search.PHASE.name
            )
            if field is not None:
                out.setdefault(json.loads(field.data), _at(ev))
    return out


def _latencies(events: Sequence[Any], since: datetime) -> tuple[list[float], list[float]]:
    """Schedule-to-start seconds of workflow tasks and activity tasks in the window (queueing at worker/server)."""
    scheduled = {ev.event_id: _at(ev) for ev in events if ev.event_type in (
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)}  # fmt: skip
    wft, act = [], []
    for ev in events:
        if _at(ev) < since:
            continue
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            sid = ev.workflow_task_started_event_attributes.scheduled_event_id
            if sid in scheduled:
                wft.append((_at(ev) - scheduled[sid]).total_seconds())
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = ev.activity_task_started_event_attributes
            if attrs.scheduled_event_id in scheduled and attrs.attempt <= 1:
                act.append((_at(ev) - scheduled[attrs.scheduled_event_id]).total_seconds())
    return wft, act


def _lease_wait(events: Sequence[Any]) -> float | None:
    """Seconds from `request_lease` completing to the coordinator's `lease_granted` signal."""
    kinds = {ev.event_id: ev.activity_task_scheduled_event_attributes.activity_type.name
             for ev in events if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}  # fmt: skip
    asked = next((_at(ev) for ev in events if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                  and kinds.get(ev.activity_task_completed_event_attributes.scheduled_event_id) == "request_lease"),
                 None)  # fmt: skip
    signaled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    granted = next((_at(ev) for ev in events if ev.event_type == signaled
                    and ev.workflow_execution_signaled_event_attributes.signal_name == "lease_granted"),
                   None)  # fmt: skip
    return (granted - asked).total_seconds() if asked and granted else None


async def analyse(client: Any, since: datetime, start: datetime) -> dict:
    """Every execution's history (each run of a continued-as-new coordinator too): actions, results, latencies."""
    execs = [e async for e in client.list_workflows()]

    async def fetch(e: Any) -> tuple[Any, Any]:
        return e, await client.get_workflow_handle(e.id, run_id=e.run_id).fetch_history()

    fetched = await gather_gated([lambda e=e: fetch(e) for e in execs], 16)
    window, setup, by_type = Counter[str](), Counter[str](), Counter[str]()
    switch, prep, leases, wft, act = [], [], [], [], []
    states: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    late = 0
    for item in fetched:
        if isinstance(item, BaseException):
            problems.append(f"history not read: {item}")
            continue
        e, history = item
        events = list(history.events)
        w, s = actions(events, since)
        window.update(w)
        setup.update(s)
        by_type[e.workflow_type] += sum(v for k, v in w.items() if k in BILLED)
        wl, al = _latencies(events, since)
        wft += wl
        act += al
        last = events[-1]
        done = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        # how the run ended, from its last event: completed, failed, canceled, terminated ... (else running)
        ended = EventType.Name(last.event_type).removeprefix("EVENT_TYPE_WORKFLOW_EXECUTION_").lower()
        ended = ended if not ended.startswith("event_type") else "running"
        payloads = list(last.workflow_execution_completed_event_attributes.result.payloads) if done else []
        if e.workflow_type == "ShadowMigration":
            phases = _phases(events)
            late += "late" in phases
            if "ready" in phases:
                prep.append((phases["ready"] - _at(events[0])).total_seconds())
            if not done:
                outcomes[f"migration {ended}"] += 1
                continue
            [result] = await client.data_converter.decode(payloads, [MigrationResult])
            outcomes[result.outcome] += 1
            if result.outcome == "migrated" and result.cutover_at is not None:
                switch.append((result.cutover_at - start).total_seconds())
        elif e.workflow_type == "EntitySchedule":
            wait = _lease_wait(events)
            if wait is not None:
                leases.append(wait)
            if not done:
                states[f"entity {ended}"] += 1
                continue
            [status] = await client.data_converter.decode(payloads, [EntityStatus])
            for sl in status.slices:
                states[sl.state] += 1
                if sl.state not in ("done",):
                    problems.append(f"{status.entity_id}: {sl.state} {sl.error or sl.outcome or ''}".strip())
    billed = sum(window[k] for k in BILLED if k in window)

    def stat(values: list[float], q: float) -> float | None:
        v = percentile(values, q)
        return None if v is None else round(v, 3)

    return {
        "executions": len(execs), "slice_states": dict(states), "migration_outcomes": dict(outcomes),
        "completed": outcomes.get("migrated", 0), "rolled_back": outcomes.get("migration failed", 0)
        + outcomes.get("migration canceled", 0), "late_migrations": late,
        "actions_window": dict(window), "actions_setup": dict(setup), "actions_by_workflow_type": dict(by_type),
        "actions_window_billed": billed,
        "switch_s": {"p50": stat(switch, 0.5), "p99": stat(switch, 0.99), "max": stat(switch, 1.0), "n": len(switch)},
        "prepare_s": {"p50": stat(prep, 0.5), "p99": stat(prep, 0.99)},
        "lease_wait_s": {"p50": stat(leases, 0.5), "p99": stat(leases, 0.99)},
        "wft_schedule_to_start_s": {"p50": stat(wft, 0.5), "p99": stat(wft, 0.99)},
        "activity_schedule_to_start_s": {"p50": stat(act, 0.5), "p99": stat(act, 0.99)},
        "history_problems": problems[:10],
    }  # fmt: skip


# ---- the report ----------------------------------------------------------------------------------------------------


def per_migration(f: dict) -> dict[str, float]:
    """The table's per-migration figures (one migration per entity: divided by N)."""
    n = f["entities"]
    worker = f["cpu_s"]["worker"]
    return {
        "worker_cpu_s": worker / n,
        "forecast_cpu_s": f["forecast_cpu_s"] / n,
        "orchestration_cpu_s": (worker - f["forecast_cpu_s"]) / n,
        "db_bytes": f["db_growth_bytes"] / n,
        "actions": f["actions_window_billed"] / n,
    }


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(runs: list[dict], skipped: dict[int, str]) -> str:
    head = (f"{'N':>5}  {'done':>5}  {'rolled back':>11}  {'other':>5}  {'wall s':>7}  {'worker CPU-s/mig':>16}  "
            f"{'(forecast)':>10}  {'orchestr.':>9}  {'DB bytes/mig':>12}  {'actions/mig':>11}  "
            f"{'switch p50 s':>12}  {'switch p99 s':>12}")  # fmt: skip
    lines = [head, "-" * len(head)]
    rows = sorted([(f["entities"], f) for f in runs] + [(n, None) for n in skipped], key=lambda x: x[0])
    for n, f in rows:
        if f is None:
            lines.append(f"{n:>5}  not run: {skipped[n]}")
            continue
        p = per_migration(f)
        other = n - f["completed"] - f["rolled_back"]
        lines.append(
            f"{n:>5}  {f['completed']:>5}  {f['rolled_back']:>11}  {other:>5}  {f['wall_s']:>7.1f}  "
            f"{p['worker_cpu_s']:>16.3f}  {p['forecast_cpu_s']:>10.3f}  {p['orchestration_cpu_s']:>9.3f}  "
            f"{p['db_bytes']:>12,.0f}  {p['actions']:>11.1f}  {_fmt(f['switch_s']['p50']):>12}  "
            f"{_fmt(f['switch_s']['p99']):>12}"
        )
    if len(runs) > 1:
        ref = min(runs, key=lambda f: f["entities"])
        r = per_migration(ref)
        lines += ["", f"ratios to the N={ref['entities']} reference (per-migration figures; wall time as is):",
                  f"{'N':>5}  {'worker CPU':>10}  {'orchestr.':>9}  {'DB bytes':>8}  {'actions':>7}  "
                  f"{'switch p50':>10}  {'switch p99':>10}  {'wall':>6}"]  # fmt: skip

        def ratio(a: float | None, b: float | None) -> str:
            return "-" if a is None or not b else f"x{a / b:.2f}"

        for f in sorted(runs, key=lambda f: f["entities"]):
            p = per_migration(f)
            lines.append(
                f"{f['entities']:>5}  {ratio(p['worker_cpu_s'], r['worker_cpu_s']):>10}  "
                f"{ratio(p['orchestration_cpu_s'], r['orchestration_cpu_s']):>9}  "
                f"{ratio(p['db_bytes'], r['db_bytes']):>8}  {ratio(p['actions'], r['actions']):>7}  "
                f"{ratio(f['switch_s']['p50'], ref['switch_s']['p50']):>10}  "
                f"{ratio(f['switch_s']['p99'], ref['switch_s']['p99']):>10}  {ratio(f['wall_s'], ref['wall_s']):>6}"
            )
    return "\n".join(lines)


def details(runs: list[dict]) -> str:
    """Per N: where the actions go, the services' CPU, the dev server's queueing: what limits the dev server."""
    out = []
    for f in sorted(runs, key=lambda f: f["entities"]):
        n, cpu, win = f["entities"], f["cpu_s"], f["wall_s"]
        acts = ", ".join(f"{k} {f['actions_window'].get(k, 0) / n:.1f}" for k in BILLED)
        by_type = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(f["actions_by_workflow_type"].items()))
        temporal = cpu.get("temporal", 0.0)
        out += [
            f"N={n}: setup (seed, register, bootstrap) {f['setup_s']} s; lead {f['lead_s']:.0f} s; window "
            f"{f['wall_s']} s; most migrations running at once {f['peak_running_migrations']}; "
            f"late preparations {f['late_migrations']}",
            f"  actions/migration (from histories): {acts}; heartbeat calls {f['heartbeat_calls'] / n:.1f} (not "
            "in histories nor in the column: billed when recorded, <= 1 per activity per 0.8 x heartbeat timeout); "
            f"by workflow type: {by_type}; the benchmark's schedule "
            f"update {f['actions_window'].get('schedule updates', 0) / n:.1f} (not counted); history events "
            f"{f['actions_window'].get('history events', 0) / n:.0f}",
            f"  CPU-s/migration: worker {cpu['worker'] / n:.3f} (activity threads "
            f"{sum(f['activity_cpu_s'].values()) / n:.3f}, of which forecast {f['forecast_cpu_s'] / n:.3f}), "
            f"Temporal dev server {temporal / n:.3f}, moto {cpu.get('moto', 0) / n:.3f}, "
            f"data plane (agent + stand-ins) {cpu.get('data plane', 0) / n:.3f}",
            f"  dev server: one process at {100 * temporal / max(win, 1e-9):.0f}% of a core over the window; SQLite "
            f"{f['db_bytes_after'] / 2**20:.1f} MB in use after (+{f['db_growth_bytes'] / 2**20:.2f} MB; files "
            f"+{f['db_file_growth_bytes'] / 2**20:.2f} MB incl. WAL); schedule-to-start p50/p99: workflow tasks "
            f"{_fmt(f['wft_schedule_to_start_s']['p50'], '.3f')}/{_fmt(f['wft_schedule_to_start_s']['p99'], '.3f')} s,"
            f" activities {_fmt(f['activity_schedule_to_start_s']['p50'], '.3f')}/"
            f"{_fmt(f['activity_schedule_to_start_s']['p99'], '.3f')} s",
            f"  lease wait (request_lease -> grant) p50/p99 {_fmt(f['lease_wait_s']['p50'])}/"
            f"{_fmt(f['lease_wait_s']['p99'])} s; preparation (migration start -> shadows ready) p50/p99 "
            f"{_fmt(f['prepare_s']['p50'])}/{_fmt(f['prepare_s']['p99'])} s; switch max "
            f"{_fmt(f['switch_s']['max'])} s",
        ]
        if f["problems"] or f["history_problems"]:
            out.append(f"  problems: {'; '.join([*f['problems'], *f['history_problems']][:5])}")
    return "\n".join(out)


def limits(runs: list[dict]) -> str:
    """What this machine's single-process services show, from the largest N that ran."""
    if not runs:
        return ""
    f = max(runs, key=lambda f: f["entities"])
    n, win, cpu = f["entities"], max(f["wall_s"], 1e-9), f["cpu_s"]
    busiest = max(cpu.get("temporal", 0.0) / win, cpu["worker"] / win)
    return "\n".join([
        f"Limits observed (N={n}, window {f['wall_s']} s, 2 cores shared by everything):",
        f"- Temporal dev server: ONE process (frontend, history, matching and its internal worker together) on ONE "
        f"SQLite file (WAL, a single writer at a time): {100 * cpu.get('temporal', 0.0) / win:.0f}% of a core over "
        f"the window, workflow-task schedule-to-start p99 {_fmt(f['wft_schedule_to_start_s']['p99'], '.3f')} s, "
        f"activity schedule-to-start p99 {_fmt(f['activity_schedule_to_start_s']['p99'], '.3f')} s.",
        f"- Worker: ONE Python process (one event loop for every workflow task, 32 activity threads, one GIL): "
        f"{100 * cpu['worker'] / win:.0f}% of a core; the busiest single process ran at {100 * busiest:.0f}%.",
        f"- FleetCoordinator: one workflow grants the leases, one awaited signal at a time: lease wait p99 "
        f"{_fmt(f['lease_wait_s']['p99'])} s for {n} simultaneous requests.",
        f"- Emulation (not orchestration) on the same 2 cores: moto {cpu.get('moto', 0.0) / n:.3f} CPU-s and the "
        f"local data plane (one stand-in process per instance) {cpu.get('data plane', 0.0) / n:.3f} CPU-s per "
        "migration.",
    ])  # fmt: skip


# ---- main ----------------------------------------------------------------------------------------------------------


def projected(prev: dict, n: int) -> float:
    """A linear projection of setup + window from a smaller N: used only to decide not to run, and said so."""
    return (prev["setup_s"] + prev["wall_s"]) * n / prev["entities"]


async def _main(args: argparse.Namespace) -> int:
    from workers.logs import configure_logging

    configure_logging("WARNING")
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # services stop on the way out
    opts = Options(args.min_lead_s, args.lead_per_entity_s, args.watch_s, stop_after_s=1.5 * args.budget_s)
    runs: list[dict] = []
    skipped: dict[int, str] = {}
    for n in sorted(set(args.entities)):
        prev = max(runs, key=lambda f: f["entities"]) if runs else None
        if prev is not None and not args.force and (guess := projected(prev, n)) > args.budget_s:
            took = prev["setup_s"] + prev["wall_s"]
            skipped[n] = (f"a linear projection from N={prev['entities']} ({took:.0f} s) gives ~{guess:.0f} s, "
                          f"over --budget-s {args.budget_s:.0f} (a projection, not a measurement)")  # fmt: skip
            print(f"N={n}: not run: {skipped[n]}", flush=True)
            continue
        if prev is not None and not args.force and prev["entities"] >= 50:  # below, other processes' noise dominates
            need, have = 2 * n * prev["mem_per_instance_mb"] + 1024, mem_available_mb()
            if need > 0.8 * have:
                skipped[n] = (f"2 x {n} instances at ~{prev['mem_per_instance_mb']:.0f} MB each (measured at N="
                              f"{prev['entities']}: a projection) need ~{need / 1024:.1f} GB, {have / 1024:.1f} GB "
                              "available")  # fmt: skip
                print(f"N={n}: not run: {skipped[n]}", flush=True)
                continue
        try:
            runs.append(await measure(n, opts, lambda s: print(s, flush=True), args.keep_state))
        except Exception as exc:  # a run that cannot finish is a row that says why
            skipped[n] = f"run failed: {exc}"
            print(f"N={n}: {skipped[n]}", flush=True)
    print()
    print(table(runs, skipped))
    print()
    print(details(runs))
    print()
    print(limits(runs))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    options = {**asdict(opts), "budget_s": args.budget_s, "history_hours": HISTORY_HOURS}
    args.json.write_text(json.dumps({"options": options, "runs": runs, "not_run": skipped}, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0 if runs and all(f["completed"] == f["entities"] and not f["problems"] for f in runs) else 1


def report(path: Path) -> int:
    """Prints the tables of a saved run (`--json` output) again."""
    saved = json.loads(path.read_text())
    runs, skipped = saved["runs"], {int(n): why for n, why in saved["not_run"].items()}
    print(f"{table(runs, skipped)}\n\n{details(runs)}\n\n{limits(runs)}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestration", description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument(
        "--budget-s",
        type=float,
        default=1200.0,
        help="skip an N whose linear projection (setup + window) from the previous N exceeds this",
    )
    parser.add_argument("--force", action="store_true", help="run every N whatever the projection")
    parser.add_argument("--min-lead-s", type=float, default=Options.min_lead_s)
    parser.add_argument("--lead-per-entity-s", type=float, default=Options.lead_per_entity_s)
    parser.add_argument("--watch-s", type=float, default=Options.watch_s)
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a saved --json run, run nothing")
    parser.add_argument("--keep-state", action="store_true", help="keep each N's state directory (DB, logs)")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("SHADOWING_STATE_DIR", ".shadowing"))
                        / "bench-orchestration.json")  # fmt: skip
    args = parser.parse_args()
    raise SystemExit(report(args.report) if args.report else asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
