"""The fault matrix (benchmarks/fault_matrix.py) in CI: every migration step under every fault completes or
compensates fully, judged from AWS's own state; the matrix is printed (run pytest with -s to see it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.fault_matrix import STEPS, Matrix, report

pytestmark = pytest.mark.slow


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
    assert all(r.passed for r in rows), printed
