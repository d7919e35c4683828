"""The global quantile engine, the panel loader and the backtest command on tiny synthetic panels."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.__main__ import main
from forecasting.data import UsageDataError
from forecasting.global_model import GlobalConfig, GlobalQuantileForecaster, _weighted_rows, choose, noise_weights
from forecasting.panel import load_panel, panel_from_frame

FAST = GlobalConfig(max_iter=40, train_days=14, calibration_days=3, anchor_step=12)
START = pd.Timestamp("2026-01-01T00:00Z")


def synthetic(n: int = 8, days: int = 30, seed: int = 1) -> pd.DataFrame:
    """Daily cycles of different levels with noise, in the shared usage format."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(START, periods=24 * days, freq="h")
    frames = []
    for i in range(n):
        level = 100 * (i + 1)
        cycle = level * (1 + 0.5 * np.sin(2 * np.pi * (hours.hour.to_numpy() - 6) / 24))
        values = np.maximum(cycle + rng.normal(0, level * 0.05, len(hours)), 0)
        frames.append(pd.DataFrame({"entity_id": f"s{i}", "timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "n_samples": 12, "cpu": values}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_quantiles_are_ordered_and_beat_the_naive_forecast() -> None:
    """On clean daily cycles the median tracks the cycle better than holding the last value."""
    panel = panel_from_frame(synthetic(), "cpu")
    origin = panel.position(START + pd.Timedelta(days=28))
    result = GlobalQuantileForecaster(FAST).forecast(panel.values, panel.index, origin)
    q = result.quantiles
    assert np.all(q[0.1] <= q[0.5]) and np.all(q[0.5] <= q[0.9])
    actual = panel.values[result.rows, origin : origin + 24]
    naive = np.repeat(panel.values[result.rows, origin - 1 : origin], 24, axis=1)
    assert np.mean(np.abs(q[0.5] - actual)) < 0.5 * np.mean(np.abs(naive - actual))
    assert not result.fallback.any()


def test_forecast_sees_only_the_past() -> None:
    """Changing every value after the origin changes nothing in the forecast."""
    frame = synthetic()
    panel = panel_from_frame(frame, "cpu")
    origin = panel.position(START + pd.Timedelta(days=28))
    first = GlobalQuantileForecaster(FAST).forecast(panel.values, panel.index, origin)
    altered = panel.values.copy()
    altered[:, origin:] *= 7
    second = GlobalQuantileForecaster(FAST).forecast(altered, panel.index, origin)
    for level in FAST.quantiles:
        np.testing.assert_array_equal(first.quantiles[level], second.quantiles[level])


def test_rolling_forecasts_use_the_newer_hours_and_never_the_future() -> None:
    """`forecast_rolling` fits once: from the fit's origin it answers what `forecast` answers; from a later origin
    it follows the hours between the two (a level shift there moves it) and ignores the hours after that origin."""
    panel = panel_from_frame(synthetic(), "cpu")
    origin = panel.position(START + pd.Timedelta(days=27))
    later = origin + 10
    engine = GlobalQuantileForecaster(FAST)
    at_fit, at_later = engine.forecast_rolling(panel.values, panel.index, origin, [origin, later])
    alone = GlobalQuantileForecaster(FAST).forecast(panel.values, panel.index, origin)
    for level in FAST.quantiles:
        np.testing.assert_array_equal(at_fit.quantiles[level], alone.quantiles[level])
    shifted = panel.values.copy()
    shifted[:, origin:later] *= 3  # a level shift after the fit, before the later origin
    _, moved = engine.forecast_rolling(shifted, panel.index, origin, [origin, later])
    assert np.mean(moved.quantiles[0.5]) > 1.05 * np.mean(at_later.quantiles[0.5])
    future = panel.values.copy()
    future[:, later:] *= 7  # hours after the later origin: unseen
    _, blind = engine.forecast_rolling(future, panel.index, origin, [origin, later])
    for level in FAST.quantiles:
        np.testing.assert_array_equal(blind.quantiles[level], at_later.quantiles[level])
    with pytest.raises(ValueError, match="before the fit's origin"):
        engine.forecast_rolling(panel.values, panel.index, origin, [origin - 1])


def test_short_history_uses_the_documented_fallback() -> None:
    """A series with less than a season (24 h) observed gets the flat last-value fallback, flagged, never zero."""
    frame = synthetic(n=3, days=30)
    cutoff = START + pd.Timedelta(days=28) - pd.Timedelta(hours=20)
    late = frame["entity_id"].eq("s0") & (pd.to_datetime(frame["timestamp"]) < cutoff)
    frame.loc[late, "cpu"] = np.nan
    panel = panel_from_frame(frame, "cpu")
    origin = panel.position(START + pd.Timedelta(days=28))
    result = GlobalQuantileForecaster(FAST).forecast(panel.values, panel.index, origin)
    s0 = list(result.rows).index(panel.entities.index("s0"))
    assert result.fallback[s0] and not result.fallback[[i for i in range(len(result.rows)) if i != s0]].any()
    assert np.all(result.quantiles[0.5][s0] > 0)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda f: pd.concat([f, f[f.entity_id == "s1"].head(1)]), "duplicate timestamp"),
        (lambda f: f.assign(cpu=np.where((f.entity_id == "s2") & (f.index % 50 == 0), -1.0, f.cpu)), "negative usage"),
        (lambda f: f.assign(cpu=np.where(f.entity_id == "s3", np.nan, f.cpu)), "no observed value"),
    ],
)
def test_bad_entities_are_left_out_with_a_reason_and_the_rest_go_on(mutate, problem: str) -> None:  # type: ignore[no-untyped-def]
    """One entity's bad rows name the entity and the problem; the batch keeps every other entity."""
    panel = panel_from_frame(mutate(synthetic(n=4, days=10)), "cpu")
    assert len(panel.problems) == 1 and problem in next(iter(panel.problems.values()))
    assert len(panel.entities) == 3


