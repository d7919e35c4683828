"""`shadowctl demo`: the whole product on the embedded defaults, with time compressed.

Two entities from the real Bitbrains trace: `rnd-024` follows the sun (us-east-1 -> eu-west-1 -> ap-southeast-2
-> us-east-1) and `rnd-392` stays in eu-west-1, where its predicted peak may outgrow its fleet. Their usage
history is seeded into CloudWatch (shifted to recent timestamps), one hour of history passes per slice, and the
real workflows, activities and timers run every step against the emulated AWS.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from activities import TAG_ENTITY, TAG_MANAGED, ClientFactory
from activities.ownership import MANAGED, ownership_tags
from forecasting.data import METRICS, hourly_series, load_usage
from shadowing.client import ShadowingClient
from shadowing.models import EntityPolicy, EntitySpec, EntityStatus
from shadowing.settings import Settings

TRACE_ANCHOR = pd.Timestamp("2013-08-20T13:00:00Z")  # the trace hour the first slice is mapped to
HISTORY_DAYS = 13  # CloudWatch accepts data points up to two weeks old
PLOT_CONTEXT_H = 12  # hours of actual usage the forecast pictures show before the first slice
ZONE = "shadowing.demo."


@dataclass(frozen=True)
class DemoEntity:
    entity_id: str
    home: str
    regions: tuple[str, ...]
    instance_types: tuple[str, ...]
    initial: int
    tables: tuple[str, ...] = ()
    trace_id: str | None = None  # whose usage history to seed, when the entity id is not a trace id


ENTITIES = (
    DemoEntity("rnd-024", "us-east-1", ("eu-west-1", "ap-southeast-2", "us-east-1"), ("c5.xlarge", "m5.large"), 2,
               ("rnd-024-sessions",)),
    DemoEntity("rnd-392", "eu-west-1", ("eu-west-1", "eu-west-1", "eu-west-1"), ("m5.large", "r5.large"), 2),
)  # fmt: skip


def demo_data() -> pd.DataFrame:
    path = resources.files("shadowctl") / "demo_data" / "bitbrains_rnd_sample.csv.gz"
    with resources.as_file(path) as local:
        return load_usage(local)


def seed(clients: ClientFactory, usage: pd.DataFrame, real_anchor: pd.Timestamp, hours_after: int,
         entities: tuple[DemoEntity, ...] = ENTITIES) -> str:  # fmt: skip
    """Puts each entity's usage history into CloudWatch, its tables into DynamoDB; returns the hosted zone id.

    The trace hour `TRACE_ANCHOR` lands on `real_anchor`; `HISTORY_DAYS` before it and `hours_after` after it.
    """
    offset = real_anchor - TRACE_ANCHOR
    for ent in entities:
        cw = clients("cloudwatch", ent.home)
        for metric in METRICS.values():
            series = hourly_series(usage, ent.trace_id or ent.entity_id, metric.name)
            window = series[
                TRACE_ANCHOR - pd.Timedelta(days=HISTORY_DAYS) : TRACE_ANCHOR + pd.Timedelta(hours=hours_after)
            ]
            data = [
                {"MetricName": metric.cloudwatch_name, "Dimensions": [{"Name": "EntityId", "Value": ent.entity_id}],
                 "Timestamp": (ts + offset).to_pydatetime(), "Value": float(v), "Unit": "None"}
                for ts, v in window.dropna().items()
                if ts < TRACE_ANCHOR + pd.Timedelta(hours=hours_after)
            ]  # fmt: skip
            for i in range(0, len(data), 500):
                cw.put_metric_data(Namespace="Shadowing/Usage", MetricData=data[i : i + 500])
        for table in ent.tables:
            _seed_table(clients("dynamodb", ent.home), table, ent.entity_id)
    return hosted_zone(clients("route53", "us-east-1"))


def _seed_table(ddb: Any, table: str, entity_id: str) -> None:
    try:
        ddb.describe_table(TableName=table)
        return
    except ddb.exceptions.ResourceNotFoundException:
        pass
    ddb.create_table(
        TableName=table, KeySchema=[{"AttributeName": "session_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "session_id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        Tags=ownership_tags(entity_id),  # the demo, as the entity's operator, hands its table to the product
    )  # fmt: skip
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    for i in range(40):
        ddb.put_item(TableName=table, Item={"session_id": {"S": f"s-{i:04d}"}, "cart_items": {"N": str(i % 7)}})


def hosted_zone(r53: Any, name: str = ZONE) -> str:
    """The id of the hosted zone `name`; when missing it is created and handed to the product (tagged
    `shadowing:managed-by`, without which routing refuses to write records in it). An existing zone is not retagged:
    whoever made it decides whether the product may use it."""
    for zone in r53.list_hosted_zones_by_name(DNSName=name)["HostedZones"]:
        if zone["Name"] == name:
            return str(zone["Id"]).split("/")[-1]
    created = r53.create_hosted_zone(Name=name, CallerReference=str(uuid.uuid4()))
    zone_id = str(created["HostedZone"]["Id"]).split("/")[-1]
    tags = [{"Key": TAG_MANAGED, "Value": MANAGED}]
    r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id, AddTags=tags)
    return zone_id


def registrations(
    zone_id: str, start: datetime, slice_s: float, lead_s: float, real_anchor: pd.Timestamp
) -> list[dict]:
    regs = []
    for ent in ENTITIES:
        slices = [
            {"start": (start + timedelta(seconds=i * slice_s)).isoformat(),
             "end": (start + timedelta(seconds=(i + 1) * slice_s)).isoformat(), "region": region}
            for i, region in enumerate(ent.regions)
        ]  # fmt: skip
        spec = EntitySpec(
            entity_id=ent.entity_id, home_region=ent.home, instance_types=ent.instance_types,
            initial_instances=ent.initial, dns_name=f"{ent.entity_id}.{ZONE}", hosted_zone_id=zone_id,
            dynamodb_tables=ent.tables,
            policy=EntityPolicy(lead_time_s=lead_s, prepare_s=3, warmup_timeout_s=60, watch_s=max(3.0, slice_s / 5),
                                record_ttl_s=max(1, round(slice_s / 10))),
            demand_clock={"origin": start, "history_origin": real_anchor.to_pydatetime(), "seconds_per_hour": slice_s},
        )  # fmt: skip
        regs.append({"spec": spec, "schedule": {"slices": slices}})
    return regs


async def run_demo(client: ShadowingClient, clients: ClientFactory, console: Console, slice_s: float = 30.0,
                   json_path: Path | None = None, ui_url: str | None = None,
                   plots_dir: Path | None = None) -> dict:  # fmt: skip
    """Runs the demo; returns (and with `json_path` writes) its summary. The PNGs of `summary["plots"]` go to
    `plots_dir`, default `plots/` next to `json_path`, else `<state dir>/plots`."""
    began = time.monotonic()
    usage = demo_data()
    slices = max(len(e.regions) for e in ENTITIES)
    real_anchor = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=slices + 1)
    console.print(f"[bold]Seeding[/] CloudWatch with {HISTORY_DAYS} days of hourly usage per entity (Bitbrains trace)")
    zone_id = await asyncio.to_thread(seed, clients, usage, real_anchor, slices)
    lead_s = min(20.0, slice_s * 0.7)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead_s + 12)
    for reg in registrations(zone_id, start, slice_s, lead_s, real_anchor):
        await client.register_entity(reg["spec"], reg["schedule"])
        regions = ", ".join(s["region"] for s in reg["schedule"]["slices"])
        console.print(f"registered [bold]{reg['spec'].entity_id}[/]: slices {regions}")
    if ui_url:
        console.print(f"watch it in the Temporal Web UI: {ui_url}/namespaces/default/workflows")
    final = await _follow(client, console, began, timeout_s=slice_s * slices + lead_s + 120)
    summary = _summary(final, usage, real_anchor, clients, time.monotonic() - began)
    specs = {r["spec"].entity_id: r["spec"] for r in registrations(zone_id, start, slice_s, lead_s, real_anchor)}
    if plots_dir is None:
        plots_dir = json_path.parent / "plots" if json_path else Settings().state_dir / "plots"
    summary["plots"] = await _write_plots(client, clients, final, specs, plots_dir)
    _print_summary(console, summary)
    console.print(f"plots written: {', '.join(summary['plots'])}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2, default=str))
        console.print(f"summary written to {json_path}")
    return summary


async def _write_plots(client: ShadowingClient, clients: ClientFactory, final: dict[str, EntityStatus],
                       specs: dict[str, EntitySpec], out: Path) -> list[str]:  # fmt: skip
    """Each entity's forecast against its actual usage and capacity, and the timeline of rnd-024's first completed
    migration. A plot that cannot be drawn fails the demo: the pictures are part of the product."""
    from shadowctl import plots

    paths = []
    for ent in ENTITIES:
        path = out / f"forecast-{ent.entity_id}.png"
        cloudwatch = clients("cloudwatch", ent.home)
        await asyncio.to_thread(
            plots.entity_forecast_png, final[ent.entity_id], specs[ent.entity_id], cloudwatch, path, PLOT_CONTEXT_H
        )
        paths.append(str(path))
    moved = next((s for s in final["rnd-024"].slices if s.outcome == "migrated" and s.migration_id), None)
    if moved is not None and moved.migration_id is not None:
        history = await client.client.get_workflow_handle(moved.migration_id).fetch_history()
        path = out / f"migration-rnd-024-{moved.time_slice.key}.png"
        await asyncio.to_thread(plots.migration_png, history, path, moved.time_slice)
        paths.append(str(path))
    return paths


async def _follow(client: ShadowingClient, console: Console, began: float, timeout_s: float) -> dict[str, EntityStatus]:
    """Prints each entity's new events as they happen, until every EntitySchedule has completed."""
    handles = {
        e.entity_id: client.client.get_workflow_handle(client.workflow_id(e.entity_id), result_type=EntityStatus)
        for e in ENTITIES
    }
    results = {eid: asyncio.ensure_future(h.result()) for eid, h in handles.items()}
    seen: dict[str, int] = dict.fromkeys(handles, 0)
    deadline = time.monotonic() + timeout_s
    while True:
        for eid, handle in handles.items():
            status = await handle.query("status", result_type=EntityStatus)
            for ev in status.events:
                if ev.seq > seen[eid]:
                    seen[eid] = ev.seq
                    console.print(f"[dim]{time.monotonic() - began:6.1f}s[/] [bold]{eid}[/] "
                                  f"{ev.slice_key or '':17} [cyan]{ev.kind:12}[/] {escape(ev.message)}")  # fmt: skip
        if all(r.done() for r in results.values()):
            return {eid: r.result() for eid, r in results.items()}
        if time.monotonic() > deadline:
            raise TimeoutError(f"entities did not finish within {timeout_s:.0f}s")
        await asyncio.sleep(0.5)


