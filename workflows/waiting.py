"""The one way these workflows wait for a condition with a deadline: settle, then decide on state.

When a timer and a signal land in the same workflow task, which of them a bare `wait_condition(..., timeout=)`
reports depends on the SDK's activation job order: signals first (temporalio 1.35's default) answers "condition",
the single-batch order (internal flag 2, to become the default) answers "timed out" (tests/workflows/test_waiting.py
runs both). After a worker crash, a replacement worker may also see the two in two activations where a later replay
sees them in one: the fault matrix once saw a migration waiting for its slice take another branch on replay (a
non-determinism error, the migration stuck). `wait_until` issues the same command whatever woke it and reads the
answer from the state afterwards, so every order gives the same history.

Waiting for time alone is `workflow.sleep`; for a condition alone (no timer, nothing to race) `workflow.wait_condition`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

from temporalio import workflow

SETTLE_S = 0.001


async def wait_until(moment: datetime, condition: Callable[[], bool]) -> bool:
    """Waits until `moment` (True) unless `condition` turns true first (False), with the same commands whatever
    woke it.

    Every wake-up, deadline or condition, issues the same one command (a `SETTLE_S` timer) and the answer is read
    from the state after it, when every event before it has been applied in every run. A condition that held and no
    longer does, before the moment, waits again.
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


__all__ = ["SETTLE_S", "wait_until"]
