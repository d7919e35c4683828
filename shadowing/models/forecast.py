"""A demand forecast (per-hour quantiles of each metric) and the decision the policy takes on it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shadowing.models.base import Frozen, InstanceTypeName, Region, UtcDatetime
from shadowing.models.entity import TimeSlice

# ---- forecasting --------------------------------------------------------------------------------------


class HourQuantiles(Frozen):
    """Forecast of one hour of one metric: quantile level (as text, e.g. "0.9") -> value."""

    hour: UtcDatetime
    quantiles: dict[str, float]


class MetricForecast(Frozen):
    metric: str
    unit: str
    model: str
    hours: tuple[HourQuantiles, ...]
    backtest_mape: float | None = None
    interval_coverage: float | None = None

    def peak(self, level: float) -> float:
        return max(h.quantiles[f"{level:g}"] for h in self.hours)


class DemandForecast(Frozen):
    """The PredictDemand result: hourly quantiles per metric for the slice, and how much to trust them."""

    entity_id: str
    time_slice: TimeSlice
    history_end: UtcDatetime = Field(description="newest usage hour the forecast saw (history time)")
    history_hours: int
    sizing_quantile: float
    metrics: dict[str, MetricForecast]
    readiness: float = Field(ge=0.0, le=1.0)
    readiness_reasons: tuple[str, ...] = ()


class Decision(Frozen):
    """What the policy decided for a slice, and why."""

    action: Literal["shadow", "stay", "skip", "shrink"]
    reason: str
    target_region: Region
    instance_type: InstanceTypeName
    quantity: int = Field(ge=0)
    current_quantity: int = Field(ge=0)
    hourly_cost_usd: float = 0.0
    readiness: float | None = Field(None, ge=0.0, le=1.0, description="migration readiness the action was gated on")
    readiness_inputs: dict[str, float] = Field(default_factory=dict)
