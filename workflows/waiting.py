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
from collections.abc import Callable

from temporalio import workflow

#: Workflows that waited before this patch keep the old answer (whichever of timer and condition resolved first).
DECIDE_ON_STATE = "wait-decides-on-state"


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


__all__ = ["DECIDE_ON_STATE", "condition_within"]
