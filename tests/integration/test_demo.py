"""`shadowctl demo` against a Temporal server and a moto server started outside it (TEMPORAL_ADDRESS and
AWS_ENDPOINT_URL set): it starts nothing, and afterwards the server and EC2 hold what the issue promises. Then
the README's `temporal workflow execute --type PredictDemand` prints a forecast."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED
from shadowing.settings import Settings
from tests.conftest import BIN
from workers.aws import AwsClients
from workers.main import build_worker

pytestmark = pytest.mark.slow


async def test_demo_on_external_services(dev_env: WorkflowEnvironment, moto_url: str, tmp_path: Path) -> None:
    """The demo exits 0, every ShadowMigration is Completed, target regions hold the active fleets, retired fleets
    are terminated and no instance lacks the product's tags."""
    address = dev_env.client.service_client.config.target_host
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "AWS_ENDPOINT_URL": moto_url,
        "SHADOWING_STATE_DIR": str(tmp_path),
    }
    summary_path = tmp_path / "summary.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadowing.cli", "demo", "--slice-seconds", "20", "--json", str(summary_path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert not (tmp_path / "temporal.db").exists(), "an external server was named: nothing may be started"
    summary = json.loads(summary_path.read_text())
    assert summary["migrations"] >= 2, out.decode()[-3000:]
    # The dev server is shared with other integration tests: only the demo's entities' migrations count.
    demo = tuple(f"migration/{entity}/" for entity in summary["active_fleets"])
    runs = [w async for w in dev_env.client.list_workflows('WorkflowType = "ShadowMigration"') if w.id.startswith(demo)]
    assert runs and all(r.status == WorkflowExecutionStatus.COMPLETED for r in runs), [(r.id, r.status) for r in runs]
    aws = AwsClients(Settings(aws_endpoint_url=moto_url))
    for entity, fleet in summary["active_fleets"].items():
        live = _instances(aws, fleet["region"], ["running"])
        mine = [i for i in live if _tags(i).get(TAG_FLEET) == fleet["fleet_id"]]
        assert len(mine) == len(fleet["instance_ids"]), entity
    for region in summary["aws"]:
        for inst in _instances(aws, region, ["pending", "running", "terminated"]):
            assert {TAG_ENTITY, TAG_MANAGED} <= set(_tags(inst)), inst["InstanceId"]
            if _tags(inst)[TAG_FLEET] not in {f["fleet_id"] for f in summary["active_fleets"].values()}:
                assert inst["State"]["Name"] == "terminated", "a retired fleet is still running"
    await _predict_with_temporal_cli(dev_env, moto_url, address)


async def _predict_with_temporal_cli(dev_env: WorkflowEnvironment, moto_url: str, address: str) -> None:
    settings = Settings(temporal_address=address, aws_endpoint_url=moto_url)
    async with build_worker(dev_env.client, settings, AwsClients(settings)):
        # the demo compresses time (20 s per trace hour): a slice a minute from now is a few trace hours ahead
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
        window = {"start": start.isoformat(), "end": (start + timedelta(seconds=30)).isoformat()}
        body = json.dumps({"entity_id": "rnd-392", "time_slice": window})
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "temporal"), "workflow", "execute", "--address", address, "--type", "PredictDemand",
            "--task-queue", "shadowing", "--workflow-id", "predict-readme", "--input", body, "--output", "json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text[-2000:]
    assert "cpu_mhz" in text and "readiness" in text


def _instances(aws: AwsClients, region: str, states: list[str]) -> list[dict]:
    pages = (
        aws("ec2", region)
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": states}])
    )
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


def _tags(inst: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