def _summary(final: dict[str, EntityStatus], usage: pd.DataFrame, anchor: pd.Timestamp, clients: ClientFactory,
             elapsed: float) -> dict:  # fmt: skip
    rows = []
    for eid, status in final.items():
        actual = hourly_series(usage, eid, "cpu_mhz")
        for i, s in enumerate(status.slices):
            cpu = s.forecast.metrics["cpu_mhz"] if s.forecast else None
            hour = s.forecast.metrics["cpu_mhz"].hours[0].quantiles if cpu else {}
            observed = actual.get(TRACE_ANCHOR + pd.Timedelta(hours=i), math.nan)
            rows.append({
                "entity": eid, "slice": s.time_slice.key, "region": s.time_slice.region, "state": s.state,
                "cpu_p50": hour.get("0.5"), "cpu_p90": hour.get("0.9"),
                "cpu_actual": None if pd.isna(observed) else float(observed),
                "readiness": s.decision.readiness if s.decision and s.decision.readiness is not None
                else (s.forecast.readiness if s.forecast else None),
                "decision": s.decision.action if s.decision else None,
                "instances": f"{s.decision.quantity} x {s.decision.instance_type}" if s.decision else None,
                "outcome": s.outcome or s.error,
            })  # fmt: skip
    return {
        "elapsed_s": round(elapsed, 1),
        "migrations": sum(s.migrations for s in final.values()),
        "slices": rows,
        "active_fleets": {
            eid: s.active_fleet.model_dump(mode="json") if s.active_fleet else None for eid, s in final.items()
        },
        "aws": aws_inventory(clients, sorted({r for e in ENTITIES for r in (e.home, *e.regions)})),
    }


