"""EC2 fleets: images, launch templates, AZ-spread launches (spot with on-demand fallback), found again by tag.

`provision_fleet` is idempotent end to end: every resource it makes is found again by name or tag before anything
is created (moto ignores ClientToken; on real AWS the deterministic tokens also cover the short window in which
a launch succeeded but its tags are not visible yet). Its steps, each safe to repeat:

1. image: the entity's AMI copied into the target region (found again by its source tag), or Amazon Linux;
2. launch template `shadowing-<entity>-<type>` carrying the image, the boot payload and tags (a new version
   when the image or payload changed);
3. spot (if asked): spot requests per AZ, tagged with the fleet; waits for them until the deadline (kept in
   the heartbeat so a retry does not restart it), then cancels what is still open;
4. on-demand for whatever is still missing, one RunInstances per AZ.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED, TAG_ROLE, TAG_SLICE, ClientFactory
from shadowing import prices
from shadowing.models import FleetRef, ProvisionInput, ResizeInput, TemplatesInput

#: Latest Amazon Linux 2023 in every region, through SSM's public parameter (moto serves it too).
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
LIVE_STATES = ["pending", "running"]
TAG_MARKET = "shadowing:market"
TAG_AZ = "shadowing:az"
TAG_SOURCE_IMAGE = "shadowing:source-image"
AZ_TYPE = "availability-zone"  # not local zones / wavelength zones
#: On-demand launch failures that mean "this AZ has no capacity for this type now": try the other AZs.
CAPACITY_ERRORS = {"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity"}
#: Spot request failures that mean "no spot capacity at this price now": fall back to on-demand.
SPOT_UNAVAILABLE = {
    "InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded",
    "InsufficientFreeAddressesInSubnet", "Unsupported",
}  # fmt: skip

Ec2 = Any  # a boto3 EC2 client
Json = dict[str, Any]  # one resource as boto3 returns it


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


class Ec2Activities:
    """EC2 side effects. `clock` (epoch seconds), `sleep` and `poll_s` are injectable so waits test instantly."""

    def __init__(
        self,
        clients: ClientFactory,
        *,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clients = clients
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep

    @activity.defn(name="provision_fleet")
    def provision_fleet(self, req: ProvisionInput) -> FleetRef:
        """Makes the fleet have `quantity` live instances spread over the region's AZs; launches only what is missing.

        Raises a non-retryable `InvalidRequest` ApplicationError, before any AWS call, when a spot max price is
        below the price table's typical spot price (a bid that would almost never fill is a configuration
        mistake to fix, not something to wait out), and when the source AMI does not exist.
        """
        _check_spot_price(req)
        # Heartbeats between the phases: the step's heartbeat timeout then notices a lost worker within seconds,
        # and a slow but alive provisioning is not mistaken for one. A spot deadline already set rides along.
        carry = {k: v for d in activity.info().heartbeat_details if isinstance(d, dict) for k, v in d.items()
                 if k == "spot_deadline"}  # fmt: skip

        def beat(phase: str) -> None:
            activity.heartbeat({"phase": phase, **carry})

        ec2 = self._clients("ec2", req.region)
        beat("image")
        image = self._image(req)
        beat("template")
        template, version = _ensure_template(ec2, req, image)
        zones = _zones(ec2)
        if req.market == "spot":
            carry["spot_deadline"] = self._spot(ec2, req, image, zones)
        beat("launch")
        _adopt_spot_instances(ec2, req)
        self._on_demand(ec2, req, image, (template, version), zones, beat)
        return _fleet(req, _live_instances(ec2, req.fleet_id)[: req.quantity], image, template)

    def _on_demand(
        self, ec2: Ec2, req: ProvisionInput, image: str, template: tuple[str, str], zones: dict[str, str | None],
        beat: Callable[[str], None],
    ) -> None:  # fmt: skip
        """Launches what is missing; an AZ out of capacity hands its share to the others.

        When every AZ refused, a non-retryable `InsufficientCapacity` names the type and region: waiting rarely
        brings capacity back before the slice, and the saga then compensates (the old fleet keeps serving).
        """
        usable = dict(zones)
        while True:
            live = _live_instances(ec2, req.fleet_id)
            refused = False
            for az, count in _plan(usable, req.quantity, live).items():
                beat("launch")
                try:
                    _run_on_demand(ec2, req, image, template, usable[az], az, count, live)
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
        """Cancels the fleet's open spot requests and terminates its live instances; returns how many. Repeatable."""
        ec2 = self._clients("ec2", fleet.region)
        requests = _spot_requests(ec2, fleet.fleet_id, ["open", "active", "closed", "cancelled"])
        if cancel := [r["SpotInstanceRequestId"] for r in requests if r["State"] in ("open", "active")]:
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=cancel)
        states = [*LIVE_STATES, "stopping", "stopped"]
        ids = {i["InstanceId"] for i in _live_instances(ec2, fleet.fleet_id, states)}
        # A spot instance whose request filled just before a crash may not carry the fleet tag yet.
        ids |= {i["InstanceId"] for i in _instances(ec2, [r["InstanceId"] for r in requests if r.get("InstanceId")])}
        if ids:
            ec2.terminate_instances(InstanceIds=sorted(ids))
        _drop_unused_templates(ec2, fleet.entity_id, ids)
        return len(ids)

    @activity.defn(name="shrink_fleet")
    def shrink_fleet(self, req: ResizeInput) -> FleetRef:
        """Terminates the fleet's newest live instances beyond `quantity` (or all but `keep`); returns the survivors.
        Repeatable."""
        fleet = req.fleet
        ec2 = self._clients("ec2", fleet.region)
        live = _live_instances(ec2, fleet.fleet_id)
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
        """Re-tags the fleet's instances with `fleet.role` (shadow -> active at cutover)."""
        ec2 = self._clients("ec2", fleet.region)
        ids = [i["InstanceId"] for i in _live_instances(ec2, fleet.fleet_id)]
        if ids:
            ec2.create_tags(Resources=ids, Tags=[{"Key": TAG_ROLE, "Value": fleet.role}])
        return fleet

    @activity.defn(name="delete_launch_templates")
    def delete_launch_templates(self, req: TemplatesInput) -> int:
        """Deletes the entity's launch templates in the region (found by tag); returns how many. Repeatable."""
        return _delete_templates(self._clients("ec2", req.region), req.entity_id)

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
            copy = _copy_image(ec2, req, source, source_region)
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

    def _spot(self, ec2: Ec2, req: ProvisionInput, image: str, zones: dict[str, str | None]) -> float:
        """Requests spot capacity for what is missing, waits until the deadline, cancels what did not fill;
        returns the deadline."""
        deadline = self._spot_deadline(req)
        _adopt_spot_instances(ec2, req)
        if self._clock() < deadline:
            pending = Counter(_tag(r, TAG_AZ) for r in _spot_requests(ec2, req.fleet_id, ["open"]))
            plan = _plan(zones, req.quantity, _live_instances(ec2, req.fleet_id), pending)
            for az, count in plan.items():
                _request_spot(ec2, req, image, zones[az], az, count, deadline)
            while _spot_requests(ec2, req.fleet_id, ["open"]) and self._clock() < deadline:
                activity.heartbeat({"phase": "spot", "spot_deadline": deadline})
                self._sleep(self._poll_s)
        still_open = _spot_requests(ec2, req.fleet_id, ["open"])
        if still_open:
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[r["SpotInstanceRequestId"] for r in still_open])
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
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == key), "")


