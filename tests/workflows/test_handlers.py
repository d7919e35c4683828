"""EntitySchedule's update handlers against its slice walk (issue item 7): each slice's migration has one owner and
one recorded outcome, whatever order the walk and the endpoints reach it in.

Each test holds the workflow at the racy point (a lease the coordinator cannot grant yet, a gated fake activity) and
sends the competing message there, so the interleaving is the same every run.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from shadowing.client import ShadowingClient
from shadowing.models import (
    AllocationSchedule,
    CoordinatorLimits,
    CoordinatorState,
    EntityStatus,
    LeaseRelease,
    LeaseRequest,
    MigrationProgress,
    MigrationResult,
    ProvisionRequest,
    RegisterEntityInput,
    ScheduledSlice,
    SliceRequest,
    TimeSlice,
)
from tests.fakes import FakeCloud
from tests.workflows.helpers import slot, spec, worker
from tests.workflows.test_entity import register

HOUR = timedelta(hours=1)
LEAD = timedelta(seconds=600)  # helpers.spec's lead time
ONE_AT_A_TIME = CoordinatorLimits(max_concurrent_migrations=1)
BLOCKER = "blocker"


async def _until(check: Callable[[], Awaitable[bool]], what: str, attempts: int = 400) -> None:
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _status(handle: WorkflowHandle) -> EntityStatus:
    return await handle.query("status", result_type=EntityStatus)


async def _events(handle: WorkflowHandle) -> list:
    return [e async for e in handle.fetch_history_events()]


def _children(events: list) -> list[str]:
    attr = "start_child_workflow_execution_initiated_event_attributes"
    return [getattr(e, attr).workflow_id for e in events if e.HasField(attr)]


def _signals_sent(events: list, name: str) -> int:
    attr = "signal_external_workflow_execution_initiated_event_attributes"
    return sum(e.HasField(attr) and getattr(e, attr).signal_name == name for e in events)


async def _took_result(handle: WorkflowHandle, activity: str) -> bool:
    """The workflow completed a task after `activity`'s result arrived: the code after that await has run."""
    events = await _events(handle)
    ids = {e.event_id for e in events if e.activity_task_scheduled_event_attributes.activity_type.name == activity}
    done = [e.event_id for e in events if e.activity_task_completed_event_attributes.scheduled_event_id in ids]
    return bool(done) and any(e.event_id > done[0] and e.HasField("workflow_task_completed_event_attributes")
                              for e in events)  # fmt: skip


async def _block_coordinator(env: WorkflowEnvironment, queue: str, region: str) -> WorkflowHandle:
    """Has the queue's coordinator (one migration at a time) grant its only lease to a holder that is no entity,
    so an entity's request waits in its queue until `_unblock`."""
    coordinator = f"coordinator-{queue}"
    now = await env.get_current_time()
    req = LeaseRequest(
        holder=BLOCKER, slice_key=BLOCKER, region=region, instances=1, expires_at=now + timedelta(days=30),
        limits=ONE_AT_A_TIME, coordinator_id=coordinator,
    )  # fmt: skip
    handle = await env.client.start_workflow(
        "FleetCoordinator", CoordinatorState(limits=ONE_AT_A_TIME), id=coordinator, task_queue=queue,
        start_signal="acquire", start_signal_args=[req],
    )  # fmt: skip

    async def granted() -> bool:
        return bool((await handle.query("leases", result_type=CoordinatorState)).held)

    await _until(granted, "the blocker holds the lease")
    return handle


async def _unblock(coordinator: WorkflowHandle) -> None:
    await coordinator.signal("release", LeaseRelease(holder=BLOCKER, slice_key=BLOCKER))


async def _forecast_time(env: WorkflowEnvironment, entry: ScheduledSlice) -> None:
    """Skips to just past the slice's forecast time. Only just: the server stops skipping once the walk's gated
    forecast runs, so what is left of the sleep passes in real time."""
    await env.sleep(entry.start - LEAD - await env.get_current_time() + timedelta(seconds=1))


async def _start_update(handle: WorkflowHandle, name: str, arg: object, result_type: type):  # type: ignore[no-untyped-def]
    return await handle.start_update(name, arg, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=result_type)


async def _refused(handle: WorkflowHandle, name: str, arg: object) -> str:
    """The update's validator refuses it (never accepted into the history): its message."""
    update = await _start_update(handle, name, arg, object)
    attr = "workflow_execution_update_accepted_event_attributes"
    accepted = [e for e in await _events(handle) if getattr(e, attr).accepted_request.meta.update_id == update.id]
    assert not accepted, f"{name} was accepted"
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await update.result()
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidRequest" and cause.non_retryable, cause
    return err.value.cause.message


def _provision(ts: TimeSlice, quantity: int = 2) -> ProvisionRequest:
    return ProvisionRequest(time_slice=ts, instance_type="m5.large", quantity=quantity)


