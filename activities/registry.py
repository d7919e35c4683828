"""Entity lookup for callers that only know an entity id (the stand-alone PredictDemand endpoint), and the list of
registered entities' metric sources (TrainFleetModel reads every one)."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import DemandClock, EntitySpec, Frozen

#: The running EntitySchedules: the registered entities (a stopped or finished schedule is not trained on).
RUNNING_ENTITIES = "WorkflowType = 'EntitySchedule' AND ExecutionStatus = 'Running'"
#: Spec queries in flight at once: each makes a worker load the entity's workflow; a fleet of 500 needs no more.
QUERY_CONCURRENCY = 16


class EntitySource(Frozen):
    """Where an entity's usage history is: its CloudWatch namespace in its home region, on its demand clock."""

    entity_id: str
    region: str
    namespace: str
    clock: DemandClock | None = None


class ListEntitiesResult(Frozen):
    sources: tuple[EntitySource, ...]
    unreadable: int = 0  # schedules listed whose spec could not be queried (closed meanwhile, or failing)


class RegistryActivities:
    def __init__(self, client: Client, ids: Pseudonyms = PLAIN) -> None:
        self._client = client
        self._ids = ids

    @activity.defn(name="lookup_entity")
    async def lookup_entity(self, entity_id: str) -> EntitySpec:
        """Asks the entity's `EntitySchedule` for its spec; `UnknownEntity` when none runs."""
        handle = self._client.get_workflow_handle(self._ids.entity_workflow_id(entity_id))
        try:
            return await handle.query("spec", result_type=EntitySpec)
        except (RPCError, WorkflowQueryFailedError) as exc:
            if isinstance(exc, RPCError) and exc.status not in (
                RPCStatusCode.NOT_FOUND,
                RPCStatusCode.FAILED_PRECONDITION,
            ):
                raise
            raise ApplicationError(
                f"entity_id: unknown entity {entity_id!r}: no EntitySchedule is running for it",
                type="UnknownEntity",
                non_retryable=True,
            ) from exc

    @activity.defn(name="list_entity_sources")
    async def list_entity_sources(self) -> ListEntitiesResult:
        """Every running EntitySchedule's metric source, from Temporal visibility and each schedule's spec query."""
        ids = [wf.id async for wf in self._client.list_workflows(RUNNING_ENTITIES)]
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def source(workflow_id: str) -> EntitySource | None:
            async with gate:
                try:
                    spec = await self._client.get_workflow_handle(workflow_id).query("spec", result_type=EntitySpec)
                except (RPCError, WorkflowQueryFailedError):
                    return None
            activity.heartbeat(workflow_id)
            return EntitySource(entity_id=spec.entity_id, region=spec.home_region, namespace=spec.metrics_namespace,
                                clock=spec.demand_clock)  # fmt: skip

        found = await asyncio.gather(*(source(i) for i in ids))
        sources = tuple(sorted((s for s in found if s is not None), key=lambda s: s.entity_id))
        return ListEntitiesResult(sources=sources, unreadable=len(ids) - len(sources))
