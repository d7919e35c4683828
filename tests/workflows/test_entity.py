"""EntitySchedule on the time-skipping server with fake activities: the slice walk and the endpoints."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from shadowing import search
from shadowing.client import ShadowingClient
from shadowing.errors import DataSyncFailed, InvalidRequest, TimeSliceNotActive, UnknownEntity
from shadowing.models import AdoptFleet, EntityStatus, RegisterEntityInput
from tests.fakes import FakeCloud
from tests.workflows.helpers import slot, spec, worker
from tests.workflows.test_migrate import HISTORIES

HOUR = timedelta(hours=1)


async def register(
    env: WorkflowEnvironment, queue: str, regions: list[str], first_in: timedelta, adopt: AdoptFleet | None = None,
    **policy: float,
):  # fmt: skip
    now = await env.get_current_time()
    entity = spec(f"e-{uuid.uuid4().hex[:8]}", **policy)
    if adopt is not None:
        entity = entity.model_copy(update={"adopt": adopt})
    slices = [slot(now, first_in + i * HOUR, region) for i, region in enumerate(regions)]
    reg = RegisterEntityInput(spec=entity, schedule={"slices": slices})
    handle = await env.client.start_workflow(
        "EntitySchedule", reg, id=f"entity/{entity.entity_id}", task_queue=queue, result_type=EntityStatus
    )
    return handle, reg


async def test_walks_slices_forecasts_decides_and_migrates(time_env: WorkflowEnvironment) -> None:
    """Follow-the-sun: a move shadows, a slice the fleet already covers stays, the move back shadows again."""
    cloud = FakeCloud(cpu_mhz=10_000)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["eu-west-1", "eu-west-1", "us-east-1"], HOUR)
        final = await handle.result()
    assert [s.decision.action for s in final.slices if s.decision] == ["shadow", "stay", "shadow"]
    assert [s.state for s in final.slices] == ["done", "done", "done"]
    assert final.migrations == 2
    assert final.active_fleet is not None and final.active_fleet.region == "us-east-1"
    assert cloud.names().count("forecast_demand") == 3
    assert list(cloud.live) == [final.active_fleet.fleet_id], "every fleet but the active one is retired"


async def test_low_readiness_skips_the_move(time_env: WorkflowEnvironment) -> None:
    """A forecast below the readiness threshold provisions nothing and keeps the entity where it is."""
    cloud = FakeCloud(readiness=0.1)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["eu-west-1"], HOUR)
        final = await handle.result()
    assert final.slices[0].state == "skipped"
    assert cloud.names().count("provision_fleet") == 1, "only the bootstrap fleet"
    assert final.active_fleet is not None and final.active_fleet.region == "us-east-1"


BAD_UPDATES = [
    ("provision", {"instance_type": "r5.large", "quantity": 1}, "instance_type"),
    ("provision", {"instance_type": "m5.large", "quantity": 21}, "quantity"),
    ("provision", {"instance_type": "m5.large", "quantity": 1, "shift": HOUR / 2}, "time_slice"),
    ("migrate", {}, "time_slice"),
    ("release", {"shift": HOUR / 2}, "time_slice"),
]


@pytest.mark.parametrize(("endpoint", "args", "field"), BAD_UPDATES)
async def test_validators_reject_before_history_and_provision_nothing(
    time_env: WorkflowEnvironment, endpoint: str, args: dict, field: str
) -> None:
    """A bad endpoint call is rejected by the update validator: a typed error naming the field, no history event,
    nothing provisioned beyond the bootstrap fleet."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 5 * HOUR)
        await _wait(handle, lambda s: s.active_fleet is not None)
        client = ShadowingClient(time_env.client, queue)
        s = reg.schedule.slices[0]
        ts = {"start": s.start + dict(args).get("shift", timedelta()), "end": s.end}
        args = {k: v for k, v in args.items() if k != "shift"}
        call = {
            "provision": lambda: client.provision_shadow_instances(reg.spec.entity_id, ts, **args),
            "migrate": lambda: client.migrate_instances(reg.spec.entity_id, ts),
            "release": lambda: client.release_shadow_instances(reg.spec.entity_id, ts),
        }[endpoint]
        with pytest.raises(InvalidRequest) as err:
            await call()
        assert err.value.field == field
        history = await handle.fetch_history()
        assert not any("UPDATE" in e.WhichOneof("attributes").upper() for e in history.events)
        await handle.terminate()
    assert cloud.names().count("provision_fleet") == 1


