"""A full migration on the local data plane under real HTTP traffic through the entity's Route53 weights."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from benchmarks.cutover import migrate_under_load
from shadowing.endpoints import endpoints_for
from shadowing.settings import Settings
from workers.aws import AwsClients
from workers.main import build_worker

pytestmark = pytest.mark.slow


async def test_warm_migration_under_load_drops_nothing_and_data_matches(
    dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path
) -> None:
    """Provision, warm, replicate (with writes during the copy), switch and retire while clients keep sending:
    no request fails, the traffic moves to the new fleet, and both regions hold the same items.

    No watch window and a 6 s TTL: only the drain before retirement keeps clients that cached the old fleet's
    address from reaching a terminated instance."""
    settings = Settings(
        temporal_address="x",
        aws_endpoint_url=moto_url,
        task_queue=f"cut-{uuid.uuid4()}",
        data_plane_registry=data_plane,
    )
    clients = AwsClients(settings)
    async with build_worker(dev_env.client, settings, clients):
        run = await migrate_under_load(
            dev_env.client, settings.task_queue, clients, endpoints_for(settings), warm=True, rate=30.0,
            steady_s=3.0, after_s=3.0, ttl_s=6, watch_s=0.0,
        )  # fmt: skip
    figures = run.figures
    assert run.outcome == "migrated"
    assert figures["failed"] == 0, figures["errors"]
    assert all(figures["sent_by_phase"][p] > 20 for p in ("steady", "cutover", "after")), figures["sent_by_phase"]
    assert run.after_addresses and run.after_addresses <= run.new_addresses, "traffic did not move"
    assert run.items_source >= 200 and run.data_equal, (run.items_source, run.items_target)
    # writes never stopped: every acknowledged one is in the serving region's table, none failed
    writes = run.writes
    assert writes["lost"] == 0 and writes["failed"] == 0, writes
    assert all(writes["by_phase"][p]["acked"] > 10 for p in ("steady", "cutover", "after")), writes["by_phase"]
    assert run.data.sync_mode == "changed" and run.data.two_way_passes >= 2, run.data


async def test_fenced_migration_under_writes_loses_none_and_moves_the_writer(
    dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path
) -> None:
    """`consistency: fenced`: the old fleet's writes are held while replication drains, then go to the new region;
    nothing acknowledged is lost and both regions end equal."""
    queue = f"cut-{uuid.uuid4()}"
    settings = Settings(
        temporal_address="x", aws_endpoint_url=moto_url, task_queue=queue, data_plane_registry=data_plane
    )
    clients = AwsClients(settings)
    async with build_worker(dev_env.client, settings, clients):
        run = await migrate_under_load(
            dev_env.client, settings.task_queue, clients, endpoints_for(settings), warm=True, rate=20.0, writes=30.0,
            steady_s=2.0, after_s=2.0, ttl_s=2, watch_s=0.0, consistency="fenced",
        )  # fmt: skip
    assert run.outcome == "migrated", run.cause
    assert run.writes["lost"] == 0 and run.writes["failed"] == 0, run.writes
    assert run.data.consistency == "fenced" and run.data.fence_ms is not None
    assert run.data_equal
