"""PreflightEntity: the pre-flight checks of an entity's spec (activities/preflight.py), as a short workflow of its
own, so that the client SDK (which may not use boto3) can run them before it starts the entity's EntitySchedule.
EntitySchedule runs the same activity first, for an entity started without the SDK."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.preflight import PreflightActivities, PreflightInput, PreflightReport
    from shadowing.errors import NON_RETRYABLE
    from shadowing.models import EntitySpec

#: A few reads per resource: a missing or foreign resource fails at once (non-retryable), anything else (throttling,
#: access, an unreachable endpoint) a few times, then the check fails instead of holding a registration forever.
PREFLIGHT = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=4,
        non_retryable_error_types=list(NON_RETRYABLE),
    ),
}  # fmt: skip


@workflow.defn(name="PreflightEntity")
class PreflightEntityWorkflow:
    @workflow.run
    async def run(self, spec: EntitySpec) -> PreflightReport:
        """Checks what the spec names against AWS (reads only); fails with the activity's `InvalidRequest`."""
        return await workflow.execute_activity_method(
            PreflightActivities.check_entity, PreflightInput(spec=spec), **PREFLIGHT
        )
