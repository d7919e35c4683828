"""Per-series forecasting: darts candidates, rolling-origin backtest on the series' own past, calibrated quantiles.

This is the engine for one entity's own history (what PredictDemand reads from CloudWatch). Candidates, all
through darts: seasonal naive at a day and a week, the last value, Holt-Winters (additive, 24 h season), a small
ARIMA(2,0,1) (a bounded search: AutoARIMA needs statsforecast, which pulls pandas below 3), an FFT of the
strongest frequencies, a linear regression on lags with calendar covariates (hour and day-of-week encoders plus
public-holiday/user-event days), and Prophet when the `prophet` extra is installed. Each candidate that the
history can support is backtested from rolling origins one day apart on the series' own past; the lowest error
wins, and the quantiles come from the winner's backtest residuals, so an interval is as wide as the model's own
recent errors say it should be. Theta is left out: darts 0.41's Theta fails with statsmodels 0.15.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from statistics import NormalDist

import numpy as np
import pandas as pd

from forecasting import quiet
from forecasting.threads import single_blas_thread

quiet.install()  # darts' and prophet's notices about optional backends we do not use; nothing else is muted
from darts import TimeSeries  # noqa: E402
from darts.models import ARIMA, FFT, ExponentialSmoothing, LinearRegressionModel, NaiveSeasonal  # noqa: E402
from darts.models.forecasting.forecasting_model import ForecastingModel  # noqa: E402

try:
    import prophet  # noqa: F401  (without it darts leaves a stand-in object, not an ImportError)
    from darts.models import Prophet
except ImportError:  # the `prophet` extra is not installed
    Prophet = None

if Prophet is not None:  # cmdstanpy makes its logger (INFO, own handler) on first use when the root has no handler
    from cmdstanpy.utils import get_logger as _cmdstanpy_logger

    _cmdstanpy_logger().setLevel(logging.ERROR)  # cached: later calls return this logger as it is

for _name in list(logging.root.manager.loggerDict):  # prophet's and cmdstanpy's per-fit INFO chatter (darts' own
    if _name.startswith(("cmdstanpy", "prophet")) and _name != "prophet.plot":  # warnings still show: quiet.py)
        logging.getLogger(_name).setLevel(logging.ERROR)

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
_BUILD_LOCK = threading.Lock()
MIN_HISTORY_HOURS = 6
CALENDAR_LAGS = [-1, -2, -3, -24, -48, -168]


class ForecastError(ValueError):
    """The history cannot support a forecast (too short, or no observed value at all)."""


@dataclass(frozen=True)
class Candidate:
    name: str
    min_history: int
    build: Callable[[], ForecastingModel]
    calendar: bool = False  # takes the event-day flag as a future covariate
    drivers: bool = False  # also takes the entity's external drivers (forecasting/drivers.py), as known at the origin


def _linear_calendar() -> ForecastingModel:
    return LinearRegressionModel(
        lags=CALENDAR_LAGS, lags_future_covariates=[0], output_chunk_length=1,
        add_encoders={"cyclic": {"future": ["hour", "dayofweek"]}},
    )  # fmt: skip


def _linear_drivers() -> ForecastingModel:
    return LinearRegressionModel(
        lags=CALENDAR_LAGS, lags_future_covariates=[0], output_chunk_length=1,
        add_encoders={"cyclic": {"future": ["hour", "dayofweek"]}},
    )  # fmt: skip


def _holt_winters(initialization: str = "heuristic") -> ForecastingModel:
    """Additive Holt-Winters, 24 h season. Its start (level, trend, 24 seasonal states) comes from the first cycles
    (statsmodels' heuristic) rather than being fitted as 26 more parameters: the estimated start was half of a
    forecast's CPU and was not more accurate (`make bench-entity-forecast` compares both)."""
    return ExponentialSmoothing(seasonal_periods=24, kwargs={"initialization_method": initialization})


def _prophet() -> ForecastingModel:
    assert Prophet is not None
    # darts silences Prophet by pointing file descriptors 1 and 2 at /dev/null and back; two fits in parallel
    # threads (activities) race on that and leave the process's stdout closed. Its loggers are silenced instead.
    return Prophet(
        daily_seasonality=True, weekly_seasonality=True, yearly_seasonality=False, suppress_stdout_stderror=False
    )


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("seasonal_naive_24h", 48, lambda: NaiveSeasonal(K=24)),
    Candidate("seasonal_naive_168h", 24 * 14, lambda: NaiveSeasonal(K=168)),
    Candidate("holt_winters_24h", 24 * 4, lambda: _holt_winters()),
    Candidate("arima_2_0_1", 24 * 3, lambda: ARIMA(p=2, d=0, q=1)),
    Candidate("fft", 24 * 7, lambda: FFT(nr_freqs_to_keep=12, trend=None)),
    Candidate("linear_calendar", 24 * 9, _linear_calendar, calendar=True),
    *((Candidate("prophet", 24 * 7, _prophet),) if Prophet is not None else ()),
    Candidate("last_value", 3, lambda: NaiveSeasonal(K=1)),  # darts fits K=1 on 3 points or more
)
# Tried only for an entity that names drivers: the calendar model with each driver's value as known at the origin.
DRIVER_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("linear_drivers", 24 * 9, _linear_drivers, calendar=True, drivers=True),
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
    engine: str = "entity"  # which engine answered: "fleet" (fleet.py) or "entity" (this module)
    reason: str = ""  # why that engine (fleet.Forecaster fills it)