async def test_manual_provision_then_migrate_rejects_inactive_slice_then_fails_on_sync(
    time_env: WorkflowEnvironment,
) -> None:
    """ProvisionShadowInstances warms shadows; MigrateInstances before the slice says "Time slice is not active",
    and inside the slice an out-of-sync table fails it with "Data synchronization failed" after rollback."""
    cloud = FakeCloud(out_of_sync=True)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _wait(handle, lambda s: s.active_fleet is not None)
        client = ShadowingClient(time_env.client, queue)
        entity, ts = reg.spec.entity_id, reg.schedule.slices[0].as_time_slice()
        progress = await client.provision_shadow_instances(entity, ts, "m5.large", 3)
        assert progress.phase == "ready" and progress.shadows is not None and progress.shadows.size == 3
        with pytest.raises(TimeSliceNotActive):
            await client.migrate_instances(entity, ts)
        await time_env.sleep(2 * HOUR + timedelta(minutes=1))
        with pytest.raises(DataSyncFailed, match="Data synchronization failed"):
            await client.migrate_instances(entity, ts)
        final = await handle.result()
    assert final.slices[0].state == "failed"
    assert cloud.names().count("switch_traffic") == 1, "only the bootstrap routed traffic"
    assert final.active_fleet is not None and final.active_fleet.region == "us-east-1"
    assert [k for k in cloud.live] == [final.active_fleet.fleet_id]


async def test_manual_provision_then_release(time_env: WorkflowEnvironment) -> None:
    """ReleaseShadowInstances undoes hand-provisioned shadows; the slice ends released, nothing left running."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _wait(handle, lambda s: s.active_fleet is not None)
        client = ShadowingClient(time_env.client, queue)
        entity, ts = reg.spec.entity_id, reg.schedule.slices[0].as_time_slice()
        await client.provision_shadow_instances(entity, ts, "m5.large", 2)
        result = await client.release_shadow_instances(entity, ts)
        final = await handle.result()
    assert result.outcome == "released"
    assert final.slices[0].state == "released"
    assert list(cloud.live) == [final.active_fleet.fleet_id]  # type: ignore[union-attr]


async def test_predict_demand_endpoint_and_unknown_entity(time_env: WorkflowEnvironment) -> None:
    """PredictDemand returns the forecast for a known entity; an unknown one is a typed error naming entity_id."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 5 * HOUR)
        await _wait(handle, lambda s: s.active_fleet is not None)  # no activity in flight when we terminate
        cloud.specs[reg.spec.entity_id] = reg.spec
        client = ShadowingClient(time_env.client, queue)
        ts = reg.schedule.slices[0].as_time_slice()
        forecast = await client.predict_demand(reg.spec.entity_id, ts)
        assert forecast.entity_id == reg.spec.entity_id and forecast.metrics["cpu_mhz"].hours
        with pytest.raises(UnknownEntity):
            await client.predict_demand("no-such-entity", ts)
        await handle.terminate()


async def _wait(handle: WorkflowHandle, ready, attempts: int = 200) -> EntityStatus:  # type: ignore[no-untyped-def]
    for _ in range(attempts):
        status = await handle.query("status", result_type=EntityStatus)
        if ready(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("entity never reached the expected state")


async def test_initial_fleet_that_never_settles_serves_cold_at_the_policy_threshold(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud(cpu_mhz=10_000, initial_warm_error="FleetNotWarm")
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["eu-west-1"], HOUR, warm_p99_ms=80)
        final = await handle.result()
        if os.environ.get("SHADOWING_RECORD_HISTORIES"):  # replayed by test_replay (the cold bootstrap)
            (HISTORIES / "entity_schedule_bootstrap_cold.json").write_text((await handle.fetch_history()).to_json())
    assert any("serving cold" in e.message for e in final.events)
    assert final.slices[0].state == "done" and final.active_fleet is not None
    assert cloud.warm_inputs[0].p99_threshold_ms == 80, "the policy's threshold, not the default"


async def test_initial_fleet_that_never_answers_is_terminated_and_named(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud(initial_warm_error="InstanceNeverHealthy")
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["eu-west-1"], HOUR)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        await _shows_failed(handle, "never served")  # a query of the closed workflow: its worker replays it
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "BootstrapFailed", cause
    assert "never served" in cause.message and "terminated" in cause.message
    assert cloud.names()[-1] == "terminate_fleet" and cloud.live == {}, "nothing left running"


async def _shows_failed(handle: WorkflowHandle, reason: str) -> EntityStatus:
    """The entity ended visibly failed: status phase and ShadowingPhase "failed", the reason as an error event."""
    status = await handle.query("status", result_type=EntityStatus)
    assert status.phase == "failed", status.phase
    assert status.events and status.events[-1].kind == "error" and reason in status.events[-1].message, status.events
    assert (await handle.describe()).typed_search_attributes.get(search.PHASE) == "failed"
    return status


async def test_a_routing_failure_during_bootstrap_removes_the_record_and_terminates_the_fleet(
    time_env: WorkflowEnvironment,
) -> None:
    """The issue's case: the fleet was launched and warmed, routing to it fails; nothing stays launched or routed."""
    cloud = FakeCloud(fail={"switch_traffic"})
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], HOUR)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "BootstrapFailed", cause
        assert cause.message.startswith(f"initial fleet {reg.spec.entity_id}:initial could not be routed to")
        assert "injected failure in switch_traffic" in cause.message and "it was terminated" in cause.message
        assert cloud.names()[-3:] == ["switch_traffic", "remove_fleet_record", "terminate_fleet"], cloud.names()
        assert cloud.live == {} and cloud.weights == {}, "nothing left running or routed"
        await _shows_failed(handle, "could not be routed to")


