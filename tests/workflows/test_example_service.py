"""examples/capacity_service.py, the README's client-SDK example, against a running EntitySchedule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from shadowing.client import ShadowingClient
from shadowing.errors import UnknownEntity
from tests.fakes import FakeCloud
from tests.workflows.helpers import worker
from tests.workflows.test_entity import HOUR, _wait, register

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "capacity_service.py"


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("capacity_service", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_capacity_report_names_the_next_slice_and_its_forecast(time_env: WorkflowEnvironment) -> None:
    cloud = FakeCloud(cpu_mhz=10_000)
    w, queue = worker(time_env.client, cloud)
    async with w:
        handle, reg = await register(time_env, queue, ["eu-west-1", "us-east-1"], 5 * HOUR)
        await _wait(handle, lambda s: s.active_fleet is not None)
        cloud.specs[reg.spec.entity_id] = reg.spec
        client = ShadowingClient(time_env.client, queue)
        report = await _example().capacity_report(client, reg.spec.entity_id)
        with pytest.raises(UnknownEntity):
            await _example().capacity_report(client, "no-such-entity")
        await handle.terminate()
    assert report["entity_id"] == reg.spec.entity_id and report["serving"] == reg.spec.home_region
    nxt = report["next_slice"]
    assert nxt["key"] == reg.schedule.slices[0].key and nxt["region"] == "eu-west-1"
    assert nxt["cpu_mhz_peak"] > 0 and 0 <= nxt["readiness"] <= 1
