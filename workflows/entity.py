"""EntitySchedule: one per entity (id `entity/<entity_id>`), walking its allocation schedule.

Before each slice (at the policy's lead time) it forecasts, decides through `workflows.policy`, and starts a
`ShadowMigration` child when the slice needs shadows. The spec's endpoints are updates whose validators reject
bad input before it enters history: ProvisionShadowInstances, MigrateInstances, ReleaseShadowInstances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.coordination import CoordinationActivities
    from activities.ec2 import AdoptInput, Ec2Activities, ProvisionInput, ResizeInput
    from activities.forecast import ForecastActivities, ForecastInput
    from activities.preflight import PreflightActivities, PreflightInput
    from activities.routing import RoutingActivities, RoutingInput, RoutingState
    from activities.warmup import WarmupActivities
    from shadowing import prices, search
    from shadowing.errors import TimeSliceNotActive
    from shadowing.models import (
        MAX_SLICES,
        SETTLED_STATES,
        AllocationSchedule,
        CostEntry,
        CostLedger,
        Decision,
        DemandForecast,
        EntityPlan,
        EntitySpec,
        EntityStatus,
        Event,
        FleetRef,
        LeaseGrant,
        LeaseRelease,
        LeaseRequest,
        MigrationInput,
        MigrationProgress,
        MigrationResult,
        PauseRequest,
        PlanEntry,
        ProvisionRequest,
        RegisterEntityInput,
        ScheduledSlice,
        SliceAction,
        SliceRequest,
        SliceStatus,
        TimeSlice,
    )
    from workflows import policy
    from workflows.migrate import RETRY, STEP, ShadowMigrationWorkflow, refresh_record, root_cause
    from workflows.predict import FORECAST
    from workflows.preflight import PREFLIGHT
    from workflows.state import EntityState
    from workflows.waiting import wait_until

LEASE = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": RETRY}

#: Patch (docs/versioning.md): a same-region peak the active type can carry grows the fleet in place ("grow")
#: instead of migrating to a fleet sized for it. Runs started before it keep deciding "shadow" there.
SCALE_OUT_PATCH = "scale-out-in-place"
MAX_EVENTS = 200
SETTLED = SETTLED_STATES
#: Settled slices older than this many keep their decision but drop their forecast (the state stays small).
KEEP_FORECASTS = 48
#: Settled slices the state keeps (newest first): older ones are dropped, so the state stays bounded.
KEEP_SETTLED = 100
#: Spec fields that say where the entity serves and keeps its data: fixed while a fleet serves (a change would move
#: DNS or data under a running fleet and strand the old record: issue "safe on a shared account", item 4).
PINNED_FIELDS = ("dns_name", "hosted_zone_id", "listener_arn", "dynamodb_tables", "rds_instance", "sqs_queues")
MEASURED = 10  # newest preparation durations kept for the lead time
SHOWN_SLICES = 4  # slices an unknown-slice refusal lists


@workflow.defn(name="EntitySchedule")
class EntityScheduleWorkflow:
    def __init__(self) -> None:
        self._s: EntityState | None = None
        self._phase = "starting"
        self._children: dict[str, workflow.ChildWorkflowHandle] = {}
        self._progress: dict[str, MigrationProgress] = {}
        self._wake = False  # a handler changed the schedule or the pause: the walk re-plans
        self._grants: dict[str, LeaseGrant] = {}
        self._costed: set[str] = set()  # slices whose cost entered the ledger (once each)
        self._prepared: set[str] = set()  # slices whose preparation time was measured (once each)
        self._launched: set[str] = set()  # slice keys whose migration this run started (before the start returns)
        self._asked: dict[str, str] = {}  # slice key -> nonce of this run's pending lease request
        # One owner per slice's migration (issue item 7): "hand" (ProvisionShadowInstances) or "walk" (its
        # decision), claimed before the claimer's first await. The validator refuses a second claim; the walk
        # follows a hand's migration instead of starting its own.
        self._owner: dict[str, str] = {}
        # The walk and MigrateInstances / ReleaseShadowInstances may all wait for a slice's child: whoever holds the
        # slice's lock first awaits it and records the outcome (None: failed) once; the others read the record.
        self._settling: dict[str, asyncio.Lock] = {}
        self._outcomes: dict[str, MigrationResult | None] = {}
        self._go: dict[str, str] = {}  # slice key -> the first go its child was sent: "proceed" or "release"
        self._ignored = 0  # signals that answered nothing this run asked for (forged or stale)
        self._sa: dict[str, object] = {}

    # ---- run -----------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, state: RegisterEntityInput | EntityState) -> EntityStatus:
        self._s = state if isinstance(state, EntityState) else _initial(state)
        self._set_phase("starting")
        if isinstance(state, RegisterEntityInput):
            await self._preflight()
        if self._s.active_fleet is None and not self._forecast_only:
            await self._bootstrap()
        elif self._forecast_only and self._s.planned_fleet is None:
            spec = self._spec
            self._update(planned_fleet=_planned(spec.entity_id, spec.home_region, spec.instance_types[0],
                                                spec.initial_instances))  # fmt: skip
        while (index := self._next_pending()) is not None:
            self._wake = False
            await self._run_slice(index)
            self._trim()
            info = workflow.info()
            if (
                info.is_continue_as_new_suggested()
                or info.get_current_history_length() > self._s.registration.history_limit
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._migrating():  # else the walk follows that child first: a new run would cancel it
                    self._prune()
                    workflow.continue_as_new(self._s.model_copy(update={"runs": self._s.runs + 1}))
        self._set_phase("done")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    def _next_pending(self) -> int | None:
        return next((i for i, e in enumerate(self._s.slices) if e.state not in SETTLED), None)

    def _migrating(self) -> bool:
        """A child of this run has no recorded outcome (the parent close policy cancels it with this run)."""
        return any(key not in self._outcomes for key in self._children)

    @property
    def _forecast_only(self) -> bool:
        return self._spec.policy.mode == "forecast-only"

    def _lead_s(self) -> float:
        p = self._spec.policy
        return policy.lead_time_s(p.lead_time_s, self._s.prepare_durations, p.lead_time_margin)

    def _prepare_s(self) -> float:
        return policy.expected_prepare_s(self._spec.policy.prepare_s, self._s.prepare_durations)

    async def _preflight(self) -> None:
        """What the spec names is checked against AWS before anything is launched (activities/preflight.py); a
        problem fails the entity visibly (phase "failed", an error event) with the activity's `InvalidRequest`."""
        self._set_phase("checking")
        try:
            await workflow.execute_activity_method(
                PreflightActivities.check_entity, PreflightInput(spec=self._spec), **PREFLIGHT
            )
        except ActivityError as exc:
            cause = exc.cause if isinstance(exc.cause, ApplicationError) else None
            self._fail(f"pre-flight: {root_cause(exc)}")
            raise ApplicationError(
                root_cause(exc), type=(cause.type if cause else None) or "InvalidRequest", non_retryable=True
            ) from exc

    async def _bootstrap(self) -> None:
        """Gives a new entity its first fleet in its home region and routes its DNS name to it. A failure at any
        step (provision, warm-up, routing) removes what it routed and terminates what it launched; the entity then
        fails visibly (phase "failed", an error event) with a `BootstrapFailed` naming the step and the cause. With
        `spec.adopt` the first fleet is the instances already serving (adopt_fleet tags them) and nothing is
        launched; a failure then untags them and leaves them running."""
        spec = self._spec
        self._set_phase("bootstrapping")
        provision = ProvisionInput(
            entity_id=spec.entity_id, fleet_id=policy.fleet_id(spec.entity_id, "initial"), slice_key="initial",
            region=spec.home_region, instance_type=spec.instance_types[0], quantity=spec.initial_instances,
            role="active", **policy.launch_image(spec),
        )  # fmt: skip
        # Until provision_fleet returns, its instances are found by the fleet's tags (terminate_fleet reads them).
        fleet = FleetRef(fleet_id=provision.fleet_id, entity_id=spec.entity_id, region=provision.region,
                         instance_type=provision.instance_type, role="active")  # fmt: skip
        routing = RoutingInput(
            hosted_zone_id=spec.hosted_zone_id, dns_name=spec.dns_name, to_fleet=fleet, ttl_s=spec.policy.record_ttl_s
        )
        step = "provision"
        adopted = spec.adopt is not None
        try:
            if spec.adopt is not None:  # instances that already serve: tagged as the fleet, never launched
                adopt = AdoptInput(
                    entity_id=spec.entity_id, fleet_id=fleet.fleet_id, region=spec.home_region,
                    instance_types=spec.instance_types, adopt=spec.adopt, max_instances=spec.policy.max_instances,
                )  # fmt: skip
                fleet = await workflow.execute_activity_method(Ec2Activities.adopt_fleet, adopt, **STEP)
            else:
                fleet = await workflow.execute_activity_method(Ec2Activities.provision_fleet, provision, **STEP)
            step = "warm"
            await self._warm_initial(fleet)
            step = "routing"
            routing = routing.model_copy(update={"to_fleet": fleet})
            await workflow.execute_activity_method(RoutingActivities.switch_traffic, routing, **STEP)
        except BaseException as exc:  # nothing serves yet: what was routed and launched goes, the entity fails
            undone = await self._undo_bootstrap(fleet, routing if step == "routing" else None, adopted)
            if isinstance(exc, asyncio.CancelledError):
                raise
            what = {"provision": "could not be adopted" if adopted else "could not be provisioned",
                    "warm": "never served", "routing": "could not be routed to"}[step]  # fmt: skip
            message = f"initial fleet {fleet.fleet_id} {what} ({root_cause(exc)}); {undone}"
            self._fail(message)
            raise ApplicationError(message, type="BootstrapFailed", non_retryable=True) from exc
        self._update(active_fleet=fleet)
        how = "adopted" if adopted else "initial fleet"
        self._event("fleet", f"{how} {fleet.size} x {fleet.instance_type} in {fleet.region}")
        self._set_phase("bootstrapped")

    async def _undo_bootstrap(self, fleet: FleetRef, routing: RoutingInput | None, adopted: bool = False) -> str:
        """Removes the fleet's record (when routing was attempted) and terminates the fleet; says what was done.
        A record that cannot be removed (e.g. its zone does not exist) does not stop the termination. An adopted
        fleet served before the entity was registered: it loses only the tags adoption added, never its instances."""
        kept = ""
        if routing is not None:
            try:
                await workflow.execute_activity_method(RoutingActivities.remove_fleet_record, routing, **STEP)
            except ActivityError as exc:
                kept = f" (its DNS record was not removed: {root_cause(exc)})"
        if adopted:
            await workflow.execute_activity_method(Ec2Activities.release_adopted, fleet, **STEP)
            return f"the adopted instances were left running and their shadowing tags removed{kept}"
        await workflow.execute_activity_method(Ec2Activities.terminate_fleet, fleet, **STEP)
        return f"it was terminated{kept}"

    def _fail(self, message: str) -> None:
        """The entity failed before serving: phase and search attribute "failed", the reason as an error event."""
        self._event("error", message)
        self._set_phase("failed")

    async def _warm_initial(self, fleet: FleetRef, what: str = "initial fleet") -> None:
        """Warms the first fleet (or a fleet grown in place) at the policy's threshold. One that answers but does
        not settle under it serves cold (as a fresh deployment would); one that never answers fails the step."""
        p = self._spec.policy
        try:
            await workflow.execute_activity_method(
                WarmupActivities.warm_fleet, policy.warmup(fleet, p), retry_policy=RETRY,
                start_to_close_timeout=timedelta(seconds=p.warmup_timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=p.heartbeat_timeout_s),
            )  # fmt: skip
        except ActivityError as exc:
            if not isinstance(exc.cause, ApplicationError) or exc.cause.type != "FleetNotWarm":
                raise
            self._event("fleet", f"{what} serving cold: {exc.cause.message}")

    async def _run_slice(self, index: int) -> None:
        """Prepares one slice. Every await may let a handler in: the slice is found again by its key afterwards
        (`update_schedule` may insert slices before it), and its migration has one owner (`_owner`)."""
        slot = self._s.slices[index].time_slice
        key = slot.key
        lead = timedelta(seconds=self._lead_s())
        self._set_phase(f"waiting for {key}", slot)
        wake = policy.forecast_time(slot, lead, workflow.now())
        if not await wait_until(wake, lambda: self._wake):
            return  # the schedule changed or the slice was aborted: the walk picks the next pending slice
        if self._by_hand(key):  # an operator provisions this slice by hand: follow that migration, paused or not
            await self._follow(key)
            return
        if self._s.paused:
            self._set_phase(f"paused before {key}", slot)
            if await wait_until(slot.end, lambda: not self._s.paused or self._wake or self._by_hand(key)):
                if self._entry(key).state not in SETTLED:
                    self._set(key, state="skipped", outcome="paused through the slice")
                return
            return  # resumed, provisioned by hand or the schedule changed: the walk starts this slice again
        if workflow.now() >= slot.end:
            self._set(key, state="skipped", outcome="slice ended before it could be prepared")
            return
        self._set_phase(f"forecasting {key}", slot)
        self._set(key, state="forecasting")
        try:
            forecast = await workflow.execute_activity_method(
                ForecastActivities.forecast_demand, ForecastInput(spec=self._spec, time_slice=slot.as_time_slice()),
                **FORECAST,
            )  # fmt: skip
        except Exception as exc:
            if self._by_hand(key):  # provisioned by hand meanwhile: that migration needs no forecast
                await self._follow(key)
                return
            self._set(key, state="failed", error=f"forecast: {root_cause(exc)}")
            self._event("error", f"forecast failed: {root_cause(exc)}", key)
            return
        if self._by_hand(key):  # provisioned by hand while we were forecasting
            await self._follow(key)
            return
        if self._entry(key).state in SETTLED:  # aborted while forecasting
            return
        if self._s.paused:  # paused while forecasting: nothing is decided or prepared (the walk waits, re-forecasts)
            return
        active = self._s.planned_fleet if self._forecast_only else self._s.active_fleet
        decision = policy.decide(
            self._spec, slot, active, forecast, self._s.slices, workflow.now(), prepare_s=self._prepare_s()
        )
        if decision.action == "grow" and not workflow.patched(SCALE_OUT_PATCH):
            # a run started before scale-out in place migrated to a fleet sized for the peak instead
            spec = self._spec.model_copy(update={"policy": self._spec.policy.model_copy(update={"scale_out": False})})
            decision = policy.decide(
                spec, slot, active, forecast, self._s.slices, workflow.now(), prepare_s=self._prepare_s()
            )
        self._set(key, forecast=forecast, decision=decision)
        self._event("forecast", _describe_forecast(forecast), key)
        self._event("decision", f"{decision.action}: {decision.reason}", key)
        if decision.action in ("shrink", "shadow", "grow"):
            self._owner[key] = "walk"  # from here ProvisionShadowInstances for this slice is refused
        if decision.action == "shrink":
            await self._scale_in(key, decision)
            return
        if decision.action == "grow":
            await self._scale_out(key, decision)
            return
        if decision.action != "shadow":
            self._set(key, state="skipped" if decision.action == "skip" else "done", outcome=decision.action)
            return
        if self._forecast_only:
            self._plan_only(key, decision)
            return
        if not await self._approved(key):
            return
        if not await self._lease(key, decision.quantity):
            return
        try:
            await self._start_migration(slot, decision.instance_type, decision.quantity, "auto", forecast)
            await self._finish_migration(key)
        finally:
            await self._release_lease(key)

    async def _follow(self, key: str) -> None:
        """Settles the migration a ProvisionShadowInstances started (once it has started). If that provision failed
        first, the slice has settled (no capacity, aborted) or the walk takes it up again."""
        started = lambda: key in self._children or not self._by_hand(key)  # noqa: E731
        if not started():
            await workflow.wait_condition(started)
        if key in self._children:
            await self._finish_migration(key)

    async def _scale_in(self, key: str, decision: Decision) -> None:
        """Shrinks the active fleet at the slice start, without sending a client to a terminated instance: the
        record first names only the instances kept, the surplus is terminated once cached answers expired (TTL)."""
        slot = self._entry(key).time_slice
        n = decision.quantity
        if self._forecast_only:
            self._plan_resize(key, slot, n, f"would shrink to {n}")
            return
        active = self._s.active_fleet
        if active is None or n >= active.size or len(active.addresses) != active.size or self._spec.listener_arn:
            why = "the fleet behind an ELB listener keeps its size" if self._spec.listener_arn else "nothing to shrink"
            self._set(key, state="done", outcome=f"stay ({why})")
            return
        self._set(key, state="preparing")
        if not await wait_until(slot.start, lambda: self._entry(key).state in SETTLED):
            return  # aborted while waiting
        self._set_phase(f"scaling in for {key}", slot)
        kept = active.model_copy(update={
            "instance_ids": active.instance_ids[:n], "addresses": active.addresses[:n],
            "spot_instance_ids": tuple(i for i in active.spot_instance_ids if i in active.instance_ids[:n]),
            "availability_zones": active.availability_zones[:n],
        })  # fmt: skip
        try:
            ttl = await refresh_record(self._spec, kept, self._routing_step)
            if ttl is not None:
                await workflow.sleep(ttl)  # answers cached before the rewrite still name the surplus
            shrunk = await workflow.execute_activity_method(
                Ec2Activities.shrink_fleet, ResizeInput(fleet=active, quantity=n, keep=kept.instance_ids), **STEP
            )
        except ActivityError as exc:
            self._set(key, state="failed", error=f"scale-in: {root_cause(exc)}")
            self._event("error", f"scale-in failed: {root_cause(exc)}", key)
            return
        self._update(active_fleet=shrunk)
        self._set(key, state="done", outcome=f"shrunk {active.size} -> {shrunk.size}")
        self._event("scale-in", f"{active.fleet_id}: {active.size} -> {shrunk.size} x {active.instance_type}", key)

    def _plan_resize(self, key: str, slot: ScheduledSlice, n: int, outcome: str) -> None:
        """Forecast-only: the planned fleet keeps its type and takes the new count; nothing is provisioned."""
        planned = self._s.planned_fleet
        if planned is not None:
            self._update(planned_fleet=_planned(self._spec.entity_id, slot.region, planned.instance_type, n))
        self._set(key, state="planned", outcome=outcome)

    async def _scale_out(self, key: str, decision: Decision) -> None:
        """Grows the active fleet in place for a predicted peak: instances of its own type join the same fleet,
        are warmed ahead, and the record names them from the slice start. If anything fails, the instances added
        are terminated (never in the record) and the fleet serves as it was; the slice is marked failed."""
        slot = self._entry(key).time_slice
        n = decision.quantity
        if self._forecast_only:
            self._plan_resize(key, slot, n, f"would grow to {n}")
            return
        active = self._s.active_fleet
        if active is None or n <= active.size or len(active.addresses) != active.size:
            self._set(key, state="done", outcome="stay (nothing to grow)")
            return
        if not await self._lease(key, n - active.size):
            return
        try:
            await self._grow(key, slot, active, n)
        finally:
            await self._release_lease(key)

    async def _grow(self, key: str, slot: ScheduledSlice, active: FleetRef, n: int) -> None:
        self._set(key, state="preparing")
        self._set_phase(f"scaling out for {key}", slot)
        grow = ProvisionInput(
            entity_id=active.entity_id, fleet_id=active.fleet_id, slice_key=slot.key, region=active.region,
            instance_type=active.instance_type, quantity=n, role="active", **policy.launch_image(self._spec),
        )  # fmt: skip
        p = self._spec.policy
        routed = False  # whether the record may already name the added instances
        try:
            grown = await workflow.execute_activity_method(
                Ec2Activities.provision_fleet, grow, start_to_close_timeout=timedelta(seconds=900),
                heartbeat_timeout=timedelta(seconds=p.heartbeat_timeout_s), retry_policy=RETRY,
            )  # fmt: skip
            await self._warm_initial(grown, f"{n - active.size} instances added to {active.fleet_id}")
            if not await wait_until(slot.start, lambda: self._entry(key).state in SETTLED):
                raise ApplicationError("aborted before the slice start", type="Aborted", non_retryable=True)
            routed = True
            await refresh_record(self._spec, grown, self._routing_step)
        except (ActivityError, ApplicationError) as exc:
            back = ResizeInput(fleet=active, quantity=active.size, keep=active.instance_ids)
            try:
                if routed:
                    await refresh_record(self._spec, active, self._routing_step)
                await workflow.execute_activity_method(Ec2Activities.shrink_fleet, back, **STEP)
            except ActivityError as undo:
                self._event("error", f"scale-out compensation failed: {root_cause(undo)}", key)
            if self._entry(key).state not in SETTLED:
                self._set(key, state="failed", error=f"scale-out: {root_cause(exc)}")
            self._event("error", f"scale-out failed, the instances added were terminated: {root_cause(exc)}", key)
            return
        self._update(active_fleet=grown)
        self._set(key, state="done", outcome=f"grown {active.size} -> {grown.size}")
        self._event("scale-out", f"{active.fleet_id}: {active.size} -> {grown.size} x {active.instance_type}", key)

    async def _routing_step(self, activity: Callable[[Any, Any], RoutingState], arg: object) -> RoutingState:
        return await workflow.execute_activity_method(activity, arg, **STEP)

    def _plan_only(self, key: str, decision: Decision) -> None:
        """Forecast-only: record what would have been done and plan the next slices from there."""
        slot = self._entry(key).time_slice
        itype, n = decision.instance_type, decision.quantity
        self._update(planned_fleet=_planned(self._spec.entity_id, slot.region, itype, n))
        hours = (slot.end - slot.start).total_seconds() / 3600
        planned = CostEntry(
            slice_key=slot.key, outcome="planned", region=slot.region, instance_type=itype, instances=n,
            cost_usd=round(n * hours * prices.on_demand(itype, slot.region), 4),
        )  # fmt: skip
        self._update(ledger=self._s.ledger.add(planned))
        self._set(key, state="planned", outcome=f"would shadow {n} x {itype} in {slot.region}")
        self._event("plan", f"forecast-only: would shadow {n} x {itype} in {slot.region}", slot.key)

    async def _approved(self, key: str) -> bool:
        """The approval gate: wait for `approve` until the policy's deadline (or the slice's end); else skip."""
        slot = self._entry(key).time_slice
        if not self._spec.policy.approval_required or slot.key in self._s.approved:
            return True
        self._set(key, state="awaiting-approval")
        self._set_phase(f"awaiting approval of {slot.key}", slot)
        self._event("approval", f"waiting up to {self._spec.policy.approval_timeout_s:.0f}s for approve", slot.key)
        deadline = min(workflow.now() + timedelta(seconds=self._spec.policy.approval_timeout_s), slot.end)
        decided = lambda: slot.key in self._s.approved or slot.key in self._s.aborted  # noqa: E731
        if await wait_until(deadline, decided) and not decided():
            self._set(key, state="skipped", outcome="approval timed out")
            self._event("approval", "not approved in time: slice skipped, nothing provisioned", slot.key)
            return False
        return slot.key in self._s.approved and self._entry(key).state not in SETTLED

    async def _lease(self, key: str, quantity: int) -> bool:
        """Asks the FleetCoordinator for room (concurrent migrations, region quota) and waits for the grant. Only
        the slice's owner asks: a second request would replace the nonce the grant must echo."""
        slot = self._entry(key).time_slice
        self._set(key, state="waiting-for-capacity")
        nonce = str(workflow.uuid4())
        self._asked[slot.key] = nonce
        req = LeaseRequest(
            holder=workflow.info().workflow_id, slice_key=slot.key, region=slot.region, instances=quantity,
            expires_at=slot.end, nonce=nonce,
        )  # fmt: skip
        await workflow.execute_activity_method(CoordinationActivities.request_lease, req, **LEASE)
        if await wait_until(slot.end, lambda: slot.key in self._grants) and slot.key not in self._grants:
            self._set(key, state="skipped", outcome="no migration capacity before the slice ended")
            return False
        grant = self._grants[slot.key]
        if not grant.granted:
            self._grants.pop(slot.key)
            self._set(key, state="skipped", outcome=f"capacity denied: {grant.reason}")
            self._event("capacity", grant.reason, slot.key)
            return False
        if self._entry(key).state in SETTLED:  # aborted while waiting
            await self._release_lease(slot.key)
            return False
        return True

    async def _release_lease(self, key: str) -> None:
        grant = self._grants.pop(key, None)
        if grant is None or not grant.granted:
            return
        release = LeaseRelease(holder=workflow.info().workflow_id, slice_key=key)
        try:
            await workflow.get_external_workflow_handle(grant.coordinator_id).signal("release", release)
        except Exception as exc:  # the coordinator expires the lease at the slice end anyway
            workflow.logger.warning("could not release lease %s: %s", key, exc)

    async def _start_migration(
        self, slot: ScheduledSlice, itype: str, quantity: int, mode: str, forecast: DemandForecast | None = None
    ) -> workflow.ChildWorkflowHandle:
        mid = f"migration/{self._key}/{slot.key}"
        extra: dict[str, object] = {}
        active, p = self._s.active_fleet, self._spec.policy
        if forecast is not None and active is not None:
            extra["source_needed"] = policy.instances_needed_for_fleet(forecast, active, self._spec)
        if p.spot:
            confidence = forecast.readiness if forecast is not None else 0.5
            extra["max_price_usd"] = policy.spot_bid(
                prices.on_demand(itype, slot.region), prices.typical_spot(itype, slot.region), confidence,
                p.spot_max_price_ratio,
            )  # fmt: skip
        req = MigrationInput(
            spec=self._spec, time_slice=slot, instance_type=itype, quantity=quantity,
            source=self._s.active_fleet, mode=mode, forecast=forecast, **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        pairs = search_attributes(self._key, "starting", self._s.active_fleet, slot)
        self._launched.add(slot.key)  # its first report may arrive in the activation that resolves the start
        try:
            handle = await workflow.start_child_workflow(
                ShadowMigrationWorkflow.run, req, id=mid,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                search_attributes=TypedSearchAttributes([SearchAttributePair(k, v) for k, v in pairs]),
            )  # fmt: skip
        except BaseException:
            self._launched.discard(slot.key)  # no child: `abort` stops waiting for one
            raise
        self._children[slot.key] = handle
        self._set(slot.key, state="preparing", migration_id=mid)
        self._event("migration", f"{mid} started ({mode}): {quantity} x {itype} in {slot.region}", slot.key)
        return handle

    async def _finish_migration(self, key: str) -> MigrationResult | None:
        """The outcome of the slice's child (None: it failed), settled once whoever asks first: the walk and the
        MigrateInstances / ReleaseShadowInstances handlers may wait for the same child, and one count, one lease
        release and one set of events must come of it."""
        async with self._settling.setdefault(key, asyncio.Lock()):
            if key not in self._outcomes:
                self._outcomes[key] = await self._settle(key)
        return self._outcomes[key]

    async def _settle(self, key: str) -> MigrationResult | None:
        """Awaits the child and records its outcome in the slice. Only `_finish_migration` calls it (under the
        slice's lock)."""
        slot = self._entry(key).time_slice
        self._set_phase(f"migrating {key}", slot)
        try:
            result: MigrationResult = await self._children[key]
        except ChildWorkflowError as exc:
            if key in self._s.aborted and self._entry(key).state not in SETTLED:
                self._set(key, state="released", outcome="aborted: compensations ran, old fleet serving")
                self._event("abort", "migration aborted and rolled back", key)
            elif self._entry(key).state != "failed":
                self._set(key, state="failed", error=root_cause(exc))
                self._event("error", f"migration failed, rolled back: {root_cause(exc)}", key)
            self._serving()
            return None
        finally:
            await self._release_lease(key)
        if self._entry(key).state in SETTLED:
            return result
        if result.outcome == "migrated" and result.fleet is not None:
            self._update(active_fleet=result.fleet, migrations=self._s.migrations + 1)
            self._set(key, state="done", outcome="migrated")
        else:
            self._set(key, state="released", outcome="released")
        self._serving()
        return result

    # ---- endpoints (updates) --------------------------------------------------------------------------------

    @workflow.update(name="ProvisionShadowInstances")
    async def provision_shadow_instances(self, req: ProvisionRequest) -> MigrationProgress:
        """Provisions and warms shadows for a slice by hand; they wait for MigrateInstances or release.

        The slice is claimed before the first await (the validator runs right before, in the same step): a second
        provision is refused and the walk follows this migration. Without a child the claim goes again."""
        slot = self._s.slices[self._require_slice(req.time_slice)].time_slice
        key = slot.key
        if self._entry(key).state == "released":  # provisioned again (the validator allowed it)
            self._forget(key)
        self._owner[key] = "hand"
        try:
            if not await self._lease(key, req.quantity):
                raise ApplicationError(
                    f"no capacity: {self._entry(key).outcome}", type="MigrationFailed", non_retryable=True
                )
            await self._start_migration(slot, req.instance_type, req.quantity, "manual")
        except BaseException:
            if key not in self._children:
                del self._owner[key]
                await self._release_lease(key)  # granted but never started (the grant was popped if denied)
            raise
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
            raise invalid(f"instance_type: {req.instance_type!r} is not allowed for this entity ({allowed})")
        if req.quantity > self._spec.policy.max_instances:
            raise invalid(
                f"quantity: {req.quantity} exceeds the entity's max_instances ({self._spec.policy.max_instances})"
            )
        entry = self._s.slices[index]
        key = entry.time_slice.key
        if entry.state in SETTLED:
            why = self._not_again(entry)
            if why is not None:
                raise invalid(f"time_slice: {self._settled(entry)}; {why}")
            return  # released before it ended: provisioned again (`_forget`)
        if key in self._children:
            raise invalid(f"time_slice: slice {key} already has a migration ({entry.state})")
        if key in self._owner:
            who = "by hand" if self._by_hand(key) else f"by its schedule ({entry.state})"
            raise invalid(f"time_slice: slice {key} is already being provisioned {who}")
        if workflow.now() >= entry.time_slice.end:
            raise invalid(f"time_slice: slice {entry.time_slice.key} has ended")

    @workflow.update(name="MigrateInstances")
    async def migrate_instances(self, req: SliceRequest) -> MigrationResult:
        """Cuts over to the slice's shadows now; errors: "Time slice is not active", "Data synchronization
        failed", "Migration failed" (after rollback)."""
        key = self._s.slices[self._require_slice(req.time_slice)].time_slice.key
        self._go.setdefault(key, "proceed")
        await self._children[key].signal(ShadowMigrationWorkflow.proceed)
        result = await self._finish_migration(key)
        if result is None:
            cause = self._entry(key).error or "Migration failed"
            raise ApplicationError(cause, type=_error_type(cause), non_retryable=True)
        return result

    @migrate_instances.validator
    def _validate_migrate(self, req: SliceRequest) -> None:
        entry = self._s.slices[self._require_slice(req.time_slice)]
        slot = entry.time_slice
        if entry.state in SETTLED:
            again = "" if self._not_again(entry) else " (ProvisionShadowInstances provisions it again)"
            raise invalid(f"time_slice: {self._settled(entry)}; nothing to migrate{again}")
        if not slot.contains(workflow.now()):
            raise invalid(
                f"time_slice: {TimeSliceNotActive.MESSAGE} (slice {slot.key} runs {slot.start.isoformat()} - "
                f"{slot.end.isoformat()}; now {workflow.now().isoformat()})"
            )
        if slot.key not in self._children:
            raise invalid(f"time_slice: no shadow instances are provisioned for slice {slot.key}")
        if self._go.get(slot.key) == "release":
            raise invalid(f"time_slice: slice {slot.key} is being released (ReleaseShadowInstances was sent)")

    @workflow.update(name="ReleaseShadowInstances")
    async def release_shadow_instances(self, req: SliceRequest) -> MigrationResult:
        """Releases the slice's shadows (runs the migration's compensations) before any cutover."""
        key = self._s.slices[self._require_slice(req.time_slice)].time_slice.key
        if key not in self._children:
            return MigrationResult(outcome="released", detail=f"nothing to release: slice {key} has no shadows")
        self._go.setdefault(key, "release")
        await self._children[key].signal(ShadowMigrationWorkflow.release)
        result = await self._finish_migration(key)
        if result is None:
            raise ApplicationError(self._entry(key).error or "release failed", type="MigrationFailed")
        return result

    @release_shadow_instances.validator
    def _validate_release(self, req: SliceRequest) -> None:
        entry = self._s.slices[self._require_slice(req.time_slice)]
        key = entry.time_slice.key
        if entry.state in SETTLED:
            raise invalid(f"time_slice: {self._settled(entry)}; nothing to release")
        phase = self._progress.get(key, MigrationProgress(phase="")).phase
        if phase in ("cutover", "watching", "retired", "done"):
            raise invalid(f"time_slice: slice {key} has already cut over ({phase}); nothing to release")
        if self._go.get(key) == "proceed":  # its report of the cutover may not have arrived yet
            raise invalid(f"time_slice: slice {key} is cutting over (MigrateInstances was sent); nothing to release")

    # ---- operations (updates) -------------------------------------------------------------------------------

    @workflow.update(name="approve")
    async def approve(self, req: SliceAction) -> SliceStatus:
        """Lets the slice's shadows be provisioned (policy.approval_required); may come before the decision."""
        index = self._require_slice(req.time_slice)
        key = self._s.slices[index].time_slice.key
        self._update(approved=(*self._s.approved, key))
        self._event("approval", f"approved{': ' + req.reason if req.reason else ''}", key)
        return self._s.slices[index]

    @approve.validator
    def _validate_approve(self, req: SliceAction) -> None:
        entry = self._s.slices[self._require_slice(req.time_slice)]
        if entry.state in SETTLED or entry.time_slice.key in self._children:
            raise invalid(f"time_slice: slice {entry.time_slice.key} is {entry.state}; nothing to approve")
        if entry.time_slice.key in self._s.approved:
            raise invalid(f"time_slice: slice {entry.time_slice.key} is already approved")

    @workflow.update(name="abort")
    async def abort(self, req: SliceAction) -> SliceStatus:
        """Stops the slice: a running migration is cancelled (its compensations restore routing and leave the old
        fleet serving); a slice not started yet is skipped."""
        key = self._s.slices[self._require_slice(req.time_slice)].time_slice.key
        self._update(aborted=(*self._s.aborted, key))
        self._event("abort", f"abort requested{': ' + req.reason if req.reason else ''}", key)
        if key in self._launched and key not in self._children:  # its child is starting: cancel it once started
            await workflow.wait_condition(lambda: key in self._children or key not in self._launched)
        if key in self._children:
            await workflow.get_external_workflow_handle(f"migration/{self._key}/{key}").cancel()
            await workflow.wait_condition(lambda: self._entry(key).state in SETTLED)
        else:
            self._set(key, state="skipped", outcome=f"aborted{': ' + req.reason if req.reason else ''}")
            self._wake = True
        return self._entry(key)

    @abort.validator
    def _validate_abort(self, req: SliceAction) -> None:
        entry = self._s.slices[self._require_slice(req.time_slice)]
        key = entry.time_slice.key
        if entry.state in SETTLED:
            raise invalid(f"time_slice: slice {key} is already {entry.state}")
        phase = self._progress.get(key, MigrationProgress(phase="")).phase
        if phase in ("retired", "done"):
            raise invalid(f"time_slice: slice {key} has committed its migration ({phase}); nothing to abort")

    @workflow.update(name="pause")
    async def pause(self, req: PauseRequest) -> EntityStatus:
        """No new slice is forecast or prepared until `resume`; running migrations finish."""
        self._update(paused=True)
        self._wake = True
        self._event("pause", f"paused{': ' + req.reason if req.reason else ''}")
        return self.status()

    @pause.validator
    def _validate_pause(self, req: PauseRequest) -> None:
        if self._s.paused:
            raise invalid("paused: the entity is already paused")

    @workflow.update(name="resume")
    async def resume(self) -> EntityStatus:
        self._update(paused=False)
        self._wake = True
        self._event("pause", "resumed")
        return self.status()

    @resume.validator
    def _validate_resume(self) -> None:
        if not self._s.paused:
            raise invalid("paused: the entity is not paused")

    @workflow.update(name="update_schedule")
    async def update_schedule(self, schedule: AllocationSchedule) -> EntityPlan:
        """Replaces the slices that have not started; started and settled ones are kept as they are."""
        kept = {e.time_slice.key: e for e in self._s.slices if e.state != "pending"}
        old = {e.time_slice.key: e for e in self._s.slices}
        merged = dict(kept)
        for s in schedule.slices:
            if s.key not in merged:
                prev = old.get(s.key)
                merged[s.key] = prev if prev is not None and prev.time_slice == s else SliceStatus(time_slice=s)
        slices = tuple(sorted(merged.values(), key=lambda e: e.time_slice.start))
        reg = self._s.registration.model_copy(update={"schedule": AllocationSchedule(slices=tuple(
            e.time_slice for e in slices))})  # fmt: skip
        self._update(slices=slices, registration=reg)
        self._wake = True
        self._event("schedule", f"schedule updated: {len(slices)} slices")
        return self.plan()

    @update_schedule.validator
    def _validate_schedule(self, schedule: AllocationSchedule) -> None:
        """Linear in the slices (both lists are sorted and without overlap); the merged schedule stays capped."""
        started = [e for e in self._s.slices if e.state != "pending"]
        clash = first_overlap([e.time_slice for e in started], schedule.slices)
        if clash is not None:
            new, entry = clash[0], started[clash[1]]
            raise invalid(f"schedule.slices: {new.key} overlaps slice {entry.time_slice.key}, which is {entry.state}")
        wanted = {s.key for s in schedule.slices}
        total = len(wanted) + sum(e.time_slice.key not in wanted for e in started)
        if total > MAX_SLICES:
            raise invalid(f"schedule.slices: {total} slices with the started ones kept; at most {MAX_SLICES}")

    @workflow.update(name="update_spec")
    async def update_spec(self, spec: EntitySpec) -> EntitySpec:
        """New spec and policy for the slices not started yet."""
        self._update(registration=self._s.registration.model_copy(update={"spec": spec}))
        self._wake = True
        self._event("spec", "spec updated")
        return spec

    @update_spec.validator
    def _validate_spec(self, spec: EntitySpec) -> None:
        if spec.entity_id != self._spec.entity_id:
            raise invalid(f"spec.entity_id: {spec.entity_id!r} is not this entity ({self._spec.entity_id!r})")
        if spec.home_region != self._spec.home_region:
            raise invalid("spec.home_region: cannot change while the entity runs (register it again)")
        if spec.adopt != self._spec.adopt:
            raise invalid("spec.adopt: fixed at registration (it only says what the first fleet was)")
        serving = self._s.active_fleet is not None or bool(self._children)
        changed = [f for f in PINNED_FIELDS if getattr(spec, f) != getattr(self._spec, f)]
        if serving and changed:
            raise invalid(
                f"spec.{changed[0]}: cannot change while a fleet serves the entity (DNS and data stay where the fleet "
                "uses them); register the entity again under the new name to move it"
            )

    # ---- signals and queries --------------------------------------------------------------------------------

    @workflow.signal(name="lease_granted")
    def lease_granted(self, grant: LeaseGrant) -> None:
        """Only the answer to this run's own pending request counts: the coordinator echoes the request's nonce
        (a fresh `workflow.uuid4()`), so a grant signalled by anyone else is ignored and counted."""
        asked = self._asked.get(grant.slice_key)
        if asked is None or grant.nonce != asked or grant.slice_key in self._grants:
            self._ignored += 1
            workflow.logger.warning("ignored a lease_granted for %s that answers no pending request", grant.slice_key)
            return
        self._grants[grant.slice_key] = grant

    @workflow.query(name="plan")
    def plan(self) -> EntityPlan:
        lead = timedelta(seconds=self._lead_s())
        entries = []
        for e in self._s.slices:
            t = e.time_slice
            d = e.decision
            entries.append(PlanEntry(
                slice_key=t.key, region=t.region, start=t.start, end=t.end, forecast_at=t.start - lead,
                state=e.state, action=d.action if d else None, instance_type=d.instance_type if d else None,
                quantity=d.quantity if d else None, approved=t.key in self._s.approved,
                needs_approval=self._spec.policy.approval_required,
            ))  # fmt: skip
        return EntityPlan(
            entity_id=self._spec.entity_id, lead_time_s=lead.total_seconds(), prepare_s=self._prepare_s(),
            paused=self._s.paused, entries=tuple(entries),
        )  # fmt: skip

    @workflow.query(name="ledger")
    def ledger(self) -> CostLedger:
        return self._s.ledger

    @workflow.signal(name="migration_progress")
    def migration_progress(self, progress: MigrationProgress) -> None:
        """Reports of this run's own migrations only; each slice's cost and preparation time count once."""
        key = progress.slice_key
        if key not in self._launched:
            self._ignored += 1
            workflow.logger.warning("ignored migration_progress for %s: no migration of it runs", key)
            return
        self._progress[key] = progress
        if progress.cost is not None and key not in self._costed:
            self._costed.add(key)
            self._update(ledger=self._s.ledger.add(progress.cost))
        if progress.prepare_s is not None and key not in self._prepared:
            self._prepared.add(key)
            self._update(prepare_durations=(*self._s.prepare_durations, progress.prepare_s)[-MEASURED:])
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
            mode=self._spec.policy.mode, paused=self._s.paused, planned_fleet=self._s.planned_fleet,
            ledger=self._s.ledger, lead_time_s=self._lead_s(), runs=self._s.runs, ignored_signals=self._ignored,
        )  # fmt: skip

    # ---- helpers -------------------------------------------------------------------------------------------

    @property
    def _spec(self) -> EntitySpec:
        return self._s.registration.spec

    @property
    def _key(self) -> str:
        """The entity's name in Temporal (its children's ids, its search attribute): the id or its pseudonym."""
        return self._s.registration.name or self._spec.entity_id

    def _require_slice(self, time_slice: object) -> int:
        for i, entry in enumerate(self._s.slices):
            if entry.time_slice.same_as(time_slice):  # type: ignore[arg-type]
                return i
        start, end = (getattr(time_slice, k).isoformat() for k in ("start", "end"))
        keys = [f"{e.time_slice.key} ({e.time_slice.start.isoformat()} - {e.time_slice.end.isoformat()})"
                for e in self._s.slices[:SHOWN_SLICES]]  # fmt: skip
        more = ", ..." if len(self._s.slices) > SHOWN_SLICES else ""
        listed = f"its slices: {', '.join(keys)}{more}" if keys else "it has no slices"
        raise invalid(f"time_slice: {start} - {end} is not a slice of this entity's schedule ({listed})")

    def _entry(self, key: str) -> SliceStatus:
        """The slice with this key as it is now. Found by key, not by an index held across an await:
        `update_schedule` may insert slices before it meanwhile (a started slice is never dropped)."""
        return self._s.slices[self._at(key)]

    def _at(self, key: str) -> int:
        return next(i for i, e in enumerate(self._s.slices) if e.time_slice.key == key)

    def _set(self, key: str, **changes: object) -> None:
        self._set_slice(self._at(key), **changes)

    def _by_hand(self, key: str) -> bool:
        return self._owner.get(key) == "hand"

    def _settled(self, entry: SliceStatus) -> str:
        """What happened to a settled slice, for the endpoints' refusals."""
        key, at = entry.time_slice.key, entry.settled_at
        when = f" at {at.isoformat()}" if at else ""
        if entry.state == "failed":
            return f"slice {key} failed{when}: {entry.error or 'no cause recorded'}"
        if entry.state == "released":
            aborted = " (aborted)" if key in self._s.aborted else ""
            return f"slice {key} was released{when}{aborted}"
        what = {"done": "is done", "skipped": "was skipped", "planned": "was planned (forecast-only)"}[entry.state]
        return f"slice {key} {what}{when} ({entry.outcome or entry.state})"

    def _not_again(self, entry: SliceStatus) -> str | None:
        """Why the slice cannot be provisioned again; None when it can: released (not aborted) before it ended, while
        the walk still runs (it follows the new migration)."""
        key, end = entry.time_slice.key, entry.time_slice.end
        if entry.state != "released":
            return "it cannot be provisioned again"
        if key in self._s.aborted:
            return "an aborted slice stays settled"
        if workflow.now() >= end:
            return f"it ended at {end.isoformat()}"
        if self._phase == "done" or self._forecast_only:
            return "the entity's schedule has finished" if self._phase == "done" else "the entity is forecast-only"
        return None

    def _forget(self, key: str) -> None:
        """A released slice provisioned again: its migration child id (`migration/<entity>/<key>`) is reused (the
        first child has closed: the default ALLOW_DUPLICATE id reuse policy starts a new run) and this run's record
        of the first migration goes, so the new one is owned, reported, costed and settled afresh."""
        for record in (self._children, self._outcomes, self._go, self._progress, self._owner):
            record.pop(key, None)
        self._costed.discard(key)
        self._prepared.discard(key)
        self._launched.discard(key)
        self._set(key, state="pending", outcome=None, error=None, migration_id=None, settled_at=None)
        self._event("provision", "provisioned again after its release", key)
        self._wake = True  # the walk may have moved past it: it comes back and follows the new migration

    def _serving(self) -> None:
        """After a slice's migration settles, the phase says where the entity serves (never "migrating" on)."""
        active = self._s.active_fleet
        self._set_phase(f"serving from {active.region}" if active is not None else "idle")

    def _set_phase(self, phase: str, slot: ScheduledSlice | None = None) -> None:
        """The status phase, mirrored into search attributes so the Web UI and `--query` see it."""
        self._phase = phase
        wanted = search_attributes(self._key, phase.split(" ")[0], self._s.active_fleet, slot)
        changed = [(k, v) for k, v in wanted if self._sa.get(k.name) != v]
        if changed:
            workflow.upsert_search_attributes([k.value_set(v) for k, v in changed])
            self._sa.update({k.name: v for k, v in changed})

    def _trim(self) -> None:
        settled = [i for i, e in enumerate(self._s.slices) if e.state in SETTLED and e.forecast is not None]
        for i in settled[:-KEEP_FORECASTS]:
            self._set_slice(i, forecast=None)

    def _prune(self) -> None:
        """Drops settled slices beyond the newest KEEP_SETTLED. Only right before continue-as-new, once every handler
        has finished: a handler finds its slice again by key after each await, and a dropped one is not there."""
        old = {e.time_slice.key for e in [e for e in self._s.slices if e.state in SETTLED][:-KEEP_SETTLED]}
        if old:
            self._update(slices=tuple(e for e in self._s.slices if e.time_slice.key not in old))

    def _update(self, **changes: object) -> None:
        self._s = self._s.model_copy(update=changes)

    def _set_slice(self, index: int, **changes: object) -> None:
        slices = list(self._s.slices)
        if changes.get("state") in SETTLED and slices[index].state not in SETTLED:
            changes.setdefault("settled_at", workflow.now())
        slices[index] = slices[index].model_copy(update=changes)
        self._update(slices=tuple(slices))

    def _event(self, kind: str, message: str, slice_key: str | None = None) -> None:
        seq = (self._s.events[-1].seq + 1) if self._s.events else 1
        event = Event(seq=seq, at=workflow.now(), kind=kind, message=message, slice_key=slice_key)
        self._update(events=(*self._s.events, event)[-MAX_EVENTS:])


