"""EC2 fleets: images, launch templates, AZ-spread launches (spot with on-demand fallback), found again by tag.

A fleet is the instances carrying all of `shadowing:managed-by=shadowing`, `shadowing:installation=<this
installation>`, `shadowing:entity=<entity>` and `shadowing:fleet=<fleet>`: every describe filters on all four and
every change (terminate, shrink, re-tag) touches only what they matched. Instance ids a `FleetRef` lists are a
claim, not proof: one without the tags is ignored and reported, never changed. The installation tag keeps two
installations (Temporal namespaces) that share an account, and use the same entity ids, out of each other's fleets.

`provision_fleet` is idempotent end to end: every resource it makes is found again by name or tag before anything
is created (moto ignores ClientToken; on real AWS the deterministic tokens also cover the short window in which
a launch succeeded but its tags are not visible yet). Its steps, each safe to repeat:

1. image: the entity's AMI copied into the target region (found again by its source tag), or Amazon Linux;
2. launch template `shadowing-<installation>-<entity>-<type>` carrying the image, the boot payload, IMDSv2 and the
   ownership tags (a new version when the image or payload changed);
3. spot (if asked): RunInstances with spot market options through the same template, tagged at launch; AZs
   without spot capacity are asked again until the deadline (kept in the heartbeat so a retry does not restart it);
4. on-demand for whatever is still missing, one RunInstances per AZ.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED, TAG_ROLE, TAG_SLICE, ClientFactory
from activities.ownership import ownership_tags, tag_map
from shadowing import prices
from shadowing.models import CONTAINER_IMAGE, AdoptFleet, FleetRef, Frozen, InstanceTypeName, Region

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
        None, pattern=CONTAINER_IMAGE, description="pulled and run at boot by a generated script"
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


class AdoptInput(Frozen):
    """`adopt_fleet`: take instances that already serve the entity (spec.adopt) as its fleet `fleet_id`."""

    entity_id: str
    fleet_id: str
    region: Region
    instance_types: tuple[InstanceTypeName, ...] = Field(min_length=1, description="the types the entity allows")
    adopt: AdoptFleet
    max_instances: int = Field(20, ge=1, le=500)


class FleetInput(Frozen):
    fleet: FleetRef
    timeout_s: float = Field(600.0, gt=0, le=86400)


#: Latest Amazon Linux 2023 in every region, through SSM's public parameter (moto serves it too).
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
LIVE_STATES = ["pending", "running"]
#: Longest a waiting activity goes without a heartbeat (a policy's heartbeat timeout may be short).
HEARTBEAT_EVERY_S = 2.0
TAG_MARKET = "shadowing:market"
TAG_SOURCE_IMAGE = "shadowing:source-image"
#: On instances the product adopted (spec.adopt) rather than launched: only these lose its tags on a failed bootstrap.
TAG_ADOPTED = "shadowing:adopted"
#: Which installation of the product made a resource (workers/ passes the Temporal namespace by default).
TAG_INSTALLATION = "shadowing:installation"
DEFAULT_INSTALLATION = "default"
#: A tag value that also fits in a launch template name.
INSTALLATION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
AZ_TYPE = "availability-zone"  # not local zones / wavelength zones
#: On-demand launch failures that mean "this AZ has no capacity for this type now": try the other AZs.
CAPACITY_ERRORS = {"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity"}
#: Spot launch failures that may pass (capacity, price): that AZ is asked again until the spot deadline.
SPOT_UNAVAILABLE = {
    "InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded",
    "InsufficientFreeAddressesInSubnet",
}  # fmt: skip
#: Spot launch failures that will not pass before the deadline: that AZ goes to on-demand at once.
SPOT_REFUSED = {"Unsupported", "UnsupportedOperation"}

Ec2 = Any  # a boto3 EC2 client
Json = dict[str, Any]  # one resource as boto3 returns it


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


@dataclass(frozen=True)
class Owner:
    """Whose a resource is: this installation's, for this entity and (instances, spot requests) this fleet."""

    installation: str
    entity_id: str
    fleet_id: str | None = None

    def tags(self) -> list[dict[str, str]]:
        """The tags, in AWS's list shape, that hand a new resource to this owner."""
        fleet = [{"Key": TAG_FLEET, "Value": self.fleet_id}] if self.fleet_id else []
        return [*ownership_tags(self.entity_id), {"Key": TAG_INSTALLATION, "Value": self.installation}, *fleet]

    def filters(self) -> list[dict[str, Any]]:
        """describe_* filters that match only this owner's resources."""
        return [{"Name": f"tag:{t['Key']}", "Values": [t["Value"]]} for t in self.tags()]

    def owns(self, resource: Json) -> bool:
        """True when `resource` (as boto3 describes it) carries every one of this owner's tags."""
        have = tag_map(resource.get("Tags"))
        return all(have.get(t["Key"]) == t["Value"] for t in self.tags())


