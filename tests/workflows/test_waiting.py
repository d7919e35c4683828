"""`wait_until`: a deadline and the condition landing in one workflow task decide on state, every time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import temporalio.worker._workflow as sdk_worker
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker
from temporalio.worker._workflow_instance import _WorkflowLogicFlag

from workflows.waiting import SETTLE_S, wait_until


@workflow.defn
class Waiter:
    """Waits for `proceed` until a deadline with `wait_until`, then does what each answer asks (a different command
    each: a timer of 2 s or of 3 s), so a replay that took the other branch would fail."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, timeout_s: float) -> bool:
        reached = await wait_until(workflow.now() + timedelta(seconds=timeout_s), lambda: self.go)
        await workflow.sleep(2 if reached else 3)
        return reached


def _worker(env: WorkflowEnvironment, queue: str) -> Worker:
    return Worker(
        env.client, task_queue=queue, workflows=[Waiter], workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=0,
    )  # fmt: skip


async def _timer_started(handle: WorkflowHandle) -> None:
    for _ in range(200):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the wait's timer never started")


@pytest.mark.parametrize("order", ["signals-first", "single-batch"])
async def test_a_deadline_and_the_condition_in_one_task_count_as_the_condition(
    time_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """No worker polls while the timer fires and the signal arrives, so the next worker gets both in one activation
    (as after a worker crash). The condition holds when the wait ends, so the answer is "condition" (False) whichever
    of the two the SDK resolves first, and replaying the history gives the same answer. temporalio 1.35 applies
    signals before timers by default; its single-batch order (internal flag 2, to become the default: a TODO in the
    SDK) resolves the timer first, where a bare `wait_condition(timeout=)` answers "timed out". The flag is private
    SDK state: if it moves, this test fails loudly rather than silently testing one order."""
    if order == "single-batch":
        flags = {*sdk_worker._DEFAULT_ENABLED_WORKFLOW_LOGIC_FLAGS}
        flags.add(_WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH)
        monkeypatch.setattr(sdk_worker, "_DEFAULT_ENABLED_WORKFLOW_LOGIC_FLAGS", frozenset(flags))
    queue = f"waiting-{uuid.uuid4()}"
    async with _worker(time_env, queue):
        handle = await time_env.client.start_workflow(Waiter.run, 1.0, id=f"waiter-{uuid.uuid4()}", task_queue=queue)
        await _timer_started(handle)
    await asyncio.sleep(2)  # the timer fires with nobody polling (time skips only while a result is awaited)
    await handle.signal(Waiter.proceed)
    async with _worker(time_env, queue):
        assert await handle.result() is False
    history = await handle.fetch_history()
    kinds = [e.event_type for e in history.events]
    fired = kinds.index(EventType.EVENT_TYPE_TIMER_FIRED)
    signalled = kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED not in kinds[min(fired, signalled) : max(fired, signalled)]
    assert _timers(history) == pytest.approx([1.0, SETTLE_S, 3.0])
    replay = await Replayer(workflows=[Waiter], workflow_runner=UnsandboxedWorkflowRunner()).replay_workflow(history)
    assert replay.replay_failure is None


def _timers(history: object) -> list[float]:
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        for e in history.events  # type: ignore[attr-defined]
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


async def test_wait_until_settles_every_wake_up_with_the_same_timer_then_decides_on_state(
    time_env: WorkflowEnvironment,
) -> None:
    """Deadline alone: True; the condition first: False; the deadline and the condition delivered together to a
    replacement worker (as after a crash): False (the condition holds). Every run issues the settle timer right
    after waking, whatever woke it, and every history replays."""
    queue = f"waiting-{uuid.uuid4()}"
    replayer = Replayer(workflows=[Waiter], workflow_runner=UnsandboxedWorkflowRunner())
    worker = lambda: Worker(  # noqa: E731
        time_env.client, task_queue=queue, workflows=[Waiter], workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=0,
    )  # fmt: skip
    async with worker():
        alone = await time_env.client.start_workflow(Waiter.run, 5.0, id=f"dw-{uuid.uuid4()}", task_queue=queue)
        assert await alone.result() is True
        early = await time_env.client.start_workflow(Waiter.run, 60.0, id=f"dw-{uuid.uuid4()}",
                                                     task_queue=queue)  # fmt: skip
        await _timer_started(early)
        await early.signal(Waiter.proceed)
        assert await early.result() is False
        crashed = await time_env.client.start_workflow(Waiter.run, 1.0, id=f"dw-{uuid.uuid4()}",
                                                       task_queue=queue)  # fmt: skip
        await _timer_started(crashed)
    await asyncio.sleep(2)  # the deadline passes with nobody polling, then the signal lands
    await crashed.signal(Waiter.proceed)
    async with worker():
        assert await crashed.result() is False
    for handle, timers in ((alone, [5.0, SETTLE_S, 2.0]), (early, [60.0, SETTLE_S, 3.0]),
                           (crashed, [1.0, SETTLE_S, 3.0])):  # fmt: skip
        history = await handle.fetch_history()
        assert _timers(history) == pytest.approx(timers)
        assert (await replayer.replay_workflow(history)).replay_failure is None