def _base_tags(entity_id: str) -> list[dict[str, str]]:
    return [{"Key": TAG_ENTITY, "Value": entity_id}, {"Key": TAG_MANAGED, "Value": "shadowing"}]


def _tags(req: ProvisionInput, market: str | None = None) -> list[dict[str, str]]:
    tags = [
        *_base_tags(req.entity_id),
        {"Key": TAG_FLEET, "Value": req.fleet_id},
        {"Key": TAG_SLICE, "Value": req.slice_key},
        {"Key": TAG_ROLE, "Value": req.role},
        {"Key": "Name", "Value": f"{req.entity_id}-{req.role}-{req.slice_key}"},
    ]
    return tags + ([{"Key": TAG_MARKET, "Value": market}] if market else [])


def _is_spot(instance: Json) -> bool:
    return instance.get("InstanceLifecycle") == "spot" or _tag(instance, TAG_MARKET) == "spot"


def advertised_address(instance: Json) -> str:
    """The address clients reach an instance at: public IP when it has one, else private."""
    return str(instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or "")


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


def _live_instances(ec2: Ec2, fleet_id: str, states: list[str] | None = None) -> list[Json]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{TAG_FLEET}", "Values": [fleet_id]},
            {"Name": "instance-state-name", "Values": states or LIVE_STATES},
        ]
    )
    found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return sorted(found, key=lambda i: (i["LaunchTime"], i["InstanceId"]))