def forecast_series(
    history: pd.Series,
    start: pd.Timestamp,
    hours: int,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    origins: int = 5,
    event_days: Iterable[date] = (),
    drivers: pd.DataFrame | None = None,
) -> SeriesForecast:
    """Forecasts `hours` hours from `start` using only `history` (hourly, UTC, NaN = missing, ends before start).

    `event_days` (public holidays of the entity's country, user calendar days) enter the calendar candidate as a
    future covariate. `drivers` (one column per external driver, hourly, each value as it was known at that hour:
    `drivers.covariates`) adds the `linear_drivers` candidate, which reads them as known at each origin and held
    over the horizon: a value published inside the horizon is never used (a known-ahead driver is held too).

    Raises:
        ForecastError: when the history is too short or entirely missing.
    """
    single_blas_thread()  # the candidates' matrices are tiny: a BLAS thread team costs 10x the work
    return _forecast_series(history, start, hours, quantiles, origins, event_days, drivers)


def _forecast_series(history: pd.Series, start: pd.Timestamp, hours: int, quantiles: tuple[float, ...],
                     origins: int, event_days: Iterable[date],
                     drivers: pd.DataFrame | None = None) -> SeriesForecast:  # fmt: skip
    history = history[history.index < start]
    observed = history.dropna()
    if len(observed) < MIN_HISTORY_HOURS:
        raise ForecastError(f"need at least {MIN_HISTORY_HOURS} observed hours of history, got {len(observed)}")
    history = history.loc[observed.index[0] :]
    filled = _fill_gaps(history)
    gap = int((start - history.index[-1]) / pd.Timedelta(hours=1)) - 1
    steps = gap + hours
    events = _event_covariate(filled.index[0], len(filled) + steps, frozenset(event_days))
    menu = CANDIDATES + (DRIVER_CANDIDATES if drivers is not None and len(drivers.columns) else ())
    usable = [c for c in menu if len(filled) >= c.min_history]
    known = _driver_frame(drivers, filled.index, steps) if drivers is not None else None
    scores, residuals = {}, {}
    for cand in usable:
        res, actual = _backtest(cand, filled, history, steps, origins, events, known)
        if res:
            scores[cand.name] = float(np.sum(np.abs(np.concatenate(res))) / max(np.sum(np.abs(actual)), 1e-9))
            residuals[cand.name] = res
    ranked = sorted(usable, key=lambda c: scores.get(c.name, np.inf))  # unscored (no backtest possible) last
    for cand in ranked:  # the best candidate that fits the whole history
        try:
            point = _fit_predict(cand, filled, steps, events, known)[gap:]
            break
        except ForecastError:
            continue
    else:
        raise ForecastError(f"no candidate could fit {len(history)} hours of history")
    best = cand.name
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


def _to_frame_ts(index: pd.DatetimeIndex, values: np.ndarray) -> TimeSeries:
    naive = pd.DatetimeIndex(index).tz_convert(None)
    return TimeSeries.from_times_and_values(naive, values.astype(float))


def _event_covariate(first: pd.Timestamp, length: int, days: frozenset[date]) -> TimeSeries:
    """1.0 on the hours of event days, else 0.0, from `first` over `length` hours (a future covariate)."""
    hours = pd.date_range(first, periods=length, freq="h")
    flag = pd.Series([float(t.date() in days) for t in hours], index=hours)
    return _to_ts(flag)


