"""EC2, warm-up and Route53 activities against moto."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED, TAG_ROLE
from activities.ec2 import Ec2Activities, FleetInput, ProvisionInput
from activities.routing import RoutingActivities, RoutingInput
from activities.warmup import WarmupActivities
from shadowing.models import FleetRef
from workers.aws import AwsClients


def provision_req(quantity: int = 3, fleet: str = "shop:20260101T000000Z", region: str = "eu-west-1") -> ProvisionInput:
    return ProvisionInput(
        entity_id="shop", fleet_id=fleet, slice_key="20260101T000000Z", region=region, instance_type="m5.large",
        quantity=quantity,
    )  # fmt: skip


def live(aws: AwsClients, region: str = "eu-west-1") -> list[dict]:
    pages = (
        aws("ec2", region)
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    )
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


def test_provision_is_idempotent_and_tags_everything(aws: AwsClients) -> None:
    """Provisioning twice (a retry after a lost reply) launches once; every instance carries the product's tags."""
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    first = env.run(ec2.provision_fleet, provision_req())
    again = env.run(ec2.provision_fleet, provision_req())
    assert first.instance_ids == again.instance_ids and first.size == 3
    instances = live(aws)
    assert len(instances) == 3
    for inst in instances:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags[TAG_ENTITY] == "shop" and tags[TAG_FLEET] == first.fleet_id and tags[TAG_MANAGED] == "shadowing"
        assert tags[TAG_ROLE] == "shadow"
    assert len(first.addresses) == 3


def test_provision_tops_up_a_partial_fleet(aws: AwsClients) -> None:
    """An attempt that launched only part of the fleet is completed, not duplicated, by the next one."""
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    env.run(ec2.provision_fleet, provision_req(quantity=1))
    full = env.run(ec2.provision_fleet, provision_req(quantity=4))
    assert full.size == 4 and len(live(aws)) == 4


def test_terminate_is_idempotent_and_scoped_to_the_fleet(aws: AwsClients) -> None:
    """Terminating a fleet twice is safe and never touches another fleet's instances."""
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    mine = env.run(ec2.provision_fleet, provision_req(quantity=2))
    other = env.run(ec2.provision_fleet, provision_req(quantity=1, fleet="shop:other"))
    assert env.run(ec2.terminate_fleet, mine) == 2
    assert env.run(ec2.terminate_fleet, mine) == 0
    assert [i["InstanceId"] for i in live(aws)] == list(other.instance_ids)


def test_warm_fleet_reports_healthy_and_gives_up_on_missing_instances(aws: AwsClients) -> None:
    """Warm-up returns once EC2 reports the fleet running; a fleet that never gets healthy is non-retryable."""
    fleet = ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, provision_req(quantity=2))
    warm = WarmupActivities(aws, poll_s=0.01)
    report = ActivityEnvironment().run(warm.warm_fleet, FleetInput(fleet=fleet, timeout_s=5))
    assert report.healthy and report.healthy_count == 2
    ActivityEnvironment().run(Ec2Activities(aws).terminate_fleet, fleet)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(warm.warm_fleet, FleetInput(fleet=fleet, timeout_s=0.05))
    assert err.value.type == "InstanceNeverHealthy" and err.value.non_retryable


def _fleet(fid: str, region: str, ip: str) -> FleetRef:
    return FleetRef(fleet_id=fid, entity_id="shop", region=region, instance_type="m5.large",
                    instance_ids=("i-1",), addresses=(ip,))  # fmt: skip


def test_switch_traffic(aws: AwsClients, zone: str) -> None:
    """Cutover moves all weight to the new fleet in one batch; retiring a fleet removes its record."""
    route = RoutingActivities(aws)
    env = ActivityEnvironment()
    ec2 = Ec2Activities(aws)
    old = env.run(ec2.provision_fleet, provision_req(1, "shop:old", "us-east-1"))
    new = env.run(ec2.provision_fleet, provision_req(1, "shop:new", "eu-west-1"))
    env.run(route.switch_traffic, RoutingInput(hosted_zone_id=zone, dns_name="shop.example.internal", to_fleet=old))
    req = RoutingInput(hosted_zone_id=zone, dns_name="shop.example.internal", to_fleet=new, from_fleet=old)
    assert env.run(route.switch_traffic, req).weights == {"shop:old": 0, "shop:new": 100}
    retire = RoutingInput(hosted_zone_id=zone, dns_name="shop.example.internal", to_fleet=old)
    assert env.run(route.remove_fleet_record, retire).weights == {"shop:new": 100}


def test_switch_to_missing_zone_is_a_clear_non_retryable_error(aws: AwsClients) -> None:
    """Routing into a hosted zone that does not exist names the zone and is not retried."""
    req = RoutingInput(hosted_zone_id="ZNOPE", dns_name="x.example", to_fleet=_fleet("a", "us-east-1", "10.0.0.9"))
    with pytest.raises(ApplicationError, match="ZNOPE") as err:
        ActivityEnvironment().run(RoutingActivities(aws).switch_traffic, req)
    assert err.value.non_retryable
