"""EntitySchedule: one per entity (id `entity/<entity_id>`), walking its allocation schedule.

Before each slice (at the policy's lead time) it forecasts, decides through `workflows.policy`, and starts a
`ShadowMigration` child when the slice needs shadows. The spec's endpoints are updates whose validators reject
bad input before it enters history: ProvisionShadowInstances, MigrateInstances, ReleaseShadowInstances.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from shadowing.errors import TimeSliceNotActive
    from shadowing.models import (
        DemandForecast,
        EntitySpec,
        EntityState,
        EntityStatus,
        Event,
        FleetInput,
        FleetRef,
        ForecastInput,
        HealthReport,
        MigrationInput,
        MigrationProgress,
        MigrationResult,
        ProvisionInput,
        ProvisionRequest,
        RegisterEntityInput,
        RoutingInput,
        RoutingState,
        ScheduledSlice,
        SliceRequest,
        SliceStatus,
    )
    from workflows import policy
    from workflows.migrate import RETRY, STEP, ShadowMigrationWorkflow, root_cause
    from workflows.predict import FORECAST

MAX_EVENTS = 200
SETTLED = ("done", "skipped", "failed", "released")


@workflow.defn(name="EntitySchedule")
class EntityScheduleWorkflow:
    def __init__(self) -> None:
        self._s: EntityState | None = None
        self._phase = "starting"
        self._children: dict[str, workflow.ChildWorkflowHandle] = {}
        self._progress: dict[str, MigrationProgress] = {}

    # ---- run -----------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, state: RegisterEntityInput | EntityState) -> EntityStatus:
        self._s = state if isinstance(state, EntityState) else _initial(state)
        if self._s.active_fleet is None:
            await self._bootstrap()
        for index, entry in enumerate(self._s.slices):
            if entry.state in SETTLED:
                continue
            await self._run_slice(index)
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._s)
        self._phase = "done"
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _bootstrap(self) -> None:
        """Gives a new entity its first fleet in its home region and routes its DNS name to it."""
        spec = self._spec
        self._phase = "bootstrapping"
        provision = ProvisionInput(
            entity_id=spec.entity_id, fleet_id=policy.fleet_id(spec.entity_id, "initial"), slice_key="initial",
            region=spec.home_region, instance_type=spec.instance_types[0], quantity=spec.initial_instances,
            role="active", source_image_id=spec.image_id, source_region=spec.home_region if spec.image_id else None,
            user_data=spec.user_data, container_image=spec.container_image,
        )  # fmt: skip
        fleet = await workflow.execute_activity("provision_fleet", provision, result_type=FleetRef, **STEP)
        await workflow.execute_activity(
            "warm_fleet", FleetInput(fleet=fleet, timeout_s=spec.policy.warmup_timeout_s), result_type=HealthReport,
            start_to_close_timeout=timedelta(seconds=spec.policy.warmup_timeout_s + 60), retry_policy=RETRY,
        )  # fmt: skip
        routing = RoutingInput(
            hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, to_fleet=fleet, ttl_s=spec.policy.record_ttl_s
        )
        await workflow.execute_activity("switch_traffic", routing, result_type=RoutingState, **STEP)
        self._update(active_fleet=fleet)
        self._event("fleet", f"initial fleet {fleet.size} x {fleet.instance_type} in {fleet.region}")

    async def _run_slice(self, index: int) -> None:
        slot = self._s.slices[index].time_slice
        lead = timedelta(seconds=self._spec.policy.lead_time_s)
        self._phase = f"waiting for {slot.key}"
        wake = policy.forecast_time(slot, lead, workflow.now())
        await workflow.sleep(max((wake - workflow.now()).total_seconds(), 0))
        if slot.key in self._children:  # an operator provisioned this slice by hand: follow that migration
            await self._finish_migration(index, self._children[slot.key])
            return
        if workflow.now() >= slot.end:
            self._set_slice(index, state="skipped", outcome="slice ended before it could be prepared")
            return
        self._phase = f"forecasting {slot.key}"
        self._set_slice(index, state="forecasting")
        try:
            forecast = await workflow.execute_activity(
                "forecast_demand", ForecastInput(spec=self._spec, time_slice=slot.as_time_slice()),
                result_type=DemandForecast, **FORECAST,
            )  # fmt: skip
        except Exception as exc:
            self._set_slice(index, state="failed", error=f"forecast: {root_cause(exc)}")
            self._event("error", f"forecast failed: {root_cause(exc)}", slot.key)
            return
        if slot.key in self._children:  # provisioned by hand while we were forecasting
            await self._finish_migration(index, self._children[slot.key])
            return
        decision = policy.decide(
            self._spec, slot, self._s.active_fleet, forecast, self._s.slices, workflow.now(),
            migration_gate=workflow.patched("migration-readiness-gate"),
        )  # fmt: skip
        self._set_slice(index, forecast=forecast, decision=decision)
        self._event("forecast", _describe_forecast(forecast), slot.key)
        self._event("decision", f"{decision.action}: {decision.reason}", slot.key)
        if decision.action != "shadow":
            self._set_slice(index, state="skipped" if decision.action == "skip" else "done", outcome=decision.action)
            return
        handle = await self._start_migration(slot, decision.instance_type, decision.quantity, "auto")
        await self._finish_migration(index, handle)

    async def _start_migration(
        self, slot: ScheduledSlice, itype: str, quantity: int, mode: str
    ) -> workflow.ChildWorkflowHandle:
        mid = f"migration/{self._spec.entity_id}/{slot.key}"
        req = MigrationInput(
            spec=self._spec, time_slice=slot, instance_type=itype, quantity=quantity,
            source=self._s.active_fleet, mode=mode,
        )  # fmt: skip
        handle = await workflow.start_child_workflow(
            ShadowMigrationWorkflow.run, req, id=mid,
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
        )  # fmt: skip
        self._children[slot.key] = handle
        index = self._index(slot)
        self._set_slice(index, state="preparing", migration_id=mid)
        self._event("migration", f"{mid} started ({mode}): {quantity} x {itype} in {slot.region}", slot.key)
        return handle

    async def _finish_migration(self, index: int, handle: workflow.ChildWorkflowHandle) -> MigrationResult | None:
        slot = self._s.slices[index].time_slice
        self._phase = f"migrating {slot.key}"
        try:
            result: MigrationResult = await handle
        except ChildWorkflowError as exc:
            if self._s.slices[index].state != "failed":
                self._set_slice(index, state="failed", error=root_cause(exc))
                self._event("error", f"migration failed, rolled back: {root_cause(exc)}", slot.key)
            return None
        if self._s.slices[index].state in SETTLED:
            return result
        if result.outcome == "migrated" and result.fleet is not None:
            self._update(active_fleet=result.fleet, migrations=self._s.migrations + 1)
            self._set_slice(index, state="done", outcome="migrated")
        else:
            self._set_slice(index, state="released", outcome="released")
        return result

    # ---- endpoints (updates) --------------------------------------------------------------------------------

    @workflow.update(name="ProvisionShadowInstances")
    async def provision_shadow_instances(self, req: ProvisionRequest) -> MigrationProgress:
        """Provisions and warms shadows for a slice by hand; they wait for MigrateInstances or release."""
        slot = self._s.slices[self._require_slice(req.time_slice)].time_slice
        await self._start_migration(slot, req.instance_type, req.quantity, "manual")
        await workflow.wait_condition(
            lambda: self._progress.get(slot.key, MigrationProgress(phase="")).phase in ("ready", "rolled-back")
        )
        progress = self._progress[slot.key]
        if progress.phase != "ready":
            raise ApplicationError(f"provisioning failed: {progress.detail}", type="MigrationFailed")
        return progress

    @provision_shadow_instances.validator
    def _validate_provision(self, req: ProvisionRequest) -> None:
        index = self._require_slice(req.time_slice)
        if req.instance_type not in self._spec.instance_types:
            allowed = ", ".join(self._spec.instance_types)
            raise ValueError(f"instance_type: {req.instance_type!r} is not allowed for this entity ({allowed})")
        if req.quantity > self._spec.policy.max_instances:
            raise ValueError(f"quantity: {req.quantity} exceeds the entity's max_instances")
        entry = self._s.slices[index]
        if entry.time_slice.key in self._children or entry.state in SETTLED:
            raise ValueError(f"time_slice: slice {entry.time_slice.key} already has a migration or has ended")
        if workflow.now() >= entry.time_slice.end:
            raise ValueError(f"time_slice: slice {entry.time_slice.key} has ended")

    @workflow.update(name="MigrateInstances")
    async def migrate_instances(self, req: SliceRequest) -> MigrationResult:
        """Cuts over to the slice's shadows now; errors: "Time slice is not active", "Data synchronization
        failed", "Migration failed" (after rollback)."""
        index = self._require_slice(req.time_slice)
        handle = self._children[self._s.slices[index].time_slice.key]
        await handle.signal(ShadowMigrationWorkflow.proceed)
        result = await self._finish_migration(index, handle)
        if result is None:
            cause = self._s.slices[index].error or "Migration failed"
            raise ApplicationError(cause, type=_error_type(cause), non_retryable=True)
        return result

    @migrate_instances.validator
    def _validate_migrate(self, req: SliceRequest) -> None:
        index = self._require_slice(req.time_slice)
        slot = self._s.slices[index].time_slice
        if not slot.contains(workflow.now()):
            raise ValueError(f"time_slice: {TimeSliceNotActive.MESSAGE} (now {workflow.now().isoformat()})")
        if slot.key not in self._children:
            raise ValueError(f"time_slice: no shadow instances are provisioned for slice {slot.key}")

    @workflow.update(name="ReleaseShadowInstances")
    async def release_shadow_instances(self, req: SliceRequest) -> MigrationResult:
        """Releases the slice's shadows (runs the migration's compensations) before any cutover."""
        index = self._require_slice(req.time_slice)
        handle = self._children[self._s.slices[index].time_slice.key]
        await handle.signal(ShadowMigrationWorkflow.release)
        result = await self._finish_migration(index, handle)
        if result is None:
            raise ApplicationError(self._s.slices[index].error or "release failed", type="MigrationFailed")
        return result

    @release_shadow_instances.validator
    def _validate_release(self, req: SliceRequest) -> None:
        index = self._require_slice(req.time_slice)
        key = self._s.slices[index].time_slice.key
        if key not in self._children:
            raise ValueError(f"time_slice: no shadow instances are provisioned for slice {key}")
        phase = self._progress.get(key, MigrationProgress(phase="")).phase
        if phase in ("cutover", "watching", "retired", "done"):
            raise ValueError(f"time_slice: slice {key} has already cut over ({phase}); nothing to release")

    # ---- signals and queries --------------------------------------------------------------------------------

    @workflow.signal(name="migration_progress")
    def migration_progress(self, progress: MigrationProgress) -> None:
        self._progress[progress.slice_key] = progress
        index = next((i for i, s in enumerate(self._s.slices) if s.time_slice.key == progress.slice_key), None)
        if index is not None and progress.phase in ("provisioning", "cutover"):
            self._set_slice(index, state="preparing" if progress.phase == "provisioning" else "migrating")
        self._event(progress.phase, progress.detail, progress.slice_key)

    @workflow.query(name="spec")
    def spec(self) -> EntitySpec:
        return self._spec

    @workflow.query(name="status")
    def status(self) -> EntityStatus:
        return EntityStatus(
            entity_id=self._spec.entity_id, phase=self._phase, active_fleet=self._s.active_fleet,
            slices=self._s.slices, events=self._s.events, migrations=self._s.migrations,
        )  # fmt: skip

    # ---- helpers -------------------------------------------------------------------------------------------

    @property
    def _spec(self) -> EntitySpec:
        return self._s.registration.spec

    def _require_slice(self, time_slice: object) -> int:
        for i, entry in enumerate(self._s.slices):
            if entry.time_slice.same_as(time_slice):  # type: ignore[arg-type]
                return i
        start, end = (getattr(time_slice, k).isoformat() for k in ("start", "end"))
        raise ValueError(f"time_slice: {start} - {end} is not a slice of this entity's schedule")

    def _index(self, slot: ScheduledSlice) -> int:
        return self._require_slice(slot)

    def _update(self, **changes: object) -> None:
        self._s = self._s.model_copy(update=changes)

    def _set_slice(self, index: int, **changes: object) -> None:
        slices = list(self._s.slices)
        slices[index] = slices[index].model_copy(update=changes)
        self._update(slices=tuple(slices))

    def _event(self, kind: str, message: str, slice_key: str | None = None) -> None:
        seq = (self._s.events[-1].seq + 1) if self._s.events else 1
        event = Event(seq=seq, at=workflow.now(), kind=kind, message=message, slice_key=slice_key)
        self._update(events=(*self._s.events, event)[-MAX_EVENTS:])


def _initial(reg: RegisterEntityInput) -> EntityState:
    return EntityState(registration=reg, slices=tuple(SliceStatus(time_slice=s) for s in reg.schedule.slices))


def _describe_forecast(fc: DemandForecast) -> str:
    cpu = fc.metrics["cpu_mhz"]
    q = f"{fc.sizing_quantile:g}"
    peak = max(cpu.hours, key=lambda h: h.quantiles["0.5"]).quantiles
    return (
        f"cpu p50 {peak['0.5']:.0f} MHz [p10 {peak['0.1']:.0f}, p90 {peak['0.9']:.0f}] p{float(q) * 100:g} "
        f"{peak[q]:.0f} ({cpu.model}); readiness {fc.readiness:.2f}"
    )


def _error_type(message: str) -> str:
    return "DataSyncFailed" if message.startswith("Data synchronization failed") else "MigrationFailed"
