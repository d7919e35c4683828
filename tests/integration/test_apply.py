"""`shadowctl apply` against the real dev server with a worker: a 2-entity fleet file applied twice creates both,
then sends nothing; a changed policy value updates that entity's spec only. Forecast-only entities with slices a
year ahead, so nothing is provisioned and no slice starts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from shadowctl.fleetfile import apply_fleet, load_fleet
from shadowing.client import ShadowingClient
from shadowing.models import EntitySpec
from shadowing.settings import Settings
from tests.integration.conftest import usage_points
from workers.aws import AwsClients
from workers.main import build_worker

pytestmark = pytest.mark.slow


def fleet_yaml(a: str, b: str, b_watch_s: int) -> str:
    return f"""
defaults:
  home_region: us-east-1
  hosted_zone_id: ZAPPLYTEST
  instance_types: [m5.large]
  policy: {{mode: forecast-only, watch_s: 30}}
entities:
  - spec: {{entity_id: {a}, dns_name: {a}.example.internal}}
    schedule:
      slices:
        - {{start: "2099-01-04T00:00:00Z", end: "2099-01-04T08:00:00Z", region: eu-west-1}}
        - {{start: "2099-01-04T08:00:00Z", end: "2099-01-04T16:00:00Z", region: us-east-1}}
  - spec: {{entity_id: {b}, dns_name: {b}.example.internal, policy: {{watch_s: {b_watch_s}}}}}
    schedule:
      slices:
        - {{start: "2099-01-05T00:00:00Z", end: "2099-01-05T12:00:00Z", region: ap-southeast-2}}
"""


class CountingClient(ShadowingClient):
    """Records every call that would change an entity."""

    sent: list[tuple[str, str]]

    async def register_entity(self, spec: Any, schedule: Any) -> str:
        self.sent.append(("register", spec.entity_id))
        return await super().register_entity(spec, schedule)

    async def update_spec(self, entity_id: str, spec: Any) -> EntitySpec:
        self.sent.append(("update_spec", entity_id))
        return await super().update_spec(entity_id, spec)

    async def update_schedule(self, entity_id: str, schedule: Any) -> Any:
        self.sent.append(("update_schedule", entity_id))
        return await super().update_schedule(entity_id, schedule)


async def shadowctl(address: str, queue: str, *args: str) -> tuple[int, str]:
    """The real CLI in a subprocess, awaited so that the in-process worker keeps serving: (exit code, stdout)."""
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "SHADOWING_TASK_QUEUE": queue}
    env.pop("SHADOWING_CODEC_KEY", None)
    env.pop("SHADOWING_CODEC_KEY_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadowctl.cli", "apply", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode() + err.decode()
    return proc.returncode, out.decode()


async def test_apply_is_idempotent_and_sends_only_what_changed(
    dev_env: WorkflowEnvironment, moto_url: str, tmp_path: Path
) -> None:
    queue = f"apply-{uuid.uuid4()}"
    settings = Settings(temporal_address="x", aws_endpoint_url=moto_url, task_queue=queue)
    address = dev_env.client.service_client.config.target_host
    tag = uuid.uuid4().hex[:6]
    a, b = f"apply-a-{tag}", f"apply-b-{tag}"
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(a, b, b_watch_s=30))
    client = CountingClient(dev_env.client, queue)
    client.sent = []
    for entity in (a, b):  # the pre-flight check of a forecast-only entity asks for its usage history
        usage_points(AwsClients(settings), entity)
    try:
        async with build_worker(dev_env.client, settings, AwsClients(settings)):
            code, out = await shadowctl(address, queue, "-f", str(path), "--dry-run", "--json")
            assert code == 0, out
            assert [(c["entity_id"], c["result"], c["dry_run"]) for c in json.loads(out)] == [
                (a, "created", True), (b, "created", True)
            ]  # fmt: skip
            assert [await _running(dev_env, e) for e in (a, b)] == [False, False], "a dry run sends nothing"

            code, out = await shadowctl(address, queue, "-f", str(path))
            assert code == 0, out
            assert f"{a}: created" in out and f"{b}: created" in out
            assert [await _running(dev_env, e) for e in (a, b)] == [True, True]

            again = await apply_fleet(client, load_fleet(path))
            assert [(c.entity_id, c.result) for c in again] == [(a, "unchanged"), (b, "unchanged")]
            assert client.sent == [], "the second apply sends nothing"

            path.write_text(fleet_yaml(a, b, b_watch_s=45))
            code, out = await shadowctl(address, queue, "-f", str(path), "--json")
            assert code == 0, out
            assert [(c["entity_id"], c["result"], c["spec_fields"]) for c in json.loads(out)] == [
                (a, "unchanged", []), (b, "updated spec", ["policy.watch_s"])
            ]  # fmt: skip
            spec_b = await dev_env.client.get_workflow_handle(f"entity/{b}").query("spec", result_type=EntitySpec)
            assert spec_b.policy.watch_s == 45 and spec_b.policy.mode == "forecast-only"
            kinds = {e: [ev.kind for ev in (await client.status(e)).events] for e in (a, b)}
            assert kinds[a].count("spec") == 0 and kinds[b].count("spec") == 1, kinds
            assert kinds[a].count("schedule") == kinds[b].count("schedule") == 0, kinds

            third = await apply_fleet(client, load_fleet(path))
            assert [c.result for c in third] == ["unchanged", "unchanged"] and client.sent == []
    finally:
        for entity in (a, b):
            if await _running(dev_env, entity):
                await dev_env.client.get_workflow_handle(f"entity/{entity}").terminate("test over")


async def _running(env: WorkflowEnvironment, entity: str) -> bool:
    try:
        desc = await env.client.get_workflow_handle(f"entity/{entity}").describe()
    except Exception:  # not found
        return False
    return desc.status == WorkflowExecutionStatus.RUNNING
