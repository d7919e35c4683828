"""The AWS fault-injection layer (workers/fault_injection.py) on moto, and how provisioning reacts to each fault."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ec2 import Ec2Activities
from shadowing.faults import FaultRule, parse_rules
from shadowing.settings import Settings
from tests.activities.test_ec2_provisioning import FakeClock, fleet_instances, req
from workers.aws import AwsClients


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Builds AwsClients with the given rules on moto's in-process mock."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield lambda *rules: AwsClients(Settings(aws_endpoint_url=None, aws_profile=None, aws_faults=rules))


def env(activity_type: str = "provision_fleet", workflow_id: str = "migration/shop") -> ActivityEnvironment:
    e = ActivityEnvironment()
    e.info = dataclasses.replace(e.info, activity_type=activity_type, workflow_id=workflow_id)
    return e


def test_throttle_and_error_answer_in_place_of_aws_then_let_calls_through(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:DescribeRegions", fault="throttle", times=2),
                 FaultRule(operation="route53:*", fault="error"))  # fmt: skip
    ec2 = aws("ec2", "eu-west-1")
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            ec2.describe_regions()
        assert exc.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert ec2.describe_regions()["Regions"], "the third call reaches AWS"
    with pytest.raises(ClientError) as exc:
        aws("route53", "us-east-1").list_hosted_zones()
    assert exc.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert aws.faults is not None
    assert aws.faults.injected == {"throttle ec2:DescribeRegions": 2, "error route53:ListHostedZones": 1}


def test_lost_reply_happens_after_aws_did_the_work(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="route53:CreateHostedZone", fault="lost-reply"))
    r53 = aws("route53", "us-east-1")
    with pytest.raises(ReadTimeoutError):
        r53.create_hosted_zone(Name="lost.internal.", CallerReference="once")
    assert [z["Name"] for z in r53.list_hosted_zones()["HostedZones"]] == ["lost.internal."]


def test_rules_are_scoped_by_activity_and_workflow(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:*", fault="error", activity="provision_fleet", workflow="migration/a",
                           times=0))  # fmt: skip
    call = aws("ec2", "eu-west-1").describe_regions
    assert call()["Regions"], "outside any activity"
    assert env("provision_fleet", "migration/b").run(call)["Regions"], "another workflow"
    assert env("warm_fleet", "migration/a").run(call)["Regions"], "another activity"
    with pytest.raises(ClientError):
        env("provision_fleet", "migration/a").run(call)


def test_lost_run_instances_reply_is_retried_without_a_duplicate(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:RunInstances", fault="lost-reply"))
    ec2 = Ec2Activities(aws)
    with pytest.raises(ReadTimeoutError):
        env().run(ec2.provision_fleet, req(quantity=2))
    fleet = env().run(ec2.provision_fleet, req(quantity=2))  # Temporal's retry
    assert len(fleet.instance_ids) == 2 and len(fleet_instances(aws, "shop:a")) == 2


def test_one_az_out_of_capacity_hands_its_share_to_the_others(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:RunInstances", fault="capacity", times=1))
    fleet = env().run(Ec2Activities(aws).provision_fleet, req(quantity=3))
    assert len(fleet.instance_ids) == 3
    assert len(set(fleet.availability_zones)) == 2, "the refusing AZ got nothing"


def test_every_az_out_of_capacity_is_a_clear_non_retryable_error(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:RunInstances", fault="capacity", times=0))
    with pytest.raises(ApplicationError) as exc:
        env().run(Ec2Activities(aws).provision_fleet, req(quantity=2))
    assert exc.value.type == "InsufficientCapacity" and exc.value.non_retryable
    assert "m5.large in eu-west-1" in exc.value.message
    assert fleet_instances(aws, "shop:a") == []


def test_unfulfilled_spot_falls_back_to_on_demand_and_leaves_no_open_request(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:RunInstances", fault="spot-unfulfilled", times=0))
    clock = FakeClock()
    ec2 = Ec2Activities(aws, clock=clock, sleep=clock.sleep, poll_s=1)
    fleet = env().run(ec2.provision_fleet, req(quantity=2, market="spot", spot_deadline_s=10))
    assert len(fleet.instance_ids) == 2 and fleet.spot_instance_ids == ()
    assert aws.faults is not None
    assert aws.faults.injected["spot-unfulfilled ec2:RunInstances"] >= 1
    assert aws.faults.open_spot_requests() == [], "the unfilled requests were cancelled at the deadline"
    assert clock.now >= 1_000_010, "it waited for the deadline"


def test_timeout_and_latency_hang_first(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty(FaultRule(operation="ec2:DescribeRegions", fault="timeout", delay_s=0.05),
                 FaultRule(operation="ec2:DescribeAvailabilityZones", fault="latency", delay_s=0.05))  # fmt: skip
    ec2 = aws("ec2", "eu-west-1")
    with pytest.raises(ReadTimeoutError):
        ec2.describe_regions()
    assert ec2.describe_availability_zones()["AvailabilityZones"]


def test_terminating_the_last_fleet_in_a_region_removes_the_launch_templates(faulty) -> None:  # type: ignore[no-untyped-def]
    aws = faulty()
    ec2 = Ec2Activities(aws)
    a = env().run(ec2.provision_fleet, req("shop:a", 1))
    b = env().run(ec2.provision_fleet, req("shop:b", 1))
    templates = aws("ec2", "eu-west-1").describe_launch_templates
    env().run(ec2.terminate_fleet, a)
    assert len(templates()["LaunchTemplates"]) == 1, "fleet b still uses it"
    env().run(ec2.terminate_fleet, b)
    assert templates()["LaunchTemplates"] == []


def test_bad_rules_name_the_field() -> None:
    with pytest.raises(ValidationError, match="fault"):
        parse_rules('[{"operation": "ec2:RunInstances", "fault": "throttl"}]')
    with pytest.raises(ValidationError, match="times"):
        parse_rules('[{"fault": "error", "times": -1}]')
