"""Per-series forecasting: candidates, rolling-origin backtest on the series' own past, calibrated quantiles.

The foundation's candidate set is small and fast (seasonal naive at a day and a week, last value, Holt-Winters);
the predictive-engine issue widens it. Quantiles come from the chosen model's backtest residuals, so an interval
is as wide as the model's own recent errors say it should be.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

logging.getLogger("darts").setLevel(logging.ERROR)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from darts import TimeSeries
    from darts.models import ExponentialSmoothing, NaiveSeasonal
    from darts.models.forecasting.forecasting_model import ForecastingModel

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
MIN_HISTORY_HOURS = 6


class ForecastError(ValueError):
    """The history cannot support a forecast (too short, or no observed value at all)."""


@dataclass(frozen=True)
class Candidate:
    name: str
    min_history: int
    build: Callable[[], ForecastingModel]


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("seasonal_naive_24h", 48, lambda: NaiveSeasonal(K=24)),
    Candidate("seasonal_naive_168h", 24 * 14, lambda: NaiveSeasonal(K=168)),
    Candidate("holt_winters_24h", 24 * 4, lambda: ExponentialSmoothing(seasonal_periods=24)),
    Candidate("last_value", 2, lambda: NaiveSeasonal(K=1)),
)


@dataclass(frozen=True)
class SeriesForecast:
    """Forecast of one series over the requested hours."""

    model: str
    index: pd.DatetimeIndex
    quantiles: dict[float, np.ndarray]
    wape: float | None
    interval_coverage: float | None
    history_hours: int
    missing_fraction: float
    scores: dict[str, float] = field(default_factory=dict)


def forecast_series(
    history: pd.Series,
    start: pd.Timestamp,
    hours: int,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    origins: int = 5,
) -> SeriesForecast:
    """Forecasts `hours` hours from `start` using only `history` (hourly, UTC, NaN = missing, ends before start).

    Raises:
        ForecastError: when the history is too short or entirely missing.
    """
    history = history[history.index < start]
    observed = history.dropna()
    if len(observed) < MIN_HISTORY_HOURS:
        raise ForecastError(f"need at least {MIN_HISTORY_HOURS} observed hours of history, got {len(observed)}")
    history = history.loc[observed.index[0] :]
    filled = _fill_gaps(history)
    gap = int((start - history.index[-1]) / pd.Timedelta(hours=1)) - 1
    steps = gap + hours
    usable = [c for c in CANDIDATES if len(filled) >= c.min_history]
    scores, residuals = {}, {}
    for cand in usable:
        res, actual = _backtest(cand, filled, history, steps, origins)
        if res:
            scores[cand.name] = float(np.sum(np.abs(np.concatenate(res))) / max(np.sum(np.abs(actual)), 1e-9))
            residuals[cand.name] = res
    best = min(scores, key=scores.__getitem__) if scores else usable[-1].name
    cand = next(c for c in usable if c.name == best)
    point = _fit_predict(cand, filled, steps)[gap:]
    pooled = np.concatenate(residuals[best]) if best in residuals else np.array([])
    levels = sorted(set(quantiles) | {0.5})
    out = _quantiles(point, pooled, levels, filled)
    index = pd.date_range(start, periods=hours, freq="h")
    coverage = _held_out_coverage(residuals.get(best, []))
    return SeriesForecast(
        model=best,
        index=index,
        quantiles=out,
        wape=scores.get(best),
        interval_coverage=coverage,
        history_hours=len(history),
        missing_fraction=float(history.isna().mean()),
        scores=scores,
    )


def _fill_gaps(series: pd.Series) -> pd.Series:
    """Fills gaps for fitting only: same hour the day before, then interpolation. Scoring ignores them."""
    filled = series.copy()
    for _ in range(3):
        filled = filled.fillna(filled.shift(24))
    return filled.interpolate(limit_direction="both")


def _to_ts(series: pd.Series) -> TimeSeries:
    naive = series.copy()
    naive.index = pd.DatetimeIndex(naive.index).tz_convert(None)
    return TimeSeries.from_series(naive.astype(float), freq="h")


def _fit_predict(cand: Candidate, filled: pd.Series, steps: int) -> np.ndarray:
    model = cand.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(_to_ts(filled))
            values = model.predict(steps).values(copy=False).ravel()
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise ForecastError(f"{cand.name} failed to fit: {exc}") from exc
    return np.maximum(values, 0.0)


def _backtest(
    cand: Candidate, filled: pd.Series, raw: pd.Series, steps: int, origins: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Rolling origins one day apart; residuals only where the actual value was observed."""
    residuals, actuals = [], []
    for k in range(origins):
        origin = len(filled) - steps - 24 * k
        if origin < cand.min_history:
            break
        try:
            pred = _fit_predict(cand, filled.iloc[:origin], steps)
        except ForecastError:
            continue
        actual = raw.iloc[origin : origin + steps].to_numpy()
        seen = ~np.isnan(actual)
        if seen.any():
            residuals.append(actual[seen] - pred[seen])
            actuals.append(actual[seen])
    return residuals, (np.concatenate(actuals) if actuals else np.array([]))


def _quantiles(
    point: np.ndarray, residuals: np.ndarray, levels: list[float], filled: pd.Series
) -> dict[float, np.ndarray]:
    if len(residuals) >= 5:
        offsets = {q: float(np.quantile(residuals, q)) for q in levels}
    else:  # too little backtest: a spread from the series' own hour-to-hour variability, widened
        scale = float(np.nanstd(np.diff(filled.to_numpy()))) * 2 or float(np.nanmean(filled)) * 0.2
        z = {q: float(np.sqrt(2) * _erfinv(2 * q - 1)) for q in levels}
        offsets = {q: z[q] * scale for q in levels}
    out = {q: np.maximum(point + offsets[q], 0.0) for q in levels}
    for lo, hi in itertools.pairwise(levels):  # keep quantiles ordered
        out[hi] = np.maximum(out[hi], out[lo])
    return out


def _held_out_coverage(residuals: list[np.ndarray], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Share of each origin's actuals inside the 10-90% band calibrated on the other origins."""
    if len(residuals) < 3:
        return None
    inside, total = 0, 0
    for i, held in enumerate(residuals):
        rest = np.concatenate([r for j, r in enumerate(residuals) if j != i])
        a, b = np.quantile(rest, lo), np.quantile(rest, hi)
        inside += int(np.sum((held >= a) & (held <= b)))
        total += len(held)
    return inside / total if total else None


def _erfinv(y: float) -> float:
    from scipy.special import erfinv

    return float(erfinv(y))
