"""The per-entity forecast benchmark (benchmarks/entity_forecast.py) on one series and origin: the engine and the
seasonal-naive baseline are scored on the same case, and the profile accounts for the engine's fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.entity_forecast import BASELINE, BEFORE, ENGINE, naive_quantiles, run, table


def test_one_case_scores_both_and_profiles_every_fit(shared_trace: Path) -> None:
    result = run(shared_trace, entities=1, origins=1, hours=2, progress=lambda _m: None)
    assert result["forecasts"] == 1 and list(result["configs"]) == [ENGINE, BEFORE, BASELINE]
    for r in result["configs"].values():
        assert r["mae"] >= 0 and 0 <= r["coverage_80"] <= 1
    assert result["configs"][ENGINE]["cpu_s_per_forecast"] > result["configs"][BASELINE]["cpu_s_per_forecast"]
    candidates = result["candidates"]
    assert sum(c["won"] for c in candidates.values()) == 1
    assert abs(sum(c["share"] for c in candidates.values()) - 1) < 0.01
    assert all(c["fits"] >= 1 for c in candidates.values())
    printed = table(result)
    assert "1.000x" in printed.splitlines()[4]  # the baseline's own row


def test_the_baseline_is_the_same_hour_yesterday_with_the_week_s_day_to_day_spread() -> None:
    hours = pd.date_range("2026-03-01", periods=8 * 24, freq="h", tz="UTC")
    values = np.tile(np.arange(24.0), 8) + np.repeat(np.arange(8.0), 24)  # each day one higher
    q = naive_quantiles(pd.Series(values, index=hours), 2)
    assert list(q[0.5]) == [0 + 7 + 1, 1 + 7 + 1]  # yesterday's hours 0 and 1 (day 7) + the constant change of 1
    assert list(q[0.1]) == list(q[0.9]) == list(q[0.5])
