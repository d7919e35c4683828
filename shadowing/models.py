"""The contract: every value that crosses a workflow, activity, client or CLI boundary.

Frozen pydantic v2 models. New fields always get defaults so that running workflows keep decoding their
histories. Validation here is the first door for bad input: a malformed request fails with a
`pydantic.ValidationError` that names the field, before anything reaches Temporal or AWS.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shadowing.catalog import INSTANCE_TYPES, REGIONS

_ENTITY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: One DNS label (RFC 1123): letters, digits and '-', not at either end; '_' allowed (service labels).
_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_HOSTED_ZONE = re.compile(r"[A-Z0-9]{1,32}")  # AWS: Z..., moto: any upper-case alphanumerics
#: Longest wait or window any policy may name (a week): a bound far past any slice, far below timedelta's.
MAX_SECONDS = 7 * 86400.0
#: Slices one schedule may hold: the workflow keeps them in its state (continue-as-new carries them).
MAX_SLICES = 1000
#: A registry/repository[:tag][@digest] reference; no characters a boot script would have to quote.
_CONTAINER_IMAGE = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"


def _check_region(value: str) -> str:
    if value not in REGIONS:
        raise ValueError(f"unknown AWS region {value!r}")
    return value


def _check_instance_type(value: str) -> str:
    if value not in INSTANCE_TYPES:
        known = ", ".join(sorted(INSTANCE_TYPES))
        raise ValueError(f"unknown instance type {value!r} (known: {known})")
    return value


def _check_entity_id(value: str) -> str:
    if not _ENTITY_ID.fullmatch(value):
        raise ValueError(f"entity id {value!r} must be 1-63 lowercase letters, digits or '-'")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def normalize_dns_name(value: str) -> str:
    """Lower case, no trailing dot, RFC 1123 labels, at most 253 characters (Route53 stores names in lower case)."""
    name = value.rstrip(".").lower()
    if not 3 <= len(name) <= 253:
        raise ValueError(f"DNS name {value!r} must be 3-253 characters")
    bad = [label for label in name.split(".") if not _DNS_LABEL.fullmatch(label)]
    if bad or "." not in name:
        raise ValueError(f"DNS name {value!r} must be dot-separated labels of 1-63 letters, digits or '-' ({bad})")
    return name


def _check_hosted_zone(value: str) -> str:
    zone = value.removeprefix("/hostedzone/")
    if not _HOSTED_ZONE.fullmatch(zone):
        raise ValueError(f"hosted zone id {value!r} must be 1-32 upper-case letters or digits, e.g. Z0123456789ABC")
    return zone


#: AWS's IPv6 service addresses (metadata, DNS, time): link-local in all but name.
AWS_IPV6_SERVICES = ipaddress.ip_network("fd00:ec2::/32")


def check_address(value: str, loopback: bool = True) -> str:
    """An instance address as a canonical IP: never link-local (the metadata service), multicast, unspecified or
    reserved, IPv4-mapped forms included; loopback only with `loopback`. ValueError says which."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"address {value!r} is not an IP address") from None
    seen = ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip  # ::ffff:169.254.169.254 too
    kinds = {
        "link-local (the instance metadata service lives there)": seen.is_link_local or seen in AWS_IPV6_SERVICES,
        "multicast": seen.is_multicast, "unspecified": seen.is_unspecified, "reserved": seen.is_reserved,
        "loopback": seen.is_loopback and not loopback,
    }  # fmt: skip
    if bad := [kind for kind, hit in kinds.items() if hit]:
        raise ValueError(f"address {value!r} is {bad[0]}: not an instance address")
    return str(ip)


