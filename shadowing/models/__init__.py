"""The public contract: every value that crosses a client, CLI or workflow boundary, by topic.

Frozen pydantic v2 models. New fields always get defaults so that running workflows keep decoding their histories.
Validation here is the first door for bad input: a malformed request fails with a `pydantic.ValidationError` that
names the field, before anything reaches Temporal or AWS.

- `base`: `Frozen` and the checked scalar types (regions, instance types, entity ids, DNS names, addresses);
- `entity`: the entity spec, policy, schedule and fleets;
- `forecast`: demand forecasts and the decision taken on one;
- `ledger`: costs and savings;
- `api`: the four endpoints' requests and results, status, plan and events;
- `coordination`: the fleet coordinator's limits and leases.

Activity inputs and results live beside their activities (`activities/*.py`), workflow-internal state beside the
workflows (`workflows/state.py`).
"""

from __future__ import annotations

from shadowing.models.api import (
    SETTLED_STATES,
    DataSummary,
    EntityPlan,
    EntityStatus,
    Event,
    MigrationInput,
    MigrationProgress,
    MigrationResult,
    PauseRequest,
    PlanEntry,
    PredictDemandInput,
    ProvisionRequest,
    SliceAction,
    SliceRequest,
    SliceState,
    SliceStatus,
)
from shadowing.models.base import (
    AWS_IPV6_SERVICES,
    CONTAINER_IMAGE,
    MAX_SECONDS,
    MAX_SLICES,
    Address,
    DnsName,
    EntityId,
    Frozen,
    HostedZoneId,
    InstanceTypeName,
    Region,
    Seconds,
    UtcDatetime,
    check_address,
    normalize_dns_name,
)
from shadowing.models.coordination import CoordinatorLimits, CoordinatorState, LeaseGrant, LeaseRelease, LeaseRequest
from shadowing.models.entity import (
    AdoptFleet,
    AllocationSchedule,
    DegradationPolicy,
    DemandClock,
    EntityPolicy,
    EntitySpec,
    FleetRef,
    RegisterEntityInput,
    ScheduledSlice,
    TimeSlice,
    arn_region,
    owns_fleet,
)
from shadowing.models.forecast import (
    Decision,
    DemandForecast,
    HourQuantiles,
    MetricForecast,
    ModelScores,
    TrainFleetModelInput,
    TrainFleetModelResult,
)
from shadowing.models.ledger import CostEntry, CostLedger

__all__ = [
    "AWS_IPV6_SERVICES",
    "CONTAINER_IMAGE",
    "MAX_SECONDS",
    "MAX_SLICES",
    "SETTLED_STATES",
    "Address",
    "AdoptFleet",
    "AllocationSchedule",
    "CoordinatorLimits",
    "CoordinatorState",
    "CostEntry",
    "CostLedger",
    "DataSummary",
    "Decision",
    "DegradationPolicy",
    "DemandClock",
    "DemandForecast",
    "DnsName",
    "EntityId",
    "EntityPlan",
    "EntityPolicy",
    "EntitySpec",
    "EntityStatus",
    "Event",
    "FleetRef",
    "Frozen",
    "HostedZoneId",
    "HourQuantiles",
    "InstanceTypeName",
    "LeaseGrant",
    "LeaseRelease",
    "LeaseRequest",
    "MetricForecast",
    "MigrationInput",
    "MigrationProgress",
    "MigrationResult",
    "ModelScores",
    "PauseRequest",
    "PlanEntry",
    "PredictDemandInput",
    "ProvisionRequest",
    "Region",
    "RegisterEntityInput",
    "ScheduledSlice",
    "Seconds",
    "SliceAction",
    "SliceRequest",
    "SliceState",
    "SliceStatus",
    "TimeSlice",
    "TrainFleetModelInput",
    "TrainFleetModelResult",
    "UtcDatetime",
    "arn_region",
    "check_address",
    "normalize_dns_name",
    "owns_fleet",
]
