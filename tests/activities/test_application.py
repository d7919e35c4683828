"""The write fence on real HTTP: moto's EC2 for the fleet, one in-process stand-in per instance."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.application import ApplicationActivities, FenceInput
from activities.ec2 import TAG_INSTALLATION, Ec2Activities, ProvisionInput
from devstack.dataplane.standin import HOST, App, Server
from devstack.stack import free_port
from shadowing.models import FleetRef
from workers.aws import AwsClients

EU, US = "eu-west-1", "us-east-1"


class Mapped:
    """Endpoints from a dict (instance id -> base URL) that remember which instances were asked for."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls, self.asked = urls, []

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        self.asked.append(instance_id)
        return self.urls.get(instance_id)

    def resolve_ip(self, ip: str) -> str | None:
        return None


@pytest.fixture
def serve() -> Iterator[Callable[[str], str]]:
    """Starts a stand-in for an instance id and returns its base URL; all are stopped after the test."""
    servers: list[Server] = []

    def start(instance_id: str) -> str:
        srv = Server(0, App(instance_id, EU, cold_ms=0, warm_ms=0, keys=1))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://{HOST}:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A base URL whose port accepts connections and never answers (an app that hangs)."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(8)
    try:
        yield f"http://{HOST}:{sock.getsockname()[1]}"
    finally:
        sock.close()


def fleet(aws: AwsClients, quantity: int = 2) -> FleetRef:
    req = ProvisionInput(entity_id="shop", fleet_id="shop:20260101T000000Z", slice_key="20260101T000000Z",
                         region=EU, instance_type="m5.large", quantity=quantity)  # fmt: skip
    return ActivityEnvironment().run(Ec2Activities(aws).provision_fleet, req)


def state(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/admin/writes", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def run(activity: Callable, req: FenceInput):  # type: ignore[no-untyped-def]
    return ActivityEnvironment().run(activity, req)


def test_hold_then_open_into_another_region_on_every_instance(aws: AwsClients, serve: Callable[[str], str]) -> None:
    """The check sees every app open; holding answers once every instance holds (nothing in flight); opening with a
    region points every instance's writes there and reports how long the hold lasted."""
    shadows = fleet(aws)
    urls = {iid: serve(iid) for iid in shadows.instance_ids}
    app = ApplicationActivities(aws, Mapped(urls))
    checked = run(app.check_write_fence, FenceInput(fleet=shadows))
    assert (checked.state, checked.instances, checked.region, checked.in_flight) == ("open", 2, EU, 0)
    held = run(app.set_write_fence, FenceInput(fleet=shadows, state="held", deadline_s=60))
    assert (held.state, held.instances, held.in_flight) == ("held", 2, 0)
    assert all(state(url)["state"] == "held" for url in urls.values())
    assert run(app.check_write_fence, FenceInput(fleet=shadows)).state == "held"
    opened = run(app.set_write_fence, FenceInput(fleet=shadows, state="open", region=US))
    assert (opened.state, opened.instances, opened.region) == ("open", 2, US) and opened.held_ms >= 0
    assert all(state(url)["state"] == "open" and state(url)["region"] == US for url in urls.values())


def test_the_hold_carries_its_deadline_and_the_app_opens_by_itself(
    aws: AwsClients, serve: Callable[[str], str]
) -> None:
    """deadline_s reaches the app as a unix-ms deadline: an hour is accepted (the stand-in refuses a hold further
    ahead), and a short one lapses on the app's own clock with no further call from the product."""
    shadows = fleet(aws, quantity=1)
    (iid,) = shadows.instance_ids
    url = serve(iid)
    app = ApplicationActivities(aws, Mapped({iid: url}))
    run(app.set_write_fence, FenceInput(fleet=shadows, state="held", deadline_s=3600))
    assert state(url)["state"] == "held"
    run(app.set_write_fence, FenceInput(fleet=shadows, state="open"))
    run(app.set_write_fence, FenceInput(fleet=shadows, state="held", deadline_s=1.0))
    deadline = time.monotonic() + 10  # only a bug reaches it
    while state(url)["state"] != "open":
        assert time.monotonic() < deadline, "the hold never lapsed"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["hangs", "refuses", "no contract"])
