"""An entity: its spec and policy, its allocation schedule of time slices, and the fleets it owns."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from shadowing.models.base import (
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
    UtcDatetime,
)


class TimeSlice(Frozen):
    """A half-open interval [start, end) in UTC; both ends must carry a time zone."""

    start: UtcDatetime = Field(description="ISO 8601 with a time zone, e.g. 2027-01-04T08:00:00Z (included)")
    end: UtcDatetime = Field(description="ISO 8601 with a time zone, after start (excluded)")

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

    region: Region = Field(description="where the entity must serve from during the slice")

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

    sizing_quantile: float = Field(0.85, gt=0.5, lt=1.0, description="forecast quantile a fleet is sized for")
    readiness_threshold: float = Field(
        0.4, ge=0.0, le=1.0, description="a slice whose forecast readiness is lower is not shadowed"
    )
    target_utilisation: float = Field(0.7, gt=0.0, le=1.0, description="share of an instance's capacity to plan for")
    max_instances: int = Field(20, ge=1, le=500, description="most instances one fleet may have")
    scale_in: bool = Field(
        True, description="shrink the active fleet at a slice start when the forecast needs fewer instances"
    )
    scale_in_min: int = Field(1, ge=1, description="shrink only when at least this many instances are surplus")
    scale_in_trusted_only: bool = Field(
        False, description="shrink only on a forecast whose readiness reaches readiness_threshold"
    )
    scale_out: bool = Field(
        True,
        description="carry a same-region peak by adding instances of the active type to the fleet in place (warmed, "
        "then added to the record at the slice start) instead of migrating to another type, unless the other type "
        "saves at least rightsize_min_saving of the hourly cost; off: such a peak is always a migration",
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
    warmup_timeout_s: float = Field(600.0, gt=0, le=86400, description="warm-up gives up after this long")
    warm_p99_ms: float = Field(
        25.0, gt=0, le=60_000, description="an instance is warm once its p99 under synthetic traffic stays below this"
    )
    watch_s: float = Field(
        120.0, ge=0, le=86400, description="post-cutover watch window before the old fleet is retired"
    )
    cutover_strategy: Literal["all-at-once", "canary", "linear"] = Field(
        "all-at-once", description="how Route 53 (and listener) weights move to the new fleet"
    )
    record_ttl_s: int = Field(30, ge=1, le=86400, description="TTL of the weighted records the cutover writes")
    degradation: DegradationPolicy = Field(
        DegradationPolicy(), description="when the post-cutover watch calls the new fleet degraded"
    )
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
    consistency: Literal["converge", "fenced"] = Field(
        default="converge",
        description="converge: both regions take writes during the cutover, replicated both ways (conflict rule in "
        "docs/data-plane.md); fenced: the old fleet's writes are held while replication drains, then go to the new "
        "region (the app's admin contract, docs/your-application.md)",
    )
    fence_deadline_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="fenced: writes are held at most this long; past it they are released and the migration rolls "
        "back (with an RDS replica it must cover the promotion)",
    )  # fmt: skip
    two_way_interval_s: float = Field(
        default=5.0, ge=0.5, le=3600,
        description="from the first weight change until the old fleet is retired, replicate both ways this "
        "often",
    )  # fmt: skip
    sync_verify: Literal["changed", "full-scan"] = Field(
        default="changed",
        description="final sync check: verify the items changed since the last verified point (cost grows with the "
        "changes), or scan both tables whole",
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


#: An EC2 instance id (i-, then 8 or 17 hex digits).
INSTANCE_ID = r"^i-[0-9a-f]{8}([0-9a-f]{9})?$"
InstanceId = Annotated[str, StringConstraints(pattern=INSTANCE_ID)]
#: An external driver's name in the worker's registry (SHADOWING_DRIVERS_FILE; forecasting/drivers.py).
DriverName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
#: Tag keys the product sets itself: an adoption may not select by them.
RESERVED_TAG_PREFIXES = ("shadowing:", "aws:")


class AdoptFleet(Frozen):
    """Instances that already serve the entity, taken as its first fleet instead of launching one: by instance ids
    or by tags (exactly one). They must be running in home_region, all of one of the spec's instance_types."""

    instance_ids: tuple[InstanceId, ...] = Field(
        (), max_length=500, description="ids of the running instances to adopt, e.g. i-0123456789abcdef0"
    )
    tags: dict[str, str] = Field(
        default_factory=dict, max_length=10,
        description="adopt every running instance carrying all of these tags (key -> value)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _exactly_one(self) -> AdoptFleet:
        if bool(self.instance_ids) == bool(self.tags):
            raise ValueError("spec.adopt: give exactly one of instance_ids or tags (non-empty)")
        if len(set(self.instance_ids)) != len(self.instance_ids):
            raise ValueError("spec.adopt.instance_ids: an instance id is listed twice")
        for key, value in self.tags.items():
            if not key or len(key) > 128 or len(value) > 256:
                raise ValueError(f"spec.adopt.tags: {key!r} is not a valid EC2 tag (key 1-128, value <= 256 chars)")
            if key.lower().startswith(RESERVED_TAG_PREFIXES):
                raise ValueError(f"spec.adopt.tags: {key!r} is reserved (shadowing:*, aws:*): select by your own tags")
        return self


class EntitySpec(Frozen):
    """An application a platform team runs on AWS, and what the product may do with it."""

    entity_id: EntityId = Field(description="1-63 lowercase letters, digits or '-'; the CloudWatch EntityId dimension")
    home_region: Region = Field(description="where the first fleet runs and the entity's metrics and data live")
    instance_types: tuple[InstanceTypeName, ...] = Field(
        min_length=1, description="types the product may launch (shadowing/catalog.py); the first is the initial's"
    )
    initial_instances: int = Field(1, ge=1, le=500, description="size of the fleet registration launches")
    dns_name: DnsName = Field(description="record that clients resolve, e.g. api.example.internal (lower-cased)")
    hosted_zone_id: HostedZoneId = Field(description="Route 53 zone of dns_name, tagged shadowing:managed-by")
    dynamodb_tables: tuple[str, ...] = Field((), description="tables in home_region copied to the slice's region")
    metrics_namespace: str = Field("Shadowing/Usage", description="CloudWatch namespace of the usage history")
    policy: EntityPolicy = Field(EntityPolicy(), description="how cautious and how generous (table below)")
    #: Demos and tests only (None for a real entity): compressed time, chosen per registration because each picks
    #: its origin after seeding its history. A worker-wide clock would be the cleaner seam for the contract, but it
    #: would silently compress the time of every real entity registered on that worker (docs/architecture.md).
    demand_clock: DemandClock | None = Field(None, description="demos and tests only: compressed time")
    holiday_country: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2 country whose public holidays shape demand"
    )
    events: tuple[date, ...] = Field((), description="launches, conferences: days of the usage history's calendar")
    drivers: tuple[DriverName, ...] = Field(
        (), max_length=8, description="external drivers its demand follows, by name in the worker's driver registry"
    )
    listener_arn: str | None = Field(None, description="ELBv2 listener whose forward weights the cutover moves")
    rds_instance: str | None = Field(default=None, description="RDS instance id/ARN in home_region to replicate")
    sqs_queues: tuple[str, ...] = Field(default=(), description="SQS queue names whose messages move with the entity")
    image_id: str | None = Field(
        None, pattern=r"^ami-[0-9a-f]{8,17}$", description="the entity's AMI in home_region (copied where needed)"
    )
    user_data: str | None = Field(None, max_length=16384, description="cloud-init script run at instance boot")
    container_image: str | None = Field(
        None, pattern=CONTAINER_IMAGE, description="image the instances pull and run at boot (instead of user_data)"
    )
    adopt: AdoptFleet | None = Field(
        None,
        description="instances already serving the entity to start from instead of launching (fixed once registered)",
    )

    @model_validator(mode="after")
    def _rds_fenced(self) -> EntitySpec:
        """An RDS database has one writer: under `converge` the old fleet would keep writing to the old primary after
        the replica's promotion, and those writes would be stranded there (nothing copies them back)."""
        if self.rds_instance is not None and self.policy.consistency != "fenced":
            raise ValueError(
                "policy.consistency: an entity with rds_instance needs 'fenced' (the old fleet's writes are held "
                "while the replica is promoted, then go to the new primary); 'converge' would strand the writes "
                "made to the old primary after the promotion"
            )
        return self

    @model_validator(mode="after")
    def _adopt_fits(self) -> EntitySpec:
        if self.adopt is not None and len(self.adopt.instance_ids) > self.policy.max_instances:
            raise ValueError(
                f"spec.adopt.instance_ids: {len(self.adopt.instance_ids)} instances, more than policy.max_instances "
                f"({self.policy.max_instances})"
            )
        return self


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
