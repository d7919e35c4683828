"""The product's Temporal Schedules, created (or brought up to date) when a worker starts, like the search
attributes: today one, the daily TrainFleetModel. An operator pauses, resumes or triggers it with the `temporal` CLI:

    temporal schedule toggle --schedule-id fleet-model-training --pause --reason "..."   (--unpause)
    temporal schedule trigger --schedule-id fleet-model-training
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from shadowing.models import TrainFleetModelInput
from shadowing.settings import Settings

TRAINING_SCHEDULE_ID = "fleet-model-training"
#: Each scheduled run's workflow id is this, suffixed with its scheduled time by Temporal.
TRAINING_WORKFLOW_ID = "fleet-model/train"


def training_schedule(settings: Settings) -> Schedule:
    """Daily at `settings.training_cron` (UTC); a run still going when the next is due makes that one skip."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "TrainFleetModel", TrainFleetModelInput(history_days=settings.training_days),
            id=TRAINING_WORKFLOW_ID, task_queue=settings.task_queue, execution_timeout=timedelta(hours=2),
        ),
        spec=ScheduleSpec(cron_expressions=[settings.training_cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=6)),
    )  # fmt: skip


async def ensure_training_schedule(client: Client, settings: Settings) -> str:
    """Creates the schedule, or updates its spec and action to the settings' while keeping its state (a pause set
    with the `temporal` CLI stays). Returns what it did: "created", "updated" or why it made none."""
    if not settings.model_bucket:
        return "none: no SHADOWING_MODEL_BUCKET"
    if not settings.training_cron.strip():
        return "none: SHADOWING_TRAINING_CRON is empty"
    wanted = training_schedule(settings)
    try:
        await client.create_schedule(TRAINING_SCHEDULE_ID, wanted)
        return "created"
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = current.description.schedule
        schedule.spec, schedule.action, schedule.policy = wanted.spec, wanted.action, wanted.policy
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(TRAINING_SCHEDULE_ID).update(update)
    return "updated"