def check_installation(installation: str) -> str:
    """`installation` when it can be a tag value and part of a launch template name; ValueError otherwise."""
    if not INSTALLATION_PATTERN.fullmatch(installation):
        raise ValueError(
            f"installation {installation!r} must be 1-64 letters, digits, '.', '_' or '-' (set SHADOWING_INSTALLATION)"
        )
    return installation


class Ec2Activities:
    """EC2 side effects for one installation. `clock` (epoch seconds), `sleep`, `poll_s` and `spot_retry_s` are
    injectable so waits test instantly."""

    def __init__(
        self,
        clients: ClientFactory,
        *,
        installation: str = DEFAULT_INSTALLATION,
        poll_s: float = 2.0,
        spot_retry_s: float = 15.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clients = clients
        self._installation = check_installation(installation)
        self._poll_s = poll_s
        # RunInstances shares one rate bucket with everything else in the account: ask for spot sparingly.
        self._spot_retry_s = spot_retry_s
        self._clock = clock
        self._sleep = sleep

    def owner(self, entity_id: str, fleet_id: str | None = None) -> Owner:
        return Owner(self._installation, entity_id, fleet_id)

    @activity.defn(name="provision_fleet")
    def provision_fleet(self, req: ProvisionInput) -> FleetRef:
        """Makes the fleet have `quantity` live instances spread over the region's AZs; launches only what is missing.

        Raises a non-retryable `InvalidRequest` ApplicationError, before any AWS call, when a spot max price is
        below the price table's typical spot price (a bid that would almost never fill is a configuration
        mistake to fix, not something to wait out), and when the source AMI does not exist; `NotOwned` when the
        launch template's name is taken by a template that is not this installation's for the entity.
        """
        _check_spot_price(req)
        # Heartbeats between the phases: the step's heartbeat timeout then notices a lost worker within seconds,
        # and a slow but alive provisioning is not mistaken for one. A spot deadline already set rides along.
        carry = {k: v for d in activity.info().heartbeat_details if isinstance(d, dict) for k, v in d.items()
                 if k == "spot_deadline"}  # fmt: skip

        def beat(phase: str) -> None:
            activity.heartbeat({"phase": phase, **carry})

        ec2 = self._clients("ec2", req.region)
        owner = self.owner(req.entity_id, req.fleet_id)
        beat("image")
        image = self._image(req)
        beat("template")
        template = _ensure_template(ec2, req, self.owner(req.entity_id), image)
        zones = _zones(ec2)
        if req.market == "spot":
            carry["spot_deadline"] = self._spot(ec2, req, owner, (image, *template), zones)
        beat("launch")
        self._on_demand(ec2, req, owner, (image, *template), zones, beat)
        return _fleet(req, _live_instances(ec2, owner)[: req.quantity], image, template[0])

    def _on_demand(
        self, ec2: Ec2, req: ProvisionInput, owner: Owner, launch: tuple[str, str, str], zones: dict[str, str | None],
        beat: Callable[[str], None],
    ) -> None:  # fmt: skip
        """Launches what is missing; an AZ out of capacity hands its share to the others.

        When every AZ refused, a non-retryable `InsufficientCapacity` names the type and region: waiting rarely
        brings capacity back before the slice, and the saga then compensates (the old fleet keeps serving).
        """
        usable = dict(zones)
        while True:
            live = _live_instances(ec2, owner)
            refused = False
            for az, count in _plan(usable, req.quantity, live).items():
                beat("launch")
                try:
                    _run(ec2, req, owner, launch, (az, usable[az]), count, live, "on-demand")
                except ClientError as exc:
                    if _code(exc) not in CAPACITY_ERRORS:
                        raise
                    activity.logger.warning("no %s capacity in %s (%s)", req.instance_type, az, _code(exc))
                    del usable[az]
                    refused = True
            if not refused:  # everything planned was launched (a re-plan could race EC2's eventual consistency)
                return
            if not usable:
                raise ApplicationError(
                    f"insufficient capacity for {req.instance_type} in {req.region}: every availability zone "
                    f"({', '.join(sorted(zones))}) refused",
                    type="InsufficientCapacity", non_retryable=True,
                )  # fmt: skip

    @activity.defn(name="terminate_fleet")
    def terminate_fleet(self, fleet: FleetRef) -> int:
        """Cancels the fleet's open spot requests and terminates its instances; returns how many. Repeatable.

        Only instances carrying the fleet's tags are terminated: a listed id without them is reported and left.
        """
        ec2 = self._clients("ec2", fleet.region)
        owner = self.owner(fleet.entity_id, fleet.fleet_id)
        if cancel := [r["SpotInstanceRequestId"] for r in _spot_requests(ec2, owner, ["open", "active"])]:
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=cancel)
        ids = {i["InstanceId"] for i in _live_instances(ec2, owner, [*LIVE_STATES, "stopping", "stopped"])}
        _report_foreign(ec2, owner, fleet.instance_ids, ids, "terminate")
        if ids:
            ec2.terminate_instances(InstanceIds=sorted(ids))
        _drop_unused_templates(ec2, self.owner(fleet.entity_id), ids)
        return len(ids)

    @activity.defn(name="shrink_fleet")
    def shrink_fleet(self, req: ResizeInput) -> FleetRef:
        """Terminates the fleet's newest live instances beyond `quantity` (or all but `keep`); returns the survivors.
        Repeatable; only instances carrying the fleet's tags are counted, kept or terminated."""
        fleet = req.fleet
        ec2 = self._clients("ec2", fleet.region)
        owner = self.owner(fleet.entity_id, fleet.fleet_id)
        live = _live_instances(ec2, owner)
        _report_foreign(ec2, owner, (*fleet.instance_ids, *req.keep), {i["InstanceId"] for i in live}, "shrink")
        # with `keep`, exactly those stay (their addresses are what the record names now)
        kept = [i for i in live if not req.keep or i["InstanceId"] in req.keep][: req.quantity]
        chosen = {i["InstanceId"] for i in kept}
        if surplus := [i["InstanceId"] for i in live if i["InstanceId"] not in chosen]:
            ec2.terminate_instances(InstanceIds=surplus)
        return fleet.model_copy(
            update={
                "instance_ids": tuple(i["InstanceId"] for i in kept),
                "addresses": tuple(a for a in (advertised_address(i) for i in kept) if a),
                "spot_instance_ids": tuple(i["InstanceId"] for i in kept if _is_spot(i)),
                "availability_zones": tuple(i["Placement"]["AvailabilityZone"] for i in kept),
            }
        )

    @activity.defn(name="mark_fleet_role")
    def mark_fleet_role(self, fleet: FleetRef) -> FleetRef:
        """Re-tags the fleet's instances with `fleet.role` (shadow -> active at cutover); only those with its tags."""
        ec2 = self._clients("ec2", fleet.region)
        owner = self.owner(fleet.entity_id, fleet.fleet_id)
        ids = [i["InstanceId"] for i in _live_instances(ec2, owner)]
        _report_foreign(ec2, owner, fleet.instance_ids, set(ids), "mark")
        if ids:
            ec2.create_tags(Resources=ids, Tags=[{"Key": TAG_ROLE, "Value": fleet.role}])
        return fleet

    @activity.defn(name="adopt_fleet")
    def adopt_fleet(self, req: AdoptInput) -> FleetRef:
        """Tags the instances `req.adopt` names (running, in `region`, one allowed type, no other owner's tags) with
        the fleet's ownership tags, role active and `shadowing:adopted=true`; returns them as the fleet.

        Refuses with a non-retryable `InvalidRequest` naming `spec.adopt.instance_ids` or `spec.adopt.tags`, before
        any change, when they are not adoptable (`adoption_problems`). Repeatable: instances already carrying this
        fleet's tags are adopted again."""
        ec2 = self._clients("ec2", req.region)
        owner = self.owner(req.entity_id, req.fleet_id)
        instances, problems = adoption_problems(ec2, owner, req.adopt, req.instance_types, req.max_instances)
        if problems:
            field, problem = problems[0]
            raise _invalid(f"{field}: {problem}" + "".join(f"; also {p}" for _, p in problems[1:]))
        ids = [i["InstanceId"] for i in instances]
        ec2.create_tags(Resources=ids, Tags=_adopted_tags(owner))
        first = instances[0]
        return FleetRef(
            fleet_id=req.fleet_id, entity_id=req.entity_id, region=req.region, instance_type=first["InstanceType"],
            instance_ids=tuple(ids), addresses=tuple(a for a in (advertised_address(i) for i in instances) if a),
            role="active", spot_instance_ids=tuple(i["InstanceId"] for i in instances if _is_spot(i)),
            availability_zones=tuple(i["Placement"]["AvailabilityZone"] for i in instances),
            image_id=first.get("ImageId") if len({i.get("ImageId") for i in instances}) == 1 else None,
        )  # fmt: skip

    @activity.defn(name="release_adopted")
    def release_adopted(self, fleet: FleetRef) -> int:
        """Undoes `adopt_fleet`: removes the tags it added from the fleet's adopted instances (those carrying the
        fleet's tags and `shadowing:adopted=true`); never terminates them. Returns how many; repeatable."""
        ec2 = self._clients("ec2", fleet.region)
        owner = self.owner(fleet.entity_id, fleet.fleet_id)
        states = [*LIVE_STATES, "stopping", "stopped"]
        ids = [i["InstanceId"] for i in _live_instances(ec2, owner, states) if _tag(i, TAG_ADOPTED) == "true"]
        if ids:
            ec2.delete_tags(Resources=ids, Tags=[{"Key": t["Key"]} for t in _adopted_tags(owner)])
        return len(ids)

    # ---- image -------------------------------------------------------------------------------------------

    def _image(self, req: ProvisionInput) -> str:
        if not req.source_image_id:
            return _amazon_linux(self._clients("ssm", req.region), req.region)
        source_region = req.source_region or req.region
        if source_region == req.region:
            _describe_image(self._clients("ec2", req.region), req.source_image_id, req.region)
            return req.source_image_id
        ec2 = self._clients("ec2", req.region)
        copy = _find_copy(ec2, req.source_image_id, source_region)
        if copy is None:
            source = _describe_image(self._clients("ec2", source_region), req.source_image_id, source_region)
            copy = _copy_image(ec2, req, self.owner(req.entity_id), source, source_region)
        return self._wait_image(ec2, copy, req.image_timeout_s)

    def _wait_image(self, ec2: Ec2, image_id: str, timeout_s: float) -> str:
        deadline = self._clock() + timeout_s
        while True:
            state = ec2.describe_images(ImageIds=[image_id])["Images"][0]["State"]
            if state == "available":
                return image_id
            if state in ("failed", "error", "invalid", "deregistered"):
                # The next attempt copies again instead of finding this broken copy.
                ec2.deregister_image(ImageId=image_id)
                raise ApplicationError(f"AMI copy {image_id} ended in state {state!r}", type="ImageCopyFailed")
            if self._clock() >= deadline:
                raise ApplicationError(
                    f"AMI copy {image_id} not available after {timeout_s:.0f} s", type="ImageNotReady"
                )
            activity.heartbeat({"phase": "image", "image_id": image_id})
            self._sleep(self._poll_s)

    # ---- spot --------------------------------------------------------------------------------------------

    def _spot(
        self, ec2: Ec2, req: ProvisionInput, owner: Owner, launch: tuple[str, str, str], zones: dict[str, str | None]
    ) -> float:
        """Launches what is missing on spot, through the launch template; AZs without spot capacity are asked again
        every `spot_retry_s` until the deadline, then on-demand takes over. Returns the deadline."""
        deadline = self._spot_deadline(req)
        usable, round_ = dict(zones), 0
        while usable and self._clock() < deadline:
            live, launched, refused = _live_instances(ec2, owner), 0, False
            plan = _plan(usable, req.quantity, live)
            for az, count in plan.items():
                try:
                    launched += _run(ec2, req, owner, launch, (az, usable[az]), count, live, "spot", round_)
                except ClientError as exc:
                    if _code(exc) not in SPOT_UNAVAILABLE | SPOT_REFUSED:
                        raise
                    activity.logger.info("no spot in %s (%s)", az, _code(exc))
                    refused = refused or _code(exc) in SPOT_UNAVAILABLE
                    if _code(exc) in SPOT_REFUSED:
                        del usable[az]
            round_ += 1
            if not plan or (not refused and launched == sum(plan.values())):
                break
            if refused and not launched:  # no capacity anywhere asked: wait (progress or a dropped AZ re-plans at once)
                wait = max(0.0, min(self._spot_retry_s, deadline - self._clock()))
                while wait > 0:  # heartbeat at least every HEARTBEAT_EVERY_S: the policy's timeout may be short
                    activity.heartbeat({"phase": "spot", "spot_deadline": deadline})
                    self._sleep(min(wait, HEARTBEAT_EVERY_S))
                    wait -= HEARTBEAT_EVERY_S
        return deadline

    def _spot_deadline(self, req: ProvisionInput) -> float:
        """The deadline an earlier attempt of this activity heartbeated, else now + spot_deadline_s."""
        for detail in activity.info().heartbeat_details:
            if isinstance(detail, dict) and "spot_deadline" in detail:
                return float(detail["spot_deadline"])
        deadline = self._clock() + req.spot_deadline_s
        activity.heartbeat({"phase": "spot", "spot_deadline": deadline})
        return deadline


