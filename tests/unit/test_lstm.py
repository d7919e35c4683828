"""The global LSTM (forecasting/lstm.py) at small scale: a few series, a few epochs, so that it cannot rot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting import lstm

pytestmark = pytest.mark.skipif(
    not lstm.available(), reason="the lstm extra (torch, pytorch-lightning) is not installed: pip install -e '.[lstm]'"
)

DAYS, HOUR = 20, 24


def panel(n: int = 10) -> tuple[np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(3)
    t = np.arange(DAYS * HOUR)
    rows = [
        (5 + 3 * i) * (1 + 0.5 * np.sin(2 * np.pi * (t + 2 * i) / HOUR)) + rng.normal(0, 0.3, len(t)) for i in range(n)
    ]
    return np.stack(rows), pd.date_range("2024-01-01", periods=len(t), freq="h", tz="UTC")


def test_learns_a_daily_shape_across_series_and_answers_in_each_series_units(capfd: pytest.CaptureFixture[str]) -> None:
    values, index = panel()
    cut = (DAYS - 2) * HOUR
    model = lstm.fit_lstm(values, index, cut, lstm.LSTMConfig(epochs=20, samples_per_series=128, learning_rate=1e-2))
    assert model.series == len(values)
    out = model.predict(values, index, cut)
    actual = values[:, cut : cut + HOUR]
    assert set(out) == {0.1, 0.5, 0.9} and out[0.5].shape == actual.shape
    assert np.all(out[0.1] <= out[0.5] + 1e-6) and np.all(out[0.5] <= out[0.9] + 1e-6)
    # far better than a flat guess at each series' mean (a model that learned nothing of the day's shape)
    flat = np.abs(actual - values[:, cut - HOUR : cut].mean(axis=1, keepdims=True)).mean()
    assert np.abs(actual - out[0.5]).mean() < 0.5 * flat
    # scale-free: the same shapes in other units (x1000) give the same forecast in those units
    big = model.predict(values * 1000, index, cut)
    np.testing.assert_allclose(big[0.5], out[0.5] * 1000, rtol=1e-3)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""  # lightning's "GPU available" lines and progress bars stay quiet


def test_a_panel_too_short_to_train_on_names_the_hours_it_needs() -> None:
    values, index = panel(3)
    with pytest.raises(ValueError, match="216 observed hours"):
        lstm.fit_lstm(values[:, :200], index[:200], 200)
