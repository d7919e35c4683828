"""Stepped cutover routing against moto: Route53 weights and ELBv2 weighted forwarding, verified and restored."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ec2 import Ec2Activities, ProvisionInput
from activities.ownership import ownership_tags
from activities.routing import (
    MAX_ATTEMPTS,
    ListenerRef,
    ListenerWeightsInput,
    RestoreWeightsInput,
    RoutingActivities,
    RoutingInput,
    TargetsInput,
    WeightsInput,
    target_group_name,
)
from shadowing.models import FleetRef
from workers.aws import AwsClients

DNS = "shop.example.internal"


def _fleet(aws: AwsClients, fid: str, region: str, size: int) -> FleetRef:
    """A real (moto) fleet: routing writes only addresses EC2 confirms are the fleet's own instances'."""
    req = ProvisionInput(entity_id="shop", fleet_id=fid, slice_key="20260101T000000Z", region=region,
                         instance_type="m5.large", quantity=size)  # fmt: skip
    return ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, req)


OLD: FleetRef
NEW: FleetRef


@pytest.fixture(autouse=True)
def fleets(aws: AwsClients) -> None:
    """OLD (2 instances, us-east-1) and NEW (1, eu-west-1) for each test, in that test's moto."""
    global OLD, NEW
    OLD, NEW = _fleet(aws, "shop:old", "us-east-1", 2), _fleet(aws, "shop:new", "eu-west-1", 1)


def weights(zone: str, w: dict[str, int], ttl_s: int = 5) -> WeightsInput:
    return WeightsInput(hosted_zone_id=zone, dns_name=DNS, fleets=(OLD, NEW), weights=w, ttl_s=ttl_s)


def records(aws: AwsClients, zone: str) -> dict[str, dict]:
    rrs = aws("route53", "us-east-1").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {rr["SetIdentifier"]: rr for rr in rrs if "SetIdentifier" in rr}


def test_set_weights_steps_and_reports_what_route53_holds(aws: AwsClients, zone: str) -> None:
    """Each step writes both records in one batch with the asked TTL; weight 0 keeps the old record and addresses."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    env.run(route.set_weights, weights(zone, {"shop:old": 100}, ttl_s=30))
    for step in (10, 100):
        state = env.run(route.set_weights, weights(zone, {"shop:new": step, "shop:old": 100 - step}))
        assert state.weights == {"shop:new": step, "shop:old": 100 - step}
        assert state.ttl_s == 5 and state.change_id
    held = records(aws, zone)
    assert {k: (rr["Weight"], rr["TTL"]) for k, rr in held.items()} == {"shop:new": (100, 5), "shop:old": (0, 5)}
    assert sorted(r["Value"] for r in held["shop:old"]["ResourceRecords"]) == sorted(OLD.addresses)


def test_set_weights_rerun_changes_nothing(aws: AwsClients, zone: str) -> None:
    """A retried step whose weights are already in place submits no new change batch."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    first = env.run(route.set_weights, weights(zone, {"shop:new": 25, "shop:old": 75}))
    calls: list[str] = []
    aws("route53", "us-east-1").meta.events.register(
        "before-call.route53.ChangeResourceRecordSets", lambda **_: calls.append("change")
    )
    again = env.run(route.set_weights, weights(zone, {"shop:new": 25, "shop:old": 75}))
    assert again.weights == first.weights and calls == []


def test_set_weights_raises_retryable_error_when_readback_differs(aws: AwsClients, zone: str) -> None:
    """If Route53 reports other weights than were asked, the step fails retryably and names the difference."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    env.run(route.set_weights, weights(zone, {"shop:old": 100}))

    def tamper(parsed: dict[str, Any], **_: Any) -> None:
        for rr in parsed.get("ResourceRecordSets", []):
            if rr.get("SetIdentifier") == "shop:new":
                rr["Weight"] = 7

    aws("route53", "us-east-1").meta.events.register("after-call.route53.ListResourceRecordSets", tamper)
    with pytest.raises(ApplicationError, match=r"shop:new: asked 50, reported 7") as err:
        env.run(route.set_weights, weights(zone, {"shop:new": 50, "shop:old": 50}))
    assert err.value.type == "RoutingNotApplied" and not err.value.non_retryable


def test_set_weights_waits_for_insync(aws: AwsClients, zone: str) -> None:
    """The step returns only once get_change reports INSYNC, heartbeating while PENDING."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    seen: list[str] = []
    env.on_heartbeat = lambda *details: seen.append(details[1])
    polls = iter(["PENDING", "PENDING"])

    def pending(parsed: dict[str, Any], **_: Any) -> None:
        parsed["ChangeInfo"]["Status"] = next(polls, "INSYNC")

    aws("route53", "us-east-1").meta.events.register("after-call.route53.GetChange", pending)
    env.run(route.set_weights, weights(zone, {"shop:old": 100}))
    assert seen == ["PENDING", "PENDING", "INSYNC"]


