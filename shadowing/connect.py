"""`connect()`: a Temporal client with the product's data converter (pydantic + the optional payload codec), TLS or
API key and tracing as the settings say. What a client service and a worker both call."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from shadowing import metrics, tracing
from shadowing.codec import data_converter
from shadowing.errors import ServiceUnavailable
from shadowing.settings import Settings


async def connect(
    address: str, namespace: str = "default", timeout_s: float = 10.0, settings: Settings | None = None,
    serve_metrics: bool = False,
) -> Client:  # fmt: skip
    """Connects with the pydantic data converter; `ServiceUnavailable` when nothing answers within `timeout_s`.

    A server that accepts connections but is still starting ("Frontend is not healthy yet") is retried.
    `settings` adds the payload codec and the TLS / API-key options they configure; with `serve_metrics` (workers),
    the client's runtime serves Prometheus metrics on `settings.metrics_bind` (shadowing/metrics.py).
    """
    codec = settings.codec() if settings else None
    runtime = metrics.runtime(settings.metrics_bind) if serve_metrics and settings and settings.metrics_bind else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await asyncio.wait_for(
                Client.connect(
                    address,
                    namespace=namespace,
                    data_converter=data_converter(codec),
                    runtime=runtime,
                    interceptors=tracing.interceptors(settings.tracing) if settings else [],
                    **(settings.temporal_connect_options() if settings else {}),  # type: ignore[arg-type]
                ),
                max(deadline - loop.time(), 0.1),
            )
        except (RuntimeError, TimeoutError, OSError) as exc:
            if "not healthy yet" not in str(exc) or loop.time() >= deadline:
                raise ServiceUnavailable(f"cannot reach Temporal at {address}: {exc}") from exc
            await asyncio.sleep(0.2)


__all__ = ["connect"]
