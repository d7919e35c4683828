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
    engine: Literal["fleet", "entity"] = Field(
        "entity", description="which engine answered: the published fleet model or the per-entity darts engine"
    )
    engine_reason: str = Field("", description="why that engine answered (the fleet model's version, or why not)")

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

    action: Literal["shadow", "stay", "skip", "shrink", "grow"]
    reason: str
    target_region: Region
    instance_type: InstanceTypeName
    quantity: int = Field(ge=0)
    current_quantity: int = Field(ge=0)
    hourly_cost_usd: float = 0.0
    readiness: float | None = Field(None, ge=0.0, le=1.0, description="migration readiness the action was gated on")
    readiness_inputs: dict[str, float] = Field(default_factory=dict)


# ---- the fleet model ----------------------------------------------------------------------------------


class TrainFleetModelInput(Frozen):
    """`TrainFleetModel`: what to train on. The daily schedule and `shadowctl train` send the defaults."""

    history_days: int = Field(35, ge=10, le=455, description="days of hourly history read per entity")
    validation_days: int = Field(3, ge=2, le=14, description="newest days held out to validate on")
    end: UtcDatetime | None = Field(None, description="end of the training window (history time); default: now")


class ModelScores(Frozen):
    """A fleet model's scores on the held-out days, through the serving path (forecasting/fleet.py `Validation`)."""

    origins: int
    entities: int
    mae: float | None = None
    relative_mae: dict[str, float | None] = Field(default_factory=dict, description="MAE / baseline's, geometric mean")
    coverage_80: float | None = None
    q90_coverage: float | None = None


class TrainFleetModelResult(Frozen):
    """What a training decided: `published` (the pointer now names `version`) or `rejected` (the incumbent keeps
    serving), with the candidate's and the incumbent's scores on the same held-out origins."""

    outcome: Literal["published", "rejected"]
    reason: str
    version: str
    key: str = Field(description="S3 key of the candidate's artifact")
    entities: int
    training_start: UtcDatetime | None = None
    training_end: UtcDatetime | None = None
    scores: ModelScores
    incumbent_version: str | None = None
    incumbent_scores: ModelScores | None = None
