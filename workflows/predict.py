"""PredictDemand: the forecast of one entity's demand over one time slice (a short workflow of its own)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.forecast import ForecastActivities, ForecastInput
    from activities.registry import RegistryActivities
    from shadowing.models import DemandForecast, PredictDemandInput
    from workflows.migrate import RETRY

LOOKUP = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": RETRY}
FORECAST = {
    "start_to_close_timeout": timedelta(minutes=5),
    "heartbeat_timeout": timedelta(minutes=2),
    "retry_policy": RETRY,
}


@workflow.defn(name="PredictDemand")
class PredictDemandWorkflow:
    @workflow.run
    async def run(self, req: PredictDemandInput) -> DemandForecast:
        """Looks the entity up (unless its spec is given) and forecasts the slice from its usage history."""
        spec = req.spec or await workflow.execute_activity_method(
            RegistryActivities.lookup_entity, req.entity_id, **LOOKUP
        )
        return await workflow.execute_activity_method(
            ForecastActivities.forecast_demand, ForecastInput(spec=spec, time_slice=req.time_slice), **FORECAST
        )
