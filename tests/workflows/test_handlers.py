"""EntitySchedule's update handlers against its slice walk (issue item 7): each slice's migration has one owner and
one recorded outcome, whatever order the walk and the endpoints reach it in.

Each test holds the workflow at the racy point (a lease the coordinator cannot grant yet, a gated fake activity) and
sends the competing message there, so the interleaving is the same every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio.client import WorkflowHandle, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from shadowing.client import ShadowingClient
from shadowing.models import (
    AllocationSchedule,
    EntityStatus,
    MigrationResult,
    ScheduledSlice,
    SliceRequest,
)
from tests.fakes import FakeCloud
from tests.workflows.helpers import worker
from tests.workflows.test_entity import register

HOUR = timedelta(hours=1)
LEAD = timedelta(seconds=600)  # helpers.spec's lead time


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


async def _start_update(handle: WorkflowHandle, name: str, arg: object, result_type: type):  # type: ignore[no-untyped-def]
    return await handle.start_update(name, arg, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=result_type)


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


async def _has_fleet(handle: WorkflowHandle) -> bool:
    return (await _status(handle)).active_fleet is not None
