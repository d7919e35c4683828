"""The fault matrix (benchmarks/fault_matrix.py) in CI: every migration step under every fault completes or
compensates fully, judged from AWS's own state; the matrix is printed (run pytest with -s to see it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.fault_matrix import SOURCE, STEPS, TARGET, Matrix, Row, cases, misresolved, report
from devstack.dataplane.loadgen import Sample


@pytest.mark.slow
async def test_every_step_under_every_fault_leaves_no_leak_and_no_duplicate(
    moto_url: str, data_plane: Path, tmp_path: Path
) -> None:
    only = [s for s in os.environ.get("SHADOWING_FAULT_STEPS", "").split(",") if s] or list(STEPS)
    matrix = Matrix(tmp_path, moto_url, data_plane)
    try:
        rows = await matrix.run(only)
    finally:
        matrix.stop_server()
    printed = report(rows)
    print("\n" + printed)
    (tmp_path / "fault-matrix.txt").write_text(printed)
    assert sum(len(r.leaks) for r in rows) == 0, printed
    assert sum(r.duplicates for r in rows) == 0, printed
    assert sum(r.lost for r in rows) == 0, printed
    assert all(r.passed for r in rows), printed


def test_two_way_window_runs_aws_faults_crashes_restarts_and_a_conflict_burst() -> None:
    """The two-way step's cases: throttling, an error, a worker SIGKILL, a server restart and a conflict burst."""
    assert sorted(c.fault for c in cases(["two-way"])) == sorted(
        ["throttle", "error", "worker-sigkill", "server-restart", "conflict-burst"]
    )


def _write(key: str, version: tuple[int, int, str], ok: bool = True) -> Sample:
    return Sample(phase="watching", latency_ms=1.0, ok=ok, address=version[2], kind="write", key=key, version=version)


def _item(key: str, v: int, ts: int, r: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": key}, "_v": {"N": str(v)}, "_ts": {"N": str(ts)}, "_r": {"S": r}}


def test_misresolved_names_each_region_not_holding_the_greatest_acknowledged_version() -> None:
    """A region holding the losing side of a tie (equal _v and _ts, the smaller _r), or missing a key, is named."""
    samples = [_write("b-0", (1, 100, SOURCE)), _write("b-0", (1, 100, TARGET)), _write("w-0", (2, 5, TARGET)),
               _write("w-0", (3, 9, SOURCE), ok=False)]  # fmt: skip
    winner = max((1, 100, SOURCE), (1, 100, TARGET))
    good = {"b-0": _item("b-0", *winner), "w-0": _item("w-0", 2, 5, TARGET)}
    loser = {"b-0": _item("b-0", *min((1, 100, SOURCE), (1, 100, TARGET)))}
    assert misresolved(samples, {SOURCE: good, TARGET: good}) == []
    assert misresolved(samples, {SOURCE: good, TARGET: loser}) == [f"b-0 ({TARGET})", f"w-0 ({TARGET})"]


def test_a_conflict_burst_passes_only_when_the_workflow_decided_each_key_and_nothing_was_lost() -> None:
    """The burst row needs a conflict per key burst-written; any row fails with a lost write or a key not at the
    greatest version."""
    clean = Row("two-way", "conflict-burst", "e", outcome="migrated", fired=9, conflicts=8, data_equal=True,
                healthy=True)  # fmt: skip
    assert not clean.passed
    clean.conflicts = 9
    assert clean.passed
    clean.lost = 1
    assert not clean.passed
    other = Row("two-way", "error", "e", outcome="migrated", fired=2, data_equal=True, healthy=True, misresolved=1)
    assert not other.passed
