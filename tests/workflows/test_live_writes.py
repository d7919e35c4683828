"""ShadowMigration's handling of the entity's writes (issue 20), on the time-skipping server with fake activities:
`converge` replicates both ways from the first weight change until the old fleet is retired; `fenced` holds the old
fleet's writes, drains, and points them at the new region within a deadline; RDS refuses a rollback once the
promoted replica took writes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from shadowing.models import EntitySpec, MigrationInput
from tests.fakes import FakeCloud
from tests.workflows.helpers import migration, spec
from tests.workflows.test_migrate import OLD, run_input

TIMED = {"catch_up", "probe_fleet", "replicate_both_ways"}


def fenced(req: MigrationInput, **fields: object) -> MigrationInput:
    policy = req.spec.policy.model_copy(update={"consistency": "fenced", "fence_deadline_s": 5.0})
    return req.model_copy(update={"spec": req.spec.model_copy(update={"policy": policy, **fields})})


def steps(cloud: FakeCloud) -> list[str]:
    return [n for n in cloud.names() if n not in TIMED]


async def test_converge_replicates_both_ways_from_the_switch_until_after_the_old_fleet_is_gone(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud()
    result = await run_input(time_env, cloud, migration(await time_env.get_current_time()))
    assert result.outcome == "migrated" and result.data is not None
    names = cloud.names()
    first_switch, retired = names.index("set_weights"), len(names) - 1 - names[::-1].index("terminate_fleet")
    passes = [i for i, n in enumerate(names) if n == "replicate_both_ways"]
    assert passes and first_switch < passes[0], "no write crosses regions before the first weight change"
    assert passes[-1] > retired, "a last pass carries what the old fleet acknowledged before it went"
    assert "replicate_both_ways" not in names[: names.index("routing_state")]
    # the copy is verified whole once while there is time; the final check verifies only what changed since
    checks = [key for name, key in cloud.calls if name == "check_sync"]
    assert checks == ["eu-west-1 full-scan", "eu-west-1 changed"]
    assert result.data.consistency == "converge" and result.data.sync_mode == "changed"
    assert result.data.two_way_passes == len(passes) and result.data.conflicts == len(passes)
    assert "set_write_fence" not in names and "check_write_fence" not in names


async def test_converge_rollback_stops_the_loop_and_replays_the_new_sides_writes_back(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud(unhealthy_after_cutover=True)
    with pytest.raises(WorkflowFailureError):
        await run_input(time_env, cloud, migration(await time_env.get_current_time()))
    names = cloud.names()
    restored = names.index("restore_weights")
    # both fleets may take writes until the restored records' TTL ran out: the loop goes on meanwhile, then stops
    # before the last passes bring the data home
    home = names.index("catch_up", restored)
    assert "replicate_both_ways" not in names[home:], "the loop stops before the data goes home"
    replays = [key for name, key in cloud.calls[restored:] if name == "catch_up"]
    assert replays == ["us-east-1->eu-west-1", "eu-west-1->us-east-1"]
    assert cloud.weights == {OLD: 100} and cloud.live == {}


async def test_a_failing_two_way_pass_rolls_the_migration_back(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud(two_way_error="InvalidRequest")
    with pytest.raises(WorkflowFailureError) as err:
        await run_input(time_env, cloud, migration(await time_env.get_current_time()))
    assert isinstance(err.value.cause, ApplicationError)
    assert "two-way replication failed" in err.value.cause.message
    assert cloud.weights == {OLD: 100} and ("terminate_fleet", OLD) not in cloud.calls


async def test_fenced_holds_drains_and_moves_the_old_fleets_writes_before_any_traffic_moves(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud()
    result = await run_input(time_env, cloud, fenced(migration(await time_env.get_current_time())))
    assert result.outcome == "migrated" and result.data is not None
    assert steps(cloud) == [
        "check_write_fence", "provision_fleet", "warm_fleet", "replicate_tables", "check_sync", "check_sync",
        "set_write_fence", "check_sync", "set_write_fence", "routing_state", "set_weights", "mark_fleet_role",
        "remove_fleet_record", "terminate_fleet",
    ]  # fmt: skip
    assert cloud.fence_calls == [("held", None), ("open", "eu-west-1")]
    assert result.data.consistency == "fenced" and result.data.fence_ms is not None and result.data.fence_ms >= 0
    names = cloud.names()
    moved = len(names) - 1 - names[::-1].index("set_write_fence")
    assert "replicate_both_ways" not in names[:moved], "the old region's copy is kept current only after the move"
    assert "replicate_both_ways" in names[moved:]


async def test_an_app_without_the_fence_contract_fails_before_anything_is_provisioned(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud(fence_unavailable=True)
    with pytest.raises(WorkflowFailureError) as err:
        await run_input(time_env, cloud, fenced(migration(await time_env.get_current_time())))
    assert isinstance(err.value.cause, ApplicationError)
    assert "write fence: i-old-0 at http://127.0.0.1:1/admin/writes" in err.value.cause.message
    assert "provision_fleet" not in cloud.names() and cloud.weights == {OLD: 100}


async def test_a_fence_that_cannot_move_the_writes_releases_them_at_the_source_and_rolls_back(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud(fence_errors={"open": "WriteFenceFailed"})
    with pytest.raises(WorkflowFailureError):
        await run_input(time_env, cloud, fenced(migration(await time_env.get_current_time())))
    # held, the move to the target refused, then released where the writes were
    assert cloud.fence_calls[:2] == [("held", None), ("open", "eu-west-1")]
    assert cloud.fence_calls[-1] == ("open", "us-east-1")
    assert "set_weights" not in cloud.names() and cloud.weights == {OLD: 100} and cloud.live == {}


async def test_fenced_rollback_after_the_move_holds_copies_back_and_reopens_at_the_source(
    time_env: WorkflowEnvironment,
) -> None:
    cloud = FakeCloud(unhealthy_after_cutover=True)
    with pytest.raises(WorkflowFailureError):
        await run_input(time_env, cloud, fenced(migration(await time_env.get_current_time())))
    assert cloud.fence_calls == [("held", None), ("open", "eu-west-1"), ("held", None), ("open", "us-east-1")]
    names = cloud.names()
    last_hold = len(names) - 1 - names[::-1].index("set_write_fence") - 3  # held, catch_up, catch_up, open
    assert names[last_hold : last_hold + 4] == ["set_write_fence", "catch_up", "catch_up", "set_write_fence"]
    assert cloud.weights == {OLD: 100} and cloud.live == {}


async def test_rds_after_its_promoted_replica_took_writes_refuses_the_rollback(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud(unhealthy_after_cutover=True)
    req = fenced(migration(await time_env.get_current_time()), rds_instance="shop-db")
    with pytest.raises(WorkflowFailureError) as err:
        await run_input(time_env, cloud, req)
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RollbackRefused"
    assert "shop-db" in cause.message and "docs/operations.md" in cause.message
    assert "restore_weights" not in cloud.names() and "delete_read_replica" not in cloud.names()
    assert ("terminate_fleet", OLD) not in cloud.calls, "nothing is undone, nothing retired: the operator decides"


async def test_rds_failing_before_the_writes_move_rolls_back_as_usual(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud(fence_errors={"open": "WriteFenceFailed"})
    req = fenced(migration(await time_env.get_current_time()), rds_instance="shop-db")
    with pytest.raises(WorkflowFailureError) as err:
        await run_input(time_env, cloud, req)
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type != "RollbackRefused"
    assert cloud.fence_calls[-1] == ("open", "us-east-1") and cloud.live == {}


def test_an_rds_entity_must_be_fenced() -> None:
    base = spec().model_dump()
    with pytest.raises(ValidationError, match=r"policy\.consistency: an entity with rds_instance needs 'fenced'"):
        EntitySpec.model_validate({**base, "rds_instance": "shop-db"})
    ok = {**base, "rds_instance": "shop-db", "policy": {**base["policy"], "consistency": "fenced"}}
    assert EntitySpec.model_validate(ok).policy.consistency == "fenced"