def test_unordered_rows_are_sorted() -> None:
    """Rows out of time order load the same as ordered ones (documented fallback)."""
    frame = synthetic(n=2, days=3)
    shuffled = frame.sample(frac=1, random_state=3)
    np.testing.assert_array_equal(panel_from_frame(frame, "cpu").values, panel_from_frame(shuffled, "cpu").values)


def test_file_errors_name_the_problem(tmp_path: Path) -> None:
    """Empty files and unknown columns are clear errors naming the file and the column."""
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UsageDataError, match="empty"):
        load_panel(empty, "cpu")
    good = tmp_path / "good.csv"
    synthetic(n=1, days=2).to_csv(good, index=False)
    with pytest.raises(UsageDataError, match="unknown column 'memory'"):
        load_panel(good, "memory")
    with pytest.raises(UsageDataError, match="no rows for entities"):
        load_panel(good, "cpu", ["nope"])


def test_backtest_command_writes_one_row_per_entity_origin_and_hour(tmp_path: Path) -> None:
    """`python -m forecasting backtest` writes entity_id,origin,timestamp,q0.1,q0.5,q0.9 rows."""
    data, out = tmp_path / "usage.csv.gz", tmp_path / "fc.csv"
    synthetic(n=3, days=30).to_csv(data, index=False)
    origins = "2026-01-28T00:00:00Z,2026-01-29T00:00:00Z"
    code = main(["backtest", "--input", str(data), "--target", "cpu", "--horizon", "24", "--origins", origins,
                 "--quantiles", "0.1,0.5,0.9", "--output", str(out), "--max-iter", "40"])  # fmt: skip
    assert code == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["entity_id", "origin", "timestamp", "q0.1", "q0.5", "q0.9"]
    assert len(frame) == 3 * 2 * 24
    assert (frame["q0.1"] <= frame["q0.9"]).all()


@pytest.mark.parametrize(
    "args",
    [["--origins", "2026-01-28T00:00:00"], ["--origins", "2026-01-28T00:30:00Z"], ["--quantiles", "0.1,1.5"]],
)
def test_backtest_command_rejects_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    """Origins without a time zone or off the hour, and quantiles outside (0, 1), exit with code 2."""
    data = tmp_path / "usage.csv"
    synthetic(n=1, days=2).to_csv(data, index=False)
    base = {"--origins": "2026-01-02T00:00:00Z", "--quantiles": "0.5"}
    base[args[0]] = args[1]
    argv = ["backtest", "--input", str(data), "--target", "cpu", "--output", str(tmp_path / "o.csv")]
    with pytest.raises(SystemExit) as err:
        main([*argv, *(x for kv in base.items() for x in kv)])
    assert err.value.code == 2


