"""`make bench-cutover`: a migration on the embedded default under reads and writes that never stop.

    python -m benchmarks.cutover [--rate 40] [--writes 60] [--json .shadowing/bench-cutover.json] [--no-sync-check]

Starts the embedded services (Temporal dev server, moto server, the local data-plane agent), a worker in this
process, then for each case, `warm` (warmed shadows, `converge`), `cold` (warm-up skipped, only health waited for,
`converge`) and `fenced` (warmed, `consistency: fenced`): an old fleet of stand-ins serving the entity's DNS name
(warmed by the load itself), a load generator resolving the name through the Route53 weights with a TTL cache and
sending reads (`GET /work`) and writes (`PUT /items/<table>/<key>`, into the table of the region whose instance the
client reached), and a ShadowMigration of the entity and its DynamoDB table to another region. Nobody pauses the
writes: the product's own path (final sync check under writes, two-way replication during the drain, or the write
fence) carries them. It prints, side by side before ("steady"), during ("cutover": from the first weight change
until every cached answer expired) and after the cutover: reads sent, failed and p50/p99 latency, and writes sent,
acknowledged, failed and lost (acknowledged, then missing or older in the serving region's table), the longest time
a client went without an acknowledged write, the conflicts the rule decided; it checks that both regions hold the
same items, measures the final sync check at ~1,000 and ~100,000 items with the same changes
(`benchmarks/sync_check.py`), and writes the figures as JSON. A rollback is a result: its outcome and cause are
reported like a migration's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities import ClientFactory
from activities.ec2 import Ec2Activities, ProvisionInput
from activities.ownership import ownership_tags
from activities.routing import RoutingActivities, RoutingInput
from activities.warmup import WarmupActivities, WarmupInput
from devstack.dataplane.loadgen import LoadGenerator, Sample, lost_writes, summarise, summarise_writes
from shadowctl.demo import hosted_zone
from shadowing.endpoints import Endpoints, endpoints_for
from shadowing.models import (
    DataSummary,
    EntityPolicy,
    EntitySpec,
    FleetRef,
    MigrationInput,
    MigrationProgress,
    MigrationResult,
    ScheduledSlice,
)
from shadowing.settings import Settings

ZONE = "bench.shadowing."
SOURCE, TARGET = "us-east-1", "eu-west-1"
TTL_S = 2
AFTER_SWITCH_PHASES = ("watching", "draining", "retired", "done")
PHASES = ("steady", "cutover", "after")


@dataclass
class Run:
    """One migration under load: the load's figures, the migration's outcome, the data check."""

    figures: dict[str, Any]
    outcome: str  # "migrated", "released" or "rolled_back"
    writes: dict[str, Any]
    data: DataSummary
    items_source: int
    items_target: int
    data_equal: bool  # the serving region holds every item of the other at the same or a newer version
    new_addresses: frozenset[str] = frozenset()  # the new fleet's addresses
    after_addresses: frozenset[str] = frozenset()  # where the requests of the "after" phase went
    cause: str = ""  # why it rolled back (the migration's own reason)
    items_equal_exact: bool = False  # both regions' tables identical (only once writes stop: see `holds_everything`)


async def migrate_under_load(
    client: Client, task_queue: str, clients: ClientFactory, endpoints: Endpoints, *, warm: bool,
    rate: float = 40.0, writes: float = 60.0, steady_s: float = 6.0, after_s: float = 6.0, items: int = 200,
    fleet_size: int = 2, ttl_s: int = TTL_S, watch_s: float = 6.0, consistency: str = "converge",
) -> Run:  # fmt: skip
    """Sets up an old fleet serving a fresh entity, runs the load (`rate` reads and `writes` writes per second),
    migrates it to TARGET, returns the figures."""
    name = "fenced" if consistency == "fenced" else "warm" if warm else "cold"
    entity = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    table = f"{entity}-orders"
    zone_id = await asyncio.to_thread(hosted_zone, clients("route53", SOURCE), ZONE)
    await asyncio.to_thread(seed_table, clients, table, items, entity)
    old = await old_fleet(clients, endpoints, entity, zone_id, fleet_size, ttl_s)
    policy = EntityPolicy.model_validate(
        {"warm_up": warm, "record_ttl_s": ttl_s, "watch_s": watch_s, "catch_up_interval_s": 2,
         "warmup_timeout_s": 120, "spot_deadline_s": 30, "consistency": consistency, "two_way_interval_s": 1.0}
    )  # fmt: skip
    spec = EntitySpec(
        entity_id=entity, home_region=SOURCE, instance_types=("m5.large",), dns_name=f"{entity}.{ZONE}",
        hosted_zone_id=zone_id, dynamodb_tables=(table,), policy=policy,
    )  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    req = MigrationInput(
        spec=spec, time_slice=ScheduledSlice(start=now, end=now + timedelta(hours=1), region=TARGET),
        instance_type="m5.large", quantity=fleet_size, source=old, mode="manual",
    )  # fmt: skip
    load = LoadGenerator(
        lambda: clients("route53", SOURCE), zone_id, spec.dns_name, endpoints, rate=rate + writes,
        write_ratio=writes / (rate + writes), table=table, clients=12,
    ).start()  # fmt: skip
    handle, outcome, cause = None, "", ""
    result: MigrationResult | None = None
    try:
        await asyncio.sleep(steady_s)  # the old fleet's steady state (its cache warmed by the load itself)
        handle = await client.start_workflow(
            "ShadowMigration", req, id=f"migration/{entity}", task_queue=task_queue, result_type=MigrationResult
        )
        await until_phase(handle, ("ready",))
        await handle.signal("proceed")  # writes go on: the product's sync check, replication or fence carries them
        # "cutover" can pass between two polls (a short watch): any phase after it counts as well
        await until_phase(handle, ("cutover", *AFTER_SWITCH_PHASES))
        load.phase = "cutover"
        await until_phase(handle, AFTER_SWITCH_PHASES)
        await asyncio.sleep(ttl_s + 1)  # every client's cached answer has expired: all traffic is on the new fleet
        load.phase = "after"
        result = await handle.result()
        outcome = result.outcome
        await asyncio.sleep(after_s)
    except WorkflowFailureError as exc:  # a rollback is a result: reported with its cause, the old fleet ended
        result, outcome, cause = None, "rolled_back", _cause(exc)
    except BaseException:
        await _abandon(handle, clients, old)  # leave nothing running on a shared emulator
        raise
    finally:
        samples = await asyncio.to_thread(load.stop)
    data = await handle.query("data", result_type=DataSummary) if handle is not None else DataSummary()
    source_items, target_items = await asyncio.to_thread(table_items, clients, table)
    if result is not None and result.fleet is not None:  # leave nothing running on a shared emulator
        await asyncio.to_thread(ActivityEnvironment().run, Ec2Activities(clients).terminate_fleet, result.fleet)
    if outcome == "rolled_back":
        await _abandon(None, clients, old)
    serving, other = (target_items, source_items) if outcome == "migrated" else (source_items, target_items)
    return Run(
        figures=summarise(samples), outcome=outcome, cause=cause, items_source=len(source_items),
        items_target=len(target_items), data_equal=holds_everything(serving, other),
        items_equal_exact=source_items == target_items,
        writes=write_figures(samples, serving, data), data=data,
        new_addresses=frozenset(result.fleet.addresses if result is not None and result.fleet else ()),
        after_addresses=frozenset(s.address for s in samples if s.phase == "after"),
    )  # fmt: skip


def holds_everything(serving: dict[str, Any], other: dict[str, Any]) -> bool:
    """`data_equal`: every item of the other region's table is in the serving region's at the same or a newer
    version ((_v, _ts, _r); an unversioned item must be identical). The other region's copy stops being updated
    when the old fleet is retired while the writes go on, so exact equality of the two tables holds only once
    writes stop; what must hold under writes that never stop is that nothing the old region has is missing or
    newer there."""

    def version(item: dict[str, Any]) -> tuple[int, int, str]:
        return int(item["_v"]["N"]), int(item.get("_ts", {}).get("N", 0)), item.get("_r", {}).get("S", "")

    for key, item in other.items():
        mine = serving.get(key)
        if mine is None:
            return False
        if "_v" in item and "_v" in mine:
            if version(mine) < version(item):
                return False
        elif mine != item:
            return False
    return True


def write_figures(samples: list[Sample], serving: dict[str, Any], data: DataSummary) -> dict[str, Any]:
    """The writes' figures: sent, acked, failed, lost (acknowledged, then missing or older in the serving region's
    table), conflicts the rule decided, the longest time a client went without an acknowledged write, by phase."""
    figures = summarise_writes(samples)
    writes = [s for s in samples if s.kind == "write"]
    for phase, counts in figures["by_phase"].items():  # acknowledged writes per second of the phase
        sent = [s.sent_at for s in writes if s.phase == phase]
        span = max(sent) - min(sent) if len(sent) > 1 else 0.0
        counts["acked_per_s"] = round(counts["acked"] / span, 1) if span else 0.0
    lost = lost_writes(samples, serving)
    errors = sorted({s.error for s in writes if not s.ok})[:5]
    return {**figures, "lost": len(lost), "lost_keys": sorted(lost)[:10], "conflicts": data.conflicts,
            "errors": errors}  # fmt: skip


def _cause(exc: BaseException) -> str:
    """The innermost message of a workflow failure (the migration's own reason for rolling back)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


async def _abandon(handle: Any, clients: ClientFactory, old: FleetRef) -> None:
    """A run that failed: the migration is cancelled (its compensations release the shadows), the old fleet ends."""
    if handle is not None:
        with contextlib.suppress(Exception):
            await handle.cancel()
            await asyncio.wait_for(handle.result(), 120)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(ActivityEnvironment().run, Ec2Activities(clients).terminate_fleet, old)


async def old_fleet(
    clients: ClientFactory, endpoints: Endpoints, entity: str, zone_id: str, size: int, ttl_s: int,
    zone: str = ZONE, warm: bool = True,
) -> FleetRef:  # fmt: skip
    """The entity's current fleet in SOURCE, warm and routed to (through the product's own activities)."""
    env = ActivityEnvironment()
    fleet = await asyncio.to_thread(
        env.run, Ec2Activities(clients).provision_fleet,
        ProvisionInput(entity_id=entity, fleet_id=f"{entity}:initial", slice_key="initial", region=SOURCE,
                       instance_type="m5.large", quantity=size, role="active"),
    )  # fmt: skip
    if warm:  # it has served this traffic for long: its caches are warm
        ask = WarmupInput(fleet=fleet, timeout_s=120)
        await asyncio.to_thread(
            ActivityEnvironment().run, WarmupActivities(clients, endpoints, poll_s=0.2).warm_fleet, ask
        )
    routing = RoutingInput(hosted_zone_id=zone_id, dns_name=f"{entity}.{zone}", to_fleet=fleet, ttl_s=ttl_s)
    await asyncio.to_thread(ActivityEnvironment().run, RoutingActivities(clients).switch_traffic, routing)
    return fleet


async def until_phase(handle: Any, phases: tuple[str, ...], timeout_s: float = 300.0) -> MigrationProgress:
    deadline = time.monotonic() + timeout_s
    progress = None
    while time.monotonic() < deadline:
        progress = await handle.query("progress", result_type=MigrationProgress)
        if progress.phase in phases:
            return progress
        if progress.phase in ("compensating", "rolled-back"):
            await handle.result()  # raises the migration's failure
        await asyncio.sleep(0.05)
    # what the migration was doing, so that a timeout on a slow or stalled machine says where it stood
    desc = await handle.describe()
    pending = ", ".join(f"{a.activity_type.name} (attempt {a.attempt}, {PendingActivityState.Name(a.state)}, last "
                        f"failure: {a.last_failure.message or 'none'})"
                        for a in desc.raw_description.pending_activities)  # fmt: skip
    raise TimeoutError(f"migration did not reach {phases} within {timeout_s:.0f}s: phase "
                       f"{progress.phase if progress else '?'}, pending activities: {pending or 'none'}")  # fmt: skip


def create_table(clients: ClientFactory, table: str, entity_id: str) -> Any:
    """An empty table keyed by the string `pk` in SOURCE, handed to the entity (its ownership tags); its client."""
    ddb = clients("dynamodb", SOURCE)
    ddb.create_table(
        TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        Tags=ownership_tags(entity_id),
    )  # fmt: skip
    return ddb


def seed_table(clients: ClientFactory, table: str, items: int, entity_id: str) -> None:
    """The entity's table in SOURCE, handed to the product (its ownership tags), with `items` items."""
    ddb = create_table(clients, table, entity_id)
    for i in range(items):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"o-{i:05d}"}, "n": {"N": str(i)}})