async def test_a_failed_provision_terminates_whatever_it_launched(time_env: WorkflowEnvironment) -> None:
    """provision_fleet failed (say after launching part of the fleet): the fleet's tagged instances are terminated."""
    cloud = FakeCloud(fail={"provision_fleet"})
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], HOUR)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "BootstrapFailed", cause
        assert "could not be provisioned" in cause.message
        assert cloud.calls[-1] == ("terminate_fleet", f"{reg.spec.entity_id}:initial"), cloud.calls
        await _shows_failed(handle, "could not be provisioned")


async def test_a_spec_that_fails_pre_flight_launches_nothing(time_env: WorkflowEnvironment) -> None:
    """EntitySchedule started without the SDK (e.g. the temporal CLI) runs the pre-flight checks first."""
    cloud = FakeCloud(zones=set())
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["eu-west-1"], HOUR)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "InvalidRequest", cause
        assert cause.message == "spec.hosted_zone_id: hosted zone Z1 does not exist"
        assert cloud.names() == ["check_entity"], "nothing launched, routed or forecast"
        await _shows_failed(handle, "pre-flight: spec.hosted_zone_id")


async def test_register_with_a_missing_hosted_zone_raises_and_starts_nothing(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud(zones={"ZOTHER"})
    w, queue = worker(time_env.client, cloud)
    async with w:
        sdk = ShadowingClient(time_env.client, queue)
        now = await time_env.get_current_time()
        entity = spec(f"e-{uuid.uuid4().hex[:8]}")
        with pytest.raises(InvalidRequest) as err:
            await sdk.register_entity(entity, {"slices": [slot(now, HOUR)]})
        assert err.value.field == "spec.hosted_zone_id" and "hosted zone Z1 does not exist" in str(err.value)
        with pytest.raises(UnknownEntity):
            await sdk.status(entity.entity_id)
        assert cloud.names() == ["check_entity"]
        cloud.zones = {"Z1"}
        await sdk.register_entity(entity, {"slices": [slot(now, HOUR)]})
        assert (await sdk.status(entity.entity_id)).entity_id == entity.entity_id
        await time_env.client.get_workflow_handle(sdk.workflow_id(entity.entity_id)).terminate()


async def test_a_smaller_trusted_forecast_scales_in_out_of_dns_first(time_env: WorkflowEnvironment) -> None:
    """2 x m5.large serve; the slice's p90 (1 200 MHz) needs one. At the slice start the record is rewritten to
    name the instance kept, and only then (a TTL later) is the other terminated."""
    cloud = FakeCloud(cpu_mhz=1_000)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["us-east-1"], HOUR)
        final = await handle.result()
    assert final.slices[0].decision is not None and final.slices[0].decision.action == "shrink"
    assert final.slices[0].state == "done" and final.slices[0].outcome == "shrunk 2 -> 1"
    assert final.active_fleet is not None and final.active_fleet.size == 1
    names = cloud.names()
    rewrite, shrink = names.index("set_weights", names.index("forecast_demand")), names.index("shrink_fleet")
    assert rewrite < shrink, names
    kept = final.active_fleet.instance_ids
    assert cloud.live[final.active_fleet.fleet_id].instance_ids == kept