def repeating(days: int = 30, seed: int = 5) -> pd.DataFrame:
    """One series that repeats an irregular daily profile exactly, beside noisy cycles."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(START, periods=24 * days, freq="h")
    profile = rng.uniform(50, 500, 24)
    exact = pd.DataFrame({"entity_id": "exact", "timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "n_samples": 12,
                          "cpu": np.tile(profile, days)})  # fmt: skip
    return pd.concat([synthetic(n=6, days=days), exact], ignore_index=True)


def test_each_series_gets_the_candidate_that_was_best_on_its_own_past() -> None:
    """A series that repeats yesterday exactly is forecast by the seasonal naive candidate; others keep the GBM."""
    panel = panel_from_frame(repeating(), "cpu")
    origin = panel.position(START + pd.Timedelta(days=28))
    result = GlobalQuantileForecaster(FAST).forecast(panel.values, panel.index, origin)
    exact = list(result.rows).index(panel.entities.index("exact"))
    assert result.model[exact] == "seasonal_naive_24h"
    assert result.selection_mae["seasonal_naive_24h"][exact] == 0.0
    np.testing.assert_allclose(result.quantiles[0.5][exact], panel.values[exact, origin : origin + 24])
    assert np.all(result.quantiles[0.1] <= result.quantiles[0.5])
    assert set(result.model) <= {"global_gbm", "seasonal_naive_24h", "seasonal_naive_168h", "last_value"}
    unselected = GlobalQuantileForecaster(replace(FAST, select=False)).forecast(panel.values, panel.index, origin)
    assert set(unselected.model) == {"global_gbm"}


def test_choice_needs_a_margin_and_keeps_the_global_model_when_unscored() -> None:
    """A candidate replaces the global model only when clearly better; a series never scored keeps the global model."""
    mae = {"global_gbm": np.array([1.0, 1.0, np.nan, 1.0]), "last_value": np.array([0.95, 0.5, 0.1, np.nan]),
           "seasonal_naive_24h": np.array([2.0, 0.7, 0.2, np.nan])}  # fmt: skip
    assert list(choose(mae, margin=0.1)) == ["global_gbm", "last_value", "global_gbm", "global_gbm"]
    assert list(choose(mae, margin=0.0)) == ["last_value", "last_value", "global_gbm", "global_gbm"]


def test_evaluate_prints_the_engine_beside_each_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m forecasting evaluate` scores the engine and the three baselines on the held-out tail."""
    data = tmp_path / "usage.csv"
    synthetic(n=4, days=30).to_csv(data, index=False)
    assert main(["evaluate", "--input", str(data), "--target", "cpu", "--holdout-days", "2", "--max-iter", "40"]) == 0
    out = capsys.readouterr().out
    assert "2 daily origins" in out and "engine's choice" in out
    for method in ("engine", "seasonal_naive", "naive", "holt_winters"):
        assert f"\n{method} " in out
    engine_row = next(line for line in out.splitlines() if line.startswith("engine "))
    assert float(engine_row.split()[1]) < 1.0, "on clean daily cycles the engine beats seasonal naive"


@pytest.mark.parametrize("step", [24, 6])
def test_training_windows_end_before_the_origin_and_calibration_is_unseen(step: int) -> None:
    """Every window's targets precede the origin; the model that is conformalised never saw a calibration target."""
    cfg = replace(FAST, anchor_step=step)
    origin = 24 * 28
    fit, cal = GlobalQuantileForecaster(cfg)._anchors(origin)
    assert fit and cal and max(cal) + cfg.horizon <= origin
    assert max(fit) + cfg.horizon <= min(cal)
    assert min(fit) >= 168 and (origin - min(cal)) <= 24 * cfg.calibration_days + cfg.horizon
    assert all((origin - a) % step == 0 for a in fit + cal)


def test_median_bagging_averages_models_fitted_on_different_subsamples() -> None:
    """With the training rows subsampled, each bagged median model sees other rows: the bagged median differs from
    one model's, is reproducible, and leaves the other quantiles' models alone."""
    panel = panel_from_frame(synthetic(), "cpu")
    origin = panel.position(START + pd.Timedelta(days=28))
    small = dataclasses.replace(FAST, max_train_rows=2_000, median_bag=1)
    one = GlobalQuantileForecaster(small).forecast(panel.values, panel.index, origin)
    bagged = GlobalQuantileForecaster(dataclasses.replace(small, median_bag=3))
    first, again = (bagged.forecast(panel.values, panel.index, origin) for _ in range(2))
    assert not np.allclose(first.candidates["global_gbm"], one.candidates["global_gbm"])
    assert np.array_equal(first.quantiles[0.5], again.quantiles[0.5]), "seeded: the same past, the same forecast"
    assert np.all(first.quantiles[0.1] <= first.quantiles[0.5]) and np.all(first.quantiles[0.5] <= first.quantiles[0.9])


def test_noise_weights_favour_steady_series_and_are_floored() -> None:
    hours = 24 * 10
    t = np.arange(hours)
    daily = 10 + 5 * np.sin(2 * np.pi * t / 24)
    noisy = daily + np.random.default_rng(1).normal(0, 4, hours)
    flat = np.full(hours, 7.0)  # no day-on-day change at all: the floor bounds its weight
    filled = np.stack([daily, noisy, flat])
    anchors = [24 * 8, 24 * 9]
    scales = np.stack([filled[:, a - 168 : a].mean(axis=1) + 1 for a in anchors])
    w = noise_weights(filled, anchors, scales, floor=0.05)
    assert w.shape == (2, 3)
    assert np.isclose(w.mean(), 1.0)
    assert np.all(w[:, 0] > 3 * w[:, 1])  # the steady cycle outweighs the noisy copy of it
    assert np.allclose(w[:, 2], w[:, 0])  # a steady cycle and a flat line both sit at the floor


def test_weighted_rows_draw_heavy_rows_more_often_and_keep_all_under_the_limit() -> None:
    weights = np.r_[np.full(100, 10.0), np.ones(900)]
    keep = _weighted_rows(weights, 200, seed=0)
    assert len(keep) == 200 and len(np.unique(keep)) == 200 and np.all(np.diff(keep) > 0)
    assert np.sum(keep < 100) > 3 * 0.1 * 200  # 10 % of the rows, well over 30 % of the draw
    assert np.array_equal(keep, _weighted_rows(weights, 200, seed=0))  # seeded: the same past, the same rows
    assert np.array_equal(_weighted_rows(weights, 1000, seed=0), np.arange(1000))
