"""Real provisioning against moto: launch templates, AMI copies, AZ spread, spot with on-demand fallback, prices."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TAG_FLEET, TAG_ROLE
from activities.ec2 import (
    AMI_PARAMETER,
    TAG_INSTALLATION,
    TAG_MARKET,
    TAG_SOURCE_IMAGE,
    Ec2Activities,
    ProvisionInput,
    ResizeInput,
)
from shadowing import prices
from shadowing.catalog import INSTANCE_TYPES, REGIONS
from shadowing.errors import InvalidRequest
from workers.aws import AwsClients

SLICE = "20260101T000000Z"


def req(fleet: str = "shop:a", quantity: int = 3, region: str = "eu-west-1", **extra: Any) -> ProvisionInput:
    return ProvisionInput(entity_id="shop", fleet_id=fleet, slice_key=SLICE, region=region,
                          instance_type="m5.large", quantity=quantity, **extra)  # fmt: skip


def fleet_instances(aws: AwsClients, fleet: str, region: str = "eu-west-1") -> list[dict]:
    pages = aws("ec2", region).get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{TAG_FLEET}", "Values": [fleet]},
                 {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )  # fmt: skip
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


def all_live(aws: AwsClients, region: str = "eu-west-1") -> list[dict]:
    pages = (
        aws("ec2", region)
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    )
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


def home_image(aws: AwsClients, region: str = "us-east-1") -> str:
    """The entity's own AMI in its home region, made from an instance there."""
    ec2 = aws("ec2", region)
    base = aws("ssm", region).get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    iid = ec2.run_instances(ImageId=base, InstanceType="m5.large", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=iid, Name="shop-golden")["ImageId"]
    ec2.terminate_instances(InstanceIds=[iid])
    return str(image)


class Proxy:
    """A boto3 client whose named methods are replaced; everything else reaches moto."""

    def __init__(self, real: Any, **overrides: Any) -> None:
        self._real, self._overrides = real, overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides.get(name) or getattr(self._real, name)


def with_ec2(aws: AwsClients, make: Any) -> Any:
    """A client factory whose EC2 clients are `make(real_client)`."""
    return lambda service, region: make(aws(service, region)) if service == "ec2" else aws(service, region)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# ---- launch templates -----------------------------------------------------------------------------------------


def test_launch_template_is_created_once_reused_and_carries_the_boot_payload(aws: AwsClients) -> None:
    """Two fleets of one entity and type share `shadowing-default-shop-m5.large` (installation, entity, type); it
    holds the image and the boot script."""
    launches: list[dict] = []

    def recording(real: Any) -> Any:
        return Proxy(real, run_instances=lambda **kw: launches.append(kw) or real.run_instances(**kw))

    ec2 = Ec2Activities(with_ec2(aws, recording))
    env = ActivityEnvironment()
    first = env.run(ec2.provision_fleet, req("shop:a", 1, container_image="registry.example/shop:1.2"))
    second = env.run(ec2.provision_fleet, req("shop:b", 1, container_image="registry.example/shop:1.2"))
    client = aws("ec2", "eu-west-1")
    templates = client.describe_launch_templates()["LaunchTemplates"]
    assert [t["LaunchTemplateName"] for t in templates] == ["shadowing-default-shop-m5.large"]
    assert first.launch_template == second.launch_template == "shadowing-default-shop-m5.large"
    versions = client.describe_launch_template_versions(LaunchTemplateName="shadowing-default-shop-m5.large")
    assert len(versions["LaunchTemplateVersions"]) == 1
    data = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == first.image_id
    assert "docker pull registry.example/shop:1.2" in base64.b64decode(data["UserData"]).decode()
    for inst in fleet_instances(aws, "shop:a") + fleet_instances(aws, "shop:b"):
        assert inst["ImageId"] == first.image_id and inst["InstanceType"] == "m5.large"
    for launch in launches:  # explicit too: moto may drop what a template launch should inherit
        assert launch["LaunchTemplate"]["LaunchTemplateName"] == "shadowing-default-shop-m5.large"
        assert launch["ImageId"] == first.image_id and launch["InstanceType"] == "m5.large"
        assert {t["Key"] for t in launch["TagSpecifications"][0]["Tags"]} >= {TAG_FLEET, "shadowing:market"}


