"""Whole slices on the real dev server with the real activities against a moto server; a worker SIGKILLed in
the middle of a migration."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities import TAG_FLEET
from shadowctl.demo import ZONE, demo_data, hosted_zone
from shadowing.client import ShadowingClient
from shadowing.models import EntityPolicy, EntitySpec, EntityStatus
from shadowing.settings import Settings
from workers.aws import AwsClients
from workers.main import build_worker

pytestmark = pytest.mark.slow
HISTORIES = Path(__file__).resolve().parent.parent / "histories"
TRACE_HOUR = pd.Timestamp("2013-08-20T13:00Z")


def seed_history(aws: AwsClients, entity: str, region: str, trace_id: str, anchor: pd.Timestamp) -> None:
    """Puts 13 days of the real trace's hourly peaks into CloudWatch, ending at `anchor`."""
    usage = demo_data()
    offset = anchor - TRACE_HOUR
    cw = aws("cloudwatch", region)
    for col, metric in (("cpu_usage_mhz_max", "CpuUsageMHz"), ("mem_usage_kb_max", "MemoryUsageKB")):
        rows = usage[(usage.entity_id == trace_id) & (usage.timestamp < TRACE_HOUR)
                     & (usage.timestamp >= TRACE_HOUR - pd.Timedelta(days=13))].dropna(subset=[col])  # fmt: skip
        data = [{"MetricName": metric, "Dimensions": [{"Name": "EntityId", "Value": entity}],
                 "Timestamp": (t + offset).to_pydatetime(), "Value": float(v)}
                for t, v in zip(rows.timestamp, rows[col], strict=True)]  # fmt: skip
        for i in range(0, len(data), 500):
            cw.put_metric_data(Namespace="Shadowing/Usage", MetricData=data[i : i + 500])


def register_input(aws: AwsClients, entity: str, regions: list[str], slice_s: float, lead_s: float):
    anchor = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=2)
    seed_history(aws, entity, "us-east-1", "rnd-392", anchor)
    # registration runs the pre-flight checks (twice: the SDK, then EntitySchedule) before the bootstrap
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead_s + 15)
    spec = EntitySpec(
        entity_id=entity, home_region="us-east-1", instance_types=("m5.large",), initial_instances=1,
        dns_name=f"{entity}.{ZONE}", hosted_zone_id=hosted_zone(aws("route53", "us-east-1")),
        policy=EntityPolicy(lead_time_s=lead_s, prepare_s=2, watch_s=2, warmup_timeout_s=30, record_ttl_s=1),
        demand_clock={"origin": start, "history_origin": anchor.to_pydatetime(), "seconds_per_hour": slice_s},
    )  # fmt: skip
    slices = [{"start": start + timedelta(seconds=i * slice_s), "end": start + timedelta(seconds=(i + 1) * slice_s),
               "region": r} for i, r in enumerate(regions)]  # fmt: skip
    return spec, {"slices": slices}


def instances(aws: AwsClients, region: str, fleet: str | None = None, states: tuple[str, ...] = ("pending", "running")):
    filters = [{"Name": "instance-state-name", "Values": list(states)}]
    if fleet:
        filters.append({"Name": f"tag:{TAG_FLEET}", "Values": [fleet]})
    pages = aws("ec2", region).get_paginator("describe_instances").paginate(Filters=filters)
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


