"""Builders shared by the workflow tests."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.coordination import CoordinationActivities
from shadowing.models import CoordinatorLimits, EntityPolicy, EntitySpec, FleetRef, MigrationInput, ScheduledSlice
from tests.fakes import FakeCloud
from workers.main import WORKFLOWS


def spec(entity_id: str = "shop", **policy: float) -> EntitySpec:
    return EntitySpec(
        entity_id=entity_id, home_region="us-east-1", instance_types=("m5.large", "c5.xlarge"), initial_instances=2,
        dns_name=f"{entity_id}.example.internal", hosted_zone_id="Z1", dynamodb_tables=("sessions",),
        policy=EntityPolicy(lead_time_s=600, watch_s=60, **{"two_way_interval_s": 30.0, **policy}),
    )  # fmt: skip


def slot(
    now: datetime, starts_in: timedelta, region: str = "eu-west-1", length: timedelta = timedelta(hours=1)
) -> ScheduledSlice:
    start = (now + starts_in).replace(microsecond=0)
    return ScheduledSlice(start=start, end=start + length, region=region)


def old_fleet(entity_id: str = "shop") -> FleetRef:
    return FleetRef(
        fleet_id=f"{entity_id}:initial", entity_id=entity_id, region="us-east-1", instance_type="m5.large",
        instance_ids=("i-old-0", "i-old-1"), addresses=("10.1.0.1", "10.1.0.2"), role="active",
    )  # fmt: skip


def migration(now: datetime, mode: str = "auto", **kw: object) -> MigrationInput:
    return MigrationInput(
        spec=spec(), time_slice=slot(now, timedelta(minutes=10)), instance_type="m5.large", quantity=3,
        source=old_fleet(), mode=mode, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def worker(
    client: Client, cloud: FakeCloud, limits: CoordinatorLimits | None = None, **options: object
) -> tuple[Worker, str]:
    """A worker with the fake cloud and a FleetCoordinator of its own (limits default to the settings')."""
    queue = f"test-{uuid.uuid4()}"
    coordination = CoordinationActivities(client, limits or CoordinatorLimits(), f"coordinator-{queue}")
    w = Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=[*cloud.activities(), coordination.request_lease],
        activity_executor=ThreadPoolExecutor(4), **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return w, queue