def test_changed_boot_payload_makes_a_new_template_version(aws: AwsClients) -> None:
    """A new user-data script is a new version of the same template, and the launch uses it."""
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    env.run(ec2.provision_fleet, req("shop:a", 1, user_data="#!/bin/bash\necho v1\n"))
    env.run(ec2.provision_fleet, req("shop:b", 1, user_data="#!/bin/bash\necho v2\n"))
    versions = aws("ec2", "eu-west-1").describe_launch_template_versions(
        LaunchTemplateName="shadowing-default-shop-m5.large"
    )
    scripts = {v["VersionNumber"]: base64.b64decode(v["LaunchTemplateData"]["UserData"]).decode()
               for v in versions["LaunchTemplateVersions"]}  # fmt: skip
    assert scripts == {1: "#!/bin/bash\necho v1\n", 2: "#!/bin/bash\necho v2\n"}


# ---- images ---------------------------------------------------------------------------------------------------


def test_ami_is_copied_once_into_the_target_region_and_found_again(aws: AwsClients) -> None:
    """The home-region AMI is copied and tagged once; a retry and a second fleet find that copy and launch from it."""
    source = home_image(aws)
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    first = env.run(ec2.provision_fleet, req("shop:a", 2, source_image_id=source, source_region="us-east-1"))
    again = env.run(ec2.provision_fleet, req("shop:a", 2, source_image_id=source, source_region="us-east-1"))
    other = env.run(ec2.provision_fleet, req("shop:b", 1, source_image_id=source, source_region="us-east-1"))
    copies = aws("ec2", "eu-west-1").describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{TAG_SOURCE_IMAGE}", "Values": [source]}]
    )["Images"]
    assert [c["ImageId"] for c in copies] == [first.image_id] and first.image_id != source
    assert again.image_id == other.image_id == first.image_id and again.instance_ids == first.instance_ids
    assert {i["ImageId"] for i in fleet_instances(aws, "shop:a") + fleet_instances(aws, "shop:b")} == {first.image_id}


def test_an_untagged_copy_left_by_a_crash_is_found_by_name(aws: AwsClients) -> None:
    """A copy made just before a crash (not tagged yet) is adopted by its deterministic name, not copied again."""
    source = home_image(aws)
    client = aws("ec2", "eu-west-1")
    orphan = client.copy_image(SourceImageId=source, SourceRegion="us-east-1",
                               Name=f"shadowing-{source}-from-us-east-1")["ImageId"]  # fmt: skip
    fleet = ActivityEnvironment().run(
        Ec2Activities(aws).provision_fleet, req(quantity=1, source_image_id=source, source_region="us-east-1")
    )
    assert fleet.image_id == orphan
    assert len(client.describe_images(Owners=["self"])["Images"]) == 1


def test_missing_source_ami_is_a_clear_error_and_launches_nothing(aws: AwsClients) -> None:
    """An AMI that does not exist in the home region is a non-retryable error naming it; nothing is created."""
    missing = "ami-0123456789abcdef0"
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(
            Ec2Activities(aws).provision_fleet, req(source_image_id=missing, source_region="us-east-1")
        )
    assert err.value.type == "InvalidRequest" and err.value.non_retryable
    assert missing in str(err.value) and "us-east-1" in str(err.value)
    assert all_live(aws) == []
    assert aws("ec2", "eu-west-1").describe_launch_templates()["LaunchTemplates"] == []


def test_image_copy_that_stays_pending_times_out_retryably_with_heartbeats(aws: AwsClients) -> None:
    """A copy still pending at the attempt's bound is a retryable error after heartbeating; nothing is launched."""
    source = home_image(aws)

    def pending(real: Any) -> Any:
        def describe_images(**kw: Any) -> dict:
            out = real.describe_images(**kw)
            return {**out, "Images": [{**i, "State": "pending"} for i in out["Images"]]}

        return Proxy(real, describe_images=describe_images)

    clock, beats = FakeClock(), []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: beats.append(d)
    ec2 = Ec2Activities(with_ec2(aws, pending), clock=clock, sleep=clock.sleep, poll_s=30)
    with pytest.raises(ApplicationError) as err:
        env.run(ec2.provision_fleet, req(source_image_id=source, source_region="us-east-1", image_timeout_s=300))
    assert err.value.type == "ImageNotReady" and not err.value.non_retryable
    assert len(beats) >= 300 // 30 and all_live(aws) == []


# ---- placement and idempotency -------------------------------------------------------------------------------


