"""Backtests on a usage file: the engine's forecasts from given origins, and the evaluation against baselines.

    python -m forecasting backtest --input FILE.csv.gz --target cpu_usage_mhz_mean --horizon 24 \
        --origins 2013-08-30T00:00:00Z --quantiles 0.1,0.5,0.9 --output forecasts.csv
    python -m forecasting evaluate --input FILE.csv.gz --target cpu_usage_mhz_mean --holdout-days 14
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from forecasting.global_model import GlobalConfig, GlobalQuantileForecaster, fill_for_features
from forecasting.panel import Panel

Progress = Callable[[str], None]


def backtest(
    panel: Panel,
    origins: list[pd.Timestamp],
    config: GlobalConfig,
    progress: Progress | None = None,
    events: frozenset[date] = frozenset(),
) -> pd.DataFrame:
    """One row per entity, origin and forecast hour: entity_id, origin, timestamp, q<level>..."""
    model = GlobalQuantileForecaster(config, events, progress)
    frames = []
    for i, origin in enumerate(origins, 1):
        pos = int((origin - panel.index[0]) / pd.Timedelta(hours=1))
        if pos <= 0:
            raise ValueError(
                f"origin {origin.isoformat()} is not after the data's first hour {panel.index[0].isoformat()}"
            )
        values = _extend(panel, pos + config.horizon)
        index = pd.date_range(panel.index[0], periods=values.shape[1], freq="h")
        result = model.forecast(values, index, pos)
        stamps = pd.date_range(index[0] + pd.Timedelta(hours=pos), periods=config.horizon, freq="h")
        for k, row in enumerate(result.rows):
            frame = pd.DataFrame(
                {
                    "entity_id": panel.entities[row],
                    "origin": origin.isoformat(),
                    "timestamp": [t.isoformat() for t in stamps],
                }
            )
            for q in config.quantiles:
                frame[f"q{q:g}"] = np.round(result.quantiles[q][k], 4)
            frames.append(frame)
        if progress:
            progress(f"origin {i}/{len(origins)} {origin.isoformat()}: {len(result.rows)} entities")
    columns = ["entity_id", "origin", "timestamp", *(f"q{q:g}" for q in config.quantiles)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _extend(panel: Panel, length: int) -> np.ndarray:
    """The panel's values padded with NaN up to `length` hours (origins may lie past the data's end)."""
    if length <= panel.values.shape[1]:
        return panel.values
    pad = np.full((len(panel.values), length - panel.values.shape[1]), np.nan)
    return np.concatenate([panel.values, pad], axis=1)


# ---- evaluation ---------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Per-method, per-series absolute errors and the engine's interval hits."""

    abs_err: dict[str, list[np.ndarray]] = field(default_factory=dict)
    pinball: list[float] = field(default_factory=list)
    inside80: list[np.ndarray] = field(default_factory=list)
    under90: list[np.ndarray] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    forecasts: int = 0
    picks: dict[str, int] = field(default_factory=dict)  # how often the engine chose each candidate per series


def daily_origins(panel: Panel, holdout_days: int, horizon: int) -> list[pd.Timestamp]:
    """Midnights of the last `holdout_days` days whose whole forecast window lies inside the data."""
    last = panel.index[-1] - pd.Timedelta(hours=horizon - 1)
    first_day = (panel.index[-1] - pd.Timedelta(days=holdout_days - 1)).normalize()
    return [d for d in pd.date_range(first_day, last.normalize(), freq="D") if d <= last]


def evaluate(panel: Panel, holdout_days: int, config: GlobalConfig, hw_workers: int = 2,
             progress: Progress | None = None, events: frozenset[date] = frozenset(),
             ) -> tuple[pd.DataFrame, list[pd.Timestamp], dict[str, int]]:  # fmt: skip
    """Scores the engine and the baselines on daily origins of the held-out tail; returns the table."""
    origins = daily_origins(panel, holdout_days, config.horizon)
    scores = Scores(abs_err={m: [] for m in ("engine", "seasonal_naive", "naive", "holt_winters")})
    engine = GlobalQuantileForecaster(config, events)
    h = config.horizon
    for i, origin in enumerate(origins, 1):
        pos = panel.position(origin)
        past, actual = panel.values[:, :pos], panel.values[:, pos : pos + h]
        started = time.perf_counter()
        result = engine.forecast(panel.values, panel.index, pos)
        _tick(scores, "engine", started, len(result.rows))
        rows = result.rows
        filled = fill_for_features(past[rows])
        preds = {
            "engine": result.quantiles[0.5],
            "seasonal_naive": _timed(scores, "seasonal_naive", seasonal_naive, filled, h),
            "naive": _timed(scores, "naive", naive, filled, h),
            "holt_winters": _timed(scores, "holt_winters", holt_winters, filled, h, hw_workers),
        }
        act = actual[rows]
        for name, pred in preds.items():
            err = np.full(len(panel.entities), np.nan)
            err[rows] = np.nanmean(np.abs(act - pred), axis=1) if act.size else np.nan
            scores.abs_err[name].append(err)
        seen = ~np.isnan(act)
        lo, hi = result.quantiles[0.1], result.quantiles[0.9]
        scores.inside80.append(((act >= lo) & (act <= hi))[seen])
        scores.under90.append((act <= hi)[seen])
        scores.pinball.append(_pinball(act, result.quantiles))
        scores.forecasts += len(rows)
        for name in result.model:
            scores.picks[str(name)] = scores.picks.get(str(name), 0) + 1
        if progress:
            progress(f"origin {i}/{len(origins)} {origin.date()}")
    return table(scores, panel, origins), origins, scores.picks


