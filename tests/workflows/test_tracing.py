"""OpenTelemetry: a client's call, the ShadowMigration it starts and the activities it runs share one trace."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

from shadowing import tracing
from shadowing.models import MigrationResult
from tests.fakes import FakeCloud
from tests.workflows.helpers import migration, worker


async def test_spans_run_from_the_client_through_the_workflow_to_its_activities(time_env: WorkflowEnvironment) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = TracingInterceptor(provider.get_tracer("test"), always_create_workflow_spans=True)
    config = time_env.client.config()  # keeps the time-skipping interceptor
    client = Client(**{**config, "interceptors": [*config["interceptors"], traced]})
    cloud = FakeCloud()
    req = migration(await time_env.get_current_time())
    cloud.live[req.source.fleet_id] = req.source
    w, queue = worker(client, cloud)
    async with w:
        handle = await client.start_workflow(
            "ShadowMigration", req, id=f"migration-{uuid.uuid4()}", task_queue=queue, result_type=MigrationResult
        )
        result = await handle.result()
    assert result.outcome == "migrated"
    convert = client.data_converter.payload_converter
    summaries = [
        convert.from_payload(e.user_metadata.summary, str)
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes") and e.user_metadata.HasField("summary")
    ]
    # what the Web UI's timeline shows for each step: the phase and what it acts on
    provisioned = [x for x in summaries if x.startswith("provisioning: provision_fleet shop:")]
    assert provisioned and "3 x m5.large" in provisioned[0], summaries
    assert any(x.startswith("cutover: set_weights") for x in summaries), summaries
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    expected = {
        "StartWorkflow:ShadowMigration", "RunWorkflow:ShadowMigration",
        "StartActivity:provision_fleet", "RunActivity:provision_fleet",
        "StartActivity:set_weights", "RunActivity:set_weights",
    }  # fmt: skip
    assert expected <= names, sorted(names)
    assert len({s.context.trace_id for s in spans}) == 1, "one trace from the client call to the last activity"


def test_tracing_off_adds_no_interceptor() -> None:
    assert tracing.interceptors("off") == []