Region = Annotated[str, AfterValidator(_check_region)]
InstanceTypeName = Annotated[str, AfterValidator(_check_instance_type)]
EntityId = Annotated[str, AfterValidator(_check_entity_id)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
DnsName = Annotated[str, AfterValidator(normalize_dns_name)]
HostedZoneId = Annotated[str, AfterValidator(_check_hosted_zone)]
Address = Annotated[str, AfterValidator(check_address)]
#: A duration in seconds: finite (every model refuses inf/nan) and at most a week.
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


class Frozen(BaseModel):
    # inf and nan are refused everywhere: `timedelta(seconds=inf)` raises inside a workflow task, forever.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TimeSlice(Frozen):
    """A half-open interval [start, end) in UTC; both ends must carry a time zone."""

    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeSlice:
        if self.end <= self.start:
            raise ValueError(f"time_slice.end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    @property
    def key(self) -> str:
        """Compact, sortable id of the slice used in workflow ids and tags."""
        return self.start.strftime("%Y%m%dT%H%M%SZ")

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def same_as(self, other: TimeSlice) -> bool:
        return self.start == other.start and self.end == other.end


class ScheduledSlice(TimeSlice):
    """One slice of an allocation schedule: where the entity must serve from during it."""

    region: Region

    def as_time_slice(self) -> TimeSlice:
        return TimeSlice(start=self.start, end=self.end)


class AllocationSchedule(Frozen):
    """The entity's slices, in order and without overlap."""

    slices: tuple[ScheduledSlice, ...] = Field(min_length=1, max_length=MAX_SLICES)

    @model_validator(mode="after")
    def _no_overlap(self) -> AllocationSchedule:
        for before, after in zip(self.slices, self.slices[1:], strict=False):
            if after.start < before.end:
                raise ValueError(f"schedule.slices overlap or are unordered at {after.start.isoformat()}")
        return self

    def find(self, time_slice: TimeSlice) -> ScheduledSlice | None:
        return next((s for s in self.slices if s.same_as(time_slice)), None)


class DegradationPolicy(Frozen):
    """When the post-cutover watch calls the new fleet degraded (see `workflows.verdict.judge`)."""

    min_samples: int = Field(20, ge=1, description="requests a signal needs before its rates are judged")
    error_factor: float = Field(2.0, ge=1.0, le=1000, description="error rate may grow to baseline x this ...")
    error_margin: float = Field(0.01, ge=0.0, le=1.0, description="... or to baseline + this, whichever is higher")
    latency_factor: float = Field(1.5, ge=1.0, le=1000, description="p99 above baseline p99 x this is degraded ...")
    latency_floor_ms: float = Field(
        50.0, ge=0.0, le=600_000, description="... when it is also above this absolute floor"
    )
    latency_ceiling_ms: float = Field(
        2000.0, gt=0.0, le=600_000, description="p99 above this is degraded whatever the baseline"
    )
    no_data_probes: int = Field(3, ge=1, description="consecutive signals without samples that count as degraded")


class EntityPolicy(Frozen):
    """How cautious and how generous the product is for one entity."""

    sizing_quantile: float = Field(0.85, gt=0.5, lt=1.0)
    readiness_threshold: float = Field(0.4, ge=0.0, le=1.0)
    target_utilisation: float = Field(0.7, gt=0.0, le=1.0)
    max_instances: int = Field(20, ge=1, le=500)
    scale_in: bool = Field(
        True, description="shrink the active fleet at a slice start when the forecast needs fewer instances"
    )
    scale_in_min: int = Field(1, ge=1, description="shrink only when at least this many instances are surplus")
    scale_in_trusted_only: bool = Field(
        False, description="shrink only on a forecast whose readiness reaches readiness_threshold"
    )
    rightsize_min_saving: float = Field(
        0.2, ge=0.0, le=1.0,
        description="move to a cheaper instance type in place when it saves at least this share of the hourly cost "
        "(on a trusted forecast; 1 = never)",
    )  # fmt: skip
    lead_time_s: float = Field(
        900.0, gt=0, le=MAX_SECONDS, description="forecast and prepare this long before a slice starts"
    )
    prepare_s: float = Field(
        300.0,
        gt=0,
        le=MAX_SECONDS,
        description="expected time to provision and warm shadows; less time left lowers readiness",
    )
    warmup_timeout_s: float = Field(600.0, gt=0, le=86400)
    warm_p99_ms: float = Field(
        25.0, gt=0, le=60_000, description="an instance is warm once its p99 under synthetic traffic stays below this"
    )
    watch_s: float = Field(
        120.0, ge=0, le=86400, description="post-cutover watch window before the old fleet is retired"
    )
    cutover_strategy: Literal["all-at-once", "canary", "linear"] = "all-at-once"
    record_ttl_s: int = Field(30, ge=1, le=86400, description="TTL of the weighted records the cutover writes")
    degradation: DegradationPolicy = DegradationPolicy()
    spot: bool = Field(False, description="ask for spot capacity for shadows; the unfilled part runs on-demand")
    spot_max_price_ratio: float = Field(
        1.0, gt=0.0, le=10.0, description="highest spot price to pay, as a fraction of the on-demand price"
    )
    spot_deadline_s: float = Field(
        120.0, gt=0, le=3600, description="how long to wait for spot capacity before on-demand"
    )
    max_replication_lag_s: float = Field(
        default=5.0,
        ge=0.0,
        le=3600,
        description="the final sync check fails when the target's data lags more than this",
    )
    warm_up: bool = Field(
        default=True, description="warm shadows with synthetic traffic before cutover (False: only wait for health)"
    )
    catch_up_interval_s: float = Field(
        default=60.0,
        ge=1,
        le=86400,
        description="while shadows wait for the slice, replay the source's writes this often",
    )
    mode: Literal["active", "forecast-only"] = Field(
        default="active", description="forecast-only: forecast, decide and report every slice, provision nothing"
    )
    approval_required: bool = Field(
        default=False, description="a slice's shadows are provisioned only after an `approve` update"
    )
    approval_timeout_s: float = Field(
        default=3600.0, gt=0, le=MAX_SECONDS, description="a slice not approved this long after its decision is skipped"
    )
    lead_time_margin: float = Field(
        default=1.5,
        ge=1.0,
        le=10.0,
        description="lead time >= this x the slowest recent measured preparation (provision + warm + replicate)",
    )
    reforecast_interval_s: float = Field(
        default=600.0,
        ge=60,
        le=86400,
        description="while shadows wait for the slice, re-forecast and resize them this often",
    )
    step_timeout_s: float = Field(
        default=120.0, gt=0, le=3600,
        description="a short step (a few AWS calls) not done in this long is retried: how soon a crashed worker's "
        "step is noticed",
    )  # fmt: skip
    heartbeat_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="long steps heartbeat; one silent this long is retried elsewhere"
    )


class DemandClock(Frozen):
    """Maps wall-clock time onto the time line of the usage history (identity when absent).

    The demo compresses time: one hour of real usage history passes in `seconds_per_hour` seconds, so that
    a slice of tens of seconds is forecast from the trace's real hourly history.
    """

    origin: UtcDatetime
    history_origin: UtcDatetime
    seconds_per_hour: float = Field(gt=0, le=3600)

    def to_history(self, moment: datetime) -> datetime:
        hours = (moment - self.origin).total_seconds() / self.seconds_per_hour
        return self.history_origin + timedelta(hours=hours)


def arn_region(arn: str) -> str | None:
    """The region field of an ARN (`arn:aws:<service>:<region>:...`), None when `arn` has too few fields."""
    parts = arn.split(":")
    return parts[3] if len(parts) >= 6 else None


class EntitySpec(Frozen):
    """An application a platform team runs on AWS, and what the product may do with it."""

    entity_id: EntityId
    home_region: Region
    instance_types: tuple[InstanceTypeName, ...] = Field(min_length=1)
    initial_instances: int = Field(1, ge=1, le=500)
    dns_name: DnsName = Field(description="record that clients resolve, e.g. api.example.internal (lower-cased)")
    hosted_zone_id: HostedZoneId
    dynamodb_tables: tuple[str, ...] = ()
    metrics_namespace: str = "Shadowing/Usage"
    policy: EntityPolicy = EntityPolicy()
    demand_clock: DemandClock | None = None
    holiday_country: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2 country whose public holidays shape demand"
    )
    events: tuple[date, ...] = Field((), description="launches, conferences: days of the usage history's calendar")
    listener_arn: str | None = Field(None, description="ELBv2 listener whose forward weights the cutover moves")
    rds_instance: str | None = Field(default=None, description="RDS instance id/ARN in home_region to replicate")
    sqs_queues: tuple[str, ...] = Field(default=(), description="SQS queue names whose messages move with the entity")
    image_id: str | None = Field(
        None, pattern=r"^ami-[0-9a-f]{8,17}$", description="the entity's AMI in home_region (copied where needed)"
    )
    user_data: str | None = Field(None, max_length=16384, description="cloud-init script run at instance boot")
    container_image: str | None = Field(
        None, pattern=_CONTAINER_IMAGE, description="image the instances pull and run at boot (instead of user_data)"
    )