# ---- pure helpers -------------------------------------------------------------------------------------------


def _check_spot_price(req: ProvisionInput) -> None:
    if req.market != "spot" or req.max_price_usd is None:
        return
    table = prices.default_table()
    if not table.has(req.instance_type, req.region):
        return  # nothing to judge the bid against: it is tried, and on-demand takes over if it does not fill
    market = table.typical_spot(req.instance_type, req.region)
    if req.max_price_usd < market:
        raise _invalid(
            f"spot max price {req.max_price_usd:g} USD/h for {req.instance_type} in {req.region} is below the "
            f"market price {market:g} USD/h"
        )


def _plan(
    zones: dict[str, str | None], quantity: int, live: list[Json], pending: Counter[str] | None = None
) -> dict[str, int]:
    """How many to launch per AZ so the fleet reaches `quantity`, evening the AZs out (round-robin targets)."""
    azs = sorted(zones)
    target = {az: quantity // len(azs) + (1 if i < quantity % len(azs) else 0) for i, az in enumerate(azs)}
    have = Counter(i["Placement"]["AvailabilityZone"] for i in live) + (pending or Counter())
    plan: Counter[str] = Counter()
    for _ in range(quantity - sum(have.values())):
        az = max(azs, key=lambda a: (target[a] - have[a] - plan[a], -azs.index(a)))
        plan[az] += 1
    return {az: plan[az] for az in azs if plan[az] > 0}


def _boot_script(req: ProvisionInput) -> str | None:
    if req.user_data or not req.container_image:
        return req.user_data
    image = shlex.quote(req.container_image)
    return "\n".join([
        "#!/bin/bash", "set -euo pipefail",
        "(dnf install -y docker || yum install -y docker) && systemctl enable --now docker",
        f"docker pull {image}",
        f"docker run -d --restart=always --network host --name {shlex.quote(req.entity_id)} {image}",
    ]) + "\n"  # fmt: skip


def _b64(text: str | None) -> str:
    return base64.b64encode(text.encode()).decode() if text else ""


def _token(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:64]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _tag(resource: Json, key: str) -> str:
    return tag_map(resource.get("Tags")).get(key, "")


def _tags(req: ProvisionInput, owner: Owner, market: str) -> list[dict[str, str]]:
    return [
        *owner.tags(),
        {"Key": TAG_SLICE, "Value": req.slice_key},
        {"Key": TAG_ROLE, "Value": req.role},
        {"Key": TAG_MARKET, "Value": market},
        {"Key": "Name", "Value": f"{req.entity_id}-{req.role}-{req.slice_key}"},
    ]


def _is_spot(instance: Json) -> bool:
    return instance.get("InstanceLifecycle") == "spot" or _tag(instance, TAG_MARKET) == "spot"


def advertised_address(instance: Json) -> str:
    """The address clients reach an instance at: public IP when it has one, else private."""
    return str(instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or "")


def _adopted_tags(owner: Owner) -> list[dict[str, str]]:
    return [*owner.tags(), {"Key": TAG_ROLE, "Value": "active"}, {"Key": TAG_ADOPTED, "Value": "true"}]


#: The tags that say whose an instance is: an adopted instance may carry none of them, or exactly its new owner's.
OWNER_KEYS = (TAG_MANAGED, TAG_ENTITY, TAG_INSTALLATION, TAG_FLEET)


def adoption_problems(
    ec2: Ec2, owner: Owner, adopt: AdoptFleet, instance_types: Iterable[str], max_instances: int
) -> tuple[list[Json], list[tuple[str, str]]]:
    """The instances `adopt` names in `ec2`'s region and why they cannot be adopted, as (spec field, problem):
    none found, an id missing, not running, a type the entity does not allow, several types, more than
    `max_instances`, or ownership tags that are not `owner`'s (another entity's, installation's or fleet's). Reads
    only; `owner.fleet_id` None accepts any fleet of the owner's entity (pre-flight, before the fleet exists)."""
    region = ec2.meta.region_name
    if adopt.instance_ids:
        field = "spec.adopt.instance_ids"
        ids = list(adopt.instance_ids)  # EC2 takes at most 200 values per filter
        found = [
            i
            for n in range(0, len(ids), 200)
            for i in _describe(ec2, [{"Name": "instance-id", "Values": ids[n : n + 200]}])
        ]
        found = [i for i in found if i["State"]["Name"] not in ("shutting-down", "terminated")]
        have = {i["InstanceId"] for i in found}
        problems = [(field, f"instance {i} does not exist in {region}") for i in adopt.instance_ids if i not in have]
    else:
        field = "spec.adopt.tags"
        wanted = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(adopt.tags.items())]
        states = {"Name": "instance-state-name", "Values": [*LIVE_STATES, "stopping", "stopped"]}
        found = [i for i in _describe(ec2, [*wanted, states]) if
                 all(_tag(i, k) == v for k, v in adopt.tags.items())]  # fmt: skip
        problems = []
    found.sort(key=lambda i: (i["LaunchTime"], i["InstanceId"]))
    if not found and not problems:
        return [], [(field, f"no instance in {region} carries {', '.join(f'{k}={v}' for k, v in adopt.tags.items())}")]
    if len(found) > max_instances:
        problems.append((field, f"{len(found)} instances, more than policy.max_instances ({max_instances})"))
    allowed = set(instance_types)
    mine = {t["Key"]: t["Value"] for t in owner.tags()}
    for i in found:
        iid, state, kind = i["InstanceId"], i["State"]["Name"], i["InstanceType"]
        if state != "running":
            problems.append((field, f"instance {iid} is {state}, not running"))
        if kind not in allowed:
            problems.append((field, f"instance {iid} is a {kind}, not one of spec.instance_types "
                                    f"({', '.join(instance_types)})"))  # fmt: skip
        tags = tag_map(i.get("Tags"))
        if clash := [f"{k}={tags[k]}" for k in OWNER_KEYS if k in tags and k in mine and tags[k] != mine[k]]:
            problems.append((field, f"instance {iid} already belongs to another owner ({', '.join(clash)})"))
    if len(types := sorted({i["InstanceType"] for i in found})) > 1:
        problems.append((field, f"the instances span several types ({', '.join(types)}): a fleet has one"))
    return found, problems