def invalid(message: str) -> ApplicationError:
    """A refusal of bad input, as any client sees it: a non-retryable `InvalidRequest` whose message starts with the
    field (`time_slice: ...`). A plain ValueError reached the temporal CLI as "type: ValueError, retryable: true"."""
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


def first_overlap(started: list[TimeSlice], new: tuple[ScheduledSlice, ...]) -> tuple[ScheduledSlice, int] | None:
    """The first new slice that overlaps a started one without being it (and that one's index); one sweep over both
    sorted lists."""
    i = j = 0
    while i < len(started) and j < len(new):
        a, b = started[i], new[j]
        if b.end <= a.start:
            j += 1
        elif a.end <= b.start:
            i += 1
        elif b.same_as(a) and getattr(a, "region", None) == b.region:
            i, j = i + 1, j + 1
        else:
            return b, i
    return None


def search_attributes(name: str, phase: str, active: FleetRef | None, slot: ScheduledSlice | None) -> list:
    """Typed search attributes of an entity or migration workflow, as (key, value) pairs; `name` is the entity's
    name in Temporal (its id, or its pseudonym when payloads are encrypted: shadowing/ids.py)."""
    pairs: list = [(search.ENTITY, name), (search.PHASE, phase)]
    if active is not None:
        pairs.append((search.ACTIVE_REGION, active.region))
    if slot is not None:
        pairs += [(search.TARGET_REGION, slot.region), (search.SLICE_START, slot.start)]
    return pairs


def _planned(entity_id: str, region: str, itype: str, count: int) -> FleetRef:
    """Forecast-only mode's notional fleet: where the plan would have the entity (never provisioned)."""
    return FleetRef(
        fleet_id=f"{entity_id}:plan", entity_id=entity_id, region=region, instance_type=itype,
        instance_ids=tuple(f"planned-{n}" for n in range(count)), role="active",
    )  # fmt: skip


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
