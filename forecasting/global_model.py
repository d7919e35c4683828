"""The engine: one gradient-boosted quantile model per quantile, trained across every series of a panel.

Why global: 500 short, heterogeneous series each teach little alone; trained together on scale-free features
(each series divided by its own recent mean) the model learns shapes shared by many (daily cycles, flat lines,
level shifts) and fits once for all series at ~20+ forecasts per second on two cores. sklearn's
HistGradientBoostingRegressor is used directly rather than through darts: darts' quantile regression models fit one
model per horizon step and series layout, 10-100x slower here, and this model needs neither.

Training uses only hours strictly before the origin: anchors at the origin's hour of day on earlier days whose
whole target window ends before the origin. Quantiles are then calibrated (conformalised) on the last days
before the origin, so that stated intervals hold on data the model did not fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

WEEK = 168
DAY = 24


@dataclass(frozen=True)
class GlobalConfig:
    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    train_days: int = 21
    calibration_days: int = 4
    max_iter: int = 200
    learning_rate: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class PanelForecast:
    """Quantile forecasts for every series that could be forecast: `quantiles[q]` is (series x horizon)."""

    rows: np.ndarray  # indices into the panel of the series forecast
    quantiles: dict[float, np.ndarray]
    fallback: np.ndarray  # bool per forecast row: True where the short-history fallback was used


class GlobalQuantileForecaster:
    def __init__(self, config: GlobalConfig | None = None, event_days: Iterable[date] = ()) -> None:
        self.config = config or GlobalConfig()
        self.event_days = frozenset(event_days)

    def forecast(self, values: np.ndarray, index: pd.DatetimeIndex, origin: int) -> PanelForecast:
        """Forecasts `horizon` hours from position `origin` for each row of `values` (N x T), seeing only the past."""
        cfg = self.config
        past = values[:, :origin]
        filled = fill_for_features(past)
        observed = np.sum(~np.isnan(past[:, -WEEK:]), axis=1) if origin else np.zeros(len(values))
        short = (origin < WEEK + DAY) | (observed < DAY)
        rows = np.flatnonzero(np.sum(~np.isnan(past), axis=1) > 0)
        out = {q: np.full((len(rows), cfg.horizon), np.nan) for q in cfg.quantiles}
        fallback = short[rows]
        anchors = self._anchors(origin)
        if len(anchors) >= cfg.calibration_days + 3 and (~fallback).any():
            model_rows = rows[~fallback]
            preds = self._fit_predict(filled[model_rows], past[model_rows], index, anchors, origin)
            for q in cfg.quantiles:
                out[q][~fallback] = preds[q]
        else:
            fallback = np.ones(len(rows), dtype=bool)
        if fallback.any():
            flat = flat_fallback(past[rows[fallback]], cfg.horizon, cfg.quantiles)
            for q in cfg.quantiles:
                out[q][fallback] = flat[q]
        return PanelForecast(rows=rows, quantiles=out, fallback=fallback)

    def _anchors(self, origin: int) -> list[int]:
        cfg = self.config
        last = origin - cfg.horizon
        first = max(WEEK, origin - DAY * cfg.train_days)
        return [a for a in range(last - ((last - origin) % DAY), first - 1, -DAY) if a >= WEEK][::-1]

    def _fit_predict(
        self, filled: np.ndarray, raw: np.ndarray, index: pd.DatetimeIndex, anchors: list[int], origin: int
    ) -> dict[float, np.ndarray]:
        cfg = self.config
        fit_anchors, cal_anchors = anchors[: -cfg.calibration_days], anchors[-cfg.calibration_days :]
        x_fit, y_fit = self._training(filled, raw, index, fit_anchors)
        x_cal, y_cal = self._training(filled, raw, index, cal_anchors)
        x_all, y_all = np.concatenate([x_fit, x_cal]), np.concatenate([y_fit, y_cal])
        x_new, scale = features(filled, index, origin, cfg.horizon, self.event_days)
        out = {}
        for q in cfg.quantiles:
            offset = _conformal_offset(self._model(q).fit(x_fit, y_fit), x_cal, y_cal, q)
            pred = self._model(q).fit(x_all, y_all).predict(x_new.reshape(-1, x_new.shape[-1]))
            out[q] = np.maximum((pred.reshape(len(filled), cfg.horizon) + offset) * scale[:, None], 0.0)
        return _uncross(out)

    def _training(
        self, filled: np.ndarray, raw: np.ndarray, index: pd.DatetimeIndex, anchors: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for a in anchors:
            x, scale = features(filled[:, :a], index, a, self.config.horizon, self.event_days)
            y = raw[:, a : a + self.config.horizon] / scale[:, None]
            xs.append(x.reshape(-1, x.shape[-1]))
            ys.append(y.reshape(-1))
        x, y = np.concatenate(xs), np.concatenate(ys)
        seen = ~np.isnan(y)  # missing hours are not targets: never learn "zero load" from an outage
        return x[seen], y[seen]

    def _model(self, q: float) -> HistGradientBoostingRegressor:
        cfg = self.config
        return HistGradientBoostingRegressor(
            loss="quantile", quantile=q, max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, random_state=cfg.seed
        )


def features(
    filled: np.ndarray, index: pd.DatetimeIndex, at: int, horizon: int, event_days: frozenset[date] = frozenset()
) -> tuple[np.ndarray, np.ndarray]:
    """Scale-free features for forecasting hours at..at+horizon-1 from `filled[:, :at]` (N x H x F), and scales."""
    n = len(filled)
    scale = np.nanmean(filled[:, at - WEEK : at], axis=1) + 1.0
    recent = filled[:, at - DAY : at] / scale[:, None]
    days = np.stack([filled[:, at - DAY * d : at - DAY * d + DAY] for d in range(1, 8)], axis=1) / scale[:, None, None]
    out = []
    for h in range(horizon):
        moment = index[0] + pd.Timedelta(hours=at + h)
        same = days[:, :, h % DAY]
        calendar = [moment.hour, moment.day_of_week, float(moment.date() in event_days)]
        out.append(
            np.column_stack(
                [
                    np.full(n, h), *(np.full(n, c) for c in calendar), same, same.mean(axis=1),
                    np.median(same, axis=1), same.std(axis=1), recent[:, -1], recent[:, -6:].mean(axis=1),
                    recent.mean(axis=1), np.log1p(scale),
                ]
            )
        )  # fmt: skip
    return np.stack(out, axis=1), scale


def fill_for_features(values: np.ndarray) -> np.ndarray:
    """Fills gaps for features only: same hour the day before (three times), then carry forward/back."""
    filled = values.copy()
    for _ in range(3):
        gap = np.isnan(filled)
        shifted = np.full_like(filled, np.nan)
        shifted[:, DAY:] = filled[:, :-DAY]
        filled[gap] = shifted[gap]
    return pd.DataFrame(filled.T).ffill().bfill().to_numpy().T if filled.size else filled


def flat_fallback(past: np.ndarray, horizon: int, quantiles: tuple[float, ...]) -> dict[float, np.ndarray]:
    """Short history: the last observed value, with the quantiles of the series' own observed spread around it."""
    out = {}
    for q in quantiles:
        rows = []
        for series in past:
            seen = series[~np.isnan(series)]
            last = seen[-1]
            spread = np.quantile(seen - np.median(seen), q) if len(seen) > 1 else 0.0
            rows.append(np.full(horizon, max(last + spread, 0.0)))
        out[q] = np.array(rows)
    return _uncross(out)


def _conformal_offset(model: HistGradientBoostingRegressor, x: np.ndarray, y: np.ndarray, q: float) -> float:
    """The shift that makes quantile q's prediction exceeded by exactly 1-q of the calibration targets."""
    if len(y) < 50:
        return 0.0
    return float(np.quantile(y - model.predict(x), q))


def _uncross(out: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
    levels = sorted(out)
    stacked = np.sort(np.stack([out[q] for q in levels]), axis=0)
    return {q: stacked[i] for i, q in enumerate(levels)}