class RegisterEntityInput(Frozen):
    """Starts an entity's `EntitySchedule`."""

    spec: EntitySpec
    schedule: AllocationSchedule
    history_limit: int = Field(
        4000, ge=100, le=40_000, description="continue-as-new once the run's history is longer than this"
    )
    name: str | None = Field(
        None, pattern=r"^[a-z0-9-]{1,63}$",
        description="the entity's name in Temporal (child workflow ids, search attribute): its pseudonym when "
        "payloads are encrypted, set by the client SDK (shadowing/ids.py); None: the entity id",
    )  # fmt: skip


def owns_fleet(entity_id: str, fleet: FleetRef) -> bool:
    """Fleet ids are `<entity id>:<slice key or role>` (workflows.policy.fleet_id)."""
    return fleet.entity_id == entity_id and fleet.fleet_id.startswith(f"{entity_id}:")


class FleetRef(Frozen):
    """A set of instances that serve the entity together, found again by its tags."""

    fleet_id: str
    entity_id: str
    region: Region
    instance_type: InstanceTypeName
    instance_ids: tuple[str, ...] = ()
    addresses: tuple[Address, ...] = ()
    role: Literal["active", "shadow", "retired"] = "shadow"
    spot_instance_ids: tuple[str, ...] = Field((), description="the subset of instance_ids that run on spot")
    availability_zones: tuple[str, ...] = Field((), description="AZ of each instance, in instance_ids order")
    image_id: str | None = Field(None, description="AMI the fleet was launched from (in its region)")
    launch_template: str | None = Field(None, description="name of the launch template the fleet used")

    @property
    def size(self) -> int:
        return len(self.instance_ids)


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


