"""ShadowMigration: the saga that moves one entity onto a shadow fleet for one time slice.

provision (spot or on-demand, from the entity's image) -> load-balancer targets -> warm with synthetic traffic
-> replicate tables (copy + stream checkpoint, verified once) and the RDS read replica -> [wait for the slice start
or MigrateInstances, replaying the source's writes meanwhile] -> final sync check (stream-position fence, the keys
changed since the last verified point, the lag bound) -> writes: `converge` replicates both ways from the first
weight change until the old fleet is retired; `fenced` holds the old fleet's writes, drains replication, promotes
the RDS replica and points the old fleet's writes at the new region -> old fleet's baseline -> stepped traffic
switch (Route53 weights, ELB forward weights), each step judged -> queues forwarded -> post-cutover watch judged
against the baseline -> wait out the record TTL -> retire the old fleet -> last replication pass.

Each step registers its compensation before it runs; on failure, cancellation or release they run in reverse
(traffic back to exactly the captured weights, the rollback's writes replayed back to the source, queues
returned, replicas dropped, shadows terminated) and the workflow re-raises so Temporal shows it. One exception: once
a promoted RDS replica took writes, nothing is undone (`RollbackRefused`): moving back would lose those writes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.application import ApplicationActivities, FenceInput
    from activities.ec2 import Ec2Activities, FleetInput, ProvisionInput, ResizeInput
    from activities.forecast import ForecastActivities, RefineInput
    from activities.monitoring import FleetSignals, MonitoringActivities, ProbeInput
    from activities.replication import (
        ReplicationActivities,
        ReplicationInput,
        ReplicationStatus,
        TableCheckpoint,
        TwoWayStatus,
    )
    from activities.routing import (
        ListenerRef,
        ListenerState,
        ListenerWeightsInput,
        RestoreWeightsInput,
        RoutingActivities,
        RoutingInput,
        RoutingState,
        TargetsInput,
        WeightsInput,
    )
    from activities.warmup import WarmupActivities
    from shadowing import metrics, search
    from shadowing.catalog import INSTANCE_TYPES
    from shadowing.errors import (
        NON_RETRYABLE,
        DataSyncFailed,
        MigrationFailed,
        RollbackRefused,
        TimeSliceNotActive,
        WriteFenceFailed,
    )
    from shadowing.models import (
        CostEntry,
        DataSummary,
        DemandForecast,
        EntitySpec,
        FleetRef,
        MigrationInput,
        MigrationProgress,
        MigrationResult,
        arn_region,
    )
    from workflows.policy import cost_entry, fleet_id, instances_needed, launch_image, warmup
    from workflows.saga import Saga
    from workflows.verdict import cutover_steps, judge, listener_weights, retire_after_s, step_weights
    from workflows.waiting import wait_until

R = TypeVar("R")
#: How `refresh_record` runs a routing step: (activity method, argument) -> the routing state it returns.
RoutingStep = Callable[[Callable[[Any, Any], RoutingState], object], Awaitable[RoutingState]]

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=list(NON_RETRYABLE),
)
#: The entity workflow's own short steps (a migration takes its timeouts from the entity's policy).
STEP = {"start_to_close_timeout": timedelta(minutes=2), "retry_policy": RETRY}
IMAGE_TIMEOUT_S = 1800.0
WATCH_PROBES = 3
UNHEALTHY_PROBES_TO_ROLL_BACK = 2
#: `fenced`: before the hold, sync checks run until one saw at most FENCE_BACKLOG changed keys (PRE_FENCE_CHECKS at
#: most): the hold then drains what a small backlog took, not what the final check's own duration let pile up.
FENCE_BACKLOG = 20
PRE_FENCE_CHECKS = 3
#: Most wake-ups (catch-up, re-forecast) while shadows wait for the go: about 16 history events each (the settle
#: timer included), so a wait stays under Temporal's 10,240-event history warning.
MAX_WAIT_STEPS = 500


@workflow.defn(name="ShadowMigration")
class ShadowMigrationWorkflow:
    def __init__(self) -> None:
        self._progress = MigrationProgress(phase="starting")
        self._proceed = False
        self._release = False
        self._checkpoint: tuple[TableCheckpoint, ...] = ()
        self._target_group: str | None = None  # the shadows' ELB target group, when the listener is in their region
        self._phase_attr: str | None = None  # the last ShadowingPhase this run upserted
        self._ready_at: datetime | None = None  # when the shadows were up (their pre-warm hours start)
        self._shadows: FleetRef | None = None
        self._cutover_began: datetime | None = None  # for the cutover-duration metric
        self._grown: tuple[FleetRef, int, datetime] | None = None  # late scale-up: grown fleet, extra, since
        self._routing_unrestored = False  # the "restore routing" compensation failed: shadows may still serve
        self._verified: tuple[TableCheckpoint, ...] = ()  # source stream position the last sync check verified
        self._reverse: tuple[TableCheckpoint, ...] = ()  # target stream position: target -> source resumes here
        self._data = DataSummary()
        self._two_way: asyncio.Task[None] | None = None  # converge: the both-ways replication loop
        self._two_way_stop = False
        self._switched = False  # the first weight change is made: the new fleet may take writes
        self._two_way_error: BaseException | None = None
        self._fence: str | None = None  # fenced: None (writes open at the source), "held", "target" (moved)
        self._rds_written = False  # a promoted RDS replica takes writes: a rollback would lose them
        self._drain_ttl = 0  # longest TTL a resolver may hold an answer for (set by the switch)
        self._restored_at: datetime | None = None  # when a rollback restored the routing
        # Short steps' timeout and long steps' heartbeat timeout (the policy's; how soon a lost worker is noticed).
        self._step = timedelta(minutes=2)
        self._heartbeat = timedelta(seconds=60)

    @workflow.signal(name="proceed")
    def proceed(self) -> None:
        """MigrateInstances: cut over now (the slice must be active)."""
        self._proceed = True

    @workflow.signal(name="release")
    def release(self) -> None:
        """ReleaseShadowInstances: undo everything before cutover and end."""
        self._release = True

    @workflow.query(name="progress")
    def progress(self) -> MigrationProgress:
        return self._progress

    @workflow.query(name="data")
    def data(self) -> DataSummary:
        """What happened to the entity's data so far: sync check, two-way passes, conflicts, fence duration."""
        return self._data

    @workflow.run
    async def run(self, req: MigrationInput) -> MigrationResult:
        saga = Saga()
        self._step = timedelta(seconds=req.spec.policy.step_timeout_s)
        self._heartbeat = timedelta(seconds=req.spec.policy.heartbeat_timeout_s)
        try:
            return await self._migrate(req, saga)
        except (Exception, asyncio.CancelledError) as exc:
            if self._rds_written:
                await self._refuse_rollback(req, exc)
            await self._report(req, "compensating", root_cause(exc))
            ran = await saga.compensate()
            await self._report(req, "rolled-back", ", ".join(ran), cost=self._cost(req, "rolled-back"))
            if isinstance(exc, asyncio.CancelledError | ApplicationError):
                raise
            raise ApplicationError(
                f"{MigrationFailed.MESSAGE}: {root_cause(exc)}", type="MigrationFailed", non_retryable=True
            ) from exc

    async def _migrate(self, req: MigrationInput, saga: Saga) -> MigrationResult:
        slot, spec = req.time_slice, req.spec
        shadows = FleetRef(
            fleet_id=fleet_id(spec.entity_id, slot.key), entity_id=spec.entity_id,
            region=slot.region, instance_type=req.instance_type,
        )  # fmt: skip
        saga.add("terminate shadows", lambda: self._terminate_shadows(shadows))
        if req.mode == "auto":
            shadows = await self._prepare_on_time(req, shadows, saga)
        else:
            shadows = await self._prepare(req, shadows, saga)
        if await self._wait_for_go(req):
            shadows = self._shadows or shadows  # resized while waiting for the slice
            return await self._cut_over(req, shadows, saga)
        ran = await saga.compensate()
        cost = self._cost(req, "released")
        await self._report(req, "released", ", ".join(ran), cost=cost)
        return MigrationResult(outcome="released", compensations_run=tuple(ran), cost=cost)

    async def _prepare_on_time(self, req: MigrationInput, shadows: FleetRef, saga: Saga) -> FleetRef:
        """Prepares the shadows; if that runs past the slice start, the old fleet carries the slice meanwhile.

        Late: the source fleet is scaled up to what the forecast says it needs (`source_needed`, its compensation
        scales it back), and the cutover is postponed until the shadows are ready, as long as the slice lasts.
        """
        task = asyncio.ensure_future(self._prepare(req, shadows, saga))
        if await wait_until(req.time_slice.start, task.done):
            await self._report(req, "late", "shadows not ready at the slice start: cutover postponed")
            try:
                await self._carry_late(req, saga)
            except BaseException:
                task.cancel()  # stop preparing before the compensations undo what it did
                await asyncio.gather(task, return_exceptions=True)
                raise
        return await task

    async def _carry_late(self, req: MigrationInput, saga: Saga) -> None:
        source, needed = req.source, req.source_needed
        if source is None or needed is None or needed <= source.size:
            return
        grow = ProvisionInput(
            entity_id=source.entity_id, fleet_id=source.fleet_id, slice_key="scale-up", region=source.region,
            instance_type=source.instance_type, quantity=needed, role="active",
        )  # fmt: skip
        shrink = ResizeInput(fleet=source, quantity=source.size, keep=source.instance_ids)
        saga.add("scale the old fleet back", lambda: self._scale_back(req, shrink))
        grown = await self._long(Ec2Activities.provision_fleet, grow, 900)
        await self._refresh_record(req, grown)
        self._grown = (grown, grown.size - source.size, workflow.now())
        await self._report(req, "late", f"old fleet scaled {source.size} -> {grown.size} to carry the slice")

    async def _scale_back(self, req: MigrationInput, shrink: ResizeInput) -> None:
        """The record first names only the instances kept, then the extra ones go: no answer points at a terminated
        instance (their addresses may be reused by someone else's)."""
        await self._refresh_record(req, shrink.fleet)
        await self._act(Ec2Activities.shrink_fleet, shrink)

    async def _refresh_record(self, req: MigrationInput, fleet: FleetRef) -> None:
        """Rewrites the fleet's weighted record with its current addresses, at the weight it has now."""

        def run(activity: Callable[[Any, Any], RoutingState], arg: object) -> Awaitable[RoutingState]:
            # set_weights may wait for Route53 to sync
            return (
                self._long(activity, arg, 300)
                if activity is RoutingActivities.set_weights
                else self._act(activity, arg)
            )

        await refresh_record(req.spec, fleet, run)

    def _cost(self, req: MigrationInput, outcome: str, cutover: datetime | None = None) -> CostEntry | None:
        """The ledger line: shadow hours until cutover or the end, old-fleet overlap, late scale-up."""
        if self._shadows is None or self._ready_at is None:
            return None
        now = workflow.now()
        shadow_s = ((cutover or now) - self._ready_at).total_seconds()
        overlap = (req.source, (now - cutover).total_seconds()) if cutover is not None else (None, 0.0)
        extra = (None, 0, 0.0)
        if self._grown is not None:
            grown, n, since = self._grown
            extra = (grown, n, ((cutover or now) - since).total_seconds())
        return cost_entry(req.time_slice.key, outcome, self._shadows, max(shadow_s, 0.0), overlap, extra)

    # ---- before the slice ----------------------------------------------------------------------------------

    async def _prepare(self, req: MigrationInput, shadows: FleetRef, saga: Saga) -> FleetRef:
        slot, spec, policy = req.time_slice, req.spec, req.spec.policy
        started = workflow.now()
        if self._fenced(req):  # before anything moves: the old fleet's app must answer the fence contract
            assert req.source is not None
            await self._act(ApplicationActivities.check_write_fence, FenceInput(fleet=req.source))
        market = "spot" if policy.spot else "on-demand"
        await self._report(req, "provisioning", f"{req.quantity} x {req.instance_type} ({market}) in {slot.region}")
        provision = ProvisionInput(
            entity_id=spec.entity_id, fleet_id=shadows.fleet_id, slice_key=slot.key, region=slot.region,
            instance_type=req.instance_type, quantity=req.quantity, **launch_image(spec), market=market,
            spot_deadline_s=policy.spot_deadline_s,
            max_price_usd=self._max_price(req) if policy.spot else None, image_timeout_s=IMAGE_TIMEOUT_S,
        )  # fmt: skip
        shadows = await self._long(
            Ec2Activities.provision_fleet, provision, IMAGE_TIMEOUT_S + policy.spot_deadline_s + 300
        )
        self._shadows, self._ready_at = shadows, workflow.now()
        if self._listener_region(req) == shadows.region:
            targets = TargetsInput(fleet=shadows)
            saga.add(
                "deregister shadow targets", lambda: self._act(RoutingActivities.deregister_fleet_targets, targets)
            )
            group = await self._act(RoutingActivities.register_fleet_targets, targets)
            self._target_group = group.target_group_arn
        await self._report(req, "warming" if policy.warm_up else "booting", ", ".join(shadows.instance_ids), shadows)
        if policy.warm_up:
            await self._long(WarmupActivities.warm_fleet, warmup(shadows, policy), policy.warmup_timeout_s + 60)
        else:
            await self._wait_healthy(req, shadows)
        detail = await self._replicate(req, saga)
        prepared = (workflow.now() - started).total_seconds()
        await self._report(req, "ready", f"{'warm' if policy.warm_up else 'cold'}; {detail}", shadows, prepared)
        return shadows

    async def _wait_healthy(self, req: MigrationInput, fleet: FleetRef) -> None:
        """Without warm-up the shadows must still answer: poll EC2's view until healthy, up to the warm-up timeout."""
        deadline = workflow.now() + timedelta(seconds=req.spec.policy.warmup_timeout_s)
        while True:
            report = await self._act(WarmupActivities.check_fleet_health, FleetInput(fleet=fleet))
            if report.healthy:
                return
            if workflow.now() >= deadline:
                raise ApplicationError(
                    f"fleet {fleet.fleet_id} never healthy: {report.detail}", type="InstanceNeverHealthy",
                    non_retryable=True,
                )  # fmt: skip
            await workflow.sleep(5)

    async def _replicate(self, req: MigrationInput, saga: Saga) -> str:
        spec = req.spec
        parts = []
        repl = self._replication(req)
        if spec.dynamodb_tables or spec.rds_instance or spec.sqs_queues:
            saga.add("drop replicas", lambda: self._act(ReplicationActivities.drop_replicas, repl))
        if spec.dynamodb_tables:
            status = await self._long(ReplicationActivities.replicate_tables, repl, 3600)
            self._checkpoint = status.checkpoint
            parts.append(f"{status.items} items copied")
            if repl.source_region != repl.target_region and spec.policy.sync_verify == "changed":
                # One whole verification while there is time: the final check then reads only what changed since.
                first = repl.model_copy(update={"checkpoint": self._checkpoint, "verify": "full-scan"})
                verified = await self._long(ReplicationActivities.check_sync, first, 3600)
                self._checkpoint = verified.checkpoint or self._checkpoint
                if verified.in_sync:
                    self._verified = verified.verified
                parts.append(f"copy verified: {verified.detail}")
        if spec.rds_instance and repl.source_region != repl.target_region:
            saga.add("delete read replica", lambda: self._act(ReplicationActivities.delete_read_replica, repl))
            replica = await self._long(ReplicationActivities.create_read_replica, repl, 3600)
            parts.append(f"read replica {replica.db_instance_identifier} {replica.status}")
        return "; ".join(parts) or "no data to replicate"

    async def _wait_for_go(self, req: MigrationInput) -> bool:
        """True to cut over, False to release. Auto mode goes at the slice start; manual waits for a call.

        While waiting, the source's newest writes are replayed every `catch_up_interval_s`, so the final check
        before cutover has little left to apply.
        """
        slot = req.time_slice
        until = slot.start if req.mode == "auto" else slot.end
        # At most MAX_WAIT_STEPS wake-ups however long the wait (a manual slice may last days): the history stays
        # far below Temporal's 51,200-event limit, past which the server would end the run without compensations.
        floor_s = max((until - workflow.now()).total_seconds(), 0.0) / MAX_WAIT_STEPS
        refine_every = max(req.spec.policy.reforecast_interval_s, floor_s)
        resizing = req.mode == "auto" and req.forecast is not None
        next_refine = workflow.now() + timedelta(seconds=refine_every) if resizing else None
        forecast = req.forecast
        while True:
            left = (until - workflow.now()).total_seconds()
            if left <= 0:
                return req.mode == "auto"
            step = min(left, max(req.spec.policy.catch_up_interval_s, floor_s)) if self._checkpoint else left
            if next_refine is not None:
                step = max(min(step, (next_refine - workflow.now()).total_seconds()), 0.001)
            if not await wait_until(workflow.now() + timedelta(seconds=step), lambda: self._proceed or self._release):
                return not self._release  # MigrateInstances or ReleaseShadowInstances
            if next_refine is not None and forecast is not None and workflow.now() >= next_refine:
                forecast = await self._resize(req, forecast)
                next_refine = workflow.now() + timedelta(seconds=refine_every)
            if self._checkpoint and (until - workflow.now()).total_seconds() > 0:
                status = await self._act(ReplicationActivities.catch_up, self._replication(req))
                self._checkpoint = status.checkpoint or self._checkpoint

    async def _resize(self, req: MigrationInput, forecast: DemandForecast) -> DemandForecast:
        """Re-forecasts with the newest observations (the engine's Bayesian update) and resizes the shadows:
        more when demand grew (launched and warmed), surplus released when it fell."""
        refined = await self._long(
            ForecastActivities.refine_forecast, RefineInput(spec=req.spec, forecast=forecast), 600
        )
        shadows, p = self._shadows, req.spec.policy
        if shadows is None:
            return refined
        wanted = instances_needed(refined, INSTANCE_TYPES[shadows.instance_type], p.target_utilisation, p.max_instances)
        if wanted > shadows.size:
            grow = ProvisionInput(
                entity_id=shadows.entity_id, fleet_id=shadows.fleet_id, slice_key=req.time_slice.key,
                region=shadows.region, instance_type=shadows.instance_type, quantity=wanted, **launch_image(req.spec),
            )  # fmt: skip
            grown = await self._long(Ec2Activities.provision_fleet, grow, IMAGE_TIMEOUT_S + 300)
            if p.warm_up:
                await self._long(WarmupActivities.warm_fleet, warmup(grown, p), p.warmup_timeout_s + 60)
            self._shadows = grown
        elif wanted < shadows.size:
            self._shadows = await self._act(Ec2Activities.shrink_fleet, ResizeInput(fleet=shadows, quantity=wanted))
        if self._shadows.size != shadows.size:
            await self._report(req, "resized", f"re-forecast: shadows {shadows.size} -> {self._shadows.size}",
                               self._shadows)  # fmt: skip
        return refined

    # ---- at the slice start --------------------------------------------------------------------------------

    async def _cut_over(self, req: MigrationInput, shadows: FleetRef, saga: Saga) -> MigrationResult:
        slot, spec, policy = req.time_slice, req.spec, req.spec.policy
        if not slot.contains(workflow.now()):
            raise ApplicationError(TimeSliceNotActive.MESSAGE, type="TimeSliceNotActive", non_retryable=True)
        await self._report(req, "sync-check", f"lag bound {policy.max_replication_lag_s:g}s", shadows)
        sync = await self._sync_check(req, self._step * 15)
        repl = self._replication(req)
        if self._checkpoint:  # rollback: first the source's last writes, then the new side's writes replayed back
            saga.add("replay writes back", lambda: self._bring_writes_home(req))
        if self._fenced(req):
            await self._move_writes(req, saga, sync)
        elif spec.rds_instance and repl.source_region != repl.target_region:  # no old fleet writes to the old DB
            await self._long(ReplicationActivities.promote_read_replica, repl, 3600)
        baseline = await self._signals(req, req.source) if req.source is not None else None
        if self._two_way_wanted(req):
            self._two_way = asyncio.ensure_future(self._replicate_both_ways(req))
        last_switch, ttl_s = await self._switch(req, shadows, saga, baseline)
        if spec.sqs_queues and repl.source_region != repl.target_region:
            back = repl.model_copy(update={"source_region": repl.target_region, "target_region": repl.source_region})
            saga.add("return queued messages", lambda: self._long(ReplicationActivities.forward_queue, back, 900))
            await self._long(ReplicationActivities.forward_queue, repl, 900)
        active = shadows.model_copy(update={"role": "active"})
        await self._act(Ec2Activities.mark_fleet_role, active)
        await self._watch(req, active, baseline)
        self._raise_two_way_error()
        wait = retire_after_s(ttl_s, last_switch, workflow.now())
        if wait > 0:  # resolvers may still hand out the old fleet's address until its TTL runs out
            await self._report(req, "draining", f"{wait:.0f}s for cached DNS answers", active)
            await workflow.sleep(wait)
        self._raise_two_way_error()
        saga.commit()  # past the watch the new fleet is trusted: retiring the old one is not undone
        if req.source is not None:
            await self._retire(req, req.source)
        await self._stop_two_way(req, last_pass=True)  # the old fleet's last writes, acknowledged before it went
        cost = self._cost(req, "migrated", last_switch)
        await self._report(req, "done", f"serving from {active.region}", active, cost=cost)
        return MigrationResult(
            outcome="migrated", fleet=active, retired=req.source, cutover_at=last_switch, cost=cost, data=self._data
        )

    # ---- the entity's writes ---------------------------------------------------------------------------------

    def _fenced(self, req: MigrationInput) -> bool:
        """`fenced` applies when data moves away from an old fleet that writes it (not to a bootstrap, not in place)."""
        spec = req.spec
        return (
            spec.policy.consistency == "fenced"
            and req.source is not None
            and req.source.region != req.time_slice.region
            and bool(spec.dynamodb_tables or spec.rds_instance)
        )

    def _two_way_wanted(self, req: MigrationInput) -> bool:
        """`converge`: both fleets take writes from the first weight change, each into its own region's tables.
        `fenced`: only the new region's tables take writes once the fence moved them; the backward direction keeps the
        old region's copy current until retirement (a rollback then has little to copy back)."""
        return (
            req.source is not None
            and req.source.region != req.time_slice.region
            and bool(req.spec.dynamodb_tables)
            and bool(self._reverse)
        )

    async def _sync_check(self, req: MigrationInput, timeout: timedelta, final: bool = True) -> ReplicationStatus:
        """The final sync check: every source change up to a stream-position fence applied in the target, the keys
        changed since the last verified point equal on both sides (or the whole tables, `full-scan`), the lag within
        the bound. Raises DataSyncFailed when the bound cannot be met. `final`: its figures are the summary's (the
        fence's own checks only add what they applied)."""
        policy = req.spec.policy
        check = self._replication(req).model_copy(
            update={"verify": policy.sync_verify, "verified": self._verified, "reverse_checkpoint": self._reverse}
        )
        sync = await workflow.execute_activity_method(
            ReplicationActivities.check_sync, check, schedule_to_close_timeout=timeout,
            heartbeat_timeout=self._heartbeat, retry_policy=RETRY,
            summary=self._summary(ReplicationActivities.check_sync, check),
        )  # fmt: skip
        figures = {"sync_mode": sync.mode, "sync_check_s": sync.check_s, "changed": sync.changed} if final else {}
        self._data = self._data.model_copy(
            update={
                "consistency": policy.consistency, "forward_applied": self._data.forward_applied + sync.applied,
                "conflicts": self._data.conflicts + sync.conflicts, **figures,
            }
        )  # fmt: skip
        if not sync.in_sync:
            raise ApplicationError(
                f"{DataSyncFailed.MESSAGE}: {sync.detail}", type="DataSyncFailed", non_retryable=True
            )
        self._checkpoint = sync.checkpoint or self._checkpoint
        self._verified = sync.verified or self._verified
        self._reverse = sync.reverse_checkpoint or self._reverse
        return sync

    async def _move_writes(self, req: MigrationInput, saga: Saga, last: ReplicationStatus) -> None:
        """`fenced`: hold the old fleet's writes, drain replication (checked), promote the RDS replica, then point
        the old fleet's writes at the new region, all within `fence_deadline_s`; else release and roll back.

        Writes go on while the final check runs, so first more checks, each verifying only what changed since the
        previous one, until the backlog is small: the hold then lasts as long as a small backlog takes."""
        assert req.source is not None
        policy, old, target = req.spec.policy, req.source, req.time_slice.region
        for _ in range(PRE_FENCE_CHECKS):
            if not req.spec.dynamodb_tables or last.changed <= FENCE_BACKLOG:
                break
            last = await self._sync_check(req, self._step * 15, final=False)
        deadline_s = policy.fence_deadline_s
        saga.add("release the write fence", lambda: self._release_fence(req))
        held_at = workflow.now()
        await self._report(req, "fenced", f"writes of {old.fleet_id} held (deadline {deadline_s:g}s)")
        self._fence = "held"  # before the call: a timed-out call may still have held them
        await self._fence_call(req, FenceInput(fleet=old, state="held", deadline_s=deadline_s), deadline_s)

        def left() -> timedelta:
            remaining = deadline_s - (workflow.now() - held_at).total_seconds()
            if remaining <= 0:
                raise ApplicationError(
                    f"{WriteFenceFailed.MESSAGE}: writes of {old.fleet_id} held past the {deadline_s:g}s deadline; "
                    "released at the source", type="WriteFenceFailed", non_retryable=True,
                )  # fmt: skip
            return timedelta(seconds=remaining)

        if req.spec.dynamodb_tables:
            await self._sync_check(req, left(), final=False)
        repl = self._replication(req)
        if req.spec.rds_instance:
            await workflow.execute_activity_method(
                ReplicationActivities.promote_read_replica, repl, schedule_to_close_timeout=left(),
                heartbeat_timeout=self._heartbeat, retry_policy=RETRY,
            )  # fmt: skip
        left()
        await self._fence_call(req, FenceInput(fleet=old, state="open", region=target), deadline_s)
        self._fence = "target"
        self._rds_written = bool(req.spec.rds_instance)
        held_ms = round((workflow.now() - held_at).total_seconds() * 1000, 1)
        self._data = self._data.model_copy(update={"fence_ms": held_ms})
        await self._report(req, "fenced", f"writes of {old.fleet_id} go to {target} ({held_ms:.0f} ms held)")

    async def _fence_call(self, req: MigrationInput, fence: FenceInput, timeout_s: float) -> None:
        await workflow.execute_activity_method(
            ApplicationActivities.set_write_fence, fence, schedule_to_close_timeout=timedelta(seconds=timeout_s),
            retry_policy=RETRY, summary=self._summary(ApplicationActivities.set_write_fence, fence),
        )  # fmt: skip

    async def _release_fence(self, req: MigrationInput) -> None:
        """Compensation: writes held at the source are released there (a fence moved to the target is brought back
        by "replay writes back", after the rollback's writes are copied home)."""
        if self._fence == "held":
            await self._open_writes_at_home(req)

    async def _open_writes_at_home(self, req: MigrationInput) -> None:
        """The old fleet's writes open again, into its own region's tables."""
        assert req.source is not None
        home = FenceInput(fleet=req.source, state="open", region=req.source.region)
        await self._long(ApplicationActivities.set_write_fence, home, 120)
        self._fence = None

    async def _replicate_both_ways(self, req: MigrationInput) -> None:
        """From the first weight change: passes in both directions every `two_way_interval_s` until
        stopped. An error is kept for the main flow to raise (at the watch's end), which rolls back."""
        interval = req.spec.policy.two_way_interval_s
        await workflow.wait_condition(lambda: self._switched or self._two_way_stop)
        while not self._two_way_stop:
            try:
                await self._two_way_pass(req)
            except Exception as exc:  # the activity's retries are spent, or a non-retryable error
                self._two_way_error = exc
                return
            await wait_until(workflow.now() + timedelta(seconds=interval), lambda: self._two_way_stop)

    async def _two_way_pass(self, req: MigrationInput) -> TwoWayStatus:
        both = self._replication(req).model_copy(update={"reverse_checkpoint": self._reverse})
        status = await self._long(ReplicationActivities.replicate_both_ways, both, 600)
        self._checkpoint = status.forward.checkpoint or self._checkpoint
        self._reverse = status.back.checkpoint or self._reverse
        conflicts = status.forward.conflicts + status.back.conflicts
        if conflicts:
            report = status.forward.conflict_report + status.back.conflict_report
            workflow.logger.warning("two-way replication resolved %d conflicts: %s", conflicts, report)
        self._data = self._data.model_copy(
            update={
                "forward_applied": self._data.forward_applied + status.forward.applied,
                "back_applied": self._data.back_applied + status.back.applied,
                "conflicts": self._data.conflicts + conflicts, "two_way_passes": self._data.two_way_passes + 1,
            }
        )  # fmt: skip
        return status

    async def _stop_two_way(self, req: MigrationInput, last_pass: bool) -> None:
        """Stops the loop after its current pass; `last_pass`: one more pass once the old fleet is gone, for the
        writes it acknowledged after the previous one (a short grace first: an instance shutting down may still
        finish a request)."""
        self._two_way_stop = True
        if self._two_way is None:
            return
        await asyncio.gather(self._two_way, return_exceptions=True)  # the loop keeps its own error
        self._two_way = None
        if last_pass:
            await workflow.sleep(min(req.spec.policy.two_way_interval_s, 2.0))
            await self._two_way_pass(req)

    def _raise_two_way_error(self) -> None:
        if self._two_way_error is not None:
            raise ApplicationError(
                f"{MigrationFailed.MESSAGE}: two-way replication failed: {root_cause(self._two_way_error)}",
                type="MigrationFailed", non_retryable=True,
            )  # fmt: skip

    async def _bring_writes_home(self, req: MigrationInput) -> None:
        """Rollback of data, once no client can still reach the new fleet (the restored records' TTL): the two-way
        loop stops, the source's last writes go forward and what the new side took is replayed back. A fence that
        moved the old fleet's writes to the target is held meanwhile and then opened at the source again."""
        if self._restored_at is not None:
            wait = retire_after_s(self._drain_ttl, self._restored_at, workflow.now())
            if wait > 0:
                await workflow.sleep(wait)
        await self._stop_two_way(req, last_pass=False)
        moved = self._fence == "target" and req.source is not None
        if moved:
            assert req.source is not None
            hold = FenceInput(fleet=req.source, state="held", deadline_s=req.spec.policy.fence_deadline_s)
            await self._long(ApplicationActivities.set_write_fence, hold, 120)
        await self._reconcile(req)
        if moved:
            await self._open_writes_at_home(req)

    async def _refuse_rollback(self, req: MigrationInput, exc: BaseException) -> None:
        """A promoted RDS replica took writes: moving back would strand them in the new primary, so nothing is
        undone (docs/operations.md, "Rollback after an RDS promotion")."""
        why = root_cause(exc)
        detail = (
            f"{RollbackRefused.MESSAGE}: {why}; the promoted replica {req.spec.rds_instance} in "
            f"{req.time_slice.region} took writes, so traffic, fleets and data stay as they are (runbook: "
            "docs/operations.md, 'Rollback after an RDS promotion')"
        )
        await self._report(req, "rollback-refused", detail)
        raise ApplicationError(detail, type="RollbackRefused", non_retryable=True) from exc

    async def _switch(
        self, req: MigrationInput, shadows: FleetRef, saga: Saga, baseline: FleetSignals | None
    ) -> tuple[datetime, int]:
        """Moves the traffic in the policy's steps; each step short of 100% is watched before the next.

        Returns when the last weight change happened and the longest TTL a resolver may hold an answer from
        before it (the records' previous TTL may be longer than the policy's).
        """
        spec, policy = req.spec, req.spec.policy
        routing = RoutingInput(hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, to_fleet=shadows)
        before = await self._act(RoutingActivities.routing_state, routing)
        self._drain_ttl = max(before.ttl_s or 0, policy.record_ttl_s)
        fleets = (shadows,) if req.source is None else (shadows, req.source)
        restore = RestoreWeightsInput(
            entity_id=spec.entity_id,
            hosted_zone_id=spec.hosted_zone_id,
            dns_name=spec.dns_name,
            previous=before,
            fleets=fleets,
        )
        saga.add("restore routing", lambda: self._restore_routing(restore))
        listener = await self._listener_before(req, shadows, saga)
        old = req.source.fleet_id if req.source is not None else None
        last_switch = workflow.now()
        steps = cutover_steps(policy.cutover_strategy)
        for n, weight in enumerate(steps, 1):
            weights = step_weights(shadows.fleet_id, old, weight)
            await self._report(req, "cutover", f"step {n}/{len(steps)}: {weights}", shadows)
            ask = WeightsInput(
                hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, fleets=fleets, weights=weights,
                ttl_s=policy.record_ttl_s,
            )  # fmt: skip
            await self._long(RoutingActivities.set_weights, ask, 300)
            self._switched = True
            if listener is not None:
                before_lb, group = listener
                lb = ListenerWeightsInput(
                    entity_id=spec.entity_id,
                    listener_arn=before_lb.listener_arn,
                    weights=listener_weights(before_lb.weights, group, weight),
                )
                await self._act(RoutingActivities.set_listener_weights, lb)
            last_switch = workflow.now()
            if weight < 100:
                await self._watch(req, shadows, baseline, probes=1)
        return last_switch, max(before.ttl_s or 0, policy.record_ttl_s)

    async def _restore_routing(self, restore: RestoreWeightsInput) -> None:
        """Compensation: the captured weights back. If that fails for good the shadows may still carry traffic, so
        the later "terminate shadows" keeps them (a leak an operator sees, rather than an outage)."""
        try:
            await self._long(RoutingActivities.restore_weights, restore, 300)
            self._restored_at = workflow.now()
        except Exception:
            self._routing_unrestored = True
            raise

    async def _terminate_shadows(self, shadows: FleetRef) -> None:
        if self._routing_unrestored:
            raise ApplicationError(
                f"kept {shadows.fleet_id}: routing was not restored, it may still serve; restore the records, then "
                "release it", type="ShadowsKept", non_retryable=True,
            )  # fmt: skip
        await self._act(Ec2Activities.terminate_fleet, shadows)

    async def _listener_before(
        self, req: MigrationInput, shadows: FleetRef, saga: Saga
    ) -> tuple[ListenerState, str] | None:
        """Same-region moves also shift the entity's ELB listener; its weights are captured and restored."""
        arn = req.spec.listener_arn
        if arn is None or self._target_group is None:
            return None
        entity = req.spec.entity_id
        before = await self._act(RoutingActivities.listener_state, ListenerRef(entity_id=entity, listener_arn=arn))
        undo = ListenerWeightsInput(entity_id=entity, listener_arn=arn, weights=before.weights)
        saga.add("restore listener", lambda: self._act(RoutingActivities.set_listener_weights, undo))
        return before, self._target_group

    async def _watch(
        self, req: MigrationInput, fleet: FleetRef, baseline: FleetSignals | None, probes: int = WATCH_PROBES
    ) -> None:
        """Judges the new fleet against the old one's baseline; rolls back (by raising) when it degrades."""
        policy = req.spec.policy
        await self._report(req, "watching", f"{policy.watch_s * probes / WATCH_PROBES:.0f}s", fleet)
        interval = policy.watch_s / WATCH_PROBES
        reference = baseline or FleetSignals(fleet_id="none", source="probe")
        earlier: list[FleetSignals] = []
        bad = 0
        for _ in range(probes):
            current = await self._signals(req, fleet)
            verdict = judge(reference, current, policy.degradation, earlier)
            earlier.append(current)
            bad = bad + 1 if verdict.degraded else 0
            if bad >= min(UNHEALTHY_PROBES_TO_ROLL_BACK, probes):
                raise ApplicationError(
                    f"{MigrationFailed.MESSAGE}: new fleet degraded ({'; '.join(verdict.reasons)}); "
                    "traffic rolled back",
                    type="MigrationFailed", non_retryable=True,
                )  # fmt: skip
            await workflow.sleep(interval)

    async def _signals(self, req: MigrationInput, fleet: FleetRef) -> FleetSignals:
        """Direct probes: enough requests per instance for the verdict to judge rates at all."""
        per_instance = math.ceil(req.spec.policy.degradation.min_samples / max(fleet.size, 1))
        probe = ProbeInput(fleet=fleet, requests_per_instance=min(max(10, per_instance), 1000))
        return await self._long(MonitoringActivities.probe_fleet, probe, 120)

    async def _reconcile(self, req: MigrationInput) -> None:
        """Rollback of data: the source's last writes forward, then what the new side took replayed back (from the
        target stream's position at the sync check; from its start when no check got that far)."""
        forward = self._replication(req)
        ahead = await self._long(ReplicationActivities.catch_up, forward, 1800)
        self._checkpoint = ahead.checkpoint or self._checkpoint
        back = forward.model_copy(
            update={"source_region": forward.target_region, "target_region": forward.source_region,
                    "checkpoint": self._reverse}
        )  # fmt: skip
        status = await self._long(ReplicationActivities.catch_up, back, 1800)
        self._reverse = status.checkpoint or self._reverse
        if status.conflicts:
            workflow.logger.warning("rollback resolved %d conflicts: %s", status.conflicts, status.conflict_report)
        self._data = self._data.model_copy(
            update={
                "forward_applied": self._data.forward_applied + ahead.applied,
                "back_applied": self._data.back_applied + status.applied,
                "conflicts": self._data.conflicts + ahead.conflicts + status.conflicts,
            }
        )

    async def _retire(self, req: MigrationInput, old: FleetRef) -> None:
        routing = RoutingInput(hosted_zone_id=req.spec.hosted_zone_id, dns_name=req.spec.dns_name, to_fleet=old)
        await self._act(RoutingActivities.remove_fleet_record, routing)
        if req.spec.listener_arn is not None and self._listener_region(req) == old.region:
            await self._act(RoutingActivities.deregister_fleet_targets, TargetsInput(fleet=old))
        count = await self._act(Ec2Activities.terminate_fleet, old)
        await self._report(req, "retired", f"{count} instance(s) of {old.fleet_id} terminated in {old.region}")

    # ---- helpers -------------------------------------------------------------------------------------------

    def _replication(self, req: MigrationInput) -> ReplicationInput:
        source = req.source.region if req.source else req.spec.home_region
        return ReplicationInput(
            entity_id=req.spec.entity_id, tables=req.spec.dynamodb_tables, source_region=source,
            target_region=req.time_slice.region, checkpoint=self._checkpoint,
            max_lag_s=req.spec.policy.max_replication_lag_s, rds_instance=req.spec.rds_instance,
            queues=req.spec.sqs_queues,
        )  # fmt: skip

    @staticmethod
    def _max_price(req: MigrationInput) -> float:
        if req.max_price_usd is not None:  # the entity's bid from the forecast's confidence (policy.spot_bid)
            return req.max_price_usd
        on_demand = INSTANCE_TYPES[req.instance_type].price(req.time_slice.region)
        return round(on_demand * req.spec.policy.spot_max_price_ratio, 5)

    @staticmethod
    def _listener_region(req: MigrationInput) -> str | None:
        return arn_region(req.spec.listener_arn) if req.spec.listener_arn else None

    async def _act(self, activity: Callable[[Any, Any], R], arg: object) -> R:
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=self._step, retry_policy=RETRY, summary=self._summary(activity, arg)
        )

    async def _long(self, activity: Callable[[Any, Any], R], arg: object, timeout_s: float) -> R:
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=timedelta(seconds=timeout_s), heartbeat_timeout=self._heartbeat,
            retry_policy=RETRY, summary=self._summary(activity, arg),
        )  # fmt: skip

    def _summary(self, activity: Callable[..., object], arg: object) -> str:
        """The Web UI's line for a step: the migration's phase and what the step acts on (encrypted with the
        payloads when a codec is set, like every payload)."""
        target = getattr(arg, "fleet", None) or getattr(arg, "to_fleet", None) or arg
        what = [f"{getattr(target, k)}" for k in ("fleet_id", "region") if getattr(target, k, None)]
        size = getattr(arg, "quantity", None)
        if size:
            what.append(f"{size} x {getattr(arg, 'instance_type', '')}".strip())
        return " ".join([f"{self._progress.phase}: {activity_name(activity)}", *what])

    async def _report(
        self, req: MigrationInput, phase: str, detail: str, shadows: FleetRef | None = None,
        prepare_s: float | None = None, cost: CostEntry | None = None,
    ) -> None:  # fmt: skip
        """Keeps the progress query current and tells the parent entity (if any) by signal."""
        shadows = shadows or self._progress.shadows
        self._observe(req, phase, shadows, cost)
        self._progress = MigrationProgress(
            slice_key=req.time_slice.key, phase=phase, detail=detail, shadows=shadows, prepare_s=prepare_s, cost=cost
        )
        # Decided on what this run upserted (the workflow's own state), not on workflow.info(): the same commands
        # as before for every history, without depending on what the SDK hands a replaying worker at start.
        if self._phase_attr != phase:
            workflow.upsert_search_attributes([search.PHASE.value_set(phase)])
            self._phase_attr = phase
        parent = workflow.info().parent
        if parent is not None:
            handle = workflow.get_external_workflow_handle(parent.workflow_id)
            try:
                await handle.signal("migration_progress", self._progress)
            except Exception as exc:  # the parent may have ended; progress is advisory
                workflow.logger.warning("could not signal parent: %s", exc)

    def _observe(self, req: MigrationInput, phase: str, shadows: FleetRef | None, cost: CostEntry | None) -> None:
        """Product metrics on the worker's endpoint (shadowing/metrics.py); the SDK drops them on replay."""
        meter, region = workflow.metric_meter(), req.time_slice.region
        entity = metrics.entity_label(workflow.info().workflow_id)
        if phase == "cutover" and self._progress.phase != "cutover":
            self._cutover_began = workflow.now()
        elif phase == "watching" and self._cutover_began is not None:
            metrics.record_cutover(meter, region, (workflow.now() - self._cutover_began).total_seconds())
            self._cutover_began = None
        if shadows is not None and phase in ("ready", "resized"):
            metrics.record_shadows(meter, entity, shadows.region, shadows.size)
        if phase in ("done", "released", "rolled-back"):
            if shadows is not None:  # serving now, or gone
                metrics.record_shadows(meter, entity, shadows.region, 0)
            outcome = {"done": "migrated"}.get(phase, phase)
            metrics.record_migration_end(
                meter, outcome, region, cost.cost_usd if cost else 0.0, cost.spot_savings_usd if cost else 0.0
            )


