"""adopt_fleet / release_adopted against moto: instances that already serve an entity become its first fleet."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED, TAG_ROLE
from activities.ec2 import AMI_PARAMETER, TAG_ADOPTED, TAG_INSTALLATION, AdoptInput, Ec2Activities
from activities.ownership import tag_map
from shadowing.models import AdoptFleet
from workers.aws import AwsClients

REGION = "us-east-1"
FLEET = "shop:initial"


def launch(aws: AwsClients, count: int = 2, kind: str = "m5.large", tags: dict[str, str] | None = None) -> list[str]:
    """Instances someone launched before the product: running, tagged `app=shop` (plus `tags`)."""
    image = aws("ssm", REGION).get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    tags = {"app": "shop", **(tags or {})}
    made = aws("ec2", REGION).run_instances(
        ImageId=image, InstanceType=kind, MinCount=count, MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )  # fmt: skip
    return [i["InstanceId"] for i in made["Instances"]]


def adopt(**how: Any) -> AdoptInput:
    extra = {k: how.pop(k) for k in ("instance_types", "max_instances") if k in how}
    return AdoptInput(entity_id="shop", fleet_id=FLEET, region=REGION, adopt=AdoptFleet(**how),
                      instance_types=extra.get("instance_types", ("m5.large", "c5.xlarge")),
                      max_instances=extra.get("max_instances", 20))  # fmt: skip


def tags_of(aws: AwsClients, iid: str) -> dict[str, str]:
    found = aws("ec2", REGION).describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return tag_map(found.get("Tags"))


def state_of(aws: AwsClients, iid: str) -> str:
    found = aws("ec2", REGION).describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return str(found["State"]["Name"])


def refused(ec2: Ec2Activities, req: AdoptInput) -> str:
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(ec2.adopt_fleet, req)
    assert err.value.type == "InvalidRequest" and err.value.non_retryable
    return str(err.value.message)


def test_adopt_by_ids_tags_them_and_returns_the_fleet_with_addresses(aws: AwsClients) -> None:
    ids = launch(aws, 2)
    other = launch(aws, 1)[0]
    ec2 = Ec2Activities(aws, installation="team-a")
    fleet = ActivityEnvironment().run(ec2.adopt_fleet, adopt(instance_ids=tuple(ids)))
    assert set(fleet.instance_ids) == set(ids) and fleet.size == 2
    assert fleet.role == "active" and fleet.instance_type == "m5.large" and fleet.fleet_id == FLEET
    assert len(fleet.addresses) == 2 and all(fleet.addresses) and len(fleet.availability_zones) == 2
    for iid in ids:
        tags = tags_of(aws, iid)
        assert tags[TAG_MANAGED] == "shadowing" and tags[TAG_ENTITY] == "shop" and tags[TAG_FLEET] == FLEET
        assert tags[TAG_INSTALLATION] == "team-a" and tags[TAG_ROLE] == "active" and tags[TAG_ADOPTED] == "true"
        assert tags["app"] == "shop", "their own tags stay"
    assert TAG_MANAGED not in tags_of(aws, other), "an instance not named is not touched"
    again = ActivityEnvironment().run(ec2.adopt_fleet, adopt(instance_ids=tuple(ids)))
    assert again == fleet, "a retry after tagging adopts the same fleet"


def test_adopt_by_tags_takes_every_running_instance_carrying_them(aws: AwsClients) -> None:
    ids = launch(aws, 3, tags={"tier": "web"})
    launch(aws, 1, tags={"tier": "worker"})
    fleet = ActivityEnvironment().run(Ec2Activities(aws).adopt_fleet, adopt(tags={"app": "shop", "tier": "web"}))
    assert set(fleet.instance_ids) == set(ids)


def test_adopted_instances_are_retired_by_terminate_like_any_fleet(aws: AwsClients) -> None:
    """The point of adopting: the first migration's retirement (terminate_fleet) moves the real fleet."""
    ids = launch(aws, 2)
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    fleet = env.run(ec2.adopt_fleet, adopt(instance_ids=tuple(ids)))
    assert env.run(ec2.terminate_fleet, fleet) == 2
    assert {state_of(aws, i) for i in ids} <= {"shutting-down", "terminated"}