def test_restore_puts_back_exact_previous_weights_and_is_idempotent(aws: AwsClients, zone: str) -> None:
    """Rollback restores the captured weights and TTL, deletes the record the cutover added, and can repeat."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    other = _fleet(aws, "shop:other", "us-east-1", 1)
    setup = WeightsInput(hosted_zone_id=zone, dns_name=DNS, fleets=(OLD, other),
                         weights={"shop:old": 70, "shop:other": 30}, ttl_s=60)  # fmt: skip
    env.run(route.set_weights, setup)
    previous = env.run(route.routing_state, RoutingInput(hosted_zone_id=zone, dns_name=DNS, to_fleet=NEW))
    assert previous.weights == {"shop:old": 70, "shop:other": 30} and previous.ttl_s == 60
    cut = WeightsInput(hosted_zone_id=zone, dns_name=DNS, fleets=(OLD, NEW, other),
                       weights={"shop:new": 100, "shop:old": 0, "shop:other": 0}, ttl_s=5)  # fmt: skip
    env.run(route.set_weights, cut)
    restore = RestoreWeightsInput(entity_id="shop", hosted_zone_id=zone, dns_name=DNS, previous=previous)
    for _ in range(2):
        assert env.run(route.restore_weights, restore).weights == previous.weights
        held = records(aws, zone)
        assert {k: (rr["Weight"], rr["TTL"]) for k, rr in held.items()} == {
            "shop:old": (70, 60),
            "shop:other": (30, 60),
        }


def test_restore_recreates_a_record_that_disappeared(aws: AwsClients, zone: str) -> None:
    """A fleet record removed mid-cutover comes back from the fleet's addresses; without them it is a clear error."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    previous = env.run(route.set_weights, weights(zone, {"shop:old": 100}, ttl_s=30))
    env.run(route.remove_fleet_record, RoutingInput(hosted_zone_id=zone, dns_name=DNS, to_fleet=OLD))
    bare = RestoreWeightsInput(entity_id="shop", hosted_zone_id=zone, dns_name=DNS, previous=previous)
    with pytest.raises(ApplicationError, match="shop:old") as err:
        env.run(route.restore_weights, bare)
    assert err.value.non_retryable
    full = bare.model_copy(update={"fleets": (OLD,)})
    assert env.run(route.restore_weights, full).weights == {"shop:old": 100}
    assert records(aws, zone)["shop:old"]["TTL"] == 30


@pytest.mark.parametrize("activity_name", ["set_weights", "restore_weights"])
def test_missing_zone_is_invalid_request_before_any_change(aws: AwsClients, zone: str, activity_name: str) -> None:
    """A hosted zone that does not exist is named in a non-retryable InvalidRequest."""
    route = RoutingActivities(aws)
    req: Any = (
        WeightsInput(hosted_zone_id="ZNOPE", dns_name=DNS, fleets=(NEW,), weights={"shop:new": 100})
        if activity_name == "set_weights"
        else RestoreWeightsInput(entity_id="shop", hosted_zone_id="ZNOPE", dns_name=DNS, previous={"weights": {}})
    )
    with pytest.raises(ApplicationError, match="ZNOPE") as err:
        ActivityEnvironment().run(getattr(route, activity_name), req)
    assert err.value.type == "InvalidRequest" and err.value.non_retryable