def _fleet(req: ProvisionInput, instances: list[Json], image: str, template: str) -> FleetRef:
    return FleetRef(
        fleet_id=req.fleet_id,
        entity_id=req.entity_id,
        region=req.region,
        instance_type=req.instance_type,
        instance_ids=tuple(i["InstanceId"] for i in instances),
        # What DNS records point at: the public IP when there is one (private IPs repeat across regions).
        addresses=tuple(a for a in (advertised_address(i) for i in instances) if a),
        role=req.role,
        spot_instance_ids=tuple(i["InstanceId"] for i in instances if _is_spot(i)),
        availability_zones=tuple(i["Placement"]["AvailabilityZone"] for i in instances),
        image_id=image,
        launch_template=template,
    )


# ---- AWS helpers --------------------------------------------------------------------------------------------


def _describe(ec2: Ec2, filters: list[dict[str, Any]]) -> list[Json]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def _live_instances(ec2: Ec2, owner: Owner, states: list[str] | None = None) -> list[Json]:
    """The owner's instances in `states` (default: live), oldest first. The tags are checked again here: what
    reaches a terminate must carry them whatever the describe call matched."""
    found = _describe(ec2, [*owner.filters(), {"Name": "instance-state-name", "Values": states or LIVE_STATES}])
    return sorted((i for i in found if owner.owns(i)), key=lambda i: (i["LaunchTime"], i["InstanceId"]))


