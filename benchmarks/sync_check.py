"""The final sync check's cost at two table sizes with the same number of changed items.

    python -m benchmarks.sync_check [--small 1000] [--large 100000] [--changed 200]

For each size: a fresh source table of a fresh entity, seeded, copied (`replicate_tables`), caught up and verified
once by a full scan (the verified fence a real migration carries from check to check); then `changed` writes to
random existing keys, and the timed `check_sync(verify="changed")` from that fence (the figure), then a full-scan
check for contrast. Activities run in this process through `ActivityEnvironment`, against an in-process moto
server. It prints the JSON and seconds_large / seconds_small (target <= 2: 100x the items with the same changes
costs at most twice the time).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities import ClientFactory
from activities.replication import ReplicationActivities, ReplicationInput, ReplicationStatus
from benchmarks.cutover import create_table

SOURCE, TARGET = "us-east-1", "eu-west-1"
#: Items per BatchWriteItem call (DynamoDB's limit).
BATCH = 25


def measure(clients: ClientFactory, small: int = 1000, large: int = 100_000, changed: int = 200, seed: int = 0) -> dict:
    """Both sizes measured on fresh tables; seconds are wall time of one `check_sync` each."""
    rng = random.Random(seed)
    out: dict[str, Any] = {"items_small": small, "items_large": large, "changed": changed}
    for name, size in (("small", small), ("large", large)):
        figures = _one_size(clients, size, changed, rng)
        out[f"seconds_{name}"] = figures["seconds"]
        out[f"full_scan_seconds_{name}"] = figures["full_scan_seconds"]
        out[f"in_sync_{name}"] = figures["in_sync"]
        out[f"changed_seen_{name}"] = figures["changed_seen"]
    return out


def _one_size(clients: ClientFactory, size: int, changed: int, rng: random.Random) -> dict[str, Any]:
    entity = f"bench-sync-{uuid.uuid4().hex[:8]}"
    table = f"{entity}-orders"
    _seed(clients, entity, table, size)
    act, env = ReplicationActivities(clients), ActivityEnvironment()
    req = ReplicationInput(entity_id=entity, tables=(table,), source_region=SOURCE, target_region=TARGET)
    try:
        first = env.run(act.replicate_tables, req)
        caught = env.run(act.catch_up, req.model_copy(update={"checkpoint": first.checkpoint}))
        base = env.run(act.check_sync, _carry(req, caught, verify="full-scan"))
        if not base.in_sync:
            raise RuntimeError(f"the starting point is not in sync: {base.detail}")
        _write(clients, table, rng.sample(range(size), min(changed, size)))
        started = time.perf_counter()
        check = env.run(act.check_sync, _carry(req, base, verified=base.verified))
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        full = env.run(act.check_sync, _carry(req, check, verify="full-scan"))
        full_seconds = time.perf_counter() - started
    finally:
        env.run(act.drop_replicas, req)
        clients("dynamodb", SOURCE).delete_table(TableName=table)
    return {
        "seconds": round(seconds, 3), "full_scan_seconds": round(full_seconds, 3),
        "in_sync": check.in_sync and full.in_sync, "changed_seen": check.changed,
    }  # fmt: skip


def _carry(req: ReplicationInput, status: ReplicationStatus, **update: Any) -> ReplicationInput:
    """The next check's input: the positions `status` ended at (so finding the streams' ends costs the changes)."""
    positions = {"checkpoint": status.checkpoint, "reverse_checkpoint": status.reverse_checkpoint}
    return req.model_copy(update=positions | update)


def _seed(clients: ClientFactory, entity: str, table: str, size: int) -> None:
    """A table of `size` versioned items, handed to `entity`, written in parallel batches."""
    ddb = create_table(clients, table, entity)
    now_ms = int(time.time() * 1000)
    chunks = [range(i, min(i + BATCH, size)) for i in range(0, size, BATCH)]

    def write(chunk: range) -> None:
        pending = {table: [{"PutRequest": {"Item": _item(i, 1, now_ms)}} for i in chunk]}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, chunks))


def _write(clients: ClientFactory, table: str, keys: list[int]) -> None:
    ddb, now_ms = clients("dynamodb", SOURCE), int(time.time() * 1000)
    for i in keys:
        ddb.put_item(TableName=table, Item=_item(i, 2, now_ms))


def _item(i: int, version: int, ts_ms: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"k{i}"}, "_v": {"N": str(version)}, "_ts": {"N": str(ts_ms)}, "_r": {"S": SOURCE},
        "payload": {"S": f"order {i} version {version}"},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_check", description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=200)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    from devstack.stack import free_port
    from shadowing.settings import Settings
    from workers.aws import AwsClients

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server logs every request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        clients = AwsClients(Settings(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_profile=None))
        figures = measure(clients, small=args.small, large=args.large, changed=args.changed)
    finally:
        server.stop()
    print(json.dumps(figures, indent=2))
    ratio = figures["seconds_large"] / max(figures["seconds_small"], 1e-9)
    print(f"seconds_large / seconds_small = {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
