"""ShadowMigration on the time-skipping server, with fake activities: order, compensations, release."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from shadowing.models import MigrationProgress, MigrationResult
from tests.fakes import FakeCloud
from tests.workflows.helpers import migration, worker

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
COMPENSATIONS = {"restore_traffic", "drop_replicas", "terminate_fleet"}


async def run(env: WorkflowEnvironment, cloud: FakeCloud, mode: str = "auto", record: str | None = None):
    w, queue = worker(env.client, cloud, max_cached_workflows=0)  # replay from history on every task
    now = await env.get_current_time()
    async with w:
        handle = await env.client.start_workflow(
            "ShadowMigration", migration(now, mode), id=f"migration-{uuid.uuid4()}", task_queue=queue,
            result_type=MigrationResult,
        )  # fmt: skip
        try:
            return await handle.result()
        finally:
            if record:
                (HISTORIES / f"{record}.json").write_text((await handle.fetch_history()).to_json())


async def test_success_runs_steps_in_order_and_retires_old_fleet(time_env: WorkflowEnvironment) -> None:
    """A migration provisions, warms, replicates, waits for the slice, cuts over, watches, then retires."""
    cloud = FakeCloud()
    cloud.live["shop:initial"] = migration(await time_env.get_current_time()).source  # type: ignore[assignment]
    result = await run(time_env, cloud, record=None)
    assert result.outcome == "migrated"
    assert result.fleet is not None and result.fleet.role == "active" and result.fleet.size == 3
    assert cloud.names() == [
        "provision_fleet", "warm_fleet", "replicate_tables", "check_sync", "switch_traffic", "mark_fleet_role",
        "check_fleet_health", "check_fleet_health", "check_fleet_health", "remove_fleet_record", "terminate_fleet",
    ]  # fmt: skip
    assert ("terminate_fleet", "shop:initial") in cloud.calls
    assert set(cloud.live) == {result.fleet.fleet_id}
    assert cloud.weights == {result.fleet.fleet_id: 100}


FAILURES = [
    # (what to break, expected error type, message start, compensations in order)
    ({"fail": {"provision_fleet"}}, "MigrationFailed", "Migration failed", ["terminate_fleet"]),
    ({"fail": {"warm_fleet"}}, "MigrationFailed", "Migration failed", ["terminate_fleet"]),
    ({"fail": {"replicate_tables"}}, "MigrationFailed", "Migration failed", ["drop_replicas", "terminate_fleet"]),
    ({"out_of_sync": True}, "DataSyncFailed", "Data synchronization failed", ["drop_replicas", "terminate_fleet"]),
    ({"fail": {"switch_traffic"}}, "MigrationFailed", "Migration failed",
     ["restore_traffic", "drop_replicas", "terminate_fleet"]),
    ({"unhealthy_after_cutover": True}, "MigrationFailed", "Migration failed: new fleet degraded",
     ["restore_traffic", "drop_replicas", "terminate_fleet"]),
]  # fmt: skip


@pytest.mark.parametrize(("breakage", "kind", "message", "undo"), FAILURES, ids=lambda v: str(v)[:40])
async def test_failure_compensates_in_reverse_and_fails_the_workflow(
    time_env: WorkflowEnvironment, breakage: dict, kind: str, message: str, undo: list[str]
) -> None:
    """Any failing step undoes every registered step newest-first and the workflow fails with a typed error."""
    cloud = FakeCloud(**breakage)
    record = None
    if os.environ.get("SHADOWING_RECORD_HISTORIES") and (
        breakage.get("out_of_sync") or breakage.get("unhealthy_after_cutover")
    ):
        record = "shadow_migration_" + ("sync_failed" if breakage.get("out_of_sync") else "rolled_back")
    with pytest.raises(WorkflowFailureError) as err:
        await run(time_env, cloud, record=record)
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == kind and cause.message.startswith(message)
    assert [n for n in cloud.names() if n in COMPENSATIONS] == undo
    assert cloud.live == {}, "shadows left running"
    assert ("terminate_fleet", "shop:initial") not in cloud.calls, "the old fleet must survive a failed migration"
    if "switch_traffic" in cloud.names():
        assert cloud.weights == {"shop:initial": 100}, "traffic must be back on the old fleet"


async def test_manual_release_undoes_shadows_without_touching_traffic(time_env: WorkflowEnvironment) -> None:
    """In manual mode the shadows wait; a release signal runs the compensations and ends as 'released'."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    now = await time_env.get_current_time()
    async with w:
        handle = await time_env.client.start_workflow(
            "ShadowMigration", migration(now, "manual"), id=f"migration-{uuid.uuid4()}", task_queue=queue,
            result_type=MigrationResult,
        )  # fmt: skip
        with time_env.auto_time_skipping_disabled():
            await _wait_phase(handle, "ready")
        await handle.signal("release")
        result = await handle.result()
    assert result.outcome == "released"
    assert "switch_traffic" not in cloud.names()
    assert cloud.live == {}
    assert result.compensations_run == ("drop replicas", "terminate shadows")


async def test_manual_mode_releases_by_itself_when_the_slice_ends(time_env: WorkflowEnvironment) -> None:
    """Shadows provisioned by hand and never migrated are released at the slice end: nothing is left running."""
    cloud = FakeCloud()
    result = await run(time_env, cloud, mode="manual")
    assert result.outcome == "released"
    assert cloud.live == {}


async def test_cancellation_runs_compensations(time_env: WorkflowEnvironment) -> None:
    """Cancelling a migration mid-way terminates its shadows before the workflow ends as cancelled."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    now = await time_env.get_current_time()
    async with w:
        handle = await time_env.client.start_workflow(
            "ShadowMigration", migration(now, "manual"), id=f"migration-{uuid.uuid4()}", task_queue=queue
        )
        with time_env.auto_time_skipping_disabled():
            await _wait_phase(handle, "ready")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert cloud.live == {}
    assert [n for n in cloud.names() if n in COMPENSATIONS] == ["drop_replicas", "terminate_fleet"]


async def _wait_phase(handle, phase: str, attempts: int = 200) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    for _ in range(attempts):
        progress = await handle.query("progress", result_type=MigrationProgress)
        if progress.phase == phase:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"migration never reached {phase!r}")
