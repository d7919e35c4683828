"""A slice's endpoints after its migration settled (issue 19, item 3): provisioned, released, then provisioned
again; migrate and release on a settled slice are refused naming what happened to it; the phase and its search
attribute follow the slice. And the endpoints' refusals carry the values that explain them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from shadowing import search
from shadowing.client import ShadowingClient
from shadowing.errors import TimeSliceNotActive
from shadowing.models import MigrationProgress, MigrationResult, ProvisionRequest, SliceRequest, TimeSlice
from tests.fakes import FakeCloud
from tests.workflows.helpers import worker
from tests.workflows.test_entity import register
from tests.workflows.test_handlers import _children, _events, _has_fleet, _refused, _status, _until

HOUR = timedelta(hours=1)


async def _phase_attribute(handle: WorkflowHandle) -> str | None:
    return (await handle.describe()).typed_search_attributes.get(search.PHASE)


async def test_a_released_slice_is_refused_until_provisioned_again_then_migrates(time_env: WorkflowEnvironment) -> None:
    """Provisioned then released before it starts: the phase (and ShadowingPhase) no longer say migrating; migrate
    and release are refused saying the slice was released; provisioned again, the same child id starts a new run
    and the slice migrates once."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1", "us-east-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        client = ShadowingClient(time_env.client, queue)
        entity, ts = reg.spec.entity_id, reg.schedule.slices[0].as_time_slice()
        await client.provision_shadow_instances(entity, ts, "m5.large", 2)
        released = await client.release_shadow_instances(entity, ts)
        assert released.outcome == "released"

        status = await _status(handle)
        assert status.slices[0].state == "released" and status.slices[0].settled_at is not None
        assert not status.phase.startswith("migrating"), status.phase
        assert await _phase_attribute(handle) == status.phase.split(" ")[0] != "migrating"
        when = status.slices[0].settled_at.isoformat()
        for name in ("MigrateInstances", "ReleaseShadowInstances"):
            message = await _refused(handle, name, SliceRequest(time_slice=ts))
            assert message.startswith(f"time_slice: slice {ts.key} was released at {when}"), message
        assert "provisions it again" in await _refused(handle, "MigrateInstances", SliceRequest(time_slice=ts))

        again = await handle.execute_update(
            "ProvisionShadowInstances",
            ProvisionRequest(time_slice=ts, instance_type="m5.large", quantity=3),
            result_type=MigrationProgress,
        )
        assert again.phase == "ready"
        assert (await _status(handle)).slices[0].state == "preparing"
        await time_env.sleep(2 * HOUR + timedelta(minutes=1))
        # started, not executed: the test server skips the watch and drain only while the test awaits a result
        migrate = await handle.start_update(
            "MigrateInstances", SliceRequest(time_slice=ts), result_type=MigrationResult,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )  # fmt: skip
        final = await handle.result()
        result = await migrate.result()
        assert result.outcome == "migrated" and result.fleet is not None
        assert result.fleet.size == 3, "the second provision's fleet serves"
        events = await _events(handle)
    mid = f"migration/{entity}/{ts.key}"
    assert _children(events).count(mid) == 2, "the child id is reused for the second provision"
    assert final.slices[0].state == "done" and final.slices[0].outcome == "migrated"
    assert final.migrations == 2, "slice 0 once, then the walk's move back for slice 1"


async def test_refusals_carry_the_values_that_explain_them(time_env: WorkflowEnvironment) -> None:
    """Too many instances names the maximum; an unknown slice lists the entity's slices; a slice not active says
    when it runs (and the SDK raises TimeSliceNotActive naming time_slice)."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"] * 6, 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        ts = reg.schedule.slices[0].as_time_slice()
        limit = reg.spec.policy.max_instances
        too_many = ProvisionRequest(time_slice=ts, instance_type="m5.large", quantity=limit + 1)
        message = await _refused(handle, "ProvisionShadowInstances", too_many)
        assert message == f"quantity: {limit + 1} exceeds the entity's max_instances ({limit})"

        unknown = TimeSlice(start=ts.start + timedelta(minutes=30), end=ts.end)
        message = await _refused(handle, "MigrateInstances", SliceRequest(time_slice=unknown))
        keys = [s.key for s in reg.schedule.slices]
        assert message.startswith("time_slice: ") and "its slices: " in message, message
        assert all(k in message for k in keys[:4]) and keys[4] not in message and message.endswith(", ...)"), message

        client = ShadowingClient(time_env.client, queue)
        await client.provision_shadow_instances(reg.spec.entity_id, ts, "m5.large", 2)
        message = await _refused(handle, "MigrateInstances", SliceRequest(time_slice=ts))
        assert f"runs {ts.start.isoformat()} - {ts.end.isoformat()}" in message, message
        with pytest.raises(TimeSliceNotActive) as err:
            await client.migrate_instances(reg.spec.entity_id, ts)
        assert err.value.field == "time_slice" and ts.start.isoformat() in str(err.value)
        await handle.terminate("test over")
