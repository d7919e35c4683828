"""EntitySchedule against messages nobody trusted should send: forged signals, spec moves under a serving fleet,
schedules too large for its state. Each is refused with the field named, or ignored and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from shadowing.models import (
    MAX_SLICES,
    AllocationSchedule,
    CostEntry,
    LeaseGrant,
    MigrationProgress,
    ScheduledSlice,
)
from tests.fakes import FakeCloud
from tests.workflows.helpers import worker
from tests.workflows.test_orchestration import rejected, start, wait_for

HOUR = timedelta(hours=1)


async def test_a_serving_entity_refuses_spec_changes_that_move_dns_or_data(time_env: WorkflowEnvironment) -> None:
    """With a fleet serving, a new dns_name, zone, listener or data store is refused before it enters history."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await start(time_env, queue, ["eu-west-1"], 3 * HOUR)
        await wait_for(time_env, handle, lambda s: s.active_fleet is not None)
        spec = reg.spec
        listener = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/other/1/2"
        for field, value in [("dns_name", "billing.example.internal"), ("hosted_zone_id", "Z2OTHER"),
                             ("listener_arn", listener), ("dynamodb_tables", ("orders",)),
                             ("rds_instance", "other-db"), ("sqs_queues", ("jobs",))]:  # fmt: skip
            # an RDS entity must be fenced (a spec rule of its own): the refusal here is the one for serving fleets
            fenced = {"policy": spec.policy.model_copy(update={"consistency": "fenced"})}
            fenced = fenced if field == "rds_instance" else {}
            await rejected(handle, f"spec.{field}: cannot change while a fleet serves", "update_spec",
                           spec.model_copy(update={field: value, **fenced}))  # fmt: skip
        same = await handle.execute_update("update_spec", spec.model_copy(update={"policy": spec.policy}))
        assert same is not None, "a change of policy alone is accepted"
        history = await handle.fetch_history()
        assert sum(e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events) == 1
        await handle.terminate()


async def test_forged_lease_grants_and_progress_are_ignored_and_counted(time_env: WorkflowEnvironment) -> None:
    """A lease_granted nobody asked for (or with the wrong nonce) and progress for a slice with no migration change
    nothing: no slice starts migrating, the ledger and lead time stay, the status counts them."""
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, _ = await start(time_env, queue, ["eu-west-1"], 3 * HOUR)
        status = await wait_for(time_env, handle, lambda s: s.active_fleet is not None)
        key = status.slices[0].time_slice.key
        await handle.signal("lease_granted", LeaseGrant(slice_key=key, granted=True, coordinator_id="x"))
        cost = CostEntry(slice_key=key, outcome="migrated", region="eu-west-1", instance_type="m5.large",
                         cost_usd=1e6)  # fmt: skip
        forged = MigrationProgress(slice_key=key, phase="done", cost=cost, prepare_s=6 * 86400.0)
        await handle.signal("migration_progress", forged)
        after = await wait_for(time_env, handle, lambda s: s.ignored_signals == 2, tries=10)
        assert after.ledger.cost_usd == status.ledger.cost_usd and after.lead_time_s == status.lead_time_s
        assert after.slices[0].state == "pending"
        await handle.terminate()


async def test_a_schedule_past_the_cap_is_refused_before_history(time_env: WorkflowEnvironment) -> None:
    """5,000 slices are refused (the model's cap names schedule.slices; a raw update fails to decode and never enters
    history); a full schedule of MAX_SLICES is accepted by the validator's single sweep."""
    with pytest.raises(ValidationError, match="slices"):
        AllocationSchedule(slices=_hours(datetime(2027, 1, 1, tzinfo=UTC), 5000))
    cloud = FakeCloud()
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await start(time_env, queue, ["eu-west-1"], 3 * HOUR)
        first = reg.schedule.slices[-1]
        many = _hours(first.end, 5000)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("update_schedule", {"slices": [first, *many]})
        plan = await handle.execute_update("update_schedule", {"slices": [first, *many[: MAX_SLICES - 1]]})
        assert len(plan["entries"]) == MAX_SLICES
        history = await handle.fetch_history()
        assert sum(e.HasField("workflow_execution_update_accepted_event_attributes") for e in history.events) == 1
        await handle.terminate()


def _hours(start: datetime, n: int) -> list[ScheduledSlice]:
    return [ScheduledSlice(start=start + i * HOUR, end=start + (i + 1) * HOUR, region="us-east-1") for i in range(n)]
