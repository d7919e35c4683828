"""OpenTelemetry tracing: one trace from a client call through the workflow to every activity it runs.

`SHADOWING_TRACING=otlp` exports spans over OTLP/HTTP to the collector the standard OpenTelemetry variables name
(`OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318; `OTEL_SERVICE_NAME`, default "shadowing");
`console` prints them; `off` (the default) adds nothing. The Temporal SDK's `TracingInterceptor` carries the
context in workflow and activity headers, so the client (shadowctl, the SDK), the worker and every retry of an
activity land in the same trace: StartWorkflow -> RunWorkflow -> StartActivity -> RunActivity.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_configured: str | None = None


def interceptors(mode: str) -> list[Any]:
    """The client/worker interceptors for `mode` ("off", "otlp" or "console"); sets the global tracer provider."""
    if mode == "off":
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    _configure(mode)
    return [TracingInterceptor(always_create_workflow_spans=True)]


def _configure(mode: str) -> None:
    global _configured
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    with _lock:
        if _configured is not None:
            return
        exporter: SpanExporter
        if mode == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        name = os.environ.get("OTEL_SERVICE_NAME", "shadowing")
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _configured = mode


__all__ = ["interceptors"]