def test_fleet_is_spread_round_robin_over_the_default_subnets_of_each_az(aws: AwsClients) -> None:
    """Seven instances over eu-west-1's three AZs land 3/2/2, each in its AZ's default subnet."""
    client = aws("ec2", "eu-west-1")
    defaults = client.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in defaults}
    fleet = ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, req(quantity=7))
    instances = fleet_instances(aws, "shop:a")
    per_az = Counter(i["Placement"]["AvailabilityZone"] for i in instances)
    assert sorted(per_az.values(), reverse=True) == [3, 2, 2] and set(per_az) == set(subnets)
    assert all(i["SubnetId"] == subnets[i["Placement"]["AvailabilityZone"]] for i in instances)
    assert Counter(fleet.availability_zones) == per_az and fleet.spot_instance_ids == ()


def test_rerun_after_a_crash_between_launch_and_completion_launches_only_what_is_missing(aws: AwsClients) -> None:
    """An attempt that dies right after its first RunInstances is completed by the retry, without duplicates."""
    calls = {"run": 0}

    def crashing(real: Any) -> Any:
        def run_instances(**kw: Any) -> dict:
            out = real.run_instances(**kw)
            calls["run"] += 1
            if calls["run"] == 1:
                raise ConnectionError("worker lost its connection after the launch")
            return out

        return Proxy(real, run_instances=run_instances)

    ec2 = Ec2Activities(with_ec2(aws, crashing))
    env = ActivityEnvironment()
    with pytest.raises(ConnectionError):
        env.run(ec2.provision_fleet, req(quantity=5))
    launched_before_crash = len(fleet_instances(aws, "shop:a"))
    assert 0 < launched_before_crash < 5
    fleet = env.run(ec2.provision_fleet, req(quantity=5))
    assert fleet.size == 5 and len(all_live(aws)) == 5
    assert sorted(Counter(fleet.availability_zones).values(), reverse=True) == [2, 2, 1]
    assert env.run(ec2.provision_fleet, req(quantity=5)).instance_ids == fleet.instance_ids


# ---- spot -----------------------------------------------------------------------------------------------------


def recording_launches(launches: list[dict], refuse: Any = None) -> Any:
    """EC2 that records every RunInstances; `refuse(kwargs)` may return an error code to answer instead."""

    def make(real: Any) -> Any:
        def run_instances(**kw: Any) -> dict:
            launches.append(kw)
            if refuse is not None and (code := refuse(kw)):
                raise ClientError({"Error": {"Code": code, "Message": "no"}}, "RunInstances")
            return real.run_instances(**kw)

        return Proxy(real, run_instances=run_instances)

    return make


def is_spot_launch(kw: dict) -> bool:
    return kw.get("InstanceMarketOptions", {}).get("MarketType") == "spot"