def table_items_in(clients: ClientFactory, table: str, region: str) -> dict[str, Any]:
    pages = clients("dynamodb", region).get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    # `_ts` on an item without `_v` is the replica's bookkeeping (see activities/replication.py), not data.
    return {
        item["pk"]["S"]: {k: v for k, v in item.items() if k != "_ts" or "_v" in item}
        for page in pages
        for item in page["Items"]
    }


def table_items(clients: ClientFactory, table: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return table_items_in(clients, table, SOURCE), table_items_in(clients, table, TARGET)


def table(runs: dict[str, Run]) -> str:
    """The docs table: one row per case, reads then writes, steady / cutover / after side by side."""
    head = (
        "| case | outcome | reads sent | reads failed | read p99 steady / cutover / after (ms) "
        "| writes sent / acked / failed / lost | writes/s by phase | max unavailable (ms) | conflicts |"
    )
    lines = [head, "|---|---|---:|---:|---|---|---|---:|---:|"]
    for name, run in runs.items():
        f, w = run.figures, run.writes
        p99 = " / ".join("-" if f["p99_ms"][p] is None else f"{f['p99_ms'][p]:.1f}" for p in PHASES)
        rates = " / ".join(f"{w['by_phase'][p].get('acked_per_s', 0):.0f}" for p in PHASES)
        lines.append(
            f"| {name} | {run.outcome} | {f['sent']} | {f['failed']} | {p99} | {w['sent']} / {w['acked']} / "
            f"{w['failed']} / {w['lost']} | {rates} | {w['max_unavailable_ms']:.0f} | {w['conflicts']} |"
        )
    return "\n".join(lines)


def verdicts(runs: dict[str, Run], sync: dict[str, Any] | None) -> list[str]:
    """Each target of issue 20 against this run's figures, ratios within the run."""
    out = []
    warm = runs.get("warm")
    if warm is not None:
        f, w = warm.figures, warm.writes
        steady, cutover = f["p99_ms"].get("steady"), f["p99_ms"].get("cutover")
        ratio = cutover / steady if steady and cutover is not None else None
        slowest = min((w["by_phase"][p].get("acked_per_s", 0.0) for p in PHASES), default=0.0)
        out.append(
            f"warm (converge): outcome {warm.outcome}; writes acked {w['acked']} (target >= 500), slowest phase "
            f"{slowest:.0f}/s (target >= 50); lost {w['lost']} (target 0); failed {w['failed']} (target 0); "
            f"data_equal {warm.data_equal}; read p99 cutover / steady = "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} (target <= 1.2)"
        )
    fenced = runs.get("fenced")
    if fenced is not None:
        w = fenced.writes
        out.append(
            f"fenced: outcome {fenced.outcome}; lost {w['lost']} (target 0); max_unavailable_ms "
            f"{w['max_unavailable_ms']:.0f} (target <= 1000); fence held {fenced.data.fence_ms} ms (workflow's view)"
        )
    if sync:
        ratio = sync["seconds_large"] / sync["seconds_small"] if sync["seconds_small"] else float("nan")
        out.append(
            f"sync check: {sync['changed']} changed items: {sync['seconds_small']:.3f}s at {sync['items_small']} "
            f"items, {sync['seconds_large']:.3f}s at {sync['items_large']} items: ratio {ratio:.2f} (target <= 2); "
            f"full scan {sync.get('full_scan_seconds_small', 0):.2f}s / {sync.get('full_scan_seconds_large', 0):.2f}s"
        )
    return out


