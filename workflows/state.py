"""Workflow-internal state: what `EntitySchedule` carries across continue-as-new. Not part of the client contract."""

from __future__ import annotations

from pydantic import Field

from shadowing.models import CostLedger, Event, FleetRef, Frozen, RegisterEntityInput, SliceStatus


class EntityState(Frozen):
    """Carried across continue-as-new."""

    registration: RegisterEntityInput
    active_fleet: FleetRef | None = None
    slices: tuple[SliceStatus, ...] = ()
    events: tuple[Event, ...] = ()
    migrations: int = 0
    paused: bool = False
    approved: tuple[str, ...] = Field(default=(), description="slice keys approved by an operator")
    aborted: tuple[str, ...] = Field(default=(), description="slice keys aborted by an operator")
    planned_fleet: FleetRef | None = None
    ledger: CostLedger = CostLedger()
    prepare_durations: tuple[float, ...] = Field(default=(), description="newest measured preparations (s)")
    runs: int = 1