def test_an_app_that_does_not_answer_the_fence_is_named_with_its_url(
    aws: AwsClients, serve: Callable[[str], str], silent: str, how: str
) -> None:
    """Before any traffic moves the check fails for good (non-retryable), naming the instance and the URL; the
    same app during the migration is a retryable failure, for the workflow to decide."""
    shadows = fleet(aws)
    good, bad = shadows.instance_ids
    base = {"hangs": silent, "refuses": f"http://{HOST}:{free_port()}", "no contract": f"{serve(bad)}/v2"}[how]
    app = ApplicationActivities(aws, Mapped({good: serve(good), bad: base}))
    req = FenceInput(fleet=shadows, request_timeout_s=0.5)
    with pytest.raises(ApplicationError) as err:
        run(app.check_write_fence, req)
    message = str(err.value)
    assert err.value.type == "FenceUnavailable" and err.value.non_retryable
    assert f"{bad} at {base}/admin/writes" in message and good not in message
    assert "docs/your-application.md" in message
    why = {"hangs": "did not answer (timed out)", "refuses": "did not answer (", "no contract": "answered HTTP 404"}
    assert why[how] in message, message
    with pytest.raises(ApplicationError) as err:
        run(app.set_write_fence, FenceInput(fleet=shadows, state="open", request_timeout_s=0.5))
    assert err.value.type == "FenceUnavailable" and not err.value.non_retryable and bad in str(err.value)


def test_an_instance_without_endpoint_or_the_fleets_tags_is_named_and_never_asked(
    aws: AwsClients, serve: Callable[[str], str]
) -> None:
    """A FleetRef listing someone else's instance (tags copied, all but the installation's) fails naming it, and no
    request goes to it; a booted instance with no endpoint yet is named too."""
    shadows = fleet(aws)
    mine, unbooted = shadows.instance_ids
    copied = [t for t in Ec2Activities(aws).owner("shop", shadows.fleet_id).tags() if t["Key"] != TAG_INSTALLATION]
    foreign = aws("ec2", EU).run_instances(
        ImageId=shadows.image_id, InstanceType="m5.large", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": copied}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    crafted = shadows.model_copy(update={"instance_ids": (*shadows.instance_ids, foreign)})
    endpoints = Mapped({mine: serve(mine), foreign: serve(foreign)})
    with pytest.raises(ApplicationError) as err:
        run(ApplicationActivities(aws, endpoints).check_write_fence, FenceInput(fleet=crafted))
    assert f"{foreign} is not found with the fleet's tags" in str(err.value)
    assert f"{unbooted} has no endpoint" in str(err.value) and f"{mine} " not in str(err.value)
    assert foreign not in endpoints.asked


def test_an_address_no_request_may_go_to_is_refused_before_any_request(aws: AwsClients) -> None:
    """A crafted address (the metadata service) is a non-retryable InvalidRequest naming the field."""
    shadows = fleet(aws, quantity=1)
    crafted = shadows.model_copy(update={"addresses": ("169.254.169.254",)})
    endpoints = Mapped({})
    with pytest.raises(ApplicationError) as err:
        run(ApplicationActivities(aws, endpoints).set_write_fence, FenceInput(fleet=crafted))
    assert err.value.type == "InvalidRequest" and "fleet.addresses[0]" in str(err.value) and not endpoints.asked


def test_a_fleet_without_instances_has_nothing_to_fence(aws: AwsClients) -> None:
    """No instances, no writes to hold: the fence stands trivially and says so."""
    empty = fleet(aws, quantity=1).model_copy(update={"instance_ids": (), "addresses": ()})
    result = run(ApplicationActivities(aws, Mapped({})).set_write_fence, FenceInput(fleet=empty))
    assert (result.state, result.instances, result.detail) == ("held", 0, "fleet has no instances")


@pytest.mark.parametrize(
    ("fields", "names"),
    [({"state": "held", "region": US}, "region"), ({"deadline_s": 0}, "deadline_s"),
     ({"deadline_s": 3601}, "deadline_s"), ({"state": "closed"}, "state")],
)  # fmt: skip
def test_fence_input_refuses_what_the_contract_cannot_mean(aws: AwsClients, fields: dict, names: str) -> None:
    """A region only opens a fence; a hold's deadline is within (0, 3600] s; the state is held or open."""
    with pytest.raises(ValidationError, match=names):
        FenceInput(fleet=fleet(aws, quantity=1), **fields)