def fleet_addresses(ec2: Ec2, owner: Owner, instance_ids: Iterable[str]) -> set[str]:
    """The advertised addresses of the listed instances that are live and carry `owner`'s tags (EC2's word)."""
    wanted = set(instance_ids)
    return {a for i in _live_instances(ec2, owner) if i["InstanceId"] in wanted and (a := advertised_address(i))}


def _spell(tags: list[dict[str, str]]) -> str:
    return ", ".join(f"{t['Key']}={t['Value']}" for t in tags)


def _report_foreign(ec2: Ec2, owner: Owner, listed: Iterable[str], mine: set[str], action: str) -> list[str]:
    """Ids the caller listed that are live but do not carry the fleet's tags: logged, never touched."""
    missing = sorted(set(listed) - mine)
    if not missing:
        return []
    # Filters, not InstanceIds: an id that does not exist is then no error, and a terminated one no warning.
    live = [{"Name": "instance-id", "Values": missing}, {"Name": "instance-state-name", "Values": LIVE_STATES}]
    foreign = sorted(i["InstanceId"] for i in _describe(ec2, live))
    if foreign:
        activity.logger.warning(
            "%s %s: ignored %s: listed in the fleet but without its tags (%s)", action, owner.fleet_id,
            ", ".join(foreign), _spell(owner.tags()),
        )  # fmt: skip
    return foreign


