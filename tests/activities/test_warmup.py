"""warm_fleet on real HTTP: moto's EC2, the data-plane agent in a thread, stand-ins as real processes."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ec2 import TAG_INSTALLATION, Ec2Activities, FleetInput, ProvisionInput
from activities.warmup import InstanceWarmup, Progress, WarmupActivities, WarmupInput, is_warm
from devstack.dataplane.agent import Agent
from shadowing.endpoints import LocalEndpoints
from shadowing.models import FleetRef
from workers.aws import AwsClients

STANDIN = ["--cold-ms", "30", "--warm-ms", "1", "--keys", "40"]


@pytest.fixture
def registry(aws: AwsClients, tmp_path: Path) -> Iterator[Path]:
    """The agent reconciling in a background thread against the same moto mock; every stand-in stopped after."""
    path = tmp_path / "dataplane.json"
    agent = Agent(aws, ["eu-west-1"], path, standin_args=STANDIN, log_dir=tmp_path / "logs")
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop, 0.1), daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(10)
        agent.stop_all()


def fleet(aws: AwsClients, quantity: int = 2) -> FleetRef:
    req = ProvisionInput(entity_id="shop", fleet_id="shop:20260101T000000Z", slice_key="20260101T000000Z",
                         region="eu-west-1", instance_type="m5.large", quantity=quantity)  # fmt: skip
    return ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, req)


def warmup(fleet: FleetRef, timeout_s: float = 30, **kw: Any) -> WarmupInput:
    return WarmupInput(fleet=fleet, timeout_s=timeout_s, window=20, keys=40, **kw)


def get(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as resp:
        return dict(json.loads(resp.read()))


class Hiding:
    """Endpoints that never find `hidden` (an instance whose application never comes up)."""

    def __init__(self, inner: LocalEndpoints, hidden: str) -> None:
        self._inner, self._hidden = inner, hidden

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        return None if instance_id == self._hidden else self._inner.url(instance_id, private_ip)

    def resolve_ip(self, ip: str) -> str | None:
        return self._inner.resolve_ip(ip)


def test_warm_fleet_sends_traffic_until_every_instance_is_warm(aws: AwsClients, registry: Path) -> None:
    """Warm-up waits for the stand-ins, fills their caches, and stops once p99 is low and settled."""
    shadows = fleet(aws)
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    endpoints = LocalEndpoints(registry)
    report = env.run(WarmupActivities(aws, endpoints, poll_s=0.05).warm_fleet, warmup(shadows))
    assert report.healthy and report.healthy_count == report.total == 2
    for inst in report.instances:
        assert inst.warm and inst.rounds >= 3 and inst.requests == inst.rounds * 20 and inst.errors == 0
        assert inst.first_p99_ms is not None and inst.p99_ms is not None
        assert inst.p99_ms < 25 <= inst.first_p99_ms, "the first round ran cold, the last one warm"
        health = get(f"{endpoints.url(inst.instance_id, None)}/health")
        assert health["cached_keys"] == 40 and health["served"] == inst.requests
    rounds = [sum(i["rounds"] for i in b["instances"].values()) for b in beats if isinstance(b, dict)]
    assert rounds == sorted(rounds) and rounds[-1] == sum(i.rounds for i in report.instances)


def test_an_instance_that_never_answers_is_named_and_not_retried(aws: AwsClients, registry: Path) -> None:
    """An instance whose endpoint never appears fails the warm-up at the deadline, naming only that instance."""
    shadows = fleet(aws)
    dead, alive = shadows.instance_ids
    warm = WarmupActivities(aws, Hiding(LocalEndpoints(registry), dead), poll_s=0.05)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(warm.warm_fleet, warmup(shadows, timeout_s=1.0))
    assert err.value.type == "InstanceNeverHealthy" and err.value.non_retryable
    assert dead in str(err.value) and alive not in str(err.value) and "no endpoint" in str(err.value)


def test_a_degraded_instance_never_counts_as_warm(aws: AwsClients, registry: Path) -> None:
    """An instance answering 200 ms slower than the threshold allows fails with FleetNotWarm at the deadline."""
    shadows = fleet(aws, quantity=1)
    endpoints = LocalEndpoints(registry)
    warm = WarmupActivities(aws, endpoints, poll_s=0.05)
    (iid,) = shadows.instance_ids
    deadline = time.monotonic() + 10
    while endpoints.url(iid, None) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    get(f"{endpoints.url(iid, None)}/fault", {"mode": "slow"})
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(warm.warm_fleet, warmup(shadows, timeout_s=2.0))
    assert err.value.type == "FleetNotWarm" and err.value.non_retryable and iid in str(err.value)


def test_a_retried_attempt_resumes_from_its_heartbeat(aws: AwsClients, registry: Path) -> None:
    """The retry keeps the deadline, skips instances already warm and continues the others' rounds."""
    shadows = fleet(aws)
    done, todo = shadows.instance_ids
    before = Progress(
        deadline=time.time() + 30,
        instances={done: InstanceWarmup(instance_id=done, rounds=4, requests=80, warm=True, p50_ms=1, p99_ms=2),
                   todo: InstanceWarmup(instance_id=todo, rounds=1, requests=20, first_p99_ms=40, p99_ms=40)},
    )  # fmt: skip
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[before.model_dump(mode="json")])
    endpoints = LocalEndpoints(registry)
    report = env.run(WarmupActivities(aws, endpoints, poll_s=0.05).warm_fleet, warmup(shadows, timeout_s=600))
    by_id = {i.instance_id: i for i in report.instances}
    assert by_id[done] == before.instances[done], "the warm instance was left alone"
    assert get(f"{endpoints.url(done, None)}/health")["served"] == 0
    assert by_id[todo].warm and by_id[todo].rounds > 1 and by_id[todo].first_p99_ms == 40
    served = get(f"{endpoints.url(todo, None)}/health")["served"]
    assert served == by_id[todo].requests - 20, "only this attempt's rounds reached the stand-in"

    expired = before.model_copy(update={"deadline": time.time() - 1})
    env.info = dataclasses.replace(env.info, heartbeat_details=[expired.model_dump(mode="json")])
    with pytest.raises(ApplicationError) as err:
        env.run(WarmupActivities(aws, endpoints, poll_s=0.05).warm_fleet, warmup(shadows, timeout_s=600))
    assert err.value.type == "FleetNotWarm" and todo in str(err.value) and done not in str(err.value)


