"""Activities replaced by fakes registered under the same names (no unittest.mock): they record every call
and fail on demand, so workflow tests can assert order, compensations and what was never called."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from shadowing.models import (
    DemandForecast,
    EntitySpec,
    FleetInput,
    FleetRef,
    ForecastInput,
    HealthReport,
    HourQuantiles,
    MetricForecast,
    ProvisionInput,
    ReplicationInput,
    ReplicationStatus,
    RoutingInput,
    RoutingState,
)


@dataclass
class FakeCloud:
    """Records calls as (activity name, key) and fails the named activities."""

    fail: set[str] = field(default_factory=set)
    unhealthy_after_cutover: bool = False
    out_of_sync: bool = False
    cpu_mhz: float = 10_000.0
    readiness: float = 0.9
    calls: list[tuple[str, str]] = field(default_factory=list)
    live: dict[str, FleetRef] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    specs: dict[str, EntitySpec] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def _record(self, name: str, key: str) -> None:
        self.calls.append((name, key))
        if name in self.fail:
            raise ApplicationError(f"injected failure in {name}", non_retryable=True)

    @activity.defn(name="provision_fleet")
    def provision_fleet(self, req: ProvisionInput) -> FleetRef:
        self._record("provision_fleet", req.fleet_id)
        fleet = FleetRef(
            fleet_id=req.fleet_id, entity_id=req.entity_id, region=req.region, instance_type=req.instance_type,
            instance_ids=tuple(f"i-{req.slice_key}-{n}" for n in range(req.quantity)),
            addresses=tuple(f"10.0.0.{n}" for n in range(req.quantity)), role=req.role,
        )  # fmt: skip
        self.live[req.fleet_id] = fleet
        return fleet

    @activity.defn(name="terminate_fleet")
    def terminate_fleet(self, fleet: FleetRef) -> int:
        self._record("terminate_fleet", fleet.fleet_id)
        return 0 if self.live.pop(fleet.fleet_id, None) is None else len(fleet.instance_ids)

    @activity.defn(name="mark_fleet_role")
    def mark_fleet_role(self, fleet: FleetRef) -> FleetRef:
        self._record("mark_fleet_role", fleet.fleet_id)
        return fleet

    @activity.defn(name="warm_fleet")
    def warm_fleet(self, req: FleetInput) -> HealthReport:
        self._record("warm_fleet", req.fleet.fleet_id)
        return HealthReport(healthy=True, healthy_count=req.fleet.size, total=req.fleet.size)

    @activity.defn(name="check_fleet_health")
    def check_fleet_health(self, req: FleetInput) -> HealthReport:
        self._record("check_fleet_health", req.fleet.fleet_id)
        ok = not self.unhealthy_after_cutover
        return HealthReport(healthy=ok, healthy_count=req.fleet.size if ok else 0, total=req.fleet.size)

    @activity.defn(name="replicate_tables")
    def replicate_tables(self, req: ReplicationInput) -> ReplicationStatus:
        self._record("replicate_tables", req.target_region)
        return ReplicationStatus(in_sync=True, items=3)

    @activity.defn(name="check_sync")
    def check_sync(self, req: ReplicationInput) -> ReplicationStatus:
        self._record("check_sync", req.target_region)
        return ReplicationStatus(in_sync=not self.out_of_sync, detail="tables differ: t" if self.out_of_sync else "")

    @activity.defn(name="drop_replicas")
    def drop_replicas(self, req: ReplicationInput) -> int:
        self._record("drop_replicas", req.target_region)
        return 0

    @activity.defn(name="switch_traffic")
    def switch_traffic(self, req: RoutingInput) -> RoutingState:
        self._record("switch_traffic", req.to_fleet.fleet_id)
        self.weights[req.to_fleet.fleet_id] = 100
        if req.from_fleet is not None and req.from_fleet.fleet_id != req.to_fleet.fleet_id:
            self.weights[req.from_fleet.fleet_id] = 0
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="restore_traffic")
    def restore_traffic(self, req: RoutingInput) -> RoutingState:
        self._record("restore_traffic", req.to_fleet.fleet_id)
        self.weights.pop(req.to_fleet.fleet_id, None)
        if req.from_fleet is not None:
            self.weights[req.from_fleet.fleet_id] = 100
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="remove_fleet_record")
    def remove_fleet_record(self, req: RoutingInput) -> RoutingState:
        self._record("remove_fleet_record", req.to_fleet.fleet_id)
        self.weights.pop(req.to_fleet.fleet_id, None)
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="forecast_demand")
    def forecast_demand(self, req: ForecastInput) -> DemandForecast:
        self._record("forecast_demand", req.time_slice.key)
        hours = tuple(
            HourQuantiles(hour=req.time_slice.start + timedelta(hours=i),
                          quantiles={"0.1": self.cpu_mhz * 0.8, "0.5": self.cpu_mhz, "0.9": self.cpu_mhz * 1.2})
            for i in range(1)
        )  # fmt: skip
        metric = MetricForecast(metric="cpu_mhz", unit="MHz", model="fake", hours=hours)
        return DemandForecast(
            entity_id=req.spec.entity_id, time_slice=req.time_slice, history_end=datetime(2026, 1, 1, tzinfo=UTC),
            history_hours=336, sizing_quantile=0.9, metrics={"cpu_mhz": metric}, readiness=self.readiness,
        )  # fmt: skip

    @activity.defn(name="lookup_entity")
    def lookup_entity(self, entity_id: str) -> EntitySpec:
        self._record("lookup_entity", entity_id)
        if entity_id not in self.specs:
            raise ApplicationError(f"entity_id: unknown entity {entity_id!r}", type="UnknownEntity", non_retryable=True)
        return self.specs[entity_id]

    def activities(self) -> list:
        return [
            self.provision_fleet, self.terminate_fleet, self.mark_fleet_role, self.warm_fleet,
            self.check_fleet_health, self.replicate_tables, self.check_sync, self.drop_replicas,
            self.switch_traffic, self.restore_traffic, self.remove_fleet_record, self.forecast_demand,
            self.lookup_entity,
        ]  # fmt: skip