def _amazon_linux(ssm: Any, region: str) -> str:
    try:
        return str(ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound as exc:
        raise _invalid(f"no Amazon Linux AMI parameter in {region}") from exc


def _describe_image(ec2: Ec2, image_id: str, region: str) -> Json:
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except ClientError as exc:
        if not _code(exc).startswith("InvalidAMIID"):
            raise
        images = []
    if not images or images[0].get("State") == "deregistered":
        raise _invalid(f"source AMI {image_id} not found in {region}")
    return dict(images[0])


def _find_copy(ec2: Ec2, source_image_id: str, source_region: str) -> str | None:
    """A copy made earlier: by its tag, else by its deterministic name (a crash between copy and tag)."""
    by_tag = [{"Name": f"tag:{TAG_SOURCE_IMAGE}", "Values": [source_image_id]}]
    by_name = [{"Name": "name", "Values": [_copy_name(source_image_id, source_region)]}]
    for filters in (by_tag, by_name):
        found = [i for i in ec2.describe_images(Owners=["self"], Filters=filters)["Images"]
                 if i.get("State") not in ("failed", "error", "invalid", "deregistered")]  # fmt: skip
        if found:
            image_id = str(sorted(found, key=lambda i: i["ImageId"])[0]["ImageId"])
            ec2.create_tags(Resources=[image_id], Tags=[{"Key": TAG_SOURCE_IMAGE, "Value": source_image_id}])
            return image_id
    return None


def _copy_name(source_image_id: str, source_region: str) -> str:
    return f"shadowing-{source_image_id}-from-{source_region}"


def _copy_image(ec2: Ec2, req: ProvisionInput, owner: Owner, source: Json, source_region: str) -> str:
    tags = [*owner.tags(), {"Key": TAG_SOURCE_IMAGE, "Value": source["ImageId"]}]
    copied = ec2.copy_image(
        SourceImageId=source["ImageId"],
        SourceRegion=source_region,
        Name=_copy_name(source["ImageId"], source_region),
        Description=f"{source.get('Name', source['ImageId'])} copied by shadowing for {req.entity_id}",
        ClientToken=_token("copy", source["ImageId"], source_region, req.region),
        TagSpecifications=[{"ResourceType": "image", "Tags": tags}],  # the IAM policy's CreateTags on CopyImage
    )
    image_id = str(copied["ImageId"])  # tagged again below: moto ignores TagSpecifications on CopyImage
    ec2.create_tags(Resources=[image_id], Tags=tags)
    return image_id


def _delete_templates(ec2: Ec2, owner: Owner) -> int:
    found = [t for t in ec2.describe_launch_templates(Filters=owner.filters())["LaunchTemplates"] if owner.owns(t)]
    for template in found:
        try:
            ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])
        except ClientError as exc:
            if "NotFound" not in _code(exc):
                raise
    return len(found)


