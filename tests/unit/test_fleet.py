"""The fleet model and its serving path (forecasting/fleet.py), on small synthetic panels so that a fit takes
seconds: the artifact, the per-entity choice of engine with its reason, per-entity calibration, the publish rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from forecasting import fleet
from forecasting.engine import SeriesForecast

START = pd.Timestamp("2024-03-04T00:00:00Z")


def panel(
    n: int = 24, days: int = 20, seed: int = 0, noise: np.ndarray | None = None
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Daily-periodic series at different levels and phases, multiplicative noise (per-entity scale if given)."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    t = np.arange(hours)
    rows = []
    for i in range(n):
        base = 10 + 5 * i
        sigma = 0.1 if noise is None else noise[i]
        daily = 1 + 0.6 * np.sin(2 * math.pi * (t + 3 * i) / 24)
        rows.append(base * daily * np.exp(rng.normal(0, sigma, hours)))
    return np.array(rows), pd.date_range(START, periods=hours, freq="h")


@pytest.fixture(scope="module")
def trained() -> tuple[fleet.TrainingResult, np.ndarray, pd.DatetimeIndex]:
    noise = np.where(np.arange(24) % 2 == 0, 0.05, 0.4)  # calm and noisy entities alternate
    values, index = panel(noise=noise)
    end = 16 * 24
    result = fleet.train_fleet(values, index, [f"e{i}" for i in range(24)], end=end,
                               config=fleet.fleet_config(max_iter=80, median_bag=1), version="t1")  # fmt: skip
    return result, values, index


def test_the_artifact_round_trips_and_refuses_what_was_not_published(trained) -> None:
    result, _, _ = trained
    model = fleet.FleetModel.from_bytes(result.artifact, fleet.digest(result.artifact))
    assert model.metadata["version"] == "t1" and model.metadata["entities"] == 24
    assert model.metadata["validation"]["origins"] >= 1 and len(model.metadata["data_hash"]) == 64
    with pytest.raises(fleet.FleetModelError, match="SHA-256"):
        fleet.FleetModel.from_bytes(result.artifact, "0" * 64)
    with pytest.raises(fleet.FleetModelError, match="not a Shadowing fleet model"):
        fleet.FleetModel.from_bytes(b"garbage")
    with pytest.raises(fleet.FleetModelError, match="format"):
        fleet.FleetModel.from_bytes(result.artifact.replace(b"\n1\n", b"\n99\n", 1))


def test_the_fleet_model_beats_seasonal_naive_on_held_out_days(trained) -> None:
    result, _, _ = trained
    assert result.validation.relative_mae["seasonal_naive"] < 1.0
    ok, why = fleet.publish_decision(result.validation.as_dict(), None)
    assert ok and "seasonal naive" in why


def test_serving_says_which_engine_answered_and_why(trained) -> None:
    result, values, index = trained
    at = 17 * 24
    history = pd.Series(values[3, :at], index=index[:at])
    fc = fleet.Forecaster(result.model).forecast(history, index[at + 2], 8, (0.1, 0.5, 0.9))
    assert fc.engine == "fleet" and fc.model.startswith("fleet:") and "t1" in fc.reason
    assert list(fc.quantiles) == [0.1, 0.5, 0.9] and len(fc.quantiles[0.5]) == 8
    assert np.all(fc.quantiles[0.1] <= fc.quantiles[0.5]) and np.all(fc.quantiles[0.5] <= fc.quantiles[0.9])

    calls = []

    def entity_engine(history, start, hours, quantiles, event_days=()) -> SeriesForecast:  # type: ignore[no-untyped-def]
        calls.append(len(history))
        q = {level: np.full(hours, 1.0) for level in quantiles}
        return SeriesForecast("seasonal_naive_24h", pd.date_range(start, periods=hours, freq="h"), q, None, None,
                              len(history), 0.0)  # fmt: skip

    new = fleet.Forecaster(result.model, entity_engine=entity_engine).forecast(history[-50:], index[at], 4, (0.5,))
    assert (new.engine == "entity" and "new entity" in new.reason) or "history" in new.reason, new.reason
    far = fleet.Forecaster(result.model, entity_engine=entity_engine).forecast(history, index[at + 30], 8, (0.5,))
    assert far.engine == "entity" and "horizon" in far.reason
    none = fleet.Forecaster(None, entity_engine=entity_engine).forecast(history, index[at], 4, (0.5,))
    assert none.engine == "entity" and "no fleet model" in none.reason and len(calls) == 3


def test_with_drivers_the_lower_recent_error_answers_fleet_model_or_per_entity_engine(trained) -> None:
    """The fleet model reads no drivers: the per-entity engine runs with them too, and the one with the lower recent
    backtest error (WAPE) answers; the reason names the drivers either way."""
    result, values, index = trained
    at = 17 * 24
    history = pd.Series(values[3, :at], index=index[:at])
    frame = pd.DataFrame({"retail": np.arange(at + 8, dtype=float)}, index=index[: at + 8])
    seen = []

    def engine_with(wape: float, model: str = "linear_drivers"):  # type: ignore[no-untyped-def]
        def entity_engine(history, start, hours, quantiles, event_days=(), drivers=None) -> SeriesForecast:  # type: ignore[no-untyped-def]
            seen.append(drivers)
            q = {level: np.full(hours, 1.0) for level in quantiles}
            return SeriesForecast(model, pd.date_range(start, periods=hours, freq="h"), q, wape, None,
                                  len(history), 0.0)  # fmt: skip

        return entity_engine

    fleet_fc = fleet.Forecaster(result.model).forecast(history, index[at], 8, (0.1, 0.5, 0.9))
    assert fleet_fc.engine == "fleet" and fleet_fc.wape is not None
    better = fleet.Forecaster(result.model, entity_engine=engine_with(fleet_fc.wape / 2)).forecast(
        history, index[at], 8, (0.1, 0.5, 0.9), drivers=frame)  # fmt: skip
    assert better.engine == "entity" and better.model == "linear_drivers"
    assert "with drivers retail" in better.reason and "below the fleet model's" in better.reason
    worse = fleet.Forecaster(result.model, entity_engine=engine_with(fleet_fc.wape * 2)).forecast(
        history, index[at], 8, (0.1, 0.5, 0.9), drivers=frame)  # fmt: skip
    assert worse.engine == "fleet" and "not better than the fleet model" in worse.reason
    np.testing.assert_array_equal(worse.quantiles[0.5], fleet_fc.quantiles[0.5])
    assert all(d is frame for d in seen)
    # the engine winning with another candidate is not the drivers winning: the fleet model keeps answering
    other = fleet.Forecaster(result.model, entity_engine=engine_with(fleet_fc.wape / 2, "holt_winters_24h")).forecast(
        history, index[at], 8, (0.1, 0.5, 0.9), drivers=frame)  # fmt: skip
    assert other.engine == "fleet" and "chose holt_winters_24h" in other.reason


def test_bands_are_calibrated_per_entity(trained) -> None:
    """A noisy entity gets a wider band than a calm one at the same level, and both cover about 80 %."""
    result, values, index = trained
    inside = {0: [], 1: []}
    width = {0: [], 1: []}
    for day in (17, 18, 19):
        at = day * 24
        served = fleet.serve_panel(result.model, values, index, at, 24, (0.1, 0.5, 0.9))
        assert (served.engine == "fleet").all(), served.reason
        actual = values[:, at : at + 24]
        for parity in (0, 1):
            rows = np.arange(parity, 24, 2)
            lo, hi = served.quantiles[0.1][rows], served.quantiles[0.9][rows]
            inside[parity].append(((actual[rows] >= lo) & (actual[rows] <= hi)).mean())
            width[parity].append(np.mean((hi - lo) / served.quantiles[0.5][rows]))
    assert np.mean(width[1]) > 2 * np.mean(width[0])
    for parity in (0, 1):
        assert 0.65 <= np.mean(inside[parity]) <= 0.95, inside


def test_an_uncalibrated_band_is_what_calibration_changes(trained) -> None:
    result, values, index = trained
    at = 18 * 24
    raw = fleet.serve_panel(result.model, values, index, at, 24, (0.1, 0.9), cfg=fleet.ServeConfig(calibrate=False))
    cal = fleet.serve_panel(result.model, values, index, at, 24, (0.1, 0.9))
    assert not np.allclose(raw.quantiles[0.9], cal.quantiles[0.9])


def test_a_level_the_model_was_not_fitted_for_sits_between_its_neighbours() -> None:
    """q0.85 (the default sizing quantile) is interpolated between the median and q0.9 in normal-quantile units, not
    served as q0.9; q0.95 is extrapolated past q0.9; the fitted levels are themselves."""
    by = {0.1: np.array([6.0]), 0.5: np.array([10.0]), 0.9: np.array([14.0])}
    assert fleet._at_level(by, 0.9) is by[0.9]
    ratio = 1.0364333894937898 / 1.2815515655446004  # z(0.85) / z(0.9)
    assert fleet._at_level(by, 0.85)[0] == pytest.approx(10 + 4 * ratio)
    assert fleet._at_level(by, 0.95)[0] == pytest.approx(10 + 4 * 1.6448536269514722 / 1.2815515655446004)
    assert fleet._at_level(by, 0.3)[0] == pytest.approx(10 - 4 * 0.5244005127080407 / 1.2815515655446004)


def test_a_served_intermediate_level_covers_about_its_level(trained) -> None:
    """Served 2 h ahead (the simulator's and a short slice's case: few recent residuals, so calibration leans on
    the pooled shift), q0.75 covers about 75 % and the levels stay ordered. Before, every level from 0.75 up was
    the 0.9 model's with a pooled shift of 0: q0.75 covered 0.88 here."""
    result, values, index = trained
    cover = {q: [] for q in (0.75, 0.85, 0.9, 0.95)}
    for at in range(17 * 24, 20 * 24 - 2, 2):
        served = fleet.serve_panel(result.model, values, index, at, 2, tuple(cover))
        for q in cover:
            cover[q].append((values[:, at : at + 2] <= served.quantiles[q]).mean())
    mean = {q: float(np.mean(c)) for q, c in cover.items()}
    assert mean[0.75] <= mean[0.85] <= mean[0.9] <= mean[0.95], mean
    assert 0.7 <= mean[0.75] <= 0.82, mean


def test_training_refuses_too_little_data() -> None:
    values, index = panel(n=4, days=6)
    with pytest.raises(ValueError, match="training needs at least"):
        fleet.train_fleet(values, index, ["a", "b", "c", "d"], config=fleet.fleet_config(max_iter=5, median_bag=1))
