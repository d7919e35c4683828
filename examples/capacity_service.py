"""An example service calling Shadowing through the Python client SDK (`shadowing.client.ShadowingClient`).

It answers "how much capacity will ENTITY need next, and where?" for another team's tooling:

    python examples/capacity_service.py rnd-024          # against TEMPORAL_ADDRESS (default 127.0.0.1:7233)

The same calls from the CLI: `shadowctl plan rnd-024`, `shadowctl predict rnd-024 --start S --end E`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from shadowing.client import ShadowingClient
from shadowing.errors import ShadowingError
from shadowing.settings import Settings


async def capacity_report(client: ShadowingClient, entity_id: str) -> dict[str, Any]:
    """The entity's next slice that has not started: region, the forecast's sizing peak, the decision, readiness."""
    status = await client.status(entity_id)  # typed: EntityStatus
    upcoming = [s for s in status.slices if not s.settled]
    report: dict[str, Any] = {
        "entity_id": status.entity_id,
        "serving": status.active_fleet.region if status.active_fleet else None,
        "phase": status.phase,
        "next_slice": None,
    }
    if not upcoming:
        return report
    nxt = upcoming[0]
    forecast = nxt.forecast or await client.predict_demand(entity_id, nxt.time_slice.as_time_slice())
    cpu = forecast.metrics["cpu_mhz"]
    report["next_slice"] = {
        "key": nxt.time_slice.key,
        "region": nxt.time_slice.region,
        "starts": nxt.time_slice.start.isoformat(),
        "cpu_mhz_peak": round(cpu.peak(forecast.sizing_quantile), 1),
        "sizing_quantile": forecast.sizing_quantile,
        "readiness": forecast.readiness,
        "decision": nxt.decision.action if nxt.decision else None,
    }
    return report


async def main(entity_id: str) -> int:
    settings = Settings()
    try:
        client = await ShadowingClient.connect(
            settings.temporal_address or "127.0.0.1:7233", settings.temporal_namespace, settings.task_queue, settings
        )
        print(json.dumps(await capacity_report(client, entity_id), indent=2))
    except ShadowingError as exc:  # UnknownEntity, InvalidRequest, ServiceUnavailable, ... each names the problem
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/capacity_service.py ENTITY_ID")
    sys.exit(asyncio.run(main(sys.argv[1])))
