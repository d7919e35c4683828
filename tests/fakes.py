"""Activities replaced by fakes registered under the same names (no unittest.mock): they record every call
and fail on demand, so workflow tests can assert order, compensations and what was never called."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.application import FenceInput, FenceResult
from activities.ec2 import AdoptInput, FleetInput, ProvisionInput, ResizeInput
from activities.forecast import ForecastInput, RefineInput
from activities.monitoring import FleetSignals, ProbeInput
from activities.preflight import PreflightInput, PreflightReport
from activities.replication import (
    QueueForwardResult,
    ReadReplicaResult,
    ReplicationInput,
    ReplicationStatus,
    ShardPosition,
    TableCheckpoint,
    TwoWayStatus,
)
from activities.routing import (
    ListenerRef,
    ListenerState,
    ListenerWeightsInput,
    RestoreWeightsInput,
    RoutingInput,
    RoutingState,
    TargetGroupRef,
    TargetsInput,
    TargetsResult,
    WeightsInput,
)
from activities.warmup import HealthReport, WarmupInput
from shadowing.models import DemandForecast, EntitySpec, FleetRef, HourQuantiles, MetricForecast

GATE_S = 120.0  # a gated call goes on after this even if the test never opened it (a failed test frees its worker)


@dataclass
class FakeCloud:
    """Records calls as (activity name, key) and fails the named activities."""

    fail: set[str] = field(default_factory=set)
    unhealthy_after_cutover: bool = False
    out_of_sync: bool = False
    #: The app's write fence fails its next call in this state ("held"/"open") with this ApplicationError type.
    fence_errors: dict[str, str] = field(default_factory=dict)
    fence_unavailable: bool = False  # check_write_fence fails: the app does not answer the admin contract
    fence_calls: list[tuple[str, str | None]] = field(default_factory=list)  # (state, region) per set_write_fence
    two_way_error: str | None = None  # replicate_both_ways fails (non-retryable) with this type
    cpu_mhz: float = 10_000.0
    readiness: float = 0.9
    warm_s: float = 0.0
    refine_factor: float = 1.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    live: dict[str, FleetRef] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    specs: dict[str, EntitySpec] = field(default_factory=dict)
    provisioned: set[str] = field(default_factory=set)
    listener: dict[str, int] = field(default_factory=dict)
    target_groups: dict[str, str] = field(default_factory=dict)
    replicas: set[str] = field(default_factory=set)
    provision_inputs: list[ProvisionInput] = field(default_factory=list)
    #: Instance ids adopt_fleet tagged as the entity's (release_adopted untags them), and every id terminated.
    adopted: set[str] = field(default_factory=set)
    terminated: set[str] = field(default_factory=set)
    initial_warm_error: str | None = None  # e.g. "FleetNotWarm": the initial fleet's warm-up fails with this type
    warm_inputs: list[WarmupInput] = field(default_factory=list)
    #: (n, type): warming a fleet of more than n instances fails with this ApplicationError type (a grown fleet)
    warm_error_above: tuple[int, str] | None = None
    #: Hosted zones that exist: the pre-flight check refuses a spec naming another (None: every zone exists).
    zones: set[str] | None = None
    #: Activity name -> an event its calls wait for once recorded: a test holds a workflow inside that activity
    #: (and sees it there in `calls`) while it sends messages, then sets the event.
    gates: dict[str, threading.Event] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def _record(self, name: str, key: str, gate_name: str | None = None) -> None:
        self.calls.append((name, key))
        gate = self.gates.get(gate_name or name)
        if gate is not None:
            gate.wait(GATE_S)
        if name in self.fail:
            raise ApplicationError(f"injected failure in {name}", non_retryable=True)

    @activity.defn(name="provision_fleet")
    def provision_fleet(self, req: ProvisionInput) -> FleetRef:
        self._record("provision_fleet", req.fleet_id)
        self.provision_inputs.append(req)
        # Like EC2: a fleet that exists keeps its instances and grows to `quantity`.
        had = self.live.get(req.fleet_id)
        ids, addrs = (list(had.instance_ids), list(had.addresses)) if had else ([], [])
        for n in range(len(ids), req.quantity):
            ids.append(f"i-{req.slice_key}-{n}")
            addrs.append(f"10.0.0.{n}")
        fleet = FleetRef(
            fleet_id=req.fleet_id, entity_id=req.entity_id, region=req.region, instance_type=req.instance_type,
            instance_ids=tuple(ids), addresses=tuple(addrs), role=req.role,
        )  # fmt: skip
        self.live[req.fleet_id] = fleet
        self.provisioned.add(req.fleet_id)
        return fleet

    @activity.defn(name="adopt_fleet")
    def adopt_fleet(self, req: AdoptInput) -> FleetRef:
        """Like activities/ec2.py for instance ids: they become the fleet (tagged: `adopted`); no launch."""
        self._record("adopt_fleet", req.fleet_id)
        ids = req.adopt.instance_ids or tuple(f"i-{n:017x}" for n in range(2))
        fleet = FleetRef(
            fleet_id=req.fleet_id, entity_id=req.entity_id, region=req.region, instance_type=req.instance_types[0],
            instance_ids=ids, addresses=tuple(f"10.9.0.{n}" for n in range(len(ids))), role="active",
        )  # fmt: skip
        self.live[req.fleet_id] = fleet
        self.adopted.update(ids)
        return fleet

    @activity.defn(name="release_adopted")
    def release_adopted(self, fleet: FleetRef) -> int:
        self._record("release_adopted", fleet.fleet_id)
        released = self.adopted & set(fleet.instance_ids)
        self.adopted -= released
        self.live.pop(fleet.fleet_id, None)  # no longer the entity's; still running (`terminated` does not list it)
        return len(released)

    @activity.defn(name="terminate_fleet")
    def terminate_fleet(self, fleet: FleetRef) -> int:
        self._record("terminate_fleet", fleet.fleet_id)
        if had := self.live.get(fleet.fleet_id):
            self.terminated.update(had.instance_ids)
        return 0 if self.live.pop(fleet.fleet_id, None) is None else len(fleet.instance_ids)

    @activity.defn(name="shrink_fleet")
    def shrink_fleet(self, req: ResizeInput) -> FleetRef:
        self._record("shrink_fleet", req.fleet.fleet_id)
        live = self.live.get(req.fleet.fleet_id, req.fleet)
        both = zip(live.instance_ids, live.addresses, strict=False)
        pairs = [(i, a) for i, a in both if not req.keep or i in req.keep]
        kept = live.model_copy(update={
            "instance_ids": tuple(i for i, _ in pairs[: req.quantity]),
            "addresses": tuple(a for _, a in pairs[: req.quantity]),
        })  # fmt: skip
        self.live[req.fleet.fleet_id] = kept
        return kept

    @activity.defn(name="mark_fleet_role")
    def mark_fleet_role(self, fleet: FleetRef) -> FleetRef:
        self._record("mark_fleet_role", fleet.fleet_id)
        return fleet

    @activity.defn(name="warm_fleet")
    def warm_fleet(self, req: WarmupInput) -> HealthReport:
        self._record("warm_fleet", req.fleet.fleet_id)
        self.warm_inputs.append(req)
        if self.initial_warm_error and req.fleet.fleet_id.endswith(":initial"):
            raise ApplicationError(f"injected {self.initial_warm_error}", type=self.initial_warm_error,
                                   non_retryable=True)  # fmt: skip
        if self.warm_error_above and req.fleet.size > self.warm_error_above[0]:
            kind = self.warm_error_above[1]
            raise ApplicationError(f"injected {kind}", type=kind, non_retryable=True)
        time.sleep(self.warm_s)  # real time: the time-skipping server does not skip while an activity runs
        return HealthReport(healthy=True, healthy_count=req.fleet.size, total=req.fleet.size)

    @activity.defn(name="check_fleet_health")
    def check_fleet_health(self, req: FleetInput) -> HealthReport:
        self._record("check_fleet_health", req.fleet.fleet_id)
        ok = not self.unhealthy_after_cutover
        return HealthReport(healthy=ok, healthy_count=req.fleet.size if ok else 0, total=req.fleet.size)

    @activity.defn(name="replicate_tables")
    def replicate_tables(self, req: ReplicationInput) -> ReplicationStatus:
        self._record("replicate_tables", req.target_region)
        self.replicas.add(req.target_region)
        return ReplicationStatus(in_sync=False, items=3, checkpoint=_checkpoint(req, 0))

    @activity.defn(name="catch_up")
    def catch_up(self, req: ReplicationInput) -> ReplicationStatus:
        self._record("catch_up", f"{req.source_region}->{req.target_region}")
        seq = int(req.checkpoint[0].shards[0].sequence_number or 0) + 1 if req.checkpoint else 0
        return ReplicationStatus(in_sync=True, applied=1, checkpoint=_checkpoint(req, seq) if req.checkpoint else ())

    @activity.defn(name="create_read_replica")
    def create_read_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        self._record("create_read_replica", req.target_region)
        return ReadReplicaResult(db_instance_identifier=req.rds_instance or "", created=True, status="available")

    @activity.defn(name="promote_read_replica")
    def promote_read_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        self._record("promote_read_replica", req.target_region)
        return ReadReplicaResult(db_instance_identifier=req.rds_instance or "", promoted=True, status="available")

    @activity.defn(name="delete_read_replica")
    def delete_read_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        self._record("delete_read_replica", req.target_region)
        return ReadReplicaResult(db_instance_identifier=req.rds_instance or "", deleted=True)

    @activity.defn(name="forward_queue")
    def forward_queue(self, req: ReplicationInput) -> QueueForwardResult:
        self._record("forward_queue", f"{req.source_region}->{req.target_region}")
        return QueueForwardResult(moved={q: 1 for q in req.queues})

    @activity.defn(name="check_sync")
    def check_sync(self, req: ReplicationInput) -> ReplicationStatus:
        # the gate "check_sync" holds the final check; the copy's verification while preparing is "check_sync:full"
        final = req.verify == "changed"
        self._record("check_sync", f"{req.target_region} {req.verify}", None if final else "check_sync:full")
        ok = not self.out_of_sync
        back = req.model_copy(update={"source_region": req.target_region, "target_region": req.source_region})
        return ReplicationStatus(
            in_sync=ok, detail="tables differ: t" if not ok else "", mode=req.verify if req.verified else "full-scan",
            checkpoint=_checkpoint(req, 1), verified=_checkpoint(req, 1) if ok else req.verified,
            reverse_checkpoint=_checkpoint(back, 0), changed=2, checked=2, check_s=0.01,
        )  # fmt: skip

    @activity.defn(name="replicate_both_ways")
    def replicate_both_ways(self, req: ReplicationInput) -> TwoWayStatus:
        self._record("replicate_both_ways", f"{req.source_region}<->{req.target_region}")
        if self.two_way_error:
            raise ApplicationError(f"injected {self.two_way_error}", type=self.two_way_error, non_retryable=True)
        seq = int(req.checkpoint[0].shards[0].sequence_number or 0) + 1 if req.checkpoint else 0
        back = int(req.reverse_checkpoint[0].shards[0].sequence_number or 0) + 1 if req.reverse_checkpoint else 0
        fwd = ReplicationStatus(in_sync=True, applied=1, checkpoint=_checkpoint(req, seq))
        rev = req.model_copy(update={"source_region": req.target_region, "target_region": req.source_region})
        return TwoWayStatus(forward=fwd, back=ReplicationStatus(in_sync=True, applied=1, conflicts=1,
                                                                checkpoint=_checkpoint(rev, back)))  # fmt: skip

    @activity.defn(name="check_write_fence")
    def check_write_fence(self, req: FenceInput) -> FenceResult:
        self._record("check_write_fence", req.fleet.fleet_id)
        if self.fence_unavailable:
            raise ApplicationError(
                f"write fence: {req.fleet.instance_ids[0] if req.fleet.instance_ids else '?'} at "
                "http://127.0.0.1:1/admin/writes did not answer", type="FenceUnavailable", non_retryable=True,
            )  # fmt: skip
        return FenceResult(state="open", instances=req.fleet.size)

    @activity.defn(name="set_write_fence")
    def set_write_fence(self, req: FenceInput) -> FenceResult:
        self._record("set_write_fence", f"{req.state} {req.region or ''}".strip())
        self.fence_calls.append((req.state, req.region))
        if error := self.fence_errors.pop(req.state, None):
            raise ApplicationError(f"injected {error}", type=error, non_retryable=True)
        return FenceResult(state=req.state, instances=req.fleet.size, region=req.region or req.fleet.region)

    @activity.defn(name="drop_replicas")
    def drop_replicas(self, req: ReplicationInput) -> int:
        self._record("drop_replicas", req.target_region)
        if req.target_region not in self.replicas:
            return 0
        self.replicas.discard(req.target_region)
        return 1

    @activity.defn(name="switch_traffic")
    def switch_traffic(self, req: RoutingInput) -> RoutingState:
        self._record("switch_traffic", req.to_fleet.fleet_id)
        self.weights[req.to_fleet.fleet_id] = 100
        if req.from_fleet is not None and req.from_fleet.fleet_id != req.to_fleet.fleet_id:
            self.weights[req.from_fleet.fleet_id] = 0
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="remove_fleet_record")
    def remove_fleet_record(self, req: RoutingInput) -> RoutingState:
        self._record("remove_fleet_record", req.to_fleet.fleet_id)
        self.weights.pop(req.to_fleet.fleet_id, None)
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="routing_state")
    def routing_state(self, req: RoutingInput) -> RoutingState:
        self._record("routing_state", req.dns_name)
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="set_weights")
    def set_weights(self, req: WeightsInput) -> RoutingState:
        self._record("set_weights", ",".join(f"{k}={v}" for k, v in sorted(req.weights.items())))
        self.weights.update(req.weights)
        return RoutingState(weights=dict(self.weights), ttl_s=req.ttl_s)

    @activity.defn(name="restore_weights")
    def restore_weights(self, req: RestoreWeightsInput) -> RoutingState:
        self._record("restore_weights", req.dns_name)
        self.weights = dict(req.previous.weights)
        return RoutingState(weights=dict(self.weights))

    @activity.defn(name="register_fleet_targets")
    def register_fleet_targets(self, req: TargetsInput) -> TargetGroupRef:
        self._record("register_fleet_targets", req.fleet.fleet_id)
        arn = self.target_groups.setdefault(req.fleet.fleet_id, f"arn:tg/{req.fleet.fleet_id}")
        return TargetGroupRef(fleet_id=req.fleet.fleet_id, region=req.fleet.region, target_group_arn=arn)

    @activity.defn(name="deregister_fleet_targets")
    def deregister_fleet_targets(self, req: TargetsInput) -> TargetsResult:
        self._record("deregister_fleet_targets", req.fleet.fleet_id)
        return TargetsResult(deleted=self.target_groups.pop(req.fleet.fleet_id, None) is not None)

    @activity.defn(name="listener_state")
    def listener_state(self, req: ListenerRef) -> ListenerState:
        self._record("listener_state", req.listener_arn)
        return ListenerState(listener_arn=req.listener_arn, weights=dict(self.listener))

    @activity.defn(name="set_listener_weights")
    def set_listener_weights(self, req: ListenerWeightsInput) -> ListenerState:
        self._record("set_listener_weights", ",".join(f"{k}={v}" for k, v in sorted(req.weights.items())))
        self.listener = dict(req.weights)
        return ListenerState(listener_arn=req.listener_arn, weights=dict(self.listener))

    @activity.defn(name="probe_fleet")
    def probe_fleet(self, req: ProbeInput) -> FleetSignals:
        """Old fleets answer well; shadows too, unless `unhealthy_after_cutover` (then every request fails). The gate
        "probe_fleet:<fleet id>" holds the probes of one fleet."""
        fleet = req.fleet
        shadow = fleet.fleet_id in self.provisioned
        self._record("probe_fleet", fleet.fleet_id, f"probe_fleet:{fleet.fleet_id}")
        n = req.requests_per_instance * fleet.size
        bad = self.unhealthy_after_cutover and shadow
        return FleetSignals(fleet_id=fleet.fleet_id, source="probe", samples=n, errors=n if bad else 0,
                            p50_ms=None if bad else 5.0, p99_ms=None if bad else 9.0)  # fmt: skip

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

    @activity.defn(name="refine_forecast")
    def refine_forecast(self, req: RefineInput) -> DemandForecast:
        """What newer observations would say: demand `refine_factor` x the fake's `cpu_mhz` (not compounding)."""
        self._record("refine_forecast", req.forecast.time_slice.key)
        metric = req.forecast.metrics["cpu_mhz"]
        level = self.cpu_mhz * self.refine_factor
        hours = tuple(
            h.model_copy(update={"quantiles": {"0.1": level * 0.8, "0.5": level, "0.9": level * 1.2}})
            for h in metric.hours
        )
        return req.forecast.model_copy(update={"metrics": {"cpu_mhz": metric.model_copy(update={"hours": hours})}})

    @activity.defn(name="check_entity")
    def check_entity(self, req: PreflightInput) -> PreflightReport:
        """Like activities/preflight.py for the hosted zone only: `zones` says which exist."""
        self._record("check_entity", req.spec.entity_id)
        if self.zones is not None and req.spec.hosted_zone_id not in self.zones:
            raise ApplicationError(f"spec.hosted_zone_id: hosted zone {req.spec.hosted_zone_id} does not exist",
                                   type="InvalidRequest", non_retryable=True)  # fmt: skip
        return PreflightReport(checked=("zone: ok",))

    @activity.defn(name="lookup_entity")
    def lookup_entity(self, entity_id: str) -> EntitySpec:
        self._record("lookup_entity", entity_id)
        if entity_id not in self.specs:
            raise ApplicationError(f"entity_id: unknown entity {entity_id!r}", type="UnknownEntity", non_retryable=True)
        return self.specs[entity_id]

    def activities(self) -> list:
        return [
            self.provision_fleet, self.adopt_fleet, self.release_adopted, self.terminate_fleet, self.mark_fleet_role,
            self.warm_fleet,
            self.check_fleet_health, self.replicate_tables, self.check_sync, self.drop_replicas,
            self.switch_traffic, self.remove_fleet_record, self.forecast_demand,
            self.lookup_entity, self.catch_up, self.create_read_replica, self.promote_read_replica,
            self.delete_read_replica, self.forward_queue, self.routing_state, self.set_weights, self.restore_weights,
            self.register_fleet_targets, self.deregister_fleet_targets, self.listener_state,
            self.set_listener_weights, self.probe_fleet, self.shrink_fleet, self.refine_forecast, self.check_entity,
            self.replicate_both_ways, self.check_write_fence, self.set_write_fence,
        ]  # fmt: skip


def _checkpoint(req: ReplicationInput, seq: int) -> tuple[TableCheckpoint, ...]:
    """A stand-in stream position per table whose sequence number counts catch-up passes."""
    return tuple(
        TableCheckpoint(
            table=t, stream_arn=f"arn:stream/{t}", shards=(ShardPosition(shard_id="s0", sequence_number=str(seq)),)
        )
        for t in req.tables
    )