def aws_inventory(clients: ClientFactory, regions: list[str]) -> dict[str, dict[str, int]]:
    """Instances per region and state, from EC2 itself; `untagged` counts instances without the product's tags."""
    out = {}
    for region in regions:
        counts = {"running": 0, "terminated": 0, "other": 0, "untagged": 0}
        pages = clients("ec2", region).get_paginator("describe_instances").paginate()
        for inst in (i for p in pages for r in p["Reservations"] for i in r["Instances"]):
            state = inst["State"]["Name"]
            counts[state if state in counts else "other"] += 1
            tags = {t["Key"] for t in inst.get("Tags", [])}
            counts["untagged"] += int(not {TAG_ENTITY, TAG_MANAGED} <= tags)
        out[region] = counts
    return out


def _print_summary(console: Console, summary: dict) -> None:
    table = Table(title="Shadowing demo: slices")
    for col in ("entity", "slice", "region", "cpu p50 / p90 / actual MHz", "ready", "decision", "instances", "outcome"):
        table.add_column(col)
    for r in summary["slices"]:
        cpu = (
            "-"
            if r["cpu_p50"] is None
            else f"{r['cpu_p50']:.0f} / {r['cpu_p90']:.0f} / {r['cpu_actual'] or float('nan'):.0f}"
        )
        ready = "-" if r["readiness"] is None else f"{r['readiness']:.2f}"
        table.add_row(
            r["entity"],
            r["slice"],
            r["region"],
            cpu,
            ready,
            r["decision"] or "-",
            r["instances"] or "-",
            r["outcome"] or "-",
        )
    console.print(table)
    inv = Table(title="EC2 instances by region (from describe_instances)")
    for col in ("region", "running", "terminated", "untagged"):
        inv.add_column(col)
    for region, c in summary["aws"].items():
        inv.add_row(region, str(c["running"]), str(c["terminated"]), str(c["untagged"]))
    console.print(inv)
    console.print(f"[bold]{summary['migrations']} migrations[/] in {summary['elapsed_s']:.0f}s")


