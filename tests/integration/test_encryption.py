"""Encrypted payloads on a real dev server: the SQLite database holds no plaintext entity id (workflow ids and
search attributes are pseudonyms) and nothing else the codec protects."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from shadowing import search
from shadowing.client import ShadowingClient
from shadowing.codec import codec_from, data_converter, new_key, plaintext_ids
from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import EntityStatus
from tests.conftest import BIN
from tests.fakes import FakeCloud
from tests.workflows.helpers import slot, spec, worker

pytestmark = pytest.mark.slow


async def _run_entity(client, marker: str, ids: Pseudonyms = PLAIN) -> None:  # type: ignore[no-untyped-def]
    """Registers an entity whose id, DNS name and zone carry `marker`, lets it bootstrap, then stops it."""
    cloud = FakeCloud()
    w, queue = worker(client, cloud)
    entity = spec(marker).model_copy(
        update={"dns_name": f"{marker}.example.internal", "hosted_zone_id": f"Z{marker.upper()}"}
    )
    async with w:
        sdk = ShadowingClient(client, queue, ids)
        at = datetime.now(UTC)
        await sdk.register_entity(entity, {"slices": [slot(at, timedelta(hours=5), "eu-west-1")]})
        handle = client.get_workflow_handle(sdk.workflow_id(entity.entity_id))
        for _ in range(200):
            status = await handle.query("status", result_type=EntityStatus)
            if status.active_fleet is not None:
                break
            await asyncio.sleep(0.05)
        assert status.active_fleet is not None, "the entity bootstrapped"
        await handle.terminate()


async def test_database_holds_no_plaintext_of_encrypted_payloads(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    codec = codec_from(new_key(), "k1", None)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), data_converter=data_converter(codec),
        dev_server_database_filename=str(db), ui=False, dev_server_extra_args=search.dev_server_args(),
    )  # fmt: skip
    try:
        secret, plain = f"secret{uuid.uuid4().hex[:8]}", f"plain{uuid.uuid4().hex[:8]}"
        assert codec is not None
        await _run_entity(env.client, secret, Pseudonyms(codec.id_secret))
        clear = await Client.connect(env.client.service_client.config.target_host, data_converter=data_converter(None))
        await _run_entity(clear, plain)  # the control: the same run without the codec
    finally:
        await env.shutdown()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("temporal.db*"))
    assert plaintext_ids(blob, [plain]) == [plain], "the check can see plaintext (control)"
    assert plaintext_ids(blob, [secret]) == [], "neither payloads, ids nor search attributes hold the entity id"