def _drop_unused_templates(ec2: Ec2, owner: Owner, terminated: set[str]) -> None:
    """The entity's launch templates in a region live as long as it has instances there (a retired or
    compensated fleet must not leave them behind); the next provisioning makes them again."""
    states = [*LIVE_STATES, "stopping", "stopped"]
    if not any(i["InstanceId"] not in terminated for i in _live_instances(ec2, owner, states)):
        _delete_templates(ec2, owner)


def template_name(installation: str, entity_id: str, instance_type: str) -> str:
    """One template per installation, entity and type: two installations never share (or version) one."""
    return f"shadowing-{installation}-{entity_id}-{instance_type}"


def _ensure_template(ec2: Ec2, req: ProvisionInput, owner: Owner, image: str) -> tuple[str, str]:
    """(name, version) of the entity's template for this type with this image and payload; made if missing.
    A template of that name without the owner's tags is refused (`NotOwned`), never versioned."""
    name = template_name(owner.installation, req.entity_id, req.instance_type)
    data: dict[str, Any] = {
        "ImageId": image,
        "InstanceType": req.instance_type,
        "MetadataOptions": {"HttpTokens": "required"},
        "TagSpecifications": [{"ResourceType": k, "Tags": owner.tags()} for k in ("instance", "volume")],
    }
    if script := _boot_script(req):
        data["UserData"] = _b64(script)
    named = [{"Name": "launch-template-name", "Values": [name]}]
    existing = ec2.describe_launch_templates(Filters=named)["LaunchTemplates"]
    if not existing:
        return _create_template(ec2, req, owner, name, data)
    if not owner.owns(existing[0]):
        raise ApplicationError(
            f"launch_template: launch template {name} in {req.region} exists but does not carry "
            f"{_spell(owner.tags())}: it is not this installation's; delete or retag it",
            type="NotOwned", non_retryable=True,
        )  # fmt: skip
    latest = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])
    current = latest["LaunchTemplateVersions"][0]
    have = current["LaunchTemplateData"]
    if have.get("ImageId") == image and have.get("UserData", "") == data.get("UserData", ""):
        return name, str(current["VersionNumber"])
    made = ec2.create_launch_template_version(LaunchTemplateName=name, LaunchTemplateData=data)
    return name, str(made["LaunchTemplateVersion"]["VersionNumber"])


