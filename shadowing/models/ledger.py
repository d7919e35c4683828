"""The cost ledger: what each fleet cost and what shadowing saved, per slice."""

from __future__ import annotations

from pydantic import Field

from shadowing.models.base import Frozen, InstanceTypeName, Region


class CostEntry(Frozen):
    """What one migration's shadows cost (list prices from the price table; spot at its typical price)."""

    slice_key: str
    outcome: str = Field(description="migrated, released, rolled-back or planned")
    region: Region
    instance_type: InstanceTypeName
    instances: int = 0
    spot_instances: int = 0
    shadow_hours: float = Field(
        0.0, ge=0, le=1e7, description="instance-hours the shadows ran before serving (or at all)"
    )
    overlap_hours: float = Field(
        0.0, ge=0, le=1e7, description="instance-hours the old fleet ran after cutover (watch, drain)"
    )
    extra_hours: float = Field(0.0, ge=0, le=1e7, description="instance-hours of a late migration's temporary scale-up")
    cost_usd: float = Field(0.0, ge=0, le=1e9)
    spot_savings_usd: float = Field(0.0, ge=0, le=1e9)
    wasted_usd: float = Field(
        0.0, ge=0, le=1e9, description="pre-warm that never served: shadows released or rolled back"
    )


class CostLedger(Frozen):
    """The entity's running totals; `entries` keeps the newest migrations."""

    shadow_hours: float = 0.0
    cost_usd: float = 0.0
    spot_savings_usd: float = 0.0
    wasted_usd: float = 0.0
    migrations: int = 0
    released: int = 0
    entries: tuple[CostEntry, ...] = ()

    def add(self, entry: CostEntry, keep: int = 50) -> CostLedger:
        return CostLedger(
            shadow_hours=round(self.shadow_hours + entry.shadow_hours, 4),
            cost_usd=round(self.cost_usd + entry.cost_usd, 4),
            spot_savings_usd=round(self.spot_savings_usd + entry.spot_savings_usd, 4),
            wasted_usd=round(self.wasted_usd + entry.wasted_usd, 4),
            migrations=self.migrations + (entry.outcome == "migrated"),
            released=self.released + (entry.outcome in ("released", "rolled-back")),
            entries=(*self.entries, entry)[-keep:],
        )