def test_spot_launches_go_through_the_launch_template_with_imdsv2_and_tags_at_launch(aws: AwsClients) -> None:
    """Spot instances come from RunInstances through the fleet's launch template: IMDSv2 required, every tag
    (fleet, entity, installation, market) set by the launch itself, the max price as spot options; repeatable."""
    launches: list[dict] = []
    ec2 = Ec2Activities(with_ec2(aws, recording_launches(launches)))
    env = ActivityEnvironment()
    fleet = env.run(ec2.provision_fleet, req(quantity=4, market="spot", max_price_usd=0.05))
    assert fleet.size == 4 and set(fleet.spot_instance_ids) == set(fleet.instance_ids)
    assert launches and all(is_spot_launch(kw) for kw in launches)
    for kw in launches:
        assert kw["LaunchTemplate"]["LaunchTemplateName"] == fleet.launch_template
        assert kw["MetadataOptions"] == {"HttpTokens": "required"}
        assert kw["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.05000"
        kinds = {s["ResourceType"] for s in kw["TagSpecifications"]}
        assert kinds == {"instance", "volume", "spot-instances-request"}
    template = aws("ec2", "eu-west-1").describe_launch_template_versions(LaunchTemplateName=fleet.launch_template)
    assert template["LaunchTemplateVersions"][0]["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required"
    for inst in all_live(aws):
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags[TAG_FLEET] == "shop:a" and tags[TAG_INSTALLATION] == "default" and tags[TAG_MARKET] == "spot"
        assert inst["MetadataOptions"]["HttpTokens"] == "required" and inst["InstanceLifecycle"] == "spot"
    assert env.run(ec2.provision_fleet, req(quantity=4, market="spot", max_price_usd=0.05)) == fleet
    assert not any("request_spot_instances" in str(kw) for kw in launches)


def test_spot_without_capacity_is_asked_again_until_the_deadline_then_on_demand(aws: AwsClients) -> None:
    """AZs refusing spot for capacity are asked again every `spot_retry_s` (heartbeating the deadline); at the
    deadline on-demand launches the whole fleet."""
    launches: list[dict] = []
    refuse = lambda kw: "InsufficientInstanceCapacity" if is_spot_launch(kw) else None  # noqa: E731
    clock, beats = FakeClock(), []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: beats.append(d)
    start = clock.now
    ec2 = Ec2Activities(
        with_ec2(aws, recording_launches(launches, refuse)), clock=clock, sleep=clock.sleep, spot_retry_s=30
    )
    fleet = env.run(ec2.provision_fleet, req(quantity=3, market="spot", max_price_usd=0.05, spot_deadline_s=120))
    assert clock.now - start >= 120, "spot was asked for until the deadline"
    spot = [kw for kw in launches if is_spot_launch(kw)]
    assert len(spot) == 3 * 4, "three AZs, asked at 0, 30, 60 and 90 s"
    assert fleet.size == 3 and fleet.spot_instance_ids == ()
    assert {i["InstanceId"] for i in all_live(aws)} == set(fleet.instance_ids)
    assert any(b and b[0].get("spot_deadline") == start + 120 for b in beats)


def test_spot_capacity_that_comes_back_before_the_deadline_is_used(aws: AwsClients) -> None:
    """An AZ that refused spot once fills on the next ask: the fleet ends all spot, nothing on-demand."""
    launches: list[dict] = []
    refused: set[str] = set()

    def once_per_az(kw: dict) -> str | None:
        where = kw.get("SubnetId") or kw["Placement"]["AvailabilityZone"]
        if where in refused:
            return None
        refused.add(where)
        return "InsufficientInstanceCapacity"

    clock = FakeClock()
    ec2 = Ec2Activities(with_ec2(aws, recording_launches(launches, once_per_az)), clock=clock, sleep=clock.sleep)
    fleet = ActivityEnvironment().run(ec2.provision_fleet, req(quantity=3, market="spot", spot_deadline_s=120))
    assert fleet.size == 3 and set(fleet.spot_instance_ids) == set(fleet.instance_ids)
    assert all(is_spot_launch(kw) for kw in launches) and clock.now - 1_000_000 < 120


def test_spot_unsupported_falls_back_at_once(aws: AwsClients) -> None:
    """An AZ that does not offer the type on spot goes to on-demand without waiting for the deadline."""
    refuse = lambda kw: "Unsupported" if is_spot_launch(kw) else None  # noqa: E731
    clock = FakeClock()
    start = clock.now
    ec2 = Ec2Activities(with_ec2(aws, recording_launches([], refuse)), clock=clock, sleep=clock.sleep)
    fleet = ActivityEnvironment().run(ec2.provision_fleet, req(quantity=2, market="spot"))
    assert fleet.size == 2 and fleet.spot_instance_ids == () and clock.now == start


def test_retry_after_the_spot_deadline_goes_straight_to_on_demand(aws: AwsClients) -> None:
    """A retry whose heartbeat says the spot deadline has passed makes no spot launch."""
    launches: list[dict] = []
    clock = FakeClock()
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_details=[{"phase": "spot", "spot_deadline": clock.now - 1}])
    ec2 = Ec2Activities(with_ec2(aws, recording_launches(launches)), clock=clock, sleep=clock.sleep)
    fleet = env.run(ec2.provision_fleet, req(quantity=2, market="spot", max_price_usd=0.05))
    assert not any(is_spot_launch(kw) for kw in launches) and fleet.size == 2 and fleet.spot_instance_ids == ()


def test_spot_max_price_below_market_is_refused_before_any_aws_call(aws: AwsClients) -> None:
    """A bid under the table's typical spot price is a non-retryable error naming price, type and region."""
    calls: list[tuple[str, str]] = []

    def factory(service: str, region: str) -> Any:
        calls.append((service, region))
        return aws(service, region)

    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(Ec2Activities(factory).provision_fleet, req(market="spot", max_price_usd=0.01))
    assert err.value.type == "InvalidRequest" and err.value.non_retryable
    assert err.value.message == (
        "spot max price 0.01 USD/h for m5.large in eu-west-1 is below the market price 0.04 USD/h"
    )
    assert calls == [] and all_live(aws) == []


def test_terminate_cancels_the_fleets_spot_requests_and_leaves_untagged_instances(aws: AwsClients) -> None:
    """Terminate cancels the spot requests carrying the fleet's tags; an instance of a request that carries only the
    fleet tag (anyone can write that tag) is not the fleet's and keeps running."""
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    fleet = env.run(ec2.provision_fleet, req(quantity=2))
    client = aws("ec2", "eu-west-1")
    ours = ec2.owner("shop", fleet.fleet_id).tags()
    for tags in (ours, [{"Key": TAG_FLEET, "Value": fleet.fleet_id}]):
        client.request_spot_instances(
            InstanceCount=1, LaunchSpecification={"ImageId": fleet.image_id, "InstanceType": "m5.large"},
            TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": tags}],
        )  # fmt: skip
    assert len(all_live(aws)) == 4
    assert env.run(ec2.terminate_fleet, fleet) == 2
    assert env.run(ec2.terminate_fleet, fleet) == 0
    assert len(all_live(aws)) == 2, "the spot requests' untagged instances were not the fleet's to terminate"
    left = client.describe_spot_instance_requests(Filters=[{"Name": "state", "Values": ["open", "active"]}])
    assert [r["Tags"] for r in left["SpotInstanceRequests"]] == [[{"Key": TAG_FLEET, "Value": fleet.fleet_id}]]


# ---- fleet identity -------------------------------------------------------------------------------------------


def foreign_instance(aws: AwsClients, tags: list[dict], region: str = "eu-west-1") -> str:
    """An instance someone else launched in the shared account, with the tags given (copied from ours)."""
    image = aws("ssm", region).get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    made = aws("ec2", region).run_instances(
        ImageId=image, InstanceType="m5.large", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    return str(made["Instances"][0]["InstanceId"])


def live_ids(aws: AwsClients, region: str = "eu-west-1") -> set[str]:
    return {i["InstanceId"] for i in all_live(aws, region)}


def test_another_installation_with_the_same_entity_and_fleet_keeps_its_fleet(aws: AwsClients) -> None:
    """Two installations (Temporal namespaces) in one account with the same entity and fleet id: each provisions its
    own instances and template, and terminate, shrink and template deletion of one leave the other's alone."""
    env = ActivityEnvironment()
    a, b = Ec2Activities(aws, installation="team-a"), Ec2Activities(aws, installation="team-b.x1y2z")
    fleet_a = env.run(a.provision_fleet, req(quantity=2))
    fleet_b = env.run(b.provision_fleet, req(quantity=3))
    assert not set(fleet_a.instance_ids) & set(fleet_b.instance_ids) and len(all_live(aws)) == 5
    assert fleet_a.launch_template == "shadowing-team-a-shop-m5.large" != fleet_b.launch_template
    shrunk = env.run(a.shrink_fleet, ResizeInput(fleet=fleet_a, quantity=1))
    assert shrunk.size == 1 and live_ids(aws) >= set(fleet_b.instance_ids)
    assert env.run(a.terminate_fleet, fleet_a) == 1
    assert live_ids(aws) == set(fleet_b.instance_ids)
    names = [t["LaunchTemplateName"] for t in aws("ec2", "eu-west-1").describe_launch_templates()["LaunchTemplates"]]
    assert names == [fleet_b.launch_template]


def test_listed_instances_without_the_fleets_tags_are_ignored_and_reported(
    aws: AwsClients, caplog: pytest.LogCaptureFixture
) -> None:
    """A FleetRef listing an instance that carries only some of the tags (the fleet tag, even the entity's) does not
    make it the fleet's: terminate, shrink and re-tagging leave it as it was, and say so."""
    ec2 = Ec2Activities(aws)
    env = ActivityEnvironment()
    fleet = env.run(ec2.provision_fleet, req(quantity=2))
    copied = [t for t in ec2.owner("shop", fleet.fleet_id).tags() if t["Key"] != TAG_INSTALLATION]
    stranger = foreign_instance(aws, [*copied, {"Key": TAG_ROLE, "Value": "shadow"}])
    crafted = fleet.model_copy(update={"instance_ids": (*fleet.instance_ids, stranger), "role": "active"})
    env.run(ec2.mark_fleet_role, crafted)
    roles = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]}[TAG_ROLE] for i in all_live(aws)}
    assert roles == {**dict.fromkeys(fleet.instance_ids, "active"), stranger: "shadow"}
    shrunk = env.run(ec2.shrink_fleet, ResizeInput(fleet=crafted, quantity=0, keep=(stranger,)))
    assert shrunk.instance_ids == () and live_ids(aws) == {stranger}
    with caplog.at_level("WARNING"):
        assert env.run(ec2.terminate_fleet, crafted) == 0
    assert live_ids(aws) == {stranger}
    assert f"ignored {stranger}" in caplog.text and "shadowing:installation=default" in caplog.text