async def refresh_record(spec: EntitySpec, fleet: FleetRef, run: RoutingStep) -> int | None:
    """Rewrites the fleet's weighted record with the addresses `fleet` names, at the weight it has now; returns the
    record's TTL, or None when the fleet has no record (nothing written). `run(activity, arg)` executes a step."""
    routing = RoutingInput(hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, to_fleet=fleet)
    state = await run(RoutingActivities.routing_state, routing)
    weight = state.weights.get(fleet.fleet_id)
    if weight is None:
        return None
    ttl = state.ttl_s or spec.policy.record_ttl_s
    ask = WeightsInput(
        hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, fleets=(fleet,), weights={fleet.fleet_id: weight},
        ttl_s=ttl,
    )  # fmt: skip
    await run(RoutingActivities.set_weights, ask)
    return ttl


def activity_name(activity: Callable[..., object]) -> str:
    """The name an activity method is registered under (its `@activity.defn(name=...)`)."""
    return str(getattr(activity, "__temporal_activity_definition").name)


def root_cause(exc: BaseException) -> str:
    """The message of the first ApplicationError in a Temporal failure chain (ActivityError -> ApplicationError).

    It stops there: an activity's clear error ("hosted zone Z1 does not exist") may carry the raw exception it was
    raised from as its own cause, and that one reads worse.
    """
    while not isinstance(exc, ApplicationError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__
