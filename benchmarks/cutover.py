"""`make bench-cutover`: a migration on the embedded default under a steady stream of requests.

    python -m benchmarks.cutover [--rate 40] [--json .shadowing/bench-cutover.json]

Starts the embedded services (Temporal dev server, moto server, the local data-plane agent), a worker in this
process, then for (a) warmed shadows and (b) cold shadows (warm-up skipped, only health waited for): an old fleet
of stand-ins serving the entity's DNS name (warmed by the load itself), a load generator resolving the name through
the Route53 weights with a TTL cache, and a ShadowMigration to another region with a DynamoDB table written to
while the shadows are prepared. It prints requests sent, failed and p50/p99 latency before ("steady"), during
("cutover": from the first weight change until every cached answer expired) and after the cutover, side by side,
checks that both regions hold the same items, and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities import ClientFactory
from activities.ec2 import Ec2Activities, ProvisionInput
from activities.ownership import ownership_tags
from activities.routing import RoutingActivities, RoutingInput
from activities.warmup import WarmupActivities, WarmupInput
from devstack.dataplane.loadgen import LoadGenerator, summarise
from shadowctl.demo import hosted_zone
from shadowing.endpoints import Endpoints, endpoints_for
from shadowing.models import (
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


@dataclass
class Run:
    """One migration under load: the load's figures, the migration's outcome, the data check."""

    figures: dict[str, Any]
    outcome: str  # "migrated", "released" or "rolled_back"
    items_source: int
    items_target: int
    data_equal: bool
    new_addresses: frozenset[str] = frozenset()  # the new fleet's addresses
    after_addresses: frozenset[str] = frozenset()  # where the requests of the "after" phase went
    cause: str = ""  # why it rolled back (the migration's own reason)


async def migrate_under_load(
    client: Client, task_queue: str, clients: ClientFactory, endpoints: Endpoints, *, warm: bool,
    rate: float = 40.0, steady_s: float = 6.0, after_s: float = 6.0, items: int = 200, fleet_size: int = 2,
    ttl_s: int = TTL_S, watch_s: float = 6.0,
) -> Run:  # fmt: skip
    """Sets up an old fleet serving a fresh entity, runs the load, migrates it to TARGET, returns the figures."""
    entity = f"bench-{'warm' if warm else 'cold'}-{uuid.uuid4().hex[:6]}"
    table = f"{entity}-orders"
    zone_id = await asyncio.to_thread(hosted_zone, clients("route53", SOURCE), ZONE)
    await asyncio.to_thread(seed_table, clients, table, items, entity)
    old = await old_fleet(clients, endpoints, entity, zone_id, fleet_size, ttl_s)
    policy = EntityPolicy(
        warm_up=warm, record_ttl_s=ttl_s, watch_s=watch_s, catch_up_interval_s=2, warmup_timeout_s=120,
        spot_deadline_s=30,
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
    load = LoadGenerator(lambda: clients("route53", SOURCE), zone_id, spec.dns_name, endpoints, rate=rate).start()
    writer = _Writer(clients, table).start()
    handle, outcome, cause = None, "", ""
    try:
        await asyncio.sleep(steady_s)  # the old fleet's steady state (its cache warmed by the load itself)
        handle = await client.start_workflow(
            "ShadowMigration", req, id=f"migration/{entity}", task_queue=task_queue, result_type=MigrationResult
        )
        await until_phase(handle, ("ready",))
        writer.stop()  # a short write freeze before the final sync check, as a cutover runbook would have
        await handle.signal("proceed")
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
        await _abandon(None, clients, old)
    except BaseException:
        await _abandon(handle, clients, old)  # leave nothing running on a shared emulator
        raise
    finally:
        writer.stop()
        samples = await asyncio.to_thread(load.stop)
    source_items, target_items = await asyncio.to_thread(table_items, clients, table)
    if result is not None and result.fleet is not None:  # leave nothing running on a shared emulator
        await asyncio.to_thread(ActivityEnvironment().run, Ec2Activities(clients).terminate_fleet, result.fleet)
    return Run(
        figures=summarise(samples), outcome=outcome, cause=cause, items_source=len(source_items),
        items_target=len(target_items), data_equal=source_items == target_items,
        new_addresses=frozenset(result.fleet.addresses if result is not None and result.fleet else ()),
        after_addresses=frozenset(s.address for s in samples if s.phase == "after"),
    )  # fmt: skip


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
    while time.monotonic() < deadline:
        progress = await handle.query("progress", result_type=MigrationProgress)
        if progress.phase in phases:
            return progress
        if progress.phase in ("compensating", "rolled-back"):
            await handle.result()  # raises the migration's failure
        await asyncio.sleep(0.05)
    raise TimeoutError(f"migration did not reach {phases} within {timeout_s:.0f}s")


class _Writer:
    """Writes (new items and updates) to the source table while the shadows are prepared."""

    def __init__(self, clients: ClientFactory, table: str, per_s: float = 5.0) -> None:
        self._ddb, self._table, self._per_s = clients("dynamodb", SOURCE), table, per_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(1 / self._per_s):
            key = f"o-{n % 300:05d}"  # the first 200 exist: updates, then inserts
            self._ddb.put_item(TableName=self._table, Item={"pk": {"S": key}, "n": {"N": str(n)}})
            n += 1


def seed_table(clients: ClientFactory, table: str, items: int, entity_id: str) -> None:
    """The entity's table in SOURCE, handed to the product (its ownership tags), with `items` items."""
    ddb = clients("dynamodb", SOURCE)
    ddb.create_table(
        TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        Tags=ownership_tags(entity_id),
    )  # fmt: skip
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
    """The README table: one row per case, steady / cutover / after side by side."""
    head = "| shadows | sent | failed | p50 steady / cutover / after (ms) | p99 steady / cutover / after (ms) |"
    lines = [head, "|---|---:|---:|---|---|"]
    for name, run in runs.items():
        f = run.figures

        def three(key: str, f: dict[str, Any] = f) -> str:
            return " / ".join("-" if f[key][p] is None else f"{f[key][p]:.1f}" for p in ("steady", "cutover", "after"))

        lines.append(f"| {name} | {f['sent']} | {f['failed']} | {three('p50_ms')} | {three('p99_ms')} |")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    from devstack.stack import embedded_services, free_port
    from shadowing.connect import connect
    from workers.aws import AwsClients
    from workers.main import build_worker

    state = Path(tempfile.mkdtemp(prefix="bench-cutover-"))
    base = Settings(
        temporal_address=None, aws_endpoint_url=None, state_dir=state, moto_port=free_port(),
        temporal_port=free_port(), temporal_ui_port=free_port(), data_plane_poll_s=0.2, log_level="WARNING",
    )  # fmt: skip
    with embedded_services(base) as services:
        settings = services.settings(base)
        client = await connect(settings.temporal_address or "", settings.temporal_namespace)
        clients = AwsClients(settings)
        endpoints = endpoints_for(settings)
        runs: dict[str, Run] = {}
        async with build_worker(client, settings, clients):
            for name, warm in (("warm", True), ("cold", False)):
                print(f"running the {name} case ...", flush=True)
                runs[name] = await migrate_under_load(
                    client, settings.task_queue, clients, endpoints, warm=warm, rate=args.rate
                )
    print(table(runs))
    for name, run in runs.items():
        why = f" ({run.cause})" if run.cause else ""
        print(f"{name}: outcome {run.outcome}{why}; items source {run.items_source}, target {run.items_target}, "
              f"equal {run.data_equal}; errors {run.figures['errors']}")  # fmt: skip
    warm = runs["warm"].figures
    steady, cutover = warm["p99_ms"].get("steady"), warm["p99_ms"].get("cutover")
    ratio = f"{cutover / steady:.2f}" if steady and cutover is not None else "n/a (no cutover phase)"
    print(f"warm: outcome {runs['warm'].outcome}; failed {warm['failed']} (target 0); p99 cutover / steady = "
          f"{ratio} (target <= 1.5)")  # fmt: skip
    out = {
        name: {**{k: run.figures[k] for k in ("sent", "failed", "p50_ms", "p99_ms")}, "outcome": run.outcome,
               "cause": run.cause, "data_equal": run.data_equal}
        for name, run in runs.items()
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cutover", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second, all clients together")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("SHADOWING_STATE_DIR", ".shadowing"))
                        / "bench-cutover.json")  # fmt: skip
    raise SystemExit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
