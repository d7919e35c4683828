"""EC2 fleets: launch tagged instances idempotently, find them again by tag, terminate them."""

from __future__ import annotations

import hashlib

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED, TAG_ROLE, TAG_SLICE, ClientFactory
from shadowing.models import FleetRef, ProvisionInput

#: Latest Amazon Linux 2023 in every region, through SSM's public parameter (moto serves it too).
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
LIVE_STATES = ["pending", "running"]


class Ec2Activities:
    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    @activity.defn(name="provision_fleet")
    def provision_fleet(self, req: ProvisionInput) -> FleetRef:
        """Makes the fleet have `quantity` live instances, launching only what an earlier attempt did not.

        moto ignores ClientToken, so instances are looked up by their fleet tag first; the token still guards
        the window on real AWS where a launch succeeded but its tags are not yet visible.
        """
        ec2 = self._clients("ec2", req.region)
        existing = self._live_instances(ec2, req.fleet_id)
        missing = req.quantity - len(existing)
        if missing > 0:
            token = hashlib.sha256(f"{req.fleet_id}/{len(existing)}".encode()).hexdigest()[:64]
            ec2.run_instances(
                ImageId=self._image(req.region),
                InstanceType=req.instance_type,
                MinCount=missing,
                MaxCount=missing,
                ClientToken=token,
                TagSpecifications=[{"ResourceType": kind, "Tags": _tags(req)} for kind in ("instance", "volume")],
            )
            existing = self._live_instances(ec2, req.fleet_id)
        return _fleet(req, existing[: req.quantity])

    @activity.defn(name="terminate_fleet")
    def terminate_fleet(self, fleet: FleetRef) -> int:
        """Terminates every live instance carrying the fleet's tag; returns how many. Safe to repeat."""
        ec2 = self._clients("ec2", fleet.region)
        ids = [i["InstanceId"] for i in self._live_instances(ec2, fleet.fleet_id, states=[*LIVE_STATES, "stopped"])]
        if ids:
            ec2.terminate_instances(InstanceIds=ids)
        return len(ids)

    @activity.defn(name="mark_fleet_role")
    def mark_fleet_role(self, fleet: FleetRef) -> FleetRef:
        """Re-tags the fleet's instances with `fleet.role` (shadow -> active at cutover)."""
        ec2 = self._clients("ec2", fleet.region)
        ids = [i["InstanceId"] for i in self._live_instances(ec2, fleet.fleet_id)]
        if ids:
            ec2.create_tags(Resources=ids, Tags=[{"Key": TAG_ROLE, "Value": fleet.role}])
        return fleet

    def _image(self, region: str) -> str:
        ssm = self._clients("ssm", region)
        try:
            return ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
        except ssm.exceptions.ParameterNotFound as exc:
            raise ApplicationError(
                f"no Amazon Linux AMI parameter in {region}", type="InvalidRequest", non_retryable=True
            ) from exc

    @staticmethod
    def _live_instances(ec2, fleet_id: str, states: list[str] | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{TAG_FLEET}", "Values": [fleet_id]},
                {"Name": "instance-state-name", "Values": states or LIVE_STATES},
            ]
        )
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        return sorted(found, key=lambda i: (i["LaunchTime"], i["InstanceId"]))


def _tags(req: ProvisionInput) -> list[dict[str, str]]:
    return [
        {"Key": TAG_ENTITY, "Value": req.entity_id},
        {"Key": TAG_FLEET, "Value": req.fleet_id},
        {"Key": TAG_SLICE, "Value": req.slice_key},
        {"Key": TAG_ROLE, "Value": req.role},
        {"Key": TAG_MANAGED, "Value": "shadowing"},
        {"Key": "Name", "Value": f"{req.entity_id}-{req.role}-{req.slice_key}"},
    ]


def _fleet(req: ProvisionInput, instances: list[dict]) -> FleetRef:
    return FleetRef(
        fleet_id=req.fleet_id,
        entity_id=req.entity_id,
        region=req.region,
        instance_type=req.instance_type,
        instance_ids=tuple(i["InstanceId"] for i in instances),
        addresses=tuple(i.get("PrivateIpAddress", "") for i in instances if i.get("PrivateIpAddress")),
        role=req.role,
    )
