"""Issue 19's "done when": on the dev server and the moto server with a worker process, `shadowctl register
examples/entity.json` without its hosted zone exits 2 naming `spec.hosted_zone_id` and leaves nothing running;
with the zone (and the table and usage history it names) created, the same entity bootstraps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities import TAG_ENTITY
from shadowctl.demo import hosted_zone
from shadowing.client import ShadowingClient
from shadowing.settings import Settings
from tests.activities.conftest import make_table
from tests.integration.test_dev_server import _until, _worker_process, instances, seed_history
from workers.aws import AwsClients

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "entity.json"


async def _register(address: str, moto_url: str, queue: str, path: Path) -> tuple[int, str]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "AWS_ENDPOINT_URL": moto_url, "SHADOWING_TASK_QUEUE": queue}
    env.pop("SHADOWING_CODEC_KEY", None)
    env.pop("SHADOWING_CODEC_KEY_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadowctl.cli", "register", str(path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    return proc.returncode or 0, " ".join(out.decode().split())  # rich wraps long lines


async def test_register_without_its_zone_exits_2_and_leaves_nothing_then_bootstraps_with_it(
    dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path, tmp_path: Path
) -> None:
    queue = f"reg-{uuid.uuid4()}"
    address = dev_env.client.service_client.config.target_host
    aws = AwsClients(Settings(temporal_address=address, aws_endpoint_url=moto_url))
    body = json.loads(EXAMPLE.read_text())
    entity = body["spec"]["entity_id"]
    sdk = ShadowingClient(dev_env.client, queue)
    worker = _worker_process(address, moto_url, queue, data_plane)
    try:
        code, out = await _register(address, moto_url, queue, EXAMPLE)
        assert code == 2, out
        assert "spec.hosted_zone_id: hosted zone Z0123456789EXAMPLE does not exist" in out, out
        with pytest.raises(RPCError):  # no EntitySchedule was started
            await dev_env.client.get_workflow_handle(sdk.workflow_id(entity)).describe()
        assert [i for i in instances(aws, "us-east-1") if {"Key": TAG_ENTITY, "Value": entity} in i.get("Tags", [])] \
            == [], "nothing launched"  # fmt: skip

        # what the spec names, created and handed to the entity: the zone, its table, its usage history
        zone = await asyncio.to_thread(hosted_zone, aws("route53", "us-east-1"), "example.internal.")
        await asyncio.to_thread(make_table, aws, "us-east-1", body["spec"]["dynamodb_tables"][0], 0, None, entity)
        anchor = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=2)
        await asyncio.to_thread(seed_history, aws, entity, "us-east-1", "rnd-392", anchor)
        body["spec"]["hosted_zone_id"] = zone
        ready = tmp_path / "entity.json"
        ready.write_text(json.dumps(body))
        code, out = await _register(address, moto_url, queue, ready)
        assert code == 0, out
        status = await _until(sdk, entity, lambda s: s.active_fleet is not None or s.phase == "failed", 180)
        assert status.phase != "failed", status.events
        fleet = status.active_fleet
        assert fleet is not None and fleet.size == 2 and fleet.instance_type == "m5.large"
        assert {i["InstanceId"] for i in instances(aws, "us-east-1", fleet.fleet_id)} == set(fleet.instance_ids)
    finally:
        with contextlib.suppress(RPCError):
            await dev_env.client.get_workflow_handle(sdk.workflow_id(entity)).terminate()
        worker.terminate()
        worker.wait(30)