class PredictDemandInput(Frozen):
    """Input of the `PredictDemand` workflow: `{"entity_id": ..., "time_slice": {"start": ..., "end": ...}}`."""

    entity_id: EntityId
    time_slice: TimeSlice
    spec: EntitySpec | None = None


class ForecastInput(Frozen):
    spec: EntitySpec
    time_slice: TimeSlice


class RefineInput(Frozen):
    """`refine_forecast`: the slice forecast made earlier, to sharpen with what was observed since."""

    spec: EntitySpec
    forecast: DemandForecast


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


class MigrationResult(Frozen):
    outcome: Literal["migrated", "released"]
    fleet: FleetRef | None = None
    retired: FleetRef | None = None
    cutover_at: UtcDatetime | None = None
    compensations_run: tuple[str, ...] = ()
    detail: str = ""
    cost: CostEntry | None = None


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


# ---- activities ---------------------------------------------------------------------------------------------


class ProvisionInput(Frozen):
    """`provision_fleet`: make the fleet have `quantity` live instances, spread over the region's AZs."""

    entity_id: str
    fleet_id: str
    slice_key: str
    region: Region
    instance_type: InstanceTypeName
    quantity: int = Field(gt=0, le=500)
    role: Literal["active", "shadow"] = "shadow"
    source_image_id: str | None = Field(
        None, pattern=r"^ami-[0-9a-f]{8,17}$", description="entity AMI; default: latest Amazon Linux 2023"
    )
    source_region: Region | None = Field(None, description="region of source_image_id; default: `region`")
    user_data: str | None = Field(None, max_length=16384, description="cloud-init script run at boot")
    container_image: str | None = Field(
        None, pattern=_CONTAINER_IMAGE, description="pulled and run at boot by a generated script"
    )
    market: Literal["on-demand", "spot"] = "on-demand"
    max_price_usd: float | None = Field(
        None, gt=0, le=1000, description="spot: highest USD/hour; default the on-demand price"
    )
    spot_deadline_s: float = Field(
        120.0, gt=0, le=3600, description="spot: wait this long, then launch the rest on-demand"
    )
    image_timeout_s: float = Field(1800.0, gt=0, le=86400, description="how long one attempt waits for an AMI copy")

    @model_validator(mode="after")
    def _one_boot_payload(self) -> ProvisionInput:
        if self.user_data and self.container_image:
            raise ValueError("give user_data or container_image, not both")
        return self


