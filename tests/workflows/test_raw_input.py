"""Bad input sent raw (issue 19, item 8): what the temporal CLI, the Web UI or another language's SDK sends is plain
JSON, checked only when the worker decodes it. It fails as a non-retryable `InvalidRequest` ApplicationError whose
message is `field: problem (value)`, without pydantic's boilerplate, for updates, workflow starts and signals."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from shadowing.client import _translate
from shadowing.errors import InvalidRequest
from tests.fakes import FakeCloud
from tests.workflows.helpers import worker
from tests.workflows.test_entity import register
from tests.workflows.test_handlers import _events, _has_fleet, _status, _until

HOUR = timedelta(hours=1)


def _raw(env: WorkflowEnvironment) -> Client:
    """A client that sends plain JSON: no pydantic types, as another SDK or the CLI would."""
    return Client(**{**env.client.config(), "data_converter": DataConverter.default})  # type: ignore[arg-type]


def _clean(cause: BaseException | None) -> ApplicationError:
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == "InvalidRequest" and cause.non_retryable, (cause.type, cause.non_retryable)
    assert "pydantic.dev" not in cause.message and "validation error for" not in cause.message, cause.message
    assert "\n" not in cause.message, cause.message
    return cause


async def test_a_raw_update_with_a_bad_field_is_a_non_retryable_invalid_request(time_env: WorkflowEnvironment) -> None:
    """ProvisionShadowInstances with `quantity: "many"`: rejected before the history, naming the field and value;
    the SDK's `_translate` makes it an InvalidRequest whose field is set."""
    w, queue = worker(time_env.client, FakeCloud())
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        s = reg.schedule.slices[0]
        raw = _raw(time_env).get_workflow_handle(handle.id)
        body = {"time_slice": {"start": s.start.isoformat(), "end": s.end.isoformat()}, "instance_type": "m5.large"}
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await raw.execute_update("ProvisionShadowInstances", {**body, "quantity": "many"})
        cause = _clean(err.value.cause)
        assert cause.message == "quantity: input should be a valid integer, unable to parse string as an integer " \
                                "(got 'many')"  # fmt: skip
        translated = _translate(err.value)
        assert isinstance(translated, InvalidRequest) and translated.field == "quantity"

        with pytest.raises(WorkflowUpdateFailedError) as err:
            await raw.execute_update("MigrateInstances", {"time_slice": {"start": s.end.isoformat(),
                                                                           "end": s.start.isoformat()}})  # fmt: skip
        assert _clean(err.value.cause).message.startswith("time_slice: end ("), err.value.cause
        attr = "workflow_execution_update_accepted_event_attributes"
        assert not [e for e in await _events(handle) if e.HasField(attr)], "nothing entered the history"
        await handle.terminate("test over")


async def test_raw_workflow_starts_with_bad_input_fail_as_invalid_request(time_env: WorkflowEnvironment) -> None:
    """EntitySchedule, PredictDemand and ShadowMigration started raw with bad input fail at once (not a workflow
    task retried forever), each naming the field."""
    w, queue = worker(time_env.client, FakeCloud())
    raw = _raw(time_env)
    cases = {
        "EntitySchedule": ({"spec": {"entity_id": 5}, "schedule": {"slices": []}}, "spec.entity_id: "),
        "PredictDemand": (
            {"entity_id": "shop", "time_slice": {"start": "2026-12-07T08:00:00Z", "end": "2026-12-07T00:00:00Z"}},
            "time_slice: end (",
        ),
        "ShadowMigration": ({"quantity": 2}, "spec: field required"),
    }
    async with w:
        for workflow, (body, prefix) in cases.items():
            handle = await raw.start_workflow(workflow, body, id=f"raw-{uuid.uuid4()}", task_queue=queue)
            with pytest.raises(WorkflowFailureError) as err:
                await handle.result()
            message = _clean(err.value.cause).message
            assert message.startswith(prefix), (workflow, message)


async def test_a_raw_signal_with_a_bad_body_is_dropped_and_the_entity_runs_on(time_env: WorkflowEnvironment) -> None:
    """A signal has no answer: a bad body is dropped (logged) and neither fails the entity nor its workflow task."""
    w, queue = worker(time_env.client, FakeCloud())
    async with w:
        handle, _ = await register(time_env, queue, ["eu-west-1"], 2 * HOUR)
        await _until(lambda: _has_fleet(handle), "bootstrap")
        raw = _raw(time_env).get_workflow_handle(handle.id)
        await raw.signal("migration_progress", {"phase": 7, "slice_key": None})
        await raw.signal("lease_granted", "not an object")
        await handle.execute_update("pause", {"reason": "after the bad signals"})  # a task after them completed
        status = await _status(handle)
        assert status.paused and status.slices[0].state == "pending"
        attr = "workflow_task_failed_event_attributes"
        assert not [e for e in await _events(handle) if e.HasField(attr)], "no workflow task failed"
        await handle.terminate("test over")
