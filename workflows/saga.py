"""Compensations for a workflow saga: registered before each step, run in reverse, idempotent, never skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio import workflow


@dataclass
class Saga:
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def add(self, name: str, undo: Callable[[], Awaitable[object]]) -> None:
        self.steps.append((name, undo))

    def commit(self) -> None:
        """The saga succeeded: nothing is left to undo."""
        self.steps.clear()

    async def compensate(self) -> list[str]:
        """Runs every registered compensation, newest first; a failing one is logged and the rest still run."""
        while self.steps:
            name, undo = self.steps.pop()
            try:
                await undo()
                self.ran.append(name)
            except Exception as exc:  # keep undoing: one stuck compensation must not strand the others
                workflow.logger.error("compensation %s failed: %s", name, exc)
                self.ran.append(f"{name} (failed: {exc})")
        return self.ran
