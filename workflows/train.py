"""TrainFleetModel: fit the fleet model on every registered entity's history and publish it only when it is better.

Run daily by a Temporal Schedule (workers/schedules.py) and on demand (`shadowctl train`). The history stays in the
training activity, which stores a candidate and returns its scores and the incumbent's on the same held-out days;
this workflow judges them (workflows/promotion.py) and only then moves the pointer. A failed or rejected training
leaves the published model serving.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.model_store import ModelStoreActivities, PublishInput
    from activities.registry import RegistryActivities
    from activities.training import TrainCandidateInput, TrainingActivities
    from shadowing.errors import NON_RETRYABLE
    from shadowing.models import TrainFleetModelInput, TrainFleetModelResult
    from workflows.migrate import RETRY
    from workflows.promotion import judge

LIST = {
    "start_to_close_timeout": timedelta(minutes=5),
    "heartbeat_timeout": timedelta(minutes=1),
    "retry_policy": RETRY,
}
#: A fit is minutes of CPU: heartbeats say it is alive, a few attempts cover a lost worker, bad data is not retried.
TRAIN = {
    "start_to_close_timeout": timedelta(minutes=30),
    "heartbeat_timeout": timedelta(minutes=2),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=30), maximum_interval=timedelta(minutes=5),
                                maximum_attempts=3, non_retryable_error_types=list(NON_RETRYABLE)),
}  # fmt: skip
PUBLISH = {"start_to_close_timeout": timedelta(minutes=2), "retry_policy": RETRY}


@workflow.defn(name="TrainFleetModel")
class TrainFleetModelWorkflow:
    @workflow.run
    async def run(self, req: TrainFleetModelInput) -> TrainFleetModelResult:
        """Lists the entities, trains and stores a candidate, publishes it if it beats seasonal naive and the
        published model on the same held-out days."""
        listed = await workflow.execute_activity_method(RegistryActivities.list_entity_sources, **LIST)
        if not listed.sources:
            raise ApplicationError("no registered entity to train on (no EntitySchedule is running)",
                                   type="NothingToTrain", non_retryable=True)  # fmt: skip
        end = req.end or workflow.now().replace(minute=0, second=0, microsecond=0)
        task = TrainCandidateInput(sources=listed.sources, end=end, history_days=req.history_days,
                                   validation_days=req.validation_days)  # fmt: skip
        cand = await workflow.execute_activity_method(TrainingActivities.train_fleet_candidate, task, **TRAIN)
        publish, reason = judge(cand.scores, cand.incumbent_scores)
        if publish:
            done = await workflow.execute_activity_method(
                ModelStoreActivities.publish_fleet_model,
                PublishInput(version=cand.version, sha256=cand.sha256, replaces=cand.incumbent_version), **PUBLISH,
            )  # fmt: skip
            publish, reason = done.published, reason if done.published else done.reason
        if cand.incumbent_problem:
            reason = f"{reason} ({cand.incumbent_problem})"
        workflow.logger.info("fleet model %s %s: %s", cand.version, "published" if publish else "rejected", reason)
        return TrainFleetModelResult(
            outcome="published" if publish else "rejected", reason=reason, version=cand.version, key=cand.key,
            entities=cand.entities, training_start=cand.training_start, training_end=cand.training_end,
            scores=cand.scores, incumbent_version=cand.incumbent_version, incumbent_scores=cand.incumbent_scores,
        )  # fmt: skip