def table(scores: Scores, panel: Panel, origins: list[pd.Timestamp]) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mae = {m: np.nanmean(np.stack(v, axis=1), axis=1) for m, v in scores.abs_err.items()}
    scale = _mase_scale(panel, panel.position(origins[0]))
    rows = []
    for name, m in mae.items():
        rows.append({
            "method": name,
            "MAE / seasonal naive (geo-mean)": _geomean_ratio(m, mae["seasonal_naive"]),
            "MAE / naive": _geomean_ratio(m, mae["naive"]),
            "MAE / Holt-Winters": _geomean_ratio(m, mae["holt_winters"]),
            "MASE": _finite_mean(m / scale),
            "pinball (q10,50,90)": float(np.nanmean(scores.pinball)) if name == "engine" else None,
            "80% coverage": float(np.mean(np.concatenate(scores.inside80))) if name == "engine" else None,
            "q0.9 coverage": float(np.mean(np.concatenate(scores.under90))) if name == "engine" else None,
            "forecasts/s": scores.forecasts / scores.seconds[name] if scores.seconds.get(name) else None,
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("method")


def holt_winters(filled: np.ndarray, horizon: int, workers: int) -> np.ndarray:
    """Additive Holt-Winters with a 24-hour season (the predictive HPA's model), fitted per series on 3 weeks."""
    chunks = np.array_split(filled[:, -24 * 21 :], max(workers, 1))
    if workers <= 1:
        return np.concatenate([_hw_chunk(c, horizon) for c in chunks])
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_hw_chunk, chunks, [horizon] * len(chunks))))


def _hw_chunk(chunk: np.ndarray, horizon: int) -> np.ndarray:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for series in chunk:
            try:
                fit = ExponentialSmoothing(series, trend=None, seasonal="add", seasonal_periods=24).fit()
                out.append(np.maximum(fit.forecast(horizon), 0.0))
            except (ValueError, np.linalg.LinAlgError):
                out.append(np.full(horizon, series[-1]))
    return np.array(out)


def _pinball(actual: np.ndarray, quantiles: dict[float, np.ndarray]) -> float:
    losses = []
    for q, pred in quantiles.items():
        diff = actual - pred
        losses.append(np.nanmean(np.maximum(q * diff, (q - 1) * diff)))
    return float(np.mean(losses))


def _mase_scale(panel: Panel, before: int) -> np.ndarray:
    """In-sample MAE of the seasonal naive forecast on each series' history before the first origin."""
    past = panel.values[:, :before]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.abs(past[:, 24:] - past[:, :-24]), axis=1)


def _finite_mean(values: np.ndarray) -> float:
    """Mean over series where the ratio is defined (a series flat over its whole history has no MASE scale)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _geomean_ratio(a: np.ndarray, b: np.ndarray) -> float:
    ratio = a / b
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return float(np.exp(np.mean(np.log(ratio)))) if len(ratio) else float("nan")


def seasonal_naive(filled: np.ndarray, horizon: int) -> np.ndarray:
    """The same hour of the last day (Crane's "repeat the last period")."""
    return np.tile(filled[:, -24:], (1, -(-horizon // 24)))[:, :horizon]


def naive(filled: np.ndarray, horizon: int) -> np.ndarray:
    """The last value, held."""
    return np.repeat(filled[:, -1:], horizon, axis=1)


def _timed(scores: Scores, name: str, fn: Callable[..., np.ndarray], *args: object) -> np.ndarray:
    started = time.perf_counter()
    out = fn(*args)
    _tick(scores, name, started, 0)
    return out


def _tick(scores: Scores, name: str, started: float, _count: int) -> None:
    scores.seconds[name] = scores.seconds.get(name, 0.0) + time.perf_counter() - started