CASES = {"warm": {"warm": True}, "cold": {"warm": False}, "fenced": {"warm": True, "consistency": "fenced"}}


async def _main(args: argparse.Namespace) -> int:
    from benchmarks import sync_check
    from devstack.stack import embedded_services, free_port
    from shadowing.connect import connect
    from workers.aws import AwsClients
    from workers.main import build_worker

    state = Path(tempfile.mkdtemp(prefix="bench-cutover-"))
    base = Settings(
        temporal_address=None, aws_endpoint_url=None, state_dir=state, moto_port=free_port(),
        temporal_port=free_port(), temporal_ui_port=free_port(), data_plane_poll_s=0.2, log_level="WARNING",
    )  # fmt: skip
    sync: dict[str, Any] | None = None
    with embedded_services(base) as services:
        settings = services.settings(base)
        client = await connect(settings.temporal_address or "", settings.temporal_namespace)
        clients = AwsClients(settings)
        endpoints = endpoints_for(settings)
        runs: dict[str, Run] = {}
        async with build_worker(client, settings, clients):
            for name in args.cases:
                print(f"running the {name} case ...", flush=True)
                runs[name] = await migrate_under_load(
                    client, settings.task_queue, clients, endpoints, rate=args.rate, writes=args.writes,
                    **CASES[name],  # type: ignore[arg-type]
                )  # fmt: skip
        if args.sync_check:
            print("measuring the final sync check at two table sizes ...", flush=True)
            sync = await asyncio.to_thread(sync_check.measure, clients)
    print(table(runs))
    for name, run in runs.items():
        why = f" ({run.cause})" if run.cause else ""
        print(f"{name}: outcome {run.outcome}{why}; items source {run.items_source}, target {run.items_target}, "
              f"equal {run.data_equal}; read errors {run.figures['errors']}; write errors {run.writes['errors']}; "
              f"final check {run.data.sync_mode} {run.data.sync_check_s}s, {run.data.changed} changed "
              "keys")  # fmt: skip
    for line in verdicts(runs, sync):
        print(line)
    out: dict[str, Any] = {
        name: {**{k: run.figures[k] for k in ("sent", "failed", "p50_ms", "p99_ms")}, "outcome": run.outcome,
               "cause": run.cause, "data_equal": run.data_equal, "items_equal_exact": run.items_equal_exact,
               "writes": run.writes,
               "data": run.data.model_dump(mode="json")}
        for name, run in runs.items()
    }  # fmt: skip
    if sync is not None:
        out["sync_check"] = sync
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cutover", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="reads per second, all clients together")
    parser.add_argument("--writes", type=float, default=60.0, help="writes per second, all clients together")
    parser.add_argument(
        "--cases",
        type=lambda v: [c for c in v.split(",") if c],
        default=list(CASES),
        help=f"comma-separated cases out of {', '.join(CASES)}",
    )
    parser.add_argument("--no-sync-check", dest="sync_check", action="store_false",
                        help="skip the sync-check measurement at ~1,000 and ~100,000 items")  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("SHADOWING_STATE_DIR", ".shadowing"))
                        / "bench-cutover.json")  # fmt: skip
    raise SystemExit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
