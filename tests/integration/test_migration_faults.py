"""Bad input reaching a real migration (real activities, moto server, local data plane): a clear error, the saga
compensates, and nothing is left running or routed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities import TAG_FLEET, TAG_MANAGED
from activities.ownership import MANAGED
from shadowing.models import EntityPolicy, EntitySpec, MigrationInput, MigrationResult, ScheduledSlice
from shadowing.settings import Settings
from workers.aws import AwsClients
from workers.main import build_worker

pytestmark = pytest.mark.slow
ZONE = "faults.shadowing."

CASES = [
    # (spec changes, policy changes, words the error must contain)
    ({"dynamodb_tables": ("no-such-table",)}, {}, ["no-such-table", "does not exist"]),
    ({"image_id": "ami-00000000"}, {}, ["ami-00000000"]),
    ({}, {"spot": True, "spot_max_price_ratio": 0.01}, ["spot max price", "below"]),
    ({"hosted_zone_id": "ZMISSING"}, {}, ["hosted zone ZMISSING does not exist"]),
]


@pytest.mark.parametrize(("spec_update", "policy_update", "words"), CASES, ids=["table", "ami", "spot", "zone"])
async def test_bad_input_fails_clearly_and_leaves_nothing(
    dev_env: WorkflowEnvironment, moto_url: str, data_plane: Path, spec_update: dict, policy_update: dict,
    words: list[str],
) -> None:  # fmt: skip
    settings = Settings(
        temporal_address="x", aws_endpoint_url=moto_url, task_queue=f"f-{uuid.uuid4()}", data_plane_registry=data_plane
    )
    aws = AwsClients(settings)
    r53 = aws("route53", "us-east-1")
    zone = r53.create_hosted_zone(Name=ZONE, CallerReference=str(uuid.uuid4()))["HostedZone"]["Id"].split("/")[-1]
    managed = [{"Key": TAG_MANAGED, "Value": MANAGED}]  # handed to the product: routing refuses an untagged zone
    r53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone, AddTags=managed)
    entity = f"f-{uuid.uuid4().hex[:6]}"
    policy = EntityPolicy(watch_s=0, record_ttl_s=1, warmup_timeout_s=60, **policy_update)
    spec = EntitySpec(
        entity_id=entity, home_region="us-east-1", instance_types=("m5.large",), dns_name=f"{entity}.{ZONE}",
        hosted_zone_id=zone, policy=policy,
    ).model_copy(update=spec_update)  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    req = MigrationInput(
        spec=spec, time_slice=ScheduledSlice(start=now, end=now + timedelta(hours=1), region="eu-west-1"),
        instance_type="m5.large", quantity=2,
    )  # fmt: skip
    async with build_worker(dev_env.client, settings, aws):
        handle = await dev_env.client.start_workflow(
            "ShadowMigration", req, id=f"migration/{entity}", task_queue=settings.task_queue,
            result_type=MigrationResult,
        )  # fmt: skip
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    message = str(failure.value.cause)
    assert all(w in message for w in words), message
    filters = [{"Name": f"tag:{TAG_FLEET}", "Values": [f"{entity}:*"]},
               {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]  # fmt: skip
    left = aws("ec2", "eu-west-1").describe_instances(Filters=filters)["Reservations"]
    assert left == [], "shadows left running"
    records = r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert not [r for r in records if r["Name"].startswith(entity)], "a record was left behind"
