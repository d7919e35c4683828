"""The four endpoints' requests and results, and what the entity workflow reports (status, plan, events)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shadowing.models.base import MAX_SECONDS, EntityId, Frozen, InstanceTypeName, Region, UtcDatetime
from shadowing.models.entity import EntitySpec, FleetRef, ScheduledSlice, TimeSlice, owns_fleet
from shadowing.models.forecast import Decision, DemandForecast
from shadowing.models.ledger import CostEntry, CostLedger


class PredictDemandInput(Frozen):
    """Input of the `PredictDemand` workflow: `{"entity_id": ..., "time_slice": {"start": ..., "end": ...}}`."""

    entity_id: EntityId
    time_slice: TimeSlice
    spec: EntitySpec | None = None


# ---- endpoints ---------------------------------------------------------------------------------------------


class ProvisionRequest(Frozen):
    """ProvisionShadowInstances(entityId, timeSlice, instanceType, quantity), as an update's argument."""

    time_slice: TimeSlice
    instance_type: InstanceTypeName
    quantity: int = Field(gt=0, le=500)


class SliceRequest(Frozen):
    """MigrateInstances / ReleaseShadowInstances(entityId, timeSlice), as an update's argument."""

    time_slice: TimeSlice


# ---- migration saga ---------------------------------------------------------------------------------------


class MigrationInput(Frozen):
    """Input of one `ShadowMigration` (one per entity and slice)."""

    spec: EntitySpec
    time_slice: ScheduledSlice
    instance_type: InstanceTypeName
    quantity: int = Field(gt=0, le=500)
    source: FleetRef | None = None
    mode: Literal["auto", "manual"] = "auto"
    forecast: DemandForecast | None = Field(
        default=None, description="the slice's forecast: refined and used to resize shadows while they wait"
    )
    source_needed: int | None = Field(
        default=None, ge=0, description="instances the source fleet needs to carry the slice if cutover runs late"
    )
    max_price_usd: float | None = Field(
        default=None, gt=0, le=1000, description="spot bid per instance-hour (policy.spot_bid)"
    )

    @model_validator(mode="after")
    def _own_source(self) -> MigrationInput:
        """A migration retires its source: it must be the entity's own fleet, never one named by hand."""
        src = self.source
        if src is not None and (src.entity_id != self.spec.entity_id or not owns_fleet(self.spec.entity_id, src)):
            raise ValueError(
                f"source: fleet {src.fleet_id!r} (entity {src.entity_id!r}) is not a fleet of entity "
                f"{self.spec.entity_id!r}"
            )
        return self


class DataSummary(Frozen):
    """What happened to the entity's data during one migration (the `data` query, and `MigrationResult.data`)."""

    consistency: Literal["converge", "fenced"] = "converge"
    sync_mode: str = Field(default="", description="the final sync check's mode: changed or full-scan")
    sync_check_s: float | None = Field(default=None, description="seconds the final sync check took")
    changed: int = Field(default=0, description="keys the final check verified (changed since the last verified point)")
    forward_applied: int = Field(default=0, description="writes replayed source -> target after the sync check")
    back_applied: int = Field(default=0, description="writes replayed target -> source (two-way window, rollback)")
    conflicts: int = Field(default=0, description="concurrent writes to one key the conflict rule decided")
    fence_ms: float | None = Field(default=None, description="fenced: how long the old fleet's writes were held")
    two_way_passes: int = Field(default=0, description="converge: replication passes in both directions")


class MigrationResult(Frozen):
    outcome: Literal["migrated", "released"]
    fleet: FleetRef | None = None
    retired: FleetRef | None = None
    cutover_at: UtcDatetime | None = None
    compensations_run: tuple[str, ...] = ()
    detail: str = ""
    cost: CostEntry | None = None
    data: DataSummary | None = None


class MigrationProgress(Frozen):
    """What a migration reports to its entity (signal) and to queries."""

    slice_key: str = ""
    phase: str
    shadows: FleetRef | None = None
    detail: str = ""
    cost: CostEntry | None = Field(default=None, description="set on the last report (done, released, rolled-back)")
    prepare_s: float | None = Field(
        default=None, ge=0, le=MAX_SECONDS, description="set on `ready`: seconds provisioning+warm-up took"
    )


# ---- entity workflow state --------------------------------------------------------------------------------


class Event(Frozen):
    seq: int = 0
    at: UtcDatetime
    kind: str
    message: str
    slice_key: str | None = None


SliceState = Literal[
    "pending", "forecasting", "awaiting-approval", "waiting-for-capacity", "preparing", "migrating", "done",
    "skipped", "failed", "released", "planned",
]  # fmt: skip
#: The states a slice settles in: the one definition (the workflow, the example service and the tests use it). A
#: settled slice stays so, but a "released" one provisioned again by hand before it ends (docs/operations.md).
SETTLED_STATES: frozenset[str] = frozenset({"done", "skipped", "failed", "released", "planned"})


class SliceStatus(Frozen):
    time_slice: ScheduledSlice
    state: SliceState = "pending"

    @property
    def settled(self) -> bool:
        """True once the slice has settled (SETTLED_STATES; only a released slice provisioned again leaves it)."""
        return self.state in SETTLED_STATES

    forecast: DemandForecast | None = None
    decision: Decision | None = None
    migration_id: str | None = None
    outcome: str | None = None
    error: str | None = None
    #: When the slice settled (workflow time); None while it runs.
    settled_at: UtcDatetime | None = None


class EntityStatus(Frozen):
    """What `status` queries return: the entity's plan, fleet and recent events."""

    entity_id: str
    phase: str
    active_fleet: FleetRef | None
    slices: tuple[SliceStatus, ...]
    events: tuple[Event, ...]
    migrations: int = 0
    mode: str = "active"
    paused: bool = False
    planned_fleet: FleetRef | None = Field(default=None, description="forecast-only: where the plan would be")
    ledger: CostLedger = CostLedger()
    lead_time_s: float | None = None
    runs: int = Field(default=1, description="workflow runs so far (continue-as-new starts a new one)")
    ignored_signals: int = Field(default=0, description="signals this run ignored: no pending request or migration")


class PlanEntry(Frozen):
    """One upcoming or running slice as the `plan` query shows it."""

    slice_key: str
    region: Region
    start: UtcDatetime
    end: UtcDatetime
    forecast_at: UtcDatetime
    state: str
    action: str | None = None
    instance_type: str | None = None
    quantity: int | None = None
    approved: bool = False
    needs_approval: bool = False


class EntityPlan(Frozen):
    entity_id: str
    lead_time_s: float
    prepare_s: float
    paused: bool
    entries: tuple[PlanEntry, ...]


class SliceAction(Frozen):
    """approve / abort: one slice of the entity's schedule, and why (kept in the event log)."""

    time_slice: TimeSlice
    reason: str = Field("", max_length=500)


class PauseRequest(Frozen):
    reason: str = Field("", max_length=500)
