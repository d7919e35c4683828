"""Waiting on a condition with a deadline, decided on state (the same answer under any activation order).

When a timer and a signal land in the same workflow task, which of them a bare `wait_condition(..., timeout=)`
reports depends on the SDK's activation job order: signals first (temporalio 1.35's default) answers "condition",
the single-batch order (internal flag 2, to become the default) answers "timed out" (tests/workflows/test_waiting.py
shows both). The fault matrix once saw a replacement worker's replay take the other branch than the original run of
a migration waiting for its slice (a non-determinism error, the migration stuck). Here the answer is read from the
state once both have been applied, so it is the same under either order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

from temporalio import workflow

#: Workflows that waited before this patch keep the old answer (whichever of timer and condition resolved first).
DECIDE_ON_STATE = "wait-decides-on-state"
#: Workflows from this patch on settle every wake-up with one short timer before deciding (`wait_until`).
SETTLE_THEN_DECIDE = "wait-settles-then-decides"
SETTLE_S = 0.001


async def condition_within(condition: Callable[[], bool], timeout_s: float) -> bool:
    """True when `condition` holds by the end of the wait (up to `timeout_s`), False when the time ran out."""
    try:
        await workflow.wait_condition(condition, timeout=timeout_s)
        return True
    except TimeoutError:
        pass
    await asyncio.sleep(0)  # handlers delivered with the timer (in the same workflow task) run first
    if not condition():
        return False
    return workflow.patched(DECIDE_ON_STATE)


async def wait_until(moment: datetime, condition: Callable[[], bool]) -> bool:
    """Waits until `moment` (True) unless `condition` turns true first (False), with the same commands whatever
    woke it.

    After a worker crash, a replacement worker may see the deadline's timer and a signal in two activations while
    a later replay of the same history sees them in one (the fault matrix's stuck migration:
    `ShadowMigrationWorkflow._wait_for_go`). Any command issued between the two then differs. Here every wake-up,
    deadline or condition, issues the same one (a `SETTLE_S` timer) and the answer is read from the state after it,
    when every event before it has been applied in both runs. A condition that held and no longer does, before the
    moment, waits again.
    """
    while True:
        left = (moment - workflow.now()).total_seconds()
        if left <= 0:
            return True
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(condition, timeout=left)
        await workflow.sleep(SETTLE_S)
        if condition():
            return False
        if workflow.now() >= moment:
            return True


__all__ = ["DECIDE_ON_STATE", "SETTLE_THEN_DECIDE", "condition_within", "wait_until"]