async def test_entity_slice_runs_end_to_end(dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path) -> None:
    """An entity forecasts from CloudWatch, shadows into eu-west-1, cuts Route53 over and retires its old fleet."""
    settings = Settings(
        temporal_address="x", aws_endpoint_url=moto_url, task_queue=f"it-{uuid.uuid4()}", data_plane_registry=data_plane
    )
    aws = AwsClients(settings)
    entity = f"it-{uuid.uuid4().hex[:6]}"
    spec, schedule = register_input(aws, entity, ["eu-west-1"], slice_s=20, lead_s=10)
    async with build_worker(dev_env.client, settings, aws):
        client = ShadowingClient(dev_env.client, settings.task_queue)
        await client.register_entity(spec, schedule)
        handle = dev_env.client.get_workflow_handle(f"entity/{entity}", result_type=EntityStatus)
        final = await asyncio.wait_for(handle.result(), 120)
        if os.environ.get("SHADOWING_RECORD_HISTORIES"):
            await _record(dev_env.client, handle.id, "entity_schedule_success")
            query = f"WorkflowType = 'ShadowMigration' AND WorkflowId STARTS_WITH 'migration/{entity}'"
            async for run in dev_env.client.list_workflows(query, limit=1):
                await _record(dev_env.client, run.id, "shadow_migration_success")
    assert final.slices[0].state == "done" and final.migrations == 1, final.slices[0]
    fleet = final.active_fleet
    assert fleet is not None and fleet.region == "eu-west-1"
    assert {i["InstanceId"] for i in instances(aws, "eu-west-1", fleet.fleet_id)} == set(fleet.instance_ids)
    assert instances(aws, "us-east-1", f"{entity}:initial") == [], "the retired fleet is terminated"
    records = aws("route53", "us-east-1").list_resource_record_sets(HostedZoneId=spec.hosted_zone_id)
    weights = {r["SetIdentifier"]: r["Weight"] for r in records["ResourceRecordSets"] if r["Name"].startswith(entity)}
    assert weights == {fleet.fleet_id: 100}


async def test_worker_killed_mid_migration_completes_once_without_duplicates(
    dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path
) -> None:
    """SIGKILL the worker while the migration waits for its slice; a new worker finishes it exactly once."""
    queue = f"kill-{uuid.uuid4()}"
    settings = Settings(temporal_address="x", aws_endpoint_url=moto_url, task_queue=queue)
    aws = AwsClients(settings)
    entity = f"kill-{uuid.uuid4().hex[:6]}"
    spec, schedule = register_input(aws, entity, ["eu-west-1"], slice_s=20, lead_s=12)
    address = dev_env.client.service_client.config.target_host
    first = _worker_process(address, moto_url, queue, data_plane)
    try:
        client = ShadowingClient(dev_env.client, queue)
        await client.register_entity(spec, schedule)
        status = await _until(client, entity, lambda s: any(e.kind == "ready" for e in s.events), 90)
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = _worker_process(address, moto_url, queue, data_plane)
        try:
            handle = dev_env.client.get_workflow_handle(f"entity/{entity}", result_type=EntityStatus)
            final = await asyncio.wait_for(handle.result(), 120)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
    finally:
        if first.poll() is None:
            first.kill()
    mid = status.slices[0].migration_id
    assert final.slices[0].state == "done"
    runs = [w async for w in dev_env.client.list_workflows(f'WorkflowId = "{mid}"')]
    assert len(runs) == 1 and runs[0].status == WorkflowExecutionStatus.COMPLETED
    fleet = final.active_fleet
    assert fleet is not None
    every = instances(aws, "eu-west-1", fleet.fleet_id, ("pending", "running", "stopped", "terminated"))
    assert len(every) == fleet.size, "no instance was launched twice"
    assert len(instances(aws, "eu-west-1", fleet.fleet_id)) == fleet.size


def _worker_process(address: str, moto_url: str, queue: str, registry: Path) -> subprocess.Popen:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "AWS_ENDPOINT_URL": moto_url, "SHADOWING_TASK_QUEUE": queue,
           "SHADOWING_LOG_LEVEL": "WARNING", "SHADOWING_DATA_PLANE_REGISTRY": str(registry)}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "shadowctl.cli", "worker"], env=env, stdin=subprocess.DEVNULL)


async def _until(client: ShadowingClient, entity: str, ready, timeout_s: float) -> EntityStatus:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            status = await client.status(entity)
            if ready(status):
                return status
        except Exception:  # the query may race the first workflow task
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{entity} did not reach the expected state in {timeout_s}s")


async def _record(client: Client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())