def _create_template(ec2: Ec2, req: ProvisionInput, owner: Owner, name: str, data: dict[str, Any]) -> tuple[str, str]:
    try:
        ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData=data,
            ClientToken=_token("template", name),
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": owner.tags()}],
        )
    except ClientError as exc:
        if "AlreadyExists" not in _code(exc):  # a concurrent attempt made it first: use theirs
            raise
        return _ensure_template(ec2, req, owner, data["ImageId"])
    return name, "1"


def _zones(ec2: Ec2) -> dict[str, str | None]:
    """AZ -> its default subnet (None: place by AZ). AZs with a default subnet when there are any."""
    zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])
    azs = [
        z["ZoneName"]
        for z in zones["AvailabilityZones"]
        if z.get("ZoneType", "availability-zone") == "availability-zone"
    ]
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    by_az = {s["AvailabilityZone"]: s["SubnetId"] for s in subnets if s["AvailabilityZone"] in azs}
    if by_az:
        return dict(sorted(by_az.items()))
    if not azs:
        raise ApplicationError("no available availability zone", type="NoAvailabilityZone")
    return dict.fromkeys(sorted(azs))


def _where(subnet: str | None, az: str) -> dict[str, Any]:
    return {"SubnetId": subnet} if subnet else {"Placement": {"AvailabilityZone": az}}


def _spot_options(req: ProvisionInput) -> dict[str, Any]:
    price = {"MaxPrice": f"{req.max_price_usd:.5f}"} if req.max_price_usd else {}
    return {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time", **price}}


def _run(
    ec2: Ec2, req: ProvisionInput, owner: Owner, launch: tuple[str, str, str], where: tuple[str, str | None],
    count: int, live: list[Json], market: str, round_: int = 0,
) -> int:  # fmt: skip
    """One RunInstances in an AZ through the launch template, on-demand or spot, tagged at launch.

    `launch` is (image, template name, version). Image, type, IMDSv2 and tags are also given explicitly: moto
    drops what a template launch should inherit. Spot takes what it can get (MinCount 1); on-demand all or none.
    Returns how many instances the call launched.
    """
    (image, name, version), (az, subnet) = launch, where
    already = sum(1 for i in live if i["Placement"]["AvailabilityZone"] == az)
    kinds = ("instance", "volume", "spot-instances-request") if market == "spot" else ("instance", "volume")
    kwargs: dict[str, Any] = {"InstanceMarketOptions": _spot_options(req)} if market == "spot" else {}
    if script := _boot_script(req):
        kwargs["UserData"] = script
    made = ec2.run_instances(
        LaunchTemplate={"LaunchTemplateName": name, "Version": version},
        ImageId=image,
        InstanceType=req.instance_type,
        MinCount=1 if market == "spot" else count,
        MaxCount=count,
        MetadataOptions={"HttpTokens": "required"},
        ClientToken=_token(req.fleet_id, az, already, count, *((market, round_) if market == "spot" else ())),
        TagSpecifications=[{"ResourceType": k, "Tags": _tags(req, owner, market)} for k in kinds],
        **_where(subnet, az),
        **kwargs,
    )
    return len(made.get("Instances", []))


def _spot_requests(ec2: Ec2, owner: Owner, states: list[str]) -> list[Json]:
    """The fleet's spot requests (RunInstances makes one per spot instance and tags it; older workers made them
    with RequestSpotInstances) in `states`."""
    found = ec2.describe_spot_instance_requests(Filters=[*owner.filters(), {"Name": "state", "Values": states}])
    return [r for r in found["SpotInstanceRequests"] if r.get("State") in states and owner.owns(r)]
