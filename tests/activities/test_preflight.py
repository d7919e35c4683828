"""Pre-flight checks (activities/preflight.py) against moto: every resource the spec names, each problem named by its
spec field, all reported in one non-retryable InvalidRequest; reads only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ownership import ownership_tags
from activities.preflight import PreflightActivities, PreflightInput
from shadowing.models import EntitySpec
from tests.activities.conftest import make_table
from tests.activities.test_ec2_adoption import launch, tags_of
from workers.aws import AwsClients

REGION = "us-east-1"
LISTENER = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener"
NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)


def _spec(zone: str, **fields: object) -> EntitySpec:
    base = {"entity_id": "shop", "home_region": REGION, "instance_types": ("m5.large",),
            "dns_name": "shop.example.internal", "hosted_zone_id": zone}  # fmt: skip
    if "rds_instance" in fields:  # an entity with a database moves its writes behind the fence
        base["policy"] = {"consistency": "fenced"}
    return EntitySpec.model_validate({**base, **fields})


def _history(aws: AwsClients, entity: str = "shop", metrics: tuple[str, ...] = ("CpuUsageMHz", "MemoryUsageKB"),
             namespace: str = "Shadowing/Usage") -> None:  # fmt: skip
    """Three hourly points of each metric in the last day, as the data plane publishes them."""
    dims = [{"Name": "EntityId", "Value": entity}]
    data = [{"MetricName": m, "Dimensions": dims, "Timestamp": NOW - timedelta(hours=h), "Value": 100.0 + h}
            for m in metrics for h in (2, 3, 4)]  # fmt: skip
    aws("cloudwatch", REGION).put_metric_data(Namespace=namespace, MetricData=data)


def _check(aws: AwsClients, spec: EntitySpec, **kw: object) -> tuple[str, ...]:
    act = PreflightActivities(aws, now=lambda: NOW, **kw)  # type: ignore[arg-type]
    return ActivityEnvironment().run(act.check_entity, PreflightInput(spec=spec)).checked


def _refused(aws: AwsClients, spec: EntitySpec, **kw: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        _check(aws, spec, **kw)
    assert err.value.type == "InvalidRequest" and err.value.non_retryable, err.value
    return err.value


def test_a_spec_whose_resources_exist_and_are_handed_over_passes(aws: AwsClients, zone: str) -> None:
    make_table(aws, REGION, "sessions", 0)
    aws("sqs", REGION).create_queue(QueueName="orders", tags={t["Key"]: t["Value"] for t in ownership_tags("shop")})
    image = aws("ec2", REGION).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    _history(aws)
    spec = _spec(zone, dynamodb_tables=["sessions"], sqs_queues=["orders"], image_id=image)
    assert _check(aws, spec) == (
        "zone: ok", "tables: ok", "queues: ok", "database: ok", "listener: ok", "image: ok", "usage_history: ok"
    )  # fmt: skip


def test_a_missing_hosted_zone_is_named_by_its_field(aws: AwsClients) -> None:
    _history(aws)
    err = _refused(aws, _spec("Z0123456789EXAMPLE"))
    assert err.message == "spec.hosted_zone_id: hosted zone Z0123456789EXAMPLE does not exist"
    assert err.details[0] == [{"field": "spec.hosted_zone_id", "problem": "hosted zone Z0123456789EXAMPLE does not "
                               "exist"}]  # fmt: skip


def test_a_zone_not_handed_to_the_product_or_not_holding_the_name_is_refused(aws: AwsClients) -> None:
    _history(aws)
    r53 = aws("route53", REGION)
    bare = r53.create_hosted_zone(Name="example.internal.", CallerReference="bare")["HostedZone"]["Id"].split("/")[-1]
    err = _refused(aws, _spec(bare, dns_name="shop.other.internal"))
    assert err.message.startswith("spec.dns_name: shop.other.internal is not inside hosted zone"), err.message
    assert "also spec.hosted_zone_id: hosted zone" in err.message and "shadowing:managed-by=shadowing" in err.message


def test_a_name_outside_the_workers_dns_suffixes_is_refused(aws: AwsClients, zone: str) -> None:
    _history(aws)
    err = _refused(aws, _spec(zone), dns_suffixes=("svc.example.internal",))
    assert err.message.startswith("spec.dns_name: shop.example.internal is not under a suffix"), err.message


def test_every_missing_or_foreign_resource_is_named_in_one_error(aws: AwsClients, zone: str) -> None:
    _history(aws)
    make_table(aws, REGION, "foreign", 0, owner=None)
    aws("sqs", REGION).create_queue(QueueName="theirs")
    spec = _spec(zone, dynamodb_tables=["sessions", "foreign"], sqs_queues=["orders", "theirs"],
                 rds_instance="shopdb", image_id="ami-0123456789abcdef0",
                 listener_arn=f"{LISTENER}/app/shop/abc/def")  # fmt: skip
    err = _refused(aws, spec)
    fields = [p["field"] for p in err.details[0]]
    assert fields == ["spec.dynamodb_tables.0", "spec.dynamodb_tables.1", "spec.sqs_queues.0", "spec.sqs_queues.1",
                      "spec.rds_instance", "spec.listener_arn", "spec.image_id"]  # fmt: skip
    assert err.message.startswith("spec.dynamodb_tables.0: table 'sessions' does not exist in us-east-1")
    problems = {p["field"]: p["problem"] for p in err.details[0]}
    assert "not owned by entity 'shop'" in problems["spec.dynamodb_tables.1"]
    assert "not owned by entity 'shop'" in problems["spec.sqs_queues.1"]
    assert problems["spec.rds_instance"] == "DB instance 'shopdb' does not exist in us-east-1"
    assert problems["spec.image_id"] == "AMI ami-0123456789abcdef0 does not exist in us-east-1"
    assert "does not exist" in problems["spec.listener_arn"]


def test_a_foreign_database_is_refused_and_an_owned_one_passes(aws: AwsClients, zone: str) -> None:
    _history(aws)
    rds = aws("rds", REGION)
    for name, tags in (("theirs", []), ("shopdb", ownership_tags("shop"))):
        rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t3.micro",
                               MasterUsername="admin", MasterUserPassword="secret123", AllocatedStorage=20,
                               Tags=tags)  # fmt: skip
    err = _refused(aws, _spec(zone, rds_instance="theirs"))
    assert err.message.startswith("spec.rds_instance: DB instance 'theirs' is not owned by entity 'shop'")
    assert "database: ok" in _check(aws, _spec(zone, rds_instance="shopdb"))


def test_missing_usage_history_is_named_even_for_a_forecast_only_entity(aws: AwsClients, zone: str) -> None:
    _history(aws, entity="someone-else")
    _history(aws, metrics=("CpuUsageMHz",))
    err = _refused(aws, _spec(zone))
    assert err.message.startswith("spec.metrics_namespace: no usage history for entity 'shop'"), err.message
    assert "MemoryUsageKB" in err.message and "CpuUsageMHz" not in err.message
    # forecast-only launches nothing: a missing zone is not its problem, missing history still is
    err = _refused(aws, _spec("ZMISSING", policy={"mode": "forecast-only"}))
    assert [p["field"] for p in err.details[0]] == ["spec.metrics_namespace"]
    _history(aws, metrics=("MemoryUsageKB",))
    assert _check(aws, _spec("ZMISSING", policy={"mode": "forecast-only"})) == ("usage_history: ok",)


def test_history_is_looked_up_on_the_demand_clocks_time_line(aws: AwsClients, zone: str) -> None:
    """A demo entity's history lies where its demand clock maps now (its history origin), not at wall-clock now."""
    past = NOW - timedelta(days=100)
    dims = [{"Name": "EntityId", "Value": "shop"}]
    data = [{"MetricName": m, "Dimensions": dims, "Timestamp": past - timedelta(hours=2), "Value": 5.0}
            for m in ("CpuUsageMHz", "MemoryUsageKB")]  # fmt: skip
    aws("cloudwatch", REGION).put_metric_data(Namespace="Shadowing/Usage", MetricData=data)
    clock = {"origin": NOW, "history_origin": past, "seconds_per_hour": 30}
    assert "usage_history: ok" in _check(aws, _spec(zone, demand_clock=clock))
    _refused(aws, _spec(zone))  # the same history, read at wall-clock now: too old


def test_instances_to_adopt_are_checked_like_adopt_fleet_checks_them(aws: AwsClients, zone: str) -> None:
    """spec.adopt: a missing instance and one of a type the entity does not allow are named; a running allowed one
    passes; nothing is tagged (pre-flight reads only)."""
    _history(aws)
    good = launch(aws, 1)[0]
    assert "adopt: ok" in _check(aws, _spec(zone, adopt={"instance_ids": [good]}))
    small = launch(aws, 1, kind="t3.micro")[0]
    err = _refused(aws, _spec(zone, adopt={"instance_ids": [good, "i-0123456789abcdef0", small]}))
    assert err.message.startswith("spec.adopt.instance_ids: instance i-0123456789abcdef0 does not exist in us-east-1")
    assert f"also spec.adopt.instance_ids: instance {small} is a t3.micro" in err.message
    assert tags_of(aws, good) == {"app": "shop"}, "nothing tagged"
    err = _refused(aws, _spec(zone, adopt={"tags": {"app": "gone"}}))
    assert err.message.startswith("spec.adopt.tags: no instance in us-east-1 carries app=gone")