class ResizeInput(Frozen):
    """`shrink_fleet`: terminate the fleet's newest instances beyond `quantity`."""

    fleet: FleetRef
    quantity: int = Field(ge=0, le=500)
    keep: tuple[str, ...] = Field((), description="instance ids to keep (the scale-in's, already out of DNS)")


class FleetInput(Frozen):
    fleet: FleetRef
    timeout_s: float = Field(600.0, gt=0, le=86400)


class WarmupInput(FleetInput):
    """Warm-up of a fleet by synthetic traffic; a plain `FleetInput` decodes into it with these defaults.

    An instance is warm when the p99 of its last round of `window` requests is under `p99_threshold_ms` and its
    p50 and p99 moved less than `stable_ratio` (relative, or of the threshold) from the round before.
    """

    p99_threshold_ms: float = Field(25.0, gt=0, le=60_000)
    stable_ratio: float = Field(0.2, gt=0, lt=1)
    window: int = Field(50, ge=2, le=10_000)
    keys: int = Field(200, ge=1)
    concurrency: int = Field(4, ge=1, le=64)
    request_timeout_s: float = Field(2.0, gt=0, le=600)


class InstanceWarmup(Frozen):
    """One instance's warm-up: its last round's latencies (client-side, ms) and whether it is warm."""

    instance_id: str
    rounds: int = 0
    requests: int = 0
    errors: int = 0
    first_p99_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    warm: bool = False


class HealthReport(Frozen):
    healthy: bool
    healthy_count: int
    total: int
    detail: str = ""
    #: Filled by `warm_fleet` with a data plane: per-instance warm-up rounds (empty for EC2-only probes).
    instances: tuple[InstanceWarmup, ...] = ()


class ShardPosition(Frozen):
    """Where catch-up resumes in one stream shard: after `sequence_number`, or at TRIM_HORIZON when None."""

    shard_id: str
    sequence_number: str | None = None


class TableCheckpoint(Frozen):
    """A table's DynamoDB Streams position: every record up to it is in the target (or superseded there)."""

    table: str
    stream_arn: str
    shards: tuple[ShardPosition, ...] = ()


class ReplicationConflict(Frozen):
    """One write the conflict rule rejected: `key` is `key_digest` of the item key (sha256: + 16 hex), never the
    key itself; `winner` the side that kept its item."""

    table: str
    key: str
    winner: Literal["source", "target"] = "target"


class ReplicationInput(Frozen):
    """Replication activities' input. `checkpoint` comes from the previous `replicate_tables` / `catch_up`."""

    entity_id: str
    tables: tuple[str, ...]
    source_region: Region
    target_region: Region
    checkpoint: tuple[TableCheckpoint, ...] = ()
    max_lag_s: float = Field(default=5.0, ge=0.0, le=3600, description="check_sync: in sync only when lag_s <= this")
    max_records: int = Field(default=10000, ge=1, description="catch-up: stream records applied per table and pass")
    mode: Literal["copy", "global-table"] = Field(
        default="copy", description="copy: scan + Streams catch-up (moto too); global-table: DynamoDB replicas (AWS)"
    )
    timeout_s: float = Field(
        default=1800.0, gt=0, le=86400, description="global-table / RDS: how long to wait for ACTIVE"
    )
    queues: tuple[str, ...] = ()
    visibility_timeout_s: int = Field(default=30, ge=0, le=43200, description="forward_queue: visibility timeout")
    rds_instance: str | None = Field(default=None, description="source RDS instance id or ARN (source_region)")


