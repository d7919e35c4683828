"""`make bench-load`: many entities at once on the embedded defaults (dev server, moto server, local data plane).

    python -m benchmarks.load [--entities 200] [--migrating 50] [--json .shadowing/bench-load.json]

Registers `--entities` EntitySchedule workflows at once. `--migrating` of them are active entities living in
us-east-1 with one instance, their usage history (the Bitbrains sample) seeded into CloudWatch, whose one slice (in
eu-west-1, `LEAD_S` later) is a region move: all of them forecast, shadow, cut over and retire their old fleet in
the same minutes (the worker's coordinator allows them all at once). The others are `forecast-only` entities
whose slice is the next day: they stay registered, durable and queryable (timers pending) throughout, are asked
for their status at the end, then terminated. A forecast costs about 10 CPU-seconds per entity (three metrics,
several darts candidates), which is why the idle ones are not all made to forecast in the same minutes.
It reports wall time, the CPU seconds of the worker (this process), the Temporal dev server and moto, the dev
server's database size, the most ShadowMigration workflows seen running at once, every slice's outcome, and what
EC2 holds afterwards (the migrated fleets in eu-west-1, nothing left in us-east-1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from shadowctl.demo import DemoEntity, aws_inventory, demo_data, hosted_zone, seed
from shadowing.models import EntityPolicy, EntitySpec, EntityStatus

TRACES = ("rnd-024", "rnd-270", "rnd-392")
ZONE = "load.shadowing."
SLICE_S = 300.0
LEAD_S = 720.0  # every migrating entity's forecast must be done before its slice (about 10 CPU-s each)


def entities(n: int, migrating: int) -> list[tuple[DemoEntity, bool]]:
    return [(DemoEntity(f"load-{i:03d}", "us-east-1", ("eu-west-1",), ("m5.large",), 1, trace_id=TRACES[i % 3]),
             i < migrating) for i in range(n)]  # fmt: skip


def registration(
    ent: DemoEntity, active: bool, zone_id: str, start: datetime, anchor: pd.Timestamp, warm_up: bool = True
) -> dict:
    if not active:
        start += timedelta(days=1)
    policy = EntityPolicy(
        mode="active" if active else "forecast-only", warm_up=warm_up, lead_time_s=LEAD_S, prepare_s=30,
        warmup_timeout_s=300, warm_p99_ms=150, watch_s=6, record_ttl_s=2, catch_up_interval_s=30,
        reforecast_interval_s=3600,
    )  # fmt: skip
    spec = EntitySpec(
        entity_id=ent.entity_id, home_region=ent.home, instance_types=ent.instance_types, initial_instances=1,
        dns_name=f"{ent.entity_id}.{ZONE}", hosted_zone_id=zone_id, policy=policy,
        demand_clock={"origin": start, "history_origin": anchor.to_pydatetime(), "seconds_per_hour": SLICE_S},
    )  # fmt: skip
    end = start + timedelta(seconds=SLICE_S)
    return {"spec": spec, "schedule": {"slices": [{"start": start, "end": end, "region": ent.regions[0]}]}}


def _usage_point(clients: Any, spec: EntitySpec) -> None:
    """One point of each forecast metric an hour before where the entity's demand clock maps now."""
    assert spec.demand_clock is not None
    at = spec.demand_clock.to_history(datetime.now(UTC)) - timedelta(hours=1)
    data = [{"MetricName": m, "Dimensions": [{"Name": "EntityId", "Value": spec.entity_id}], "Timestamp": at,
             "Value": 1.0} for m in ("CpuUsageMHz", "MemoryUsageKB")]  # fmt: skip
    clients("cloudwatch", spec.home_region).put_metric_data(Namespace=spec.metrics_namespace, MetricData=data)


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """User + system CPU of a running process, from /proc (Linux); with `tree`, plus its reaped children's and its
    live children's own (the data-plane agent and its stand-ins)."""

    def fields(p: int | str) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    if not tree:
        own = fields(pid)
        return (int(own[11]) + int(own[12])) / os.sysconf("SC_CLK_TCK")
    ticks = sum(int(x) for x in fields(pid)[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            child = fields(entry.name)
            if int(child[1]) == pid:
                ticks += sum(int(x) for x in child[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(
    client: Any, sdk: Any, clients: Any, n: int, migrating: int, progress=print, warm_up: bool = True
) -> dict:  # type: ignore[no-untyped-def]
    usage = demo_data()
    anchor = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=3)
    ents = entities(n, migrating)
    progress(f"seeding the {migrating} migrating entities' usage history into CloudWatch ...")
    await asyncio.to_thread(seed, clients, usage, anchor, 2, tuple(e for e, active in ents if active))
    zone_id = await asyncio.to_thread(hosted_zone, clients("route53", "us-east-1"), ZONE)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_S + 30)
    began, cpu0 = time.monotonic(), own_cpu()
    progress(f"registering {n} entities ({migrating} migrating us-east-1 -> eu-west-1), slice at {start:%H:%M:%S} ...")
    gate = asyncio.Semaphore(20)

    async def register(ent: DemoEntity, active: bool) -> None:
        reg = registration(ent, active, zone_id, start, anchor, warm_up)
        if not active:  # never forecast here, but registration's pre-flight asks for some usage history
            await asyncio.to_thread(_usage_point, clients, reg["spec"])
        async with gate:
            await sdk.register_entity(reg["spec"], reg["schedule"])

    await asyncio.gather(*(register(e, a) for e, a in ents))
    registered_s = time.monotonic() - began
    handles = [client.get_workflow_handle(sdk.workflow_id(e.entity_id), result_type=EntityStatus)
               for e, active in ents if active]  # fmt: skip
    idle = [client.get_workflow_handle(sdk.workflow_id(e.entity_id), result_type=EntityStatus)
            for e, active in ents if not active]  # fmt: skip
    results = [asyncio.ensure_future(h.result()) for h in handles]
    peak = 0
    while not all(r.done() for r in results):
        running = await client.count_workflows('WorkflowType = "ShadowMigration" AND ExecutionStatus = "Running"')
        peak = max(peak, running.count)
        done = sum(r.done() for r in results)
        progress(f"{time.monotonic() - began:6.0f}s: {done}/{len(results)} migrating entities finished, "
                 f"{running.count} migrations running")  # fmt: skip
        await asyncio.sleep(5)
    finals: list[EntityStatus] = [r.result() for r in results]
    wall = time.monotonic() - began
    answering = 0
    for h in idle:
        status = await h.query("status", result_type=EntityStatus)
        answering += int(status.slices[0].state == "pending")
        await h.terminate(reason="load benchmark finished")
    states = Counter(s.state for f in finals for s in f.slices)
    migrated = sum(f.migrations for f in finals)
    problems = [f"{f.entity_id}: {s.state} {s.error or s.outcome or ''} ({s.decision.reason if s.decision else ''})"
                for f in finals for s in f.slices if s.state not in ("done", "planned")]  # fmt: skip
    inventory = await asyncio.to_thread(aws_inventory, clients, ["us-east-1", "eu-west-1"])
    serving = sum(f.active_fleet.size for f in finals if f.active_fleet is not None)
    return {
        "idle_answering": answering, "idle": len(idle), "serving_instances": serving,
        "entities": n, "migrating": migrating, "wall_s": round(wall, 1), "register_s": round(registered_s, 1),
        "worker_cpu_s": round(own_cpu() - cpu0, 1), "slices": dict(states), "migrations": migrated,
        "peak_concurrent_migrations": peak, "problems": problems, "aws": inventory,
    }  # fmt: skip


async def _main(args: argparse.Namespace) -> int:
    from devstack.stack import embedded_services, free_port
    from shadowing.client import ShadowingClient
    from shadowing.connect import connect
    from shadowing.settings import Settings
    from workers.aws import AwsClients
    from workers.logs import configure_logging
    from workers.main import build_worker

    configure_logging("WARNING")
    state = Path(tempfile.mkdtemp(prefix="bench-load-"))
    base = Settings(
        temporal_address=None, aws_endpoint_url=None, state_dir=state, moto_port=free_port(),
        temporal_port=free_port(), temporal_ui_port=free_port(), data_plane_poll_s=0.5, log_level="WARNING",
        max_concurrent_migrations=args.migrating + 10, max_concurrent_activities=32,
        region_shadow_quota=args.migrating * 4, data_plane_regions=("us-east-1", "eu-west-1"),
    )  # fmt: skip
    with embedded_services(base) as services:
        settings = services.settings(base)
        pids = {s.name: s.process.pid for s in services.started}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client = await connect(settings.temporal_address or "", settings.temporal_namespace, settings=settings)
        sdk = ShadowingClient(client, settings.task_queue, settings.pseudonyms())
        clients = AwsClients(settings)
        async with build_worker(client, settings, clients):
            figures = await run(client, sdk, clients, args.entities, args.migrating, warm_up=not args.no_warm_up)
        figures["service_cpu_s"] = {name: round(cpu_seconds(pid) - before[name], 1) for name, pid in pids.items()}
        db = sum(p.stat().st_size for p in state.glob("temporal.db*"))
        figures["temporal_db_mb"] = round(db / 2**20, 1)
    print(table(figures))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.json}")
    ok = not figures["problems"] and figures["migrations"] == args.migrating
    ok &= figures["aws"]["us-east-1"]["running"] == 0
    ok &= figures["aws"]["eu-west-1"]["running"] == figures["serving_instances"]  # nothing but the migrated fleets
    ok &= figures["idle_answering"] == figures["idle"]
    return 0 if ok else 1


def table(f: dict) -> str:
    cpu = f.get("service_cpu_s", {})
    rows = [
        ("entity workflows / migrating", f"{f['entities']} / {f['migrating']}"),
        ("wall time (registration -> all done)", f"{f['wall_s']} s (registration {f['register_s']} s)"),
        ("slices of migrating entities by state", ", ".join(f"{k} {v}" for k, v in sorted(f["slices"].items()))),
        ("idle entities answering status, then terminated", f"{f['idle_answering']} / {f['idle']}"),
        ("migrations completed", str(f["migrations"])),
        ("most migrations running at once", str(f["peak_concurrent_migrations"])),
        ("CPU: worker (this process)", f"{f['worker_cpu_s']} s"),
        *((f"CPU: {name}", f"{secs} s") for name, secs in cpu.items()),
        ("dev server database (SQLite + WAL)", f"{f.get('temporal_db_mb', '?')} MB"),
        ("EC2 running after: us-east-1 / eu-west-1",
         f"{f['aws']['us-east-1']['running']} / {f['aws']['eu-west-1']['running']} "
         f"(migrated fleets: {f['serving_instances']} instances)"),
        ("problems", "; ".join(f["problems"][:5]) or "none"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=200)
    parser.add_argument("--migrating", type=int, default=50)
    parser.add_argument("--no-warm-up", action="store_true", help="shadows wait for health only (policy warm_up=False)")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("SHADOWING_STATE_DIR", ".shadowing"))
                        / "bench-load.json")  # fmt: skip
    raise SystemExit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
