"""Entity lookup for callers that only know an entity id (the stand-alone PredictDemand endpoint)."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import EntitySpec


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