def test_release_removes_only_the_tags_adoption_added_and_terminates_nothing(aws: AwsClients) -> None:
    ids = launch(aws, 2)
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    fleet = env.run(ec2.adopt_fleet, adopt(instance_ids=tuple(ids)))
    assert env.run(ec2.release_adopted, fleet) == 2
    assert env.run(ec2.release_adopted, fleet) == 0, "repeatable"
    for iid in ids:
        assert state_of(aws, iid) == "running"
        assert tags_of(aws, iid) == {"app": "shop"}


def test_release_leaves_a_launched_fleet_tagged(aws: AwsClients) -> None:
    """Only adopted instances lose the tags: one carrying the fleet's tags without `adopted` is left as it is."""
    iid = launch(aws, 1, tags={TAG_MANAGED: "shadowing", TAG_ENTITY: "shop", TAG_FLEET: FLEET,
                               TAG_INSTALLATION: "default"})[0]  # fmt: skip
    ec2 = Ec2Activities(aws)
    fleet = ActivityEnvironment().run(ec2.adopt_fleet, adopt(instance_ids=(launch(aws, 1)[0],)))
    assert ActivityEnvironment().run(ec2.release_adopted, fleet) == 1
    assert tags_of(aws, iid)[TAG_FLEET] == FLEET


REFUSALS = [
    ("missing id", lambda aws: adopt(instance_ids=("i-0123456789abcdef0",)), "spec.adopt.instance_ids: instance "
     "i-0123456789abcdef0 does not exist"),
    ("no tag match", lambda aws: adopt(tags={"app": "nothing"}), "spec.adopt.tags: no instance in us-east-1 carries"),
    ("type not allowed", lambda aws: adopt(instance_ids=tuple(launch(aws, 1, kind="t3.micro"))),
     "is a t3.micro, not one of spec.instance_types"),
    ("several types", lambda aws: adopt(instance_ids=(*launch(aws, 1), *launch(aws, 1, kind="c5.xlarge"))),
     "span several types (c5.xlarge, m5.large)"),
    ("too many", lambda aws: adopt(tags={"app": "shop"}, max_instances=1) if launch(aws, 2) else None,
     "2 instances, more than policy.max_instances (1)"),
    ("another entity's", lambda aws: adopt(instance_ids=tuple(launch(aws, 1, tags={TAG_MANAGED: "shadowing",
                                                                                   TAG_ENTITY: "cart"}))),
     "already belongs to another owner (shadowing:entity=cart)"),
    ("another installation's", lambda aws: adopt(instance_ids=tuple(launch(aws, 1, tags={
        TAG_MANAGED: "shadowing", TAG_ENTITY: "shop", TAG_INSTALLATION: "team-b"}))),
     "already belongs to another owner (shadowing:installation=team-b)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_unadoptable_instances_are_refused_naming_the_field_and_nothing_is_tagged(
    aws: AwsClients, case: str, make: Any, says: str
) -> None:
    req = make(aws)
    message = refused(Ec2Activities(aws), req)
    assert says in message and message.startswith("spec.adopt.")
    tagged = aws("ec2", REGION).describe_instances(Filters=[{"Name": f"tag:{TAG_ADOPTED}", "Values": ["true"]}])
    assert not tagged["Reservations"], "a refusal changes nothing"


def test_a_stopped_instance_is_refused(aws: AwsClients) -> None:
    ids = launch(aws, 2)
    aws("ec2", REGION).stop_instances(InstanceIds=[ids[1]])
    message = refused(Ec2Activities(aws), adopt(instance_ids=tuple(ids)))
    assert f"instance {ids[1]} is stopp" in message and "not running" in message