def _driver_frame(drivers: pd.DataFrame, index: pd.DatetimeIndex, steps: int) -> pd.DataFrame:
    """The drivers over the history's hours and `steps` after (NaN filled from the nearest known value)."""
    hours = pd.date_range(index[0], periods=len(index) + steps, freq="h")
    frame = drivers.reindex(hours)
    if frame.iloc[: len(index)].isna().all().any():
        missing = [c for c in frame.columns if frame[c].iloc[: len(index)].isna().all()]
        raise ForecastError(f"driver {missing[0]}: no value known over the history")
    return frame


def _fit_predict(cand: Candidate, filled: pd.Series, steps: int, events: TimeSeries | None = None,
                 drivers: pd.DataFrame | None = None) -> np.ndarray:  # fmt: skip
    with _BUILD_LOCK:  # darts' ModelMeta stores constructor args on the class: building is not thread-safe
        model = cand.build()
    covariates = {"future_covariates": events} if cand.calendar and events is not None else {}
    if cand.drivers and drivers is not None and events is not None:
        n = len(filled)  # the origin: what is known there is held over the horizon (nothing published later leaks)
        held = drivers.iloc[:n].ffill().bfill().to_numpy()
        values = np.vstack([held, np.repeat(held[-1:], steps, axis=0)])
        values = np.column_stack([events.values(copy=False)[: n + steps, :1], values])
        hours = pd.date_range(filled.index[0], periods=n + steps, freq="h")
        covariates = {"future_covariates": _to_frame_ts(hours, values)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(_to_ts(filled), **covariates)
            values = model.predict(steps, **covariates).values(copy=False).ravel()
        except (
            ValueError,
            ArithmeticError,
            RuntimeError,
            np.linalg.LinAlgError,
            Warning,
        ) as exc:  # Warning: if escalated
            raise ForecastError(f"{cand.name} failed to fit: {exc}") from exc
    return np.maximum(values, 0.0)


def _backtest(
    cand: Candidate,
    filled: pd.Series,
    raw: pd.Series,
    steps: int,
    origins: int,
    events: TimeSeries,
    drivers: pd.DataFrame | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Rolling origins one day apart; residuals only where the actual value was observed."""
    residuals, actuals = [], []
    for k in range(origins):
        origin = len(filled) - steps - 24 * k
        if origin < cand.min_history:
            break
        try:
            pred = _fit_predict(cand, filled.iloc[:origin], steps, events, drivers)
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
        offsets = {q: _conformal(residuals, q) for q in levels}
    else:  # too little backtest: a spread from the series' own hour-to-hour variability, widened
        scale = float(np.nanstd(np.diff(filled.to_numpy()))) * 2 or float(np.nanmean(filled)) * 0.2
        offsets = {q: normal_quantile(q) * scale for q in levels}
    out = {q: np.maximum(point + offsets[q], 0.0) for q in levels}
    for lo, hi in itertools.pairwise(levels):  # keep quantiles ordered
        out[hi] = np.maximum(out[hi], out[lo])
    return out


def _conformal(residuals: np.ndarray, q: float) -> float:
    """The q-quantile offset with split conformal's finite-sample correction: an upper quantile is the
    ceil((n + 1) q)-th smallest of the n residuals (a lower one the floor((n + 1) q)-th), so that a new error falls
    under it with probability >= q. A short slice has few backtest residuals (5 origins x 1-2 hours): the plain
    empirical quantile of 10 made a 10-90 % band that held 66 % of the actuals (`make bench-entity-forecast`)."""
    if q == 0.5:
        return float(np.median(residuals))
    ordered, n = np.sort(residuals), len(residuals)
    k = math.ceil((n + 1) * q) if q > 0.5 else math.floor((n + 1) * q)
    return float(ordered[min(max(k, 1), n) - 1])


def _held_out_coverage(residuals: list[np.ndarray], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Share of each origin's actuals inside the 10-90% band calibrated on the other origins."""
    if len(residuals) < 3:
        return None
    inside, total = 0, 0
    for i, held in enumerate(residuals):
        rest = np.concatenate([r for j, r in enumerate(residuals) if j != i])
        a, b = _conformal(rest, lo), _conformal(rest, hi)  # the band `_quantiles` gives
        inside += int(np.sum((held >= a) & (held <= b)))
        total += len(held)
    return inside / total if total else None


def normal_quantile(q: float) -> float:
    """The standard normal distribution's q-quantile (z(0.9) = 1.2816)."""
    return NormalDist().inv_cdf(q)
