"""ShadowMigration on the time-skipping server, with fake activities: order, compensations, release."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from shadowing.models import MigrationInput, MigrationProgress, MigrationResult
from tests.fakes import FakeCloud
from tests.workflows.helpers import migration, slot, worker
from workflows.migrate import MAX_WAIT_STEPS

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
COMPENSATIONS = {"restore_weights", "drop_replicas", "terminate_fleet"}
OLD = "shop:initial"


def steps(cloud: FakeCloud) -> list[str]:
    """The calls without the periodic catch-up passes and probes, which depend on timing."""
    return [n for n in cloud.names() if n not in {"catch_up", "probe_fleet", "replicate_both_ways"}]


async def run(env: WorkflowEnvironment, cloud: FakeCloud, mode: str = "auto", record: str | None = None):
    return await run_input(env, cloud, migration(await env.get_current_time(), mode), record)


async def run_input(env: WorkflowEnvironment, cloud: FakeCloud, req: MigrationInput, record: str | None = None):
    w, queue = worker(env.client, cloud, max_cached_workflows=0)  # replay from history on every task
    cloud.weights.setdefault(OLD, 100)  # the old fleet serves the name before the migration
    async with w:
        handle = await env.client.start_workflow(
            "ShadowMigration", req, id=f"migration-{uuid.uuid4()}", task_queue=queue,
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
    assert steps(cloud) == [
        "provision_fleet", "warm_fleet", "replicate_tables", "check_sync", "check_sync", "routing_state",
        "set_weights", "mark_fleet_role", "remove_fleet_record", "terminate_fleet",
    ]  # fmt: skip
    assert ("terminate_fleet", OLD) in cloud.calls
    assert set(cloud.live) == {result.fleet.fleet_id}
    assert cloud.weights == {result.fleet.fleet_id: 100}
    # The old fleet's baseline is probed before the switch, the new fleet WATCH_PROBES times after it.
    probes = [key for name, key in cloud.calls if name == "probe_fleet"]
    assert probes == [OLD, result.fleet.fleet_id, result.fleet.fleet_id, result.fleet.fleet_id]
    # While the shadows waited 10 minutes for the slice, the source's writes were replayed every minute.
    assert cloud.names().count("catch_up") >= 5


FAILURES = [
    # (what to break, expected error type, message start, compensations in order)
    ({"fail": {"provision_fleet"}}, "MigrationFailed", "Migration failed", ["terminate_fleet"]),
    ({"fail": {"warm_fleet"}}, "MigrationFailed", "Migration failed", ["terminate_fleet"]),
    ({"fail": {"replicate_tables"}}, "MigrationFailed", "Migration failed", ["drop_replicas", "terminate_fleet"]),
    ({"out_of_sync": True}, "DataSyncFailed", "Data synchronization failed", ["drop_replicas", "terminate_fleet"]),
    ({"fail": {"routing_state"}}, "MigrationFailed", "Migration failed", ["drop_replicas", "terminate_fleet"]),
    ({"fail": {"set_weights"}}, "MigrationFailed", "Migration failed",
     ["restore_weights", "drop_replicas", "terminate_fleet"]),
    ({"fail": {"mark_fleet_role"}}, "MigrationFailed", "Migration failed",
     ["restore_weights", "drop_replicas", "terminate_fleet"]),
    ({"unhealthy_after_cutover": True}, "MigrationFailed", "Migration failed: new fleet degraded",
     ["restore_weights", "drop_replicas", "terminate_fleet"]),
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
    assert ("terminate_fleet", OLD) not in cloud.calls, "the old fleet must survive a failed migration"
    assert cloud.weights == {OLD: 100}, "traffic must be back on the old fleet"
    if "set_weights" in cloud.names():  # rollback after the switch: the new side's writes go back to the source
        back = [key for name, key in cloud.calls if name == "catch_up"][-1]
        assert back == "eu-west-1->us-east-1"


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
    assert "set_weights" not in cloud.names()
    assert cloud.live == {}
    assert result.compensations_run == ("drop replicas", "terminate shadows")


async def test_manual_mode_releases_by_itself_when_the_slice_ends(time_env: WorkflowEnvironment) -> None:
    """Shadows provisioned by hand and never migrated are released at the slice end: nothing is left running."""
    cloud = FakeCloud()
    # A catch-up every 10 minutes, not every minute: each of the ~70 passes of the default replays the whole
    # history (no cache), about 30 s of CPU that proves nothing more about the release.
    req = migration(await time_env.get_current_time(), "manual")
    policy = req.spec.policy.model_copy(update={"catch_up_interval_s": 600.0})
    result = await run_input(
        time_env, cloud, req.model_copy(update={"spec": req.spec.model_copy(update={"policy": policy})})
    )
    assert result.outcome == "released"
    assert cloud.live == {}


async def test_shadows_that_may_still_serve_are_kept_when_routing_cannot_be_restored(
    time_env: WorkflowEnvironment,
) -> None:
    """A cutover step fails and so does its routing restore: the shadows are kept (a visible leak), not terminated
    while DNS may still send them traffic (an outage); the other compensations still run."""
    cloud = FakeCloud(fail={"set_weights", "restore_weights"})
    with pytest.raises(WorkflowFailureError):
        await run(time_env, cloud)
    assert [n for n in cloud.names() if n in COMPENSATIONS] == ["restore_weights", "drop_replicas"]
    assert [f.region for f in cloud.live.values()] == ["eu-west-1"], "the shadows are kept"
    assert "terminate_fleet" not in cloud.names()


async def test_a_long_manual_wait_keeps_the_history_bounded(time_env: WorkflowEnvironment) -> None:
    """Shadows held by hand for a 3-day slice catch up at most MAX_WAIT_STEPS times (not every minute: 4,320
    passes, past Temporal's 51,200-event limit), then release at the slice end with their compensations."""
    cloud = FakeCloud()
    now = await time_env.get_current_time()
    req = migration(now, "manual").model_copy(
        update={"time_slice": slot(now, timedelta(minutes=10), length=timedelta(days=3))}
    )
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle = await time_env.client.start_workflow(
            "ShadowMigration", req, id=f"migration-{uuid.uuid4()}", task_queue=queue, result_type=MigrationResult
        )
        result = await handle.result()
        events = len((await handle.fetch_history()).events)
    assert result.outcome == "released" and cloud.live == {}
    assert cloud.names().count("catch_up") <= MAX_WAIT_STEPS + 1
    assert events < 10_240, events  # Temporal's history-count warning (the hard limit is 51,200)


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


async def test_every_option_runs_in_order(time_env: WorkflowEnvironment) -> None:
    """Spot shadows, no warm-up, a canary cutover on Route53 and the ELB listener, RDS and SQS move along."""
    cloud = FakeCloud()
    now = await time_env.get_current_time()
    req = migration(now)
    listener = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop/1/2"
    policy = req.spec.policy.model_copy(
        update={"cutover_strategy": "canary", "warm_up": False, "spot": True, "spot_max_price_ratio": 0.5,
                "consistency": "fenced"}  # an entity with RDS must be
    )  # fmt: skip
    spec = req.spec.model_copy(
        update={"policy": policy, "listener_arn": listener, "rds_instance": "shop-db", "sqs_queues": ("jobs",)}
    )
    cloud.listener = {"arn:tg/old-a": 1, "arn:tg/old-b": 1}
    result = await run_input(time_env, cloud, req.model_copy(update={"spec": spec}))
    assert result.outcome == "migrated" and result.fleet is not None
    new = result.fleet.fleet_id
    assert steps(cloud) == [
        "check_write_fence", "provision_fleet", "register_fleet_targets", "check_fleet_health", "replicate_tables",
        "check_sync", "create_read_replica", "check_sync", "set_write_fence", "check_sync", "promote_read_replica",
        "set_write_fence", "routing_state", "listener_state", "set_weights", "set_listener_weights", "set_weights",
        "set_listener_weights", "forward_queue", "mark_fleet_role", "remove_fleet_record", "terminate_fleet",
    ]  # fmt: skip
    [asked] = cloud.provision_inputs
    assert asked.market == "spot" and asked.spot_deadline_s == policy.spot_deadline_s
    assert asked.max_price_usd is not None and 0 < asked.max_price_usd < 0.2  # half of m5.large's on-demand price
    weights = [key for name, key in cloud.calls if name == "set_weights"]
    assert weights == [f"{new}=10,{OLD}=90", f"{new}=100,{OLD}=0"]
    assert cloud.listener == {"arn:tg/old-a": 0, "arn:tg/old-b": 0, f"arn:tg/{new}": 100}
    # The canary step is judged once before the full switch, then the watch probes WATCH_PROBES times.
    assert [key for name, key in cloud.calls if name == "probe_fleet"] == [OLD] + [new] * 4


async def test_rollback_after_the_switch_restores_everything(time_env: WorkflowEnvironment) -> None:
    """A degraded new fleet: traffic, listener, queues and data go back; shadows and replicas go away. (With RDS
    the rollback is refused once the promoted replica took writes: tests/workflows/test_live_writes.py.)"""
    cloud = FakeCloud(unhealthy_after_cutover=True)
    now = await time_env.get_current_time()
    req = migration(now)
    listener = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop/1/2"
    spec = req.spec.model_copy(update={"listener_arn": listener, "sqs_queues": ("jobs",)})
    cloud.listener = {"arn:tg/old": 1}
    with pytest.raises(WorkflowFailureError):
        await run_input(time_env, cloud, req.model_copy(update={"spec": spec}))
    after = cloud.names()[cloud.names().index("mark_fleet_role") + 1 :]
    assert [n for n in after if n not in ("probe_fleet", "replicate_both_ways")] == [
        "forward_queue", "set_listener_weights", "restore_weights", "catch_up", "catch_up", "drop_replicas",
        "deregister_fleet_targets", "terminate_fleet",
    ]  # fmt: skip
    queues = [key for name, key in cloud.calls if name == "forward_queue"]
    assert queues == ["us-east-1->eu-west-1", "eu-west-1->us-east-1"]
    replays = [key for name, key in cloud.calls if name == "catch_up"][-2:]
    assert replays == ["us-east-1->eu-west-1", "eu-west-1->us-east-1"]  # the source's last writes, then back
    assert cloud.listener == {"arn:tg/old": 1}
    assert cloud.weights == {OLD: 100}
    assert cloud.live == {} and cloud.target_groups == {}
