"""The candidates benchmark (benchmarks/candidates.py) and the event days it adds to the second evaluation set."""

from __future__ import annotations

import numpy as np

from benchmarks.candidates import AutoOrderARIMA, candidates, cases, score, score_drivers
from benchmarks.stress_set import COLUMN, event_days, generate
from forecasting.engine import _to_ts
from forecasting.panel import panel_from_frame


def test_event_days_are_weekdays_of_the_last_fortnight_and_lift_only_those_days() -> None:
    days = event_days(2, events=4)
    assert len(days) == 4 and days == event_days(2, events=4)
    assert all(d.weekday() < 5 and d.isoformat() >= "2024-03-12" for d in days)
    plain, marked = generate(2, entities=30), generate(2, entities=30, events=4)
    changed = ~np.isclose(plain[COLUMN].fillna(-1), marked[COLUMN].fillna(-1))
    stamps = marked["timestamp"].str[:10][changed]
    assert changed.any() and set(stamps) <= {d.isoformat() for d in days}
    assert (marked[COLUMN][changed] >= plain[COLUMN][changed]).all()  # a surge, never a dip
    assert event_days(2, events=0) == frozenset()


def test_every_candidate_is_scored_on_the_same_cases_with_event_days_apart() -> None:
    days = event_days(2, events=4)
    panel = panel_from_frame(generate(2, entities=3, events=4), COLUMN)
    todo = cases(panel, entities=1, every=14, hours=24, also=frozenset(sorted(days)[:1]))
    assert len(todo) == 2  # the last day and the first event day
    result = score(todo, 24, days, progress=lambda _m: None)
    assert set(result) == set(candidates())
    for name, row in result.items():
        assert row["forecasts"] + row["failed"] + row["too_short"] == 2 and row["forecasts"] >= 1, name
        assert 0 <= row["coverage_80"] <= 1 and row["relative_mae_seasonal_naive"] > 0
        assert ("event_days_mae_vs_seasonal_naive" in row) == (row["forecasts"] == 2), name  # the event day's case


def test_auto_arima_chooses_an_order_by_aic() -> None:
    import pandas as pd

    t = np.arange(24 * 6)
    rng = np.random.default_rng(0)
    ar = np.zeros(len(t))
    for i in range(1, len(t)):
        ar[i] = 0.8 * ar[i - 1] + rng.normal()
    series = pd.Series(10 + ar, index=pd.date_range("2024-01-01", periods=len(t), freq="h", tz="UTC"))
    model = AutoOrderARIMA().fit(_to_ts(series))
    assert model.order is not None and model.order[0] >= 1  # an AR(1) series: an AR term is chosen
    assert len(model.predict(5).values()) == 5


def test_the_simulated_drivers_case_rewards_the_leading_driver_and_not_an_unrelated_one() -> None:
    rows = score_drivers(every=14, hours=24, progress=lambda _m: None)
    none, lead, other = (rows[k]["relative_mae_seasonal_naive"] for k in rows)
    assert all(rows[k]["forecasts"] == 20 and rows[k]["failed"] == 0 for k in rows)
    assert lead < 0.9 * none  # the load follows it: known 36 h after its day, it still says where the level goes
    assert other > 0.95 * none  # independent draws carry nothing to learn
