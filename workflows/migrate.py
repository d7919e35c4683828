"""ShadowMigration: the saga that moves one entity onto a shadow fleet for one time slice.

provision -> warm -> replicate -> [wait for the slice start, or MigrateInstances] -> final sync check
-> cutover -> post-cutover watch -> retire the old fleet. Each step registers its compensation before it runs;
on failure, cancellation or release they run in reverse, and the workflow re-raises so Temporal shows it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from shadowing.errors import NON_RETRYABLE, DataSyncFailed, MigrationFailed, TimeSliceNotActive
    from shadowing.models import (
        FleetInput,
        FleetRef,
        HealthReport,
        MigrationInput,
        MigrationProgress,
        MigrationResult,
        ProvisionInput,
        ReplicationInput,
        ReplicationStatus,
        RoutingInput,
        RoutingState,
    )
    from workflows.policy import fleet_id
    from workflows.saga import Saga

RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=list(NON_RETRYABLE),
)
STEP = {"start_to_close_timeout": timedelta(minutes=2), "retry_policy": RETRY}
WATCH_PROBES = 3
UNHEALTHY_PROBES_TO_ROLL_BACK = 2


@workflow.defn(name="ShadowMigration")
class ShadowMigrationWorkflow:
    def __init__(self) -> None:
        self._progress = MigrationProgress(phase="starting")
        self._proceed = False
        self._release = False

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

    @workflow.run
    async def run(self, req: MigrationInput) -> MigrationResult:
        saga = Saga()
        try:
            return await self._migrate(req, saga)
        except (Exception, asyncio.CancelledError) as exc:
            await self._report(req, "compensating", root_cause(exc))
            ran = await saga.compensate()
            await self._report(req, "rolled-back", ", ".join(ran))
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
        saga.add("terminate shadows", lambda: self._act("terminate_fleet", shadows, int))
        shadows = await self._prepare(req, shadows, saga)
        if not await self._wait_for_go(req):
            ran = await saga.compensate()
            await self._report(req, "released", ", ".join(ran))
            return MigrationResult(outcome="released", compensations_run=tuple(ran))
        return await self._cut_over(req, shadows, saga)

    async def _prepare(self, req: MigrationInput, shadows: FleetRef, saga: Saga) -> FleetRef:
        slot, spec = req.time_slice, req.spec
        await self._report(req, "provisioning", f"{req.quantity} x {req.instance_type} in {slot.region}")
        provision = ProvisionInput(
            entity_id=spec.entity_id, fleet_id=shadows.fleet_id, slice_key=slot.key,
            region=slot.region, instance_type=req.instance_type, quantity=req.quantity,
        )  # fmt: skip
        shadows = await self._act("provision_fleet", provision, FleetRef)
        await self._report(req, "warming", ", ".join(shadows.instance_ids), shadows)
        warm_timeout = spec.policy.warmup_timeout_s
        await workflow.execute_activity(
            "warm_fleet", FleetInput(fleet=shadows, timeout_s=warm_timeout), result_type=HealthReport,
            start_to_close_timeout=timedelta(seconds=warm_timeout + 60), heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
        )  # fmt: skip
        repl = self._replication(req)
        saga.add("drop replicas", lambda: self._act("drop_replicas", repl, int))
        status = await self._act("replicate_tables", repl, ReplicationStatus)
        await self._report(req, "ready", f"warm; {status.items} items replicated", shadows)
        return shadows

    async def _wait_for_go(self, req: MigrationInput) -> bool:
        """True to cut over, False to release. Auto mode goes at the slice start; manual waits for a call."""
        slot = req.time_slice
        until = slot.start if req.mode == "auto" else slot.end
        timeout = max((until - workflow.now()).total_seconds(), 0.0)
        try:
            await workflow.wait_condition(lambda: self._proceed or self._release, timeout=timeout)
        except TimeoutError:
            return req.mode == "auto"
        return not self._release

    async def _cut_over(self, req: MigrationInput, shadows: FleetRef, saga: Saga) -> MigrationResult:
        slot, spec = req.time_slice, req.spec
        if not slot.contains(workflow.now()):
            raise ApplicationError(TimeSliceNotActive.MESSAGE, type="TimeSliceNotActive", non_retryable=True)
        sync = await self._act("check_sync", self._replication(req), ReplicationStatus)
        if not sync.in_sync:
            raise ApplicationError(
                f"{DataSyncFailed.MESSAGE}: {sync.detail}", type="DataSyncFailed", non_retryable=True
            )
        routing = RoutingInput(
            hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, to_fleet=shadows, from_fleet=req.source
        )
        saga.add("restore routing", lambda: self._act("restore_traffic", routing, RoutingState))
        await self._report(req, "cutover", f"{spec.dns_name} -> {shadows.fleet_id}", shadows)
        await self._act("switch_traffic", routing, RoutingState)
        cutover_at = workflow.now()
        active = shadows.model_copy(update={"role": "active"})
        await self._act("mark_fleet_role", active, FleetRef)
        await self._watch(req, active)
        saga.commit()  # past the watch the new fleet is trusted: retiring the old one is not undone
        if req.source is not None:
            await self._retire(req, req.source)
        await self._report(req, "done", f"serving from {active.region}", active)
        return MigrationResult(outcome="migrated", fleet=active, retired=req.source, cutover_at=cutover_at)

    async def _watch(self, req: MigrationInput, fleet: FleetRef) -> None:
        """Probes the new fleet through the watch window; rolls back (by raising) when it degrades."""
        await self._report(req, "watching", f"{req.spec.policy.watch_s:.0f}s", fleet)
        interval = req.spec.policy.watch_s / WATCH_PROBES
        bad = 0
        for _ in range(WATCH_PROBES):
            report = await self._act("check_fleet_health", FleetInput(fleet=fleet), HealthReport)
            bad = 0 if report.healthy else bad + 1
            if bad >= UNHEALTHY_PROBES_TO_ROLL_BACK:
                raise ApplicationError(
                    f"{MigrationFailed.MESSAGE}: new fleet degraded ({report.detail}); traffic rolled back",
                    type="MigrationFailed", non_retryable=True,
                )  # fmt: skip
            await workflow.sleep(interval)

    async def _retire(self, req: MigrationInput, old: FleetRef) -> None:
        routing = RoutingInput(hosted_zone_id=req.spec.hosted_zone_id, dns_name=req.spec.dns_name, to_fleet=old)
        await self._act("remove_fleet_record", routing, RoutingState)
        count = await self._act("terminate_fleet", old, int)
        await self._report(req, "retired", f"{count} instance(s) of {old.fleet_id} terminated in {old.region}")

    def _replication(self, req: MigrationInput) -> ReplicationInput:
        source = req.source.region if req.source else req.spec.home_region
        return ReplicationInput(
            entity_id=req.spec.entity_id, tables=req.spec.dynamodb_tables,
            source_region=source, target_region=req.time_slice.region,
        )  # fmt: skip

    async def _act(self, name: str, arg: object, result_type: type) -> object:
        return await workflow.execute_activity(name, arg, result_type=result_type, **STEP)  # type: ignore[arg-type]

    async def _report(self, req: MigrationInput, phase: str, detail: str, shadows: FleetRef | None = None) -> None:
        """Keeps the progress query current and tells the parent entity (if any) by signal."""
        shadows = shadows or self._progress.shadows
        self._progress = MigrationProgress(slice_key=req.time_slice.key, phase=phase, detail=detail, shadows=shadows)
        parent = workflow.info().parent
        if parent is not None:
            handle = workflow.get_external_workflow_handle(parent.workflow_id)
            try:
                await handle.signal("migration_progress", self._progress)
            except Exception as exc:  # the parent may have ended; progress is advisory
                workflow.logger.warning("could not signal parent: %s", exc)


def root_cause(exc: BaseException) -> str:
    """The innermost message of a Temporal failure chain (ActivityError -> ApplicationError -> ...)."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__
