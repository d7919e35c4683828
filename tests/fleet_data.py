"""A small synthetic fleet and a tiny fleet model trained on it, shared by the fleet-model tests (built once)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from forecasting.fleet import TrainingResult, fleet_config, train_fleet

START = pd.Timestamp("2026-10-01T00:00:00Z")


def panel(entities: int = 20, days: int = 21, seed: int = 7) -> tuple[np.ndarray, pd.DatetimeIndex, list[str]]:
    """Daily-periodic usage with a weekly dip and noise, a level per entity (MHz-like values)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=days * 24, freq="h")
    hour, dow = index.hour.to_numpy(), index.day_of_week.to_numpy()
    shape = 1.0 + 0.6 * np.sin(2 * np.pi * (hour - 6) / 24) - 0.25 * (dow >= 5)
    level = rng.uniform(500, 5000, size=(entities, 1))
    values = level * shape[None, :] * (1 + 0.05 * rng.standard_normal((entities, len(index))))
    return np.maximum(values, 0.0), index, [f"e{i:03d}" for i in range(entities)]


@functools.cache
def tiny_model(version: str = "v-test") -> TrainingResult:
    """A fleet model fitted in a few seconds (max_iter=40, one median bag)."""
    values, index, names = panel()
    return train_fleet(values, index, names, config=fleet_config(max_iter=40, median_bag=1), version=version)