def test_a_launch_template_of_our_name_that_is_not_ours_is_refused(aws: AwsClients) -> None:
    """A template named as ours but without this installation's tags is never versioned or launched from."""
    client = aws("ec2", "eu-west-1")
    client.create_launch_template(
        LaunchTemplateName="shadowing-default-shop-m5.large", LaunchTemplateData={"ImageId": "ami-12c6146b"}
    )
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, req(quantity=1))
    assert err.value.type == "NotOwned" and err.value.non_retryable and "launch_template" in err.value.message
    assert all_live(aws) == []
    versions = client.describe_launch_template_versions(LaunchTemplateName="shadowing-default-shop-m5.large")
    assert len(versions["LaunchTemplateVersions"]) == 1


def test_an_installation_that_cannot_be_a_tag_or_template_name_is_refused() -> None:
    """The installation id ends up in tags and template names: spaces or slashes are refused up front."""
    with pytest.raises(ValueError, match="SHADOWING_INSTALLATION"):
        Ec2Activities(lambda *_: None, installation="team a/prod")


# ---- price table ----------------------------------------------------------------------------------------------


def test_price_table_answers_and_names_what_it_lacks() -> None:
    """Lookups come from the packaged table; an unknown region or type is an InvalidRequest naming it."""
    assert prices.on_demand("m5.large", "eu-west-1") == 0.107
    assert prices.typical_spot("m5.large", "eu-west-1") == 0.04
    table = prices.default_table()
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= set(table.prices)
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        assert set(table.prices[region]) == set(INSTANCE_TYPES), region
    with pytest.raises(InvalidRequest, match="sa-east-1"):
        prices.on_demand("m5.large", "sa-east-1")
    with pytest.raises(InvalidRequest, match=r"m9\.huge"):
        prices.typical_spot("m9.huge", "eu-west-1")