class ReplicationStatus(Frozen):
    in_sync: bool
    items: int = 0
    detail: str = ""
    created_tables: tuple[str, ...] = ()
    checkpoint: tuple[TableCheckpoint, ...] = ()
    applied: int = Field(default=0, description="stream records written to the target in this pass")
    conflicts: int = Field(default=0, description="keys whose newest replayed write lost to a newer target item")
    conflict_report: tuple[ReplicationConflict, ...] = Field(default=(), description="the first conflicts (capped)")
    lag_s: float = Field(default=0.0, description="age of the oldest record not yet applied; 0 when caught up")
    pending: int = Field(default=0, description="stream records not yet applied")


class QueueForwardResult(Frozen):
    """`forward_queue`: messages moved per queue name, and what a retry skipped as already sent."""

    moved: dict[str, int] = {}
    skipped_duplicates: int = 0
    created_queues: tuple[str, ...] = ()
    in_flight: int = Field(default=0, description="source messages held by consumers when forwarding stopped")


class ReadReplicaResult(Frozen):
    """`create_read_replica` / `promote_read_replica` / `delete_read_replica`."""

    db_instance_identifier: str = ""
    db_instance_arn: str = ""
    region: str = ""
    created: bool = False
    promoted: bool = False
    deleted: bool = False
    status: str = ""


class RoutingInput(Frozen):
    hosted_zone_id: HostedZoneId
    dns_name: DnsName
    to_fleet: FleetRef
    from_fleet: FleetRef | None = None
    ttl_s: int | None = Field(default=None, ge=1, le=86400, description="TTL of the records written; default 30 s")


class RoutingState(Frozen):
    """Weights of the entity's weighted records, by fleet id (with the records' TTL and the last change id)."""

    weights: dict[str, int]
    ttl_s: int | None = None
    change_id: str | None = None


class WeightsInput(Frozen):
    """Route53: give each named fleet's weighted record its weight, in one change batch.

    `fleets` supplies the addresses of every fleet named in `weights`; records of fleets not named are left alone.
    """

    hosted_zone_id: HostedZoneId
    dns_name: DnsName
    fleets: tuple[FleetRef, ...]
    weights: dict[str, int]
    ttl_s: int = Field(30, ge=1, le=86400)
    settle_timeout_s: float = Field(120.0, gt=0, le=3600, description="how long to wait for Route53 to report INSYNC")

    @model_validator(mode="after")
    def _one_entity(self) -> WeightsInput:
        if len({f.entity_id for f in self.fleets}) != 1:
            raise ValueError("fleets: must name at least one fleet, all of one entity")
        return self

    @property
    def entity_id(self) -> str:
        return self.fleets[0].entity_id


class RestoreWeightsInput(Frozen):
    """Route53 rollback: make the weighted records exactly `previous` again (records it lacks are deleted).

    `fleets` is needed only for a fleet whose record has disappeared since `previous` was captured.
    """

    entity_id: EntityId = Field(description="whose records these are: no other entity's record is touched")
    hosted_zone_id: HostedZoneId
    dns_name: DnsName
    previous: RoutingState
    fleets: tuple[FleetRef, ...] = ()
    settle_timeout_s: float = Field(120.0, gt=0, le=3600)


class TargetsInput(Frozen):
    """ELBv2: the fleet's target group (found by a name derived from the fleet id, and its tag)."""

    fleet: FleetRef
    port: int = Field(80, ge=1, le=65535)
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"
    health_check_path: str = "/health"
    vpc_id: str | None = Field(None, description="default: the VPC of the fleet's first instance")


