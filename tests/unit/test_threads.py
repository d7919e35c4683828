"""The per-entity engine runs BLAS on one thread (forecasting/threads.py): its matrices are tiny and a spinning
thread team cost ten times the work on busy cores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CODE = """
import pandas as pd
from threadpoolctl import threadpool_info
from forecasting import engine
blas = lambda: sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
before = blas()
engine._forecast_series = lambda *a: print("during", blas())
engine.forecast_series(pd.Series(dtype=float), pd.Timestamp("2026-01-01T00:00Z"), 1)
print("before", before, "after", blas())
"""


def test_a_forecast_sets_one_blas_thread_for_the_process() -> None:
    """In a fresh process with two BLAS threads: one during the first forecast, and it stays one."""
    env = {"OPENBLAS_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _CODE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "during [1]" in done.stdout and "before [2] after [1]" in done.stdout, done.stdout
