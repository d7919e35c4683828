"""The one activity that reaches the FleetCoordinator: workflows cannot signal-with-start, a client can."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from shadowing.models import CoordinatorLimits, CoordinatorState, LeaseRequest


class CoordinationActivities:
    def __init__(self, client: Client, limits: CoordinatorLimits, coordinator_id: str | None = None) -> None:
        self._client = client
        self._limits = limits
        self._id = coordinator_id  # default: one coordinator per task queue, `shadowing-coordinator/<queue>`

    @activity.defn(name="request_lease")
    async def request_lease(self, req: LeaseRequest) -> str:
        """Queues the request at the coordinator (starting it if needed); the grant arrives as a signal.

        The limits in force are this worker's settings, sent with every request (the newest win). Returns the
        coordinator's workflow id, which the holder signals when it releases.
        """
        queue = activity.info().task_queue
        coordinator = self._id or f"shadowing-coordinator/{queue}"
        req = req.model_copy(update={"limits": self._limits, "coordinator_id": coordinator})
        await self._client.start_workflow(
            "FleetCoordinator", CoordinatorState(limits=self._limits), id=coordinator, task_queue=queue,
            start_signal="acquire", start_signal_args=[req],
        )  # fmt: skip
        return coordinator