class TargetGroupRef(Frozen):
    fleet_id: str
    region: Region
    target_group_arn: str
    instance_ids: tuple[str, ...] = ()


class TargetsResult(Frozen):
    deregistered: int = 0
    deleted: bool = False
    detail: str = ""


class ListenerRef(Frozen):
    """The entity's ELBv2 listener; it must carry the entity's ownership tags."""

    entity_id: EntityId
    listener_arn: str


class ListenerWeightsInput(Frozen):
    """ELBv2: forward the listener's default action to these target groups (ARN -> weight 0..999)."""

    entity_id: EntityId
    listener_arn: str
    weights: dict[str, int]


class ListenerState(Frozen):
    """The listener's default forward weights by target group ARN."""

    listener_arn: str
    weights: dict[str, int]


# ---- post-cutover monitoring ------------------------------------------------------------------------------


class ProbeInput(Frozen):
    """`requests_per_instance` direct GETs of `path` on each instance of the fleet."""

    fleet: FleetRef
    requests_per_instance: int = Field(10, ge=1, le=1000)
    path: str = "/work"
    timeout_s: float = Field(2.0, gt=0, le=600)


class InstanceSignals(Frozen):
    instance_id: str
    samples: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    detail: str = ""


class FleetSignals(Frozen):
    """Health of a fleet over a window. `samples == 0` means no data: rates and latencies are then None."""

    fleet_id: str
    source: Literal["probe", "cloudwatch"]
    samples: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    instances: tuple[InstanceSignals, ...] = ()
    detail: str = ""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.samples if self.samples else None


class Verdict(Frozen):
    degraded: bool
    reasons: tuple[str, ...] = ()


# ---- entity workflow state --------------------------------------------------------------------------------


class Event(Frozen):
    seq: int = 0
    at: UtcDatetime
    kind: str
    message: str
    slice_key: str | None = None


class SliceStatus(Frozen):
    time_slice: ScheduledSlice
    state: Literal[
        "pending", "forecasting", "awaiting-approval", "waiting-for-capacity", "preparing", "migrating", "done",
        "skipped", "failed", "released", "planned",
    ] = "pending"  # fmt: skip
    forecast: DemandForecast | None = None
    decision: Decision | None = None
    migration_id: str | None = None
    outcome: str | None = None
    error: str | None = None


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


# ---- fleet coordination -------------------------------------------------------------------------------


class CoordinatorLimits(Frozen):
    """Account-wide limits shared by every entity: concurrent migrations and shadow instances per region."""

    max_concurrent_migrations: int = Field(10, ge=1)
    region_shadow_quota: int = Field(200, ge=1, description="shadow instances in flight per region")
    region_quotas: dict[str, int] = Field(default_factory=dict, description="per-region overrides")

    def quota(self, region: str) -> int:
        return self.region_quotas.get(region, self.region_shadow_quota)


class LeaseRequest(Frozen):
    """An entity asks for the right to run one migration of `instances` shadows in `region` until `expires_at`."""

    holder: str = Field(description="the entity workflow id the grant is signalled to")
    slice_key: str
    region: Region
    instances: int = Field(ge=1)
    expires_at: UtcDatetime
    limits: CoordinatorLimits | None = None
    coordinator_id: str = "shadowing-coordinator"
    nonce: str = Field("", max_length=64, description="echoed in the grant: only the requester's answer counts")


class LeaseRelease(Frozen):
    holder: str
    slice_key: str


class LeaseGrant(Frozen):
    """Signalled to the holder: granted, or denied with the reason (a request larger than a quota)."""

    slice_key: str
    granted: bool
    coordinator_id: str
    reason: str = ""
    nonce: str = Field("", max_length=64, description="the request's nonce")


class CoordinatorState(Frozen):
    limits: CoordinatorLimits = CoordinatorLimits()
    held: tuple[LeaseRequest, ...] = ()
    waiting: tuple[LeaseRequest, ...] = ()
    granted_total: int = 0
    max_seen_concurrent: int = 0
