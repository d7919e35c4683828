"""Every committed history under tests/histories replays against today's workflow code (determinism check).

Record them with `SHADOWING_RECORD_HISTORIES=1` after an intended workflow change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.main import WORKFLOWS

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))
#: One history per scenario, recorded from the code as it is (one generation: no `_v1`, `_v2` ...).
SCENARIOS = {
    "entity_schedule_success", "entity_schedule_aborted", "entity_schedule_forecast_only",
    "entity_schedule_continued", "entity_schedule_bootstrap_cold",
    "shadow_migration_success", "shadow_migration_sync_failed", "shadow_migration_rolled_back",
    "shadow_migration_late",
}  # fmt: skip


def test_histories_are_committed() -> None:
    """Success and failure paths of both long workflows are committed, one history per scenario, nothing else."""
    assert {p.stem for p in HISTORIES} == SCENARIOS


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    """Replaying the history raises no non-determinism error."""
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