def test_catalog_prices_come_from_the_table_with_the_factor_as_fallback() -> None:
    """The catalogue's hourly price is the table's where it has one, else us-east-1 x the region factor."""
    m5 = INSTANCE_TYPES["m5.large"]
    assert m5.price("ap-southeast-2") == prices.on_demand("m5.large", "ap-southeast-2")
    assert m5.price("sa-east-1") == pytest.approx(m5.on_demand_usd_hour * 1.59)
    for name, itype in INSTANCE_TYPES.items():
        assert prices.on_demand(name, "us-east-1") == itype.on_demand_usd_hour, name


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"prices": {"eu-west-1": {"m5.large": {"on_demand": 0.1, "spot": 0.2}}}}, "prices.eu-west-1.m5.large"),
        ({"prices": {"eu-west-1": {"m5.large": {"on_demand": -1, "spot": 0.02}}}}, "m5.large.on_demand"),
        ({"prices": {"eu-west-1": {"m5.large": {"on_demand": 0.1}}}}, "prices.eu-west-1.m5.large.spot"),
        ("{not json", "cannot read it as JSON"),
    ],
)  # fmt: skip
def test_malformed_price_table_is_an_error_naming_the_entry(tmp_path: Path, content: Any, named: str) -> None:
    """A bad entry or a broken file is a PriceTableError naming the file and the entry."""
    path = tmp_path / "prices.json"
    if isinstance(content, dict):
        content = json.dumps({"source": "hand-written for a test", "written": "2026-11-28", **content})
    path.write_text(content)
    with pytest.raises(prices.PriceTableError) as err:
        prices.load(path)
    assert named in str(err.value) and str(path) in str(err.value)


def test_price_table_typo_in_a_name_is_caught_against_the_catalogue(tmp_path: Path) -> None:
    """A region or type the catalogue does not know is reported by name."""
    path = tmp_path / "prices.json"
    entry = {"on_demand": 0.1, "spot": 0.03}
    path.write_text(json.dumps({"source": "hand-written for a test", "written": "2026-11-28",
                                "prices": {"eu-west-1": {"m5.lrage": entry}}}))  # fmt: skip
    with pytest.raises(prices.PriceTableError, match=r"m5\.lrage"):
        prices.load(path).check_names(INSTANCE_TYPES, REGIONS)
