"""The training schedule and the entity listing against the real dev server (schedules and visibility are not in the
time-skipping server)."""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio import workflow
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.registry import RegistryActivities
from shadowing.models import EntitySpec
from shadowing.settings import Settings
from workers.schedules import TRAINING_SCHEDULE_ID, ensure_training_schedule


@workflow.defn(name="EntitySchedule")
class StandInEntity:
    """Answers the `spec` query as a registered entity does, until terminated."""

    def __init__(self) -> None:
        self._spec: EntitySpec | None = None

    @workflow.run
    async def run(self, spec: EntitySpec) -> None:
        self._spec = spec
        await workflow.wait_condition(lambda: False)

    @workflow.query
    def spec(self) -> EntitySpec:
        assert self._spec is not None
        return self._spec


async def test_the_schedule_is_created_once_and_a_pause_survives_a_worker_restart(dev_env: WorkflowEnvironment) -> None:
    """First start: created, daily TrainFleetModel. An operator pauses it (as `temporal schedule toggle --pause`
    does); the next worker start updates it to the settings' cron and leaves it paused. No bucket: no schedule."""
    client = dev_env.client
    assert (await ensure_training_schedule(client, Settings(model_bucket=None))).startswith("none")
    settings = Settings(model_bucket="models-test", training_cron="15 3 * * *")
    assert await ensure_training_schedule(client, settings) == "created"
    handle = client.get_schedule_handle(TRAINING_SCHEDULE_ID)
    await handle.pause(note="maintenance")
    moved = settings.model_copy(update={"training_cron": "45 4 * * *"})
    assert await ensure_training_schedule(client, moved) == "updated"
    desc = await handle.describe()
    assert desc.schedule.state.paused and desc.schedule.state.note == "maintenance"
    assert isinstance(desc.schedule.action, ScheduleActionStartWorkflow)
    assert desc.schedule.action.workflow == "TrainFleetModel"
    calendars = desc.schedule.spec.calendars  # the server keeps a cron expression as a calendar
    assert [(c.hour[0].start, c.minute[0].start) for c in calendars] == [(4, 45)]
    await handle.delete()


async def test_list_entity_sources_finds_every_running_entity_schedule(dev_env: WorkflowEnvironment) -> None:
    client, queue = dev_env.client, f"entities-{uuid.uuid4()}"
    tag = uuid.uuid4().hex[:6]
    specs = [EntitySpec(entity_id=f"train-{tag}-{i}", home_region=region, instance_types=("m5.large",),
                        dns_name=f"e{i}.example", hosted_zone_id="Z", metrics_namespace=f"NS/{i}")
             for i, region in enumerate(("us-east-1", "eu-west-1"))]  # fmt: skip
    # unsandboxed: the stand-in lives in this test module, whose imports the sandbox would re-run
    async with Worker(client, task_queue=queue, workflows=[StandInEntity], workflow_runner=UnsandboxedWorkflowRunner()):
        handles = [await client.start_workflow(StandInEntity.run, s, id=f"entity/{s.entity_id}", task_queue=queue)
                   for s in specs]  # fmt: skip
        act = RegistryActivities(client)
        deadline = time.monotonic() + 30
        while True:  # visibility is eventually consistent
            found = await ActivityEnvironment().run(act.list_entity_sources)
            mine = [s for s in found.sources if s.entity_id.startswith(f"train-{tag}")]
            if len(mine) == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for h in handles:
            await h.terminate()
    assert [(s.entity_id, s.region, s.namespace) for s in mine] == [
        (sp.entity_id, sp.home_region, sp.metrics_namespace) for sp in specs]  # fmt: skip