def test_bad_weights_are_rejected_before_any_change(aws: AwsClients, zone: str) -> None:
    """Weights naming an undescribed fleet, all zero, or outside the zone change nothing."""
    route, env = RoutingActivities(aws), ActivityEnvironment()
    bad = [
        weights(zone, {"shop:ghost": 100}),
        weights(zone, {"shop:new": 0, "shop:old": 0}),
        weights(zone, {"shop:new": 300}),
        WeightsInput(hosted_zone_id=zone, dns_name="shop.elsewhere.net", fleets=(NEW,), weights={"shop:new": 1}),
    ]
    for req in bad:
        with pytest.raises(ApplicationError) as err:
            env.run(route.set_weights, req)
        assert err.value.type == "InvalidRequest"
    assert records(aws, zone) == {}


# ---- ELBv2 ---------------------------------------------------------------------------------------------------

REGION = "eu-west-1"


def _provision(aws: AwsClients, fleet_id: str, quantity: int) -> FleetRef:
    req = ProvisionInput(entity_id="shop", fleet_id=fleet_id, slice_key="20260101T000000Z", region=REGION,
                         instance_type="m5.large", quantity=quantity)  # fmt: skip
    return ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, req)


def _listener(aws: AwsClients, fleet: FleetRef, tags: list[dict[str, str]] | None = None) -> str:
    """An ALB in the fleet's VPC whose listener answers 503 (the pre-product state), handed to entity shop."""
    ec2, elb = aws("ec2", REGION), aws("elbv2", REGION)
    vpc = ec2.describe_instances(InstanceIds=[fleet.instance_ids[0]])["Reservations"][0]["Instances"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    lb = elb.create_load_balancer(Name="shop", Subnets=subnets[:2], Type="application")["LoadBalancers"][0]
    return str(
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}],
            **({"Tags": ownership_tags("shop") if tags is None else tags} if tags != [] else {}),
        )["Listeners"][0]["ListenerArn"]
    )  # fmt: skip


def test_elb_weighted_cutover_verify_restore_and_deregister(aws: AwsClients) -> None:
    """Target groups per fleet (idempotent), weighted forward set and read back, restored, then deregistered."""
    route, env = RoutingActivities(aws), ActivityEnvironment()
    old, new = _provision(aws, "shop:old", 2), _provision(aws, "shop:new", 3)
    listener = _listener(aws, old)
    old_tg = env.run(route.register_fleet_targets, TargetsInput(fleet=old))
    new_tg = env.run(route.register_fleet_targets, TargetsInput(fleet=new))
    assert env.run(route.register_fleet_targets, TargetsInput(fleet=new)) == new_tg, "registering is idempotent"
    elb = aws("elbv2", REGION)
    assert new_tg.target_group_arn.split("/")[1] == target_group_name("shop:new")
    health = elb.describe_target_health(TargetGroupArn=new_tg.target_group_arn)["TargetHealthDescriptions"]
    assert sorted(d["Target"]["Id"] for d in health) == sorted(new.instance_ids)

    a, b = old_tg.target_group_arn, new_tg.target_group_arn
    env.run(route.set_listener_weights, ListenerWeightsInput(entity_id="shop", listener_arn=listener, weights={a: 100}))
    previous = env.run(route.listener_state, ListenerRef(entity_id="shop", listener_arn=listener))
    assert previous.weights == {a: 100}
    for step in (10, 100):
        state = env.run(route.set_listener_weights, ListenerWeightsInput(entity_id="shop", listener_arn=listener,
                                                                         weights={a: 100 - step, b: step}))  # fmt: skip
        assert state.weights == {a: 100 - step, b: step}
    action = elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"][0]
    assert {g["TargetGroupArn"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]} == {a: 0, b: 100}

    busy = env.run(route.deregister_fleet_targets, TargetsInput(fleet=new))
    assert busy.deregistered == 3 and not busy.deleted, "a group the listener still forwards to is kept"
    restored = env.run(
        route.set_listener_weights,
        ListenerWeightsInput(entity_id="shop", listener_arn=listener, weights=previous.weights),
    )
    assert restored.weights == {a: 100}
    first = env.run(route.deregister_fleet_targets, TargetsInput(fleet=new))
    assert first.deregistered == 0 and first.deleted
    again = env.run(route.deregister_fleet_targets, TargetsInput(fleet=new))
    assert again.deregistered == 0 and not again.deleted, "compensation is idempotent"
    assert [g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]] == [a]