def _instances(ec2: Ec2, ids: list[str]) -> list[Json]:
    if not ids:
        return []
    pages = ec2.get_paginator("describe_instances").paginate(
        InstanceIds=ids, Filters=[{"Name": "instance-state-name", "Values": [*LIVE_STATES, "stopping", "stopped"]}]
    )
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


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


def _copy_image(ec2: Ec2, req: ProvisionInput, source: Json, source_region: str) -> str:
    copied = ec2.copy_image(
        SourceImageId=source["ImageId"],
        SourceRegion=source_region,
        Name=_copy_name(source["ImageId"], source_region),
        Description=f"{source.get('Name', source['ImageId'])} copied by shadowing for {req.entity_id}",
        ClientToken=_token("copy", source["ImageId"], source_region, req.region),
    )
    image_id = str(copied["ImageId"])
    tags = [*_base_tags(req.entity_id), {"Key": TAG_SOURCE_IMAGE, "Value": source["ImageId"]}]
    ec2.create_tags(Resources=[image_id], Tags=tags)
    return image_id


def _delete_templates(ec2: Ec2, entity_id: str) -> int:
    found = ec2.describe_launch_templates(
        Filters=[{"Name": f"tag:{TAG_ENTITY}", "Values": [entity_id]},
                 {"Name": f"tag:{TAG_MANAGED}", "Values": ["shadowing"]}]
    )["LaunchTemplates"]  # fmt: skip
    for template in found:
        try:
            ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])
        except ClientError as exc:
            if "NotFound" not in _code(exc):
                raise
    return len(found)


def _drop_unused_templates(ec2: Ec2, entity_id: str, terminated: set[str]) -> None:
    """The entity's launch templates in a region live as long as it has instances there (a retired or
    compensated fleet must not leave them behind); the next provisioning makes them again."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{TAG_ENTITY}", "Values": [entity_id]},
                 {"Name": "instance-state-name", "Values": [*LIVE_STATES, "stopping", "stopped"]}]
    )  # fmt: skip
    if not any(i["InstanceId"] not in terminated for p in pages for r in p["Reservations"] for i in r["Instances"]):
        _delete_templates(ec2, entity_id)


def _template_name(entity_id: str, instance_type: str) -> str:
    return f"shadowing-{entity_id}-{instance_type}"


def _ensure_template(ec2: Ec2, req: ProvisionInput, image: str) -> tuple[str, str]:
    """(name, version) of the entity's template for this type with this image and payload; made if missing."""
    name = _template_name(req.entity_id, req.instance_type)
    data: dict[str, Any] = {
        "ImageId": image,
        "InstanceType": req.instance_type,
        "MetadataOptions": {"HttpTokens": "required"},
        "TagSpecifications": [{"ResourceType": k, "Tags": _base_tags(req.entity_id)} for k in ("instance", "volume")],
    }
    if script := _boot_script(req):
        data["UserData"] = _b64(script)
    try:
        latest = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])
    except ClientError as exc:
        if "NotFound" not in _code(exc):
            raise
        return _create_template(ec2, req, name, data)
    current = latest["LaunchTemplateVersions"][0]
    have = current["LaunchTemplateData"]
    if have.get("ImageId") == image and have.get("UserData", "") == data.get("UserData", ""):
        return name, str(current["VersionNumber"])
    made = ec2.create_launch_template_version(LaunchTemplateName=name, LaunchTemplateData=data)
    return name, str(made["LaunchTemplateVersion"]["VersionNumber"])


