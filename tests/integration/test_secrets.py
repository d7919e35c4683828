"""No secret is ever logged: the worker (at DEBUG, doing real work) and shadowctl (failing to connect) are run with
a codec key, an AWS secret key and a Temporal API key in their environment, and everything they print is searched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from shadowctl.demo import hosted_zone
from shadowing.client import ShadowingClient
from shadowing.codec import new_key
from shadowing.connect import connect
from shadowing.models import EntitySpec, EntityStatus
from shadowing.settings import Settings
from tests.integration.conftest import usage_points
from workers.aws import AwsClients

pytestmark = pytest.mark.slow


def _secrets() -> dict[str, str]:
    return {
        "SHADOWING_CODEC_KEY": new_key(),
        "AWS_SECRET_ACCESS_KEY": f"awssecret{uuid.uuid4().hex}",
        "AWS_ACCESS_KEY_ID": "AKIATESTINGONLY",
        "TEMPORAL_API_KEY": f"apikey{uuid.uuid4().hex}",
    }


def _leaked(output: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if name != "AWS_ACCESS_KEY_ID" and value in output]


def test_shadowctl_never_prints_secrets_even_when_it_fails() -> None:
    secrets = _secrets()
    env = {**os.environ, **secrets, "TEMPORAL_ADDRESS": "127.0.0.1:1", "SHADOWING_LOG_LEVEL": "DEBUG"}
    outputs = []
    for args in (["status", "shop"], ["id", "shop"], ["register", "--help"]):
        done = subprocess.run([sys.executable, "-m", "shadowctl.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        outputs.append(done.stdout + done.stderr)
    assert "shop" in outputs[0] or "127.0.0.1:1" in outputs[0], outputs[0]  # it said what failed
    assert _leaked("\n".join(outputs), secrets) == []


async def test_worker_logs_hold_no_secret(dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path) -> None:
    secrets = {k: v for k, v in _secrets().items() if k != "TEMPORAL_API_KEY"}  # the dev server speaks no TLS
    queue = f"sec-{uuid.uuid4()}"
    address = dev_env.client.service_client.config.target_host
    env = {**os.environ, **secrets, "TEMPORAL_ADDRESS": address, "AWS_ENDPOINT_URL": moto_url,
           "SHADOWING_TASK_QUEUE": queue, "SHADOWING_LOG_LEVEL": "DEBUG", "SHADOWING_LOG_FORMAT": "json",
           "SHADOWING_DATA_PLANE_REGISTRY": str(data_plane)}  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-m", "shadowctl.cli", "worker"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        settings = Settings(temporal_address=address, codec_key=secrets["SHADOWING_CODEC_KEY"], task_queue=queue)
        sdk = ShadowingClient(await connect(address, settings=settings), queue, settings.pseudonyms())
        aws = AwsClients(Settings(temporal_address=address, aws_endpoint_url=moto_url))
        entity = f"sec-{uuid.uuid4().hex[:6]}"
        zone = await asyncio.to_thread(hosted_zone, aws("route53", "us-east-1"), "secrets.shadowing.")
        await asyncio.to_thread(usage_points, aws, entity)
        spec = EntitySpec(entity_id=entity, home_region="us-east-1", instance_types=("m5.large",),
                          dns_name=f"{entity}.secrets.shadowing.", hosted_zone_id=zone)  # fmt: skip
        start = datetime.now(UTC) + timedelta(days=2)
        await sdk.register_entity(spec, {"slices": [{"start": start, "end": start + timedelta(hours=1),
                                                     "region": "eu-west-1"}]})  # fmt: skip
        for _ in range(300):  # the entity bootstraps: its initial fleet is provisioned and routed to
            status = await sdk.status(entity)
            if status.active_fleet is not None:
                break
            await asyncio.sleep(0.2)
        assert isinstance(status, EntityStatus) and status.active_fleet is not None
        await dev_env.client.get_workflow_handle(sdk.workflow_id(entity)).terminate()
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    assert "provision_fleet" in output or "activity" in output, "the worker logged its work at DEBUG"
    assert _leaked(output, secrets) == [], "a secret reached the worker's logs"