def test_elb_readback_mismatch_and_missing_listener(aws: AwsClients) -> None:
    """A listener reporting other weights fails retryably; a missing listener is a non-retryable InvalidRequest."""
    route, env = RoutingActivities(aws), ActivityEnvironment()
    fleet = _provision(aws, "shop:new", 1)
    listener = _listener(aws, fleet)
    tg = env.run(route.register_fleet_targets, TargetsInput(fleet=fleet)).target_group_arn
    missing = listener.rsplit("/", 1)[0] + "/0123456789abcdef"
    with pytest.raises(ApplicationError, match="0123456789abcdef") as err:
        env.run(
            route.set_listener_weights, ListenerWeightsInput(entity_id="shop", listener_arn=missing, weights={tg: 1})
        )
    assert err.value.type == "InvalidRequest" and err.value.non_retryable

    def tamper(parsed: dict[str, Any], **_: Any) -> None:
        for action in parsed["Listeners"][0]["DefaultActions"]:
            for group in action.get("ForwardConfig", {}).get("TargetGroups", []):
                group["Weight"] = 3

    aws("elbv2", REGION).meta.events.register("after-call.elastic-load-balancing-v2.DescribeListeners", tamper)
    with pytest.raises(ApplicationError, match="asked 100, reported 3") as err:
        env.run(
            route.set_listener_weights, ListenerWeightsInput(entity_id="shop", listener_arn=listener, weights={tg: 100})
        )
    assert err.value.type == "RoutingNotApplied" and not err.value.non_retryable


def test_routing_error_gives_up_after_max_attempts(aws: AwsClients, zone: str) -> None:
    """A read-back that never matches is retryable until the last attempt, which fails the step for good."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    env.run(route.set_weights, weights(zone, {"shop:old": 100}))

    def tamper(parsed: dict[str, Any], **_: Any) -> None:
        for rr in parsed.get("ResourceRecordSets", []):
            rr["Weight"] = 7 if rr.get("SetIdentifier") == "shop:new" else rr.get("Weight")

    aws("route53", "us-east-1").meta.events.register("after-call.route53.ListResourceRecordSets", tamper)
    env.info = dataclasses.replace(env.info, attempt=MAX_ATTEMPTS)
    with pytest.raises(ApplicationError, match="giving up") as err:
        env.run(route.set_weights, weights(zone, {"shop:new": 50, "shop:old": 50}))
    assert err.value.type == "RoutingNotApplied" and err.value.non_retryable


def test_mixed_case_name_cuts_over_and_restores(aws: AwsClients, zone: str) -> None:
    """A spec's `Shop.Example.INTERNAL.` is the lower-case name Route53 stores: steps verify and abort restores."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    upper = "Shop.Example.INTERNAL."
    mixed = WeightsInput(hosted_zone_id=zone, dns_name=upper, fleets=(OLD, NEW), weights={"shop:old": 100})
    assert mixed.dns_name == DNS
    previous = env.run(route.set_weights, mixed)
    env.run(route.set_weights, mixed.model_copy(update={"weights": {"shop:new": 100, "shop:old": 0}}))
    restore = RestoreWeightsInput(entity_id="shop", hosted_zone_id=zone, dns_name=upper, previous=previous)
    assert env.run(route.restore_weights, restore).weights == {"shop:old": 100}
    assert set(records(aws, zone)) == {"shop:old"}


def _add_record(aws: AwsClients, zone: str, record: dict[str, Any]) -> None:
    change = {"Action": "CREATE", "ResourceRecordSet": {"Name": DNS + ".", "TTL": 60, **record}}
    aws("route53", "us-east-1").change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [change]})


@pytest.mark.parametrize(
    "foreign",
    [
        {"Type": "CNAME", "ResourceRecords": [{"Value": "other.example.net"}]},
        {"Type": "A", "ResourceRecords": [{"Value": "10.9.9.9"}]},
        {"Type": "A", "SetIdentifier": "billing:20260101T000000Z", "Weight": 100,
         "ResourceRecords": [{"Value": "10.9.9.9"}]},
    ],
    ids=["cname", "simple-a", "other-entity"],
)  # fmt: skip
def test_a_name_holding_someone_elses_record_is_refused(aws: AwsClients, zone: str, foreign: dict) -> None:
    """Another team's record at the entity's name refuses every routing step (NotOwned, field named) unchanged."""
    _add_record(aws, zone, foreign)
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    before = aws("route53", "us-east-1").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    restore = RestoreWeightsInput(entity_id="shop", hosted_zone_id=zone, dns_name=DNS, previous={"weights": {}})
    remove = RoutingInput(hosted_zone_id=zone, dns_name=DNS, to_fleet=OLD)
    steps = [("set_weights", weights(zone, {"shop:new": 100})), ("restore_weights", restore),
             ("remove_fleet_record", remove)]  # fmt: skip
    for name, req in steps:
        with pytest.raises(ApplicationError, match="dns_name") as err:
            env.run(getattr(route, name), req)
        assert err.value.type == "NotOwned" and err.value.non_retryable, name
    after = aws("route53", "us-east-1").list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert after == before