def _create_template(ec2: Ec2, req: ProvisionInput, name: str, data: dict[str, Any]) -> tuple[str, str]:
    try:
        ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData=data,
            ClientToken=_token("template", name),
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": _base_tags(req.entity_id)}],
        )
    except ClientError as exc:
        if "AlreadyExists" not in _code(exc):  # a concurrent attempt made it first: use theirs
            raise
        return _ensure_template(ec2, req, data["ImageId"])
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


def _run_on_demand(
    ec2: Ec2, req: ProvisionInput, image: str, template: tuple[str, str], subnet: str | None, az: str, count: int,
    live: list[Json],
) -> None:  # fmt: skip
    """One RunInstances in `az`. ImageId, type and tags are also given explicitly: moto drops the template's."""
    already = sum(1 for i in live if i["Placement"]["AvailabilityZone"] == az)
    kwargs: dict[str, Any] = {}
    if script := _boot_script(req):
        kwargs["UserData"] = script
    ec2.run_instances(
        LaunchTemplate={"LaunchTemplateName": template[0], "Version": template[1]},
        ImageId=image,
        InstanceType=req.instance_type,
        MinCount=count,
        MaxCount=count,
        ClientToken=_token(req.fleet_id, az, already, count),
        TagSpecifications=[{"ResourceType": k, "Tags": _tags(req, "on-demand")} for k in ("instance", "volume")],
        **_where(subnet, az),
        **kwargs,
    )


def _spot_requests(ec2: Ec2, fleet_id: str, states: list[str]) -> list[Json]:
    found = ec2.describe_spot_instance_requests(
        Filters=[{"Name": f"tag:{TAG_FLEET}", "Values": [fleet_id]}, {"Name": "state", "Values": states}]
    )["SpotInstanceRequests"]
    return [r for r in found if r.get("State") in states]


def _request_spot(
    ec2: Ec2, req: ProvisionInput, image: str, subnet: str | None, az: str, count: int, deadline: float
) -> None:
    """One-time spot requests for `count` instances in `az`; 'no capacity at this price' leaves them to on-demand."""
    spec: dict[str, Any] = {"ImageId": image, "InstanceType": req.instance_type}
    spec |= {"SubnetId": subnet} if subnet else {"Placement": {"AvailabilityZone": az}}
    if script := _boot_script(req):
        spec["UserData"] = _b64(script)  # RequestSpotInstances, unlike RunInstances, takes it encoded
    price = {"SpotPrice": f"{req.max_price_usd:.5f}"} if req.max_price_usd else {}
    tags = [t for t in _tags(req) if t["Key"] != "Name"] + [{"Key": TAG_AZ, "Value": az}]
    try:
        ec2.request_spot_instances(
            InstanceCount=count,
            Type="one-time",
            ValidUntil=deadline,
            LaunchSpecification=spec,
            ClientToken=_token("spot", req.fleet_id, az, count, deadline),
            TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": tags}],
            **price,
        )
    except ClientError as exc:
        if _code(exc) not in SPOT_UNAVAILABLE:
            raise
        activity.logger.info("spot unavailable in %s (%s): on-demand takes over", az, _code(exc))


def _adopt_spot_instances(ec2: Ec2, req: ProvisionInput) -> None:
    """Tags the live instances of the fleet's filled spot requests (spot requests cannot tag their instances)."""
    requests = _spot_requests(ec2, req.fleet_id, ["active", "closed", "cancelled"])
    ids = [i["InstanceId"] for i in _instances(ec2, [r["InstanceId"] for r in requests if r.get("InstanceId")])]
    if ids:
        ec2.create_tags(Resources=ids, Tags=_tags(req, "spot"))