#: What `shadowctl up` registers on the embedded emulator so the endpoints answer out of the box: rnd-392's real
#: history, ending at the current hour (no time compression), and follow-the-sun slices starting tomorrow.
SAMPLE = DemoEntity("sample-api", "eu-west-1", ("us-east-1", "ap-southeast-2", "eu-west-1"), ("m5.large", "r5.large"),
                    2, trace_id="rnd-392")  # fmt: skip


def seed_sample(clients: ClientFactory, now: datetime) -> dict:
    """Seeds the sample entity's history and returns its registration (spec and schedule)."""
    anchor = pd.Timestamp(now).floor("h")
    zone_id = seed(clients, demo_data(), anchor, 0, (SAMPLE,))
    tomorrow = anchor.normalize() + pd.Timedelta(days=1)
    slices = [
        {"start": (tomorrow + pd.Timedelta(hours=8 * i)).isoformat(),
         "end": (tomorrow + pd.Timedelta(hours=8 * (i + 1))).isoformat(), "region": region}
        for i, region in enumerate(SAMPLE.regions)
    ]  # fmt: skip
    spec = EntitySpec(
        entity_id=SAMPLE.entity_id, home_region=SAMPLE.home, instance_types=SAMPLE.instance_types,
        initial_instances=SAMPLE.initial, dns_name=f"{SAMPLE.entity_id}.{ZONE}", hosted_zone_id=zone_id,
    )  # fmt: skip
    return {"spec": spec, "schedule": {"slices": slices}}