def test_without_a_data_plane_warm_up_is_ec2s_view(aws: AwsClients) -> None:
    """No Endpoints wired: warm_fleet and check_fleet_health report EC2's running/status-check view."""
    shadows = fleet(aws)
    warm = WarmupActivities(aws, poll_s=0.01)
    assert ActivityEnvironment().run(warm.warm_fleet, FleetInput(fleet=shadows, timeout_s=5)).healthy
    assert ActivityEnvironment().run(warm.check_fleet_health, FleetInput(fleet=shadows)).healthy_count == 2


def stranger(aws: AwsClients, shadows: FleetRef) -> str:
    """An instance someone else launched with a copy of the fleet's tags, all but the installation's."""
    copied = [t for t in Ec2Activities(aws).owner("shop", shadows.fleet_id).tags() if t["Key"] != TAG_INSTALLATION]
    made = aws("ec2", "eu-west-1").run_instances(
        ImageId=shadows.image_id, InstanceType="m5.large", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": copied}],
    )  # fmt: skip
    return str(made["Instances"][0]["InstanceId"])


class Recording:
    """Endpoints that remember which instances were asked for and never have one (no request leaves the test)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        self.asked.append(instance_id)
        return None

    def resolve_ip(self, ip: str) -> str | None:
        return None


def test_an_instance_without_the_fleets_tags_is_never_warmed_nor_counted_healthy(aws: AwsClients) -> None:
    """A FleetRef listing a foreign instance (the fleet tag copied, not the installation's): health never counts
    it, the EC2-only warm-up never calls the fleet healthy, and the data-plane warm-up sends it nothing."""
    shadows = fleet(aws, quantity=1)
    foreign = stranger(aws, shadows)
    crafted = shadows.model_copy(update={"instance_ids": (*shadows.instance_ids, foreign)})
    warm = WarmupActivities(aws, poll_s=0.01)
    health = ActivityEnvironment().run(warm.check_fleet_health, FleetInput(fleet=crafted))
    assert (health.healthy, health.healthy_count, health.total) == (False, 1, 2) and foreign in health.detail
    with pytest.raises(ApplicationError, match=foreign):
        ActivityEnvironment().run(warm.warm_fleet, FleetInput(fleet=crafted, timeout_s=0.05))
    endpoints = Recording()
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(
            WarmupActivities(aws, endpoints, poll_s=0.01).warm_fleet, warmup(crafted, timeout_s=0.05)
        )
    assert err.value.type == "InstanceNeverHealthy" and f"{foreign}: state not found with the fleet's tags" in str(
        err.value
    )
    assert foreign not in endpoints.asked and set(endpoints.asked) == set(shadows.instance_ids)
    other = WarmupActivities(aws, poll_s=0.01, installation="team-b")
    assert ActivityEnvironment().run(other.check_fleet_health, FleetInput(fleet=shadows)).healthy_count == 0


@pytest.mark.parametrize("address", ["169.254.169.254", "::ffff:169.254.169.254", "127.0.0.1", "0.0.0.0"])
def test_warm_up_refuses_an_address_that_is_not_an_instances(aws: AwsClients, address: str) -> None:
    """A fleet address aimed at the metadata service (or loopback off the local data plane) fails the warm-up
    at once, non-retryably, naming the field; with or without a data plane."""
    shadows = fleet(aws, quantity=1)
    crafted = shadows.model_copy(update={"addresses": (address,)})
    for warm in (WarmupActivities(aws, poll_s=0.01), WarmupActivities(aws, Recording(), poll_s=0.01)):
        with pytest.raises(ApplicationError) as err:
            ActivityEnvironment().run(warm.warm_fleet, warmup(crafted, timeout_s=5))
        assert err.value.type == "InvalidRequest" and err.value.non_retryable
        assert err.value.message.startswith("fleet.addresses[0]: ")


@pytest.mark.parametrize(
    ("prev", "p50", "p99", "errors", "warm"),
    [
        ((None, None), 2.0, 3.0, 0, False),  # first round: nothing to compare with
        ((2.0, 3.0), 2.1, 3.5, 0, True),  # settled and fast
        ((2.0, 3.0), 2.1, 8.5, 0, False),  # p99 jumped by more than 20% and more than 5 ms
        ((30.0, 40.0), 30.0, 40.0, 0, False),  # settled but slow (cold cache)
        ((2.0, 3.0), 2.0, 3.0, 1, False),  # any error
        ((30.0, 45.0), 2.0, 3.0, 0, False),  # just got fast: wait one more round
    ],
)
def test_is_warm(prev: tuple, p50: float, p99: float, errors: int, warm: bool) -> None:
    """Warm means: p99 under the threshold, no errors, p50 and p99 settled since the previous round."""
    before = InstanceWarmup(instance_id="i-1", p50_ms=prev[0], p99_ms=prev[1])
    req = WarmupInput(fleet=FleetRef(fleet_id="f", entity_id="e", region="eu-west-1", instance_type="m5.large"))
    assert is_warm(before, p50, p99, errors, req) is warm