async def test_a_second_provision_of_a_slice_is_refused_while_the_first_waits_for_capacity(
    time_env: WorkflowEnvironment,
) -> None:
    """The first ProvisionShadowInstances claims the slice before it asks for a lease: a second one for the same
    slice, arriving while the first waits, is refused naming time_slice, and the slice gets one migration."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud, limits=ONE_AT_A_TIME)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 3 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        coordinator = await _block_coordinator(time_env, queue, "eu-west-1")
        ts = reg.schedule.slices[0].as_time_slice()
        first = await _start_update(handle, "ProvisionShadowInstances", _provision(ts), MigrationProgress)
        message = await _refused(handle, "ProvisionShadowInstances", _provision(ts, 3))
        assert message.startswith("time_slice:") and ts.key in message, message
        await _unblock(coordinator)
        progress = await first.result()
        assert progress.phase == "ready"
        await ShadowingClient(time_env.client, queue).release_shadow_instances(reg.spec.entity_id, ts)
        final = await handle.result()
        events = await _events(handle)
    assert _children(events) == [f"migration/{reg.spec.entity_id}/{ts.key}"]
    assert final.slices[0].state == "released" and final.migrations == 0
    assert list(cloud.live) == [final.active_fleet.fleet_id]  # type: ignore[union-attr]


async def test_the_walk_follows_a_provision_that_claimed_the_slice_while_it_forecast(
    time_env: WorkflowEnvironment,
) -> None:
    """The walk is forecasting the slice when ProvisionShadowInstances claims it and waits for capacity: the walk
    follows that migration instead of deciding and leasing on its own (one child, the hand's)."""
    cloud = FakeCloud(gates={"forecast_demand": threading.Event()})
    w, queue = worker(time_env.client, cloud, limits=ONE_AT_A_TIME)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        coordinator = await _block_coordinator(time_env, queue, "eu-west-1")
        await _forecast_time(time_env, reg.schedule.slices[0])
        await _until(lambda: _called(cloud, "forecast_demand"), "the walk forecasts the slice")
        ts = reg.schedule.slices[0].as_time_slice()
        hand = await _start_update(handle, "ProvisionShadowInstances", _provision(ts), MigrationProgress)
        cloud.gates["forecast_demand"].set()
        await _until(lambda: _took_result(handle, "forecast_demand"), "the walk has its forecast")
        await _unblock(coordinator)
        await _until(lambda: _migration_started(handle), "the hand's migration starts")
        assert (await hand.result()).phase == "ready"
        final = await handle.result()
        events = await _events(handle)
    assert _children(events) == [f"migration/{reg.spec.entity_id}/{ts.key}"]
    assert cloud.names().count("forecast_demand") == 1
    assert [p.quantity for p in cloud.provision_inputs if p.role != "active"] == [2], "the hand's 2, nothing else"
    assert final.slices[0].state == "released", "nobody migrated: the manual shadows were released at the end"


async def test_migrate_and_the_walk_settle_one_child_once_after_a_slice_is_inserted_before_it(
    time_env: WorkflowEnvironment,
) -> None:
    """The walk and MigrateInstances both wait for the slice's child, and a schedule update has meanwhile put a
    slice before it (every index shifts): one migration is counted, on the right slice, and one lease released."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        client = ShadowingClient(time_env.client, queue)
        entity, moved = reg.spec.entity_id, reg.schedule.slices[0]
        ts = moved.as_time_slice()
        await client.provision_shadow_instances(entity, ts, "m5.large", 2)
        await time_env.sleep(2 * HOUR - LEAD + timedelta(minutes=5))

        async def following() -> bool:
            return (await _status(handle)).phase == f"migrating {ts.key}"

        await _until(following, "the walk follows the hand's migration")
        before = ScheduledSlice(start=moved.start - timedelta(minutes=30), end=moved.start - timedelta(minutes=20),
                                region="us-east-1")  # fmt: skip
        await handle.execute_update("update_schedule", AllocationSchedule(slices=(before, moved)))
        await time_env.sleep(LEAD)
        migrate = await _start_update(handle, "MigrateInstances", SliceRequest(time_slice=ts), MigrationResult)
        final = await handle.result()  # skips the cutover's waits (an update's own wait does not)
        events = await _events(handle)
    assert (await migrate.result()).outcome == "migrated"
    by_key = {s.time_slice.key: s for s in final.slices}
    assert by_key[ts.key].state == "done" and by_key[ts.key].outcome == "migrated"
    assert by_key[before.key].state == "skipped", by_key[before.key]
    assert final.migrations == 1
    assert final.active_fleet is not None and final.active_fleet.region == "eu-west-1"
    assert _signals_sent(events, "release") == 1, "the slice's lease is released once"
    assert len(_children(events)) == 1


async def test_release_is_refused_once_migrate_went_to_the_child(time_env: WorkflowEnvironment) -> None:
    """MigrateInstances has sent the go and the child is checking the data sync (it has not reported a cutover
    yet): ReleaseShadowInstances is refused naming time_slice instead of answering with the migration's result."""
    cloud = FakeCloud(gates={"check_sync": threading.Event()})
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        client = ShadowingClient(time_env.client, queue)
        ts = reg.schedule.slices[0].as_time_slice()
        await client.provision_shadow_instances(reg.spec.entity_id, ts, "m5.large", 2)
        await time_env.sleep(2 * HOUR + timedelta(minutes=1))
        migrate = await _start_update(handle, "MigrateInstances", SliceRequest(time_slice=ts), MigrationResult)
        await _until(lambda: _final_check(cloud), "the child checks the sync")
        message = await _refused(handle, "ReleaseShadowInstances", SliceRequest(time_slice=ts))
        assert message.startswith("time_slice:") and "MigrateInstances" in message, message
        cloud.gates["check_sync"].set()
        final = await handle.result()
    assert (await migrate.result()).outcome == "migrated"
    assert final.slices[0].state == "done" and final.migrations == 1


async def test_pause_while_the_walk_forecasts_prepares_nothing(time_env: WorkflowEnvironment) -> None:
    """`pause` lands while the slice's forecast runs: the walk decides and provisions nothing for it."""
    cloud = FakeCloud(gates={"forecast_demand": threading.Event()})
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        await _forecast_time(time_env, reg.schedule.slices[0])
        await _until(lambda: _called(cloud, "forecast_demand"), "the walk forecasts the slice")
        await handle.execute_update("pause", {"reason": "freeze"})
        cloud.gates["forecast_demand"].set()
        await _until(lambda: _took_result(handle, "forecast_demand"), "the walk has its forecast")
        final = await handle.result()
    assert cloud.names().count("provision_fleet") == 1, "only the bootstrap fleet"
    assert final.slices[0].state == "skipped" and final.slices[0].outcome == "paused through the slice"
    assert final.slices[0].decision is None


async def test_pause_does_not_skip_a_slice_provisioned_by_hand(time_env: WorkflowEnvironment) -> None:
    """Paused with hand-provisioned shadows waiting: the walk still follows that migration (running migrations
    finish), so the slice ends released with the shadows gone instead of skipped under a running child."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        ts = reg.schedule.slices[0].as_time_slice()
        await ShadowingClient(time_env.client, queue).provision_shadow_instances(reg.spec.entity_id, ts, "m5.large", 2)
        await handle.execute_update("pause", {"reason": "freeze"})
        final = await handle.result()
    assert final.slices[0].state == "released", final.slices[0]
    assert list(cloud.live) == [final.active_fleet.fleet_id], "the shadows were terminated"  # type: ignore[union-attr]


async def test_no_continue_as_new_while_a_hand_provisioned_migration_waits(time_env: WorkflowEnvironment) -> None:
    """The history passes its limit after the first slice while the second's hand-provisioned shadows wait: the
    walk does not continue as new (that would cancel the child), it follows the child to its end."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        now = await time_env.get_current_time()
        entity = spec(f"e-{uuid.uuid4().hex[:8]}")
        slices = [slot(now, HOUR, "eu-west-1"), slot(now, 3 * HOUR, "us-east-1")]
        reg = RegisterEntityInput(spec=entity, schedule={"slices": slices}, history_limit=100)
        handle = await time_env.client.start_workflow(
            "EntitySchedule", reg, id=f"entity/{entity.entity_id}", task_queue=queue, result_type=EntityStatus
        )
        await _until(lambda: _has_fleet(handle), "bootstrap")
        second = slices[1].as_time_slice()
        progress = await handle.execute_update(
            "ProvisionShadowInstances", _provision(second), result_type=MigrationProgress
        )
        assert progress.phase == "ready"
        final = await handle.result()
    assert final.slices[0].state == "done" and final.migrations == 1
    assert final.slices[1].state == "released", final.slices[1]
    assert list(cloud.live) == [final.active_fleet.fleet_id], "the shadows were terminated"  # type: ignore[union-attr]


async def _has_fleet(handle: WorkflowHandle) -> bool:
    return (await _status(handle)).active_fleet is not None


async def _called(cloud: FakeCloud, activity: str) -> bool:
    return activity in cloud.names()


async def _final_check(cloud: FakeCloud) -> bool:
    """The final sync check (the copy was verified whole while the shadows were prepared)."""
    return any(name == "check_sync" and key.endswith(" changed") for name, key in cloud.calls)


async def _migration_started(handle: WorkflowHandle) -> bool:
    return (await _status(handle)).slices[0].migration_id is not None