async def test_a_same_region_peak_grows_the_fleet_in_place_and_routes_to_it_at_the_slice_start(
    time_env: WorkflowEnvironment,
) -> None:
    """2 x m5.large serve in us-east-1; the slice's p90 (12 000 MHz) needs 4. The same fleet is provisioned to 4,
    warmed, and only then does the record name the new instances: no migration, nothing retired."""
    cloud = FakeCloud(cpu_mhz=10_000)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["us-east-1"], HOUR)
        final = await handle.result()
        if name := os.environ.get("SHADOWING_RECORD_HISTORIES"):  # replayed by test_replay (scale-out in place)
            stem = "entity_schedule_scale_out" + ("" if name == "1" else f".before.{name}")
            (HISTORIES / f"{stem}.json").write_text((await handle.fetch_history()).to_json())
    first = final.slices[0]
    assert first.decision is not None and first.decision.action == "grow", first.decision
    assert first.state == "done" and first.outcome == "grown 2 -> 4" and final.migrations == 0
    assert final.active_fleet is not None and final.active_fleet.size == 4
    assert final.active_fleet.fleet_id.endswith(":initial") and list(cloud.live) == [final.active_fleet.fleet_id]
    names = cloud.names()
    decided = names.index("forecast_demand")
    grow, warm = names.index("provision_fleet", decided), names.index("warm_fleet", decided)
    assert grow < warm < names.index("set_weights", decided), names
    assert "shrink_fleet" not in names and "terminate_fleet" not in names[decided:]


async def test_a_grown_fleet_that_never_answers_is_shrunk_back_and_the_slice_fails(
    time_env: WorkflowEnvironment,
) -> None:
    """The instances added for a peak never answer: they are terminated (the record never named them), the fleet
    serves at its old size, and the slice says why."""
    cloud = FakeCloud(cpu_mhz=10_000, warm_error_above=(2, "InstanceNeverHealthy"))
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await register(time_env, queue, ["us-east-1"], HOUR)
        final = await handle.result()
    first = final.slices[0]
    assert first.state == "failed" and "scale-out" in (first.error or ""), first
    assert final.active_fleet is not None and final.active_fleet.size == 2
    assert cloud.live[final.active_fleet.fleet_id].instance_ids == final.active_fleet.instance_ids
    names = cloud.names()
    assert names.index("shrink_fleet") > names.index("warm_fleet", names.index("forecast_demand"))


ADOPT = AdoptFleet(instance_ids=("i-0123456789abcdef0", "i-0123456789abcdef1", "i-0123456789abcdef2"))


async def test_an_adopted_fleet_is_routed_to_and_the_first_migration_retires_it(time_env: WorkflowEnvironment) -> None:
    """With spec.adopt the bootstrap launches nothing: the instances already serving become the active fleet, are
    warmed and routed to, and the first migration moves the entity off them (terminate_fleet retires them)."""
    cloud = FakeCloud(cpu_mhz=10_000)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], HOUR, adopt=ADOPT)
        initial = f"{reg.spec.entity_id}:initial"
        final = await handle.result()
    names = cloud.names()
    assert names[:4] == ["check_entity", "adopt_fleet", "warm_fleet", "switch_traffic"], names
    assert [req.fleet_id for req in cloud.provision_inputs] != [initial], "the initial fleet was not launched"
    assert initial not in cloud.provisioned
    assert any(e.kind == "fleet" and e.message.startswith("adopted 3 x m5.large") for e in final.events), final.events
    assert final.migrations == 1 and final.active_fleet is not None and final.active_fleet.region == "eu-west-1"
    assert set(ADOPT.instance_ids) <= cloud.terminated, "the first migration retired the real fleet"


async def test_a_routing_failure_during_an_adopted_bootstrap_untags_and_leaves_the_instances_running(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud(fail={"switch_traffic"})
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], HOUR, adopt=ADOPT)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "BootstrapFailed", cause
        assert cause.message.startswith(f"initial fleet {reg.spec.entity_id}:initial could not be routed to")
        assert "adopted instances were left running" in cause.message, cause.message
        assert cloud.names()[-3:] == ["switch_traffic", "remove_fleet_record", "release_adopted"], cloud.names()
        assert "terminate_fleet" not in cloud.names() and not cloud.terminated, "they served before us: not ours"
        assert cloud.adopted == set() and cloud.weights == {}, "untagged, nothing routed"
        await _shows_failed(handle, "adopted instances were left running")


async def test_adopt_cannot_change_after_registration(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 3 * HOUR, adopt=ADOPT)
        for _ in range(2000):  # bootstrapped (polled on the skipping clock; no wall-clock limit)
            if (await handle.query("status", result_type=EntityStatus)).active_fleet is not None:
                break
            await time_env.sleep(timedelta(seconds=5))
        same = await handle.execute_update("update_spec", reg.spec.model_copy(update={"events": ()}))
        assert same is not None, "an unchanged adopt is accepted"
        changed = reg.spec.model_copy(update={"adopt": AdoptFleet(tags={"app": "other"})})
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await handle.execute_update("update_spec", changed)
        assert "spec.adopt" in str(failure.value.cause)
        await handle.terminate()