def test_a_zone_not_handed_to_the_product_is_refused(aws: AwsClients) -> None:
    """A hosted zone without the managed-by tag is refused before any record is written."""
    r53 = aws("route53", "us-east-1")
    zone = r53.create_hosted_zone(Name="example.internal.", CallerReference="untagged")["HostedZone"]["Id"]
    zone = zone.split("/")[-1]
    with pytest.raises(ApplicationError, match="hosted_zone_id") as err:
        ActivityEnvironment().run(RoutingActivities(aws).set_weights, weights(zone, {"shop:old": 100}))
    assert err.value.type == "NotOwned" and records(aws, zone) == {}


@pytest.mark.parametrize("tags", [[], ownership_tags("billing")], ids=["untagged", "other-entity"])
def test_a_listener_not_the_entitys_is_refused_unchanged(aws: AwsClients, tags: list) -> None:
    """A listener without the entity's tags is neither read nor rewritten: its forward weights stay as they were."""
    route, env = RoutingActivities(aws), ActivityEnvironment()
    fleet = _provision(aws, "shop:new", 1)
    listener = _listener(aws, fleet, tags)
    tg = env.run(route.register_fleet_targets, TargetsInput(fleet=fleet)).target_group_arn
    elb = aws("elbv2", REGION)
    before = elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"]
    for name, req in [("listener_state", ListenerRef(entity_id="shop", listener_arn=listener)),
                      ("set_listener_weights",
                       ListenerWeightsInput(entity_id="shop", listener_arn=listener, weights={tg: 100}))]:  # fmt: skip
        with pytest.raises(ApplicationError, match="listener_arn") as err:
            env.run(getattr(route, name), req)
        assert err.value.type == "NotOwned", name
    assert elb.describe_listeners(ListenerArns=[listener])["Listeners"][0]["DefaultActions"] == before


def test_addresses_that_are_not_the_fleets_own_are_refused(aws: AwsClients, zone: str) -> None:
    """A fleet reference naming foreign addresses (a hand-started migration's crafted source) never reaches DNS."""
    route, env = RoutingActivities(aws, poll_s=0.01), ActivityEnvironment()
    crafted = OLD.model_copy(update={"addresses": ("203.0.113.7",)})
    req = WeightsInput(hosted_zone_id=zone, dns_name=DNS, fleets=(crafted, NEW), weights={"shop:old": 100})
    with pytest.raises(ApplicationError, match=r"fleet\.addresses") as err:
        env.run(route.set_weights, req)
    assert err.value.type == "NotOwned" and records(aws, zone) == {}
    other = RoutingActivities(aws, poll_s=0.01, installation="other")
    with pytest.raises(ApplicationError, match=r"fleet\.addresses"):
        env.run(other.set_weights, weights(zone, {"shop:old": 100}))


def test_names_outside_the_workers_suffixes_are_refused(aws: AwsClients, zone: str) -> None:
    """With SHADOWING_DNS_SUFFIXES set, a name in a handed-over zone but outside those suffixes is refused."""
    env = ActivityEnvironment()
    narrow = RoutingActivities(aws, poll_s=0.01, dns_suffixes=("apps.example.internal",))
    with pytest.raises(ApplicationError, match="SHADOWING_DNS_SUFFIXES") as err:
        env.run(narrow.set_weights, weights(zone, {"shop:old": 100}))
    assert err.value.type == "NotOwned" and records(aws, zone) == {}
    wide = RoutingActivities(aws, poll_s=0.01, dns_suffixes=("Example.Internal.",))
    assert env.run(wide.set_weights, weights(zone, {"shop:old": 100})).weights == {"shop:old": 100}
