"""The engine: one gradient-boosted quantile model per quantile, trained across every series of a panel.

Why global: 500 short, heterogeneous series each teach little alone; trained together on scale-free features
(each series divided by its own recent mean) the model learns shapes shared by many (daily cycles, flat lines,
level shifts) and fits once for all series at several forecasts per second on two cores. sklearn's
HistGradientBoostingRegressor is used directly rather than through darts: darts' quantile regression models fit one
model per horizon step and series layout, 10-100x slower here, and this model needs neither.

Training uses only hours strictly before the origin: windows every `anchor_step` hours over `train_days` whose
whole target window ends before the origin. The last `calibration_days` days of windows are held out of a first
fit: the per-series choice (global median or a simple candidate, on each series' own held-out days) and, when
`conformal` is on, the quantile shifts are made from that fit's errors; the model is then refit on every window.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

WEEK = 168
DAY = 24
MIN_PAST = 2 * DAY  # the fleet model's features need two days (a shorter week is filled from the days there are)
BASELINES = ("seasonal_naive_24h", "seasonal_naive_168h", "last_value", "same_hour_mean_7d", "median_24h")


@dataclass(frozen=True)
class GlobalConfig:
    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    train_days: int = 35
    calibration_days: int = 4
    max_iter: int = 200
    learning_rate: float = 0.1
    seed: int = 0
    # Per-series choice: a simple candidate replaces the global model's median for a series only when its error on
    # that series' own calibration days is this much lower (a margin against choosing on noise).
    select: bool = True
    selection_margin: float = 0.25
    anchor_step: int = 6  # hours between training windows (24: one window per day, at the origin's hour)
    max_train_rows: int = 600_000  # a seeded subsample beyond this bounds fit time
    rich: bool = True  # recent-hour lags, 24 h range and neighbouring-hour profile on top of the base features
    # Shift each quantile by the calibration days' residual quantile (split conformal). Off by default: on the
    # validation origins it widened the 80% interval to 0.85 coverage where the quantile loss alone gave 0.83.
    conformal: bool = False
    refit: bool = True  # refit on fit + calibration windows before forecasting (else use the fit-only model)
    # The median (the point forecast) is the mean of this many models, each fitted on its own seeded subsample of
    # the training rows (bagging: lowers the variance the subsample adds); the other quantiles use one model.
    # On the validation origins (2013-08-04..16, every other day) 3 models took MAE/Holt-Winters from 0.781 to 0.778
    # and the global model's own from 0.803 to 0.792, for 4 more fits per forecast.
    median_bag: int = 3
    # Weight each training window by 1 / (its series' seasonal-naive error in the week before it, in scaled units,
    # floored at `weight_floor`): the accuracy measure is a geometric mean over entities of error ratios, so an error
    # on a steady series costs as much as a ten-times larger one on a noisy series. 0: every window weighs the same.
    # The weights act through the draw of the `max_train_rows` rows (no extra fit cost; sklearn sample weights sort
    # each quantile leaf by weight, ~4x the fit time, for about the same gain: docs/forecasting.md).
    weight_floor: float = 0.0


@dataclass(frozen=True)
class PanelForecast:
    """Quantile forecasts for every series that could be forecast: `quantiles[q]` is (series x horizon)."""

    rows: np.ndarray  # indices into the panel of the series forecast
    quantiles: dict[float, np.ndarray]
    fallback: np.ndarray  # bool per forecast row: True where the short-history fallback was used
    model: np.ndarray  # the chosen candidate's name per forecast row ("fallback" where fallback is True)
    # Each candidate's median per forecast row at the origin and its MAE on the series' calibration days
    # (NaN for fallback rows): what the choice was made from, kept for reports and tests.
    candidates: dict[str, np.ndarray] = field(default_factory=dict)
    selection_mae: dict[str, np.ndarray] = field(default_factory=dict)
    # Each candidate's median on the calibration windows (windows x rows x horizon) and the actuals ("actual").
    calibration: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Fitted:
    """One fit: a predictor per quantile (of scaled targets), their conformal shifts, the per-series choice."""

    models: dict[float, Callable[[np.ndarray], np.ndarray]]
    offsets: dict[float, float]
    chosen: np.ndarray
    selection_mae: dict[str, np.ndarray]
    calibration: dict[str, np.ndarray]


class GlobalQuantileForecaster:
    def __init__(
        self,
        config: GlobalConfig | None = None,
        event_days: Iterable[date] = (),
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or GlobalConfig()
        self.event_days = frozenset(event_days)
        self._progress = progress or (lambda _message: None)

    def forecast(self, values: np.ndarray, index: pd.DatetimeIndex, origin: int) -> PanelForecast:
        """Forecasts `horizon` hours from position `origin` for each row of `values` (N x T), seeing only the past."""
        return self.forecast_rolling(values, index, origin, [origin])[0]

    def forecast_rolling(
        self, values: np.ndarray, index: pd.DatetimeIndex, origin: int, origins: Iterable[int]
    ) -> list[PanelForecast]:
        """Fits once on the hours before `origin`, then forecasts `horizon` hours from each of `origins` (each at or
        after `origin`) with the features of the hours before it: what a model refitted daily and asked every hour
        with live data answers. The series, their choice of candidate and the calibration are the fit's."""
        cfg = self.config
        past = values[:, :origin]
        filled = fill_for_features(past)
        observed = np.sum(~np.isnan(past[:, -WEEK:]), axis=1) if origin else np.zeros(len(values))
        short = (origin < WEEK + DAY) | (observed < DAY)
        rows = np.flatnonzero(np.sum(~np.isnan(past), axis=1) > 0)
        fallback = short[rows]
        fit_anchors, cal_anchors = self._anchors(origin)
        fitted = None
        if len(fit_anchors) * cfg.anchor_step >= 3 * DAY and cal_anchors and (~fallback).any():
            model_rows = rows[~fallback]
            fitted = self._fit(filled[model_rows], past[model_rows], index, fit_anchors, cal_anchors)
        else:
            fallback = np.ones(len(rows), dtype=bool)
        out = []
        for at in origins:
            if at < origin:
                raise ValueError(f"origin {at} is before the fit's origin {origin}")
            seen = values[:, :at] if at > origin else past
            out.append(self._predict_at(fitted, seen, rows, fallback, index, at))
        return out

    def _predict_at(
        self, fitted: _Fitted | None, past: np.ndarray, rows: np.ndarray, fallback: np.ndarray,
        index: pd.DatetimeIndex, at: int,
    ) -> PanelForecast:  # fmt: skip
        cfg = self.config
        out = {q: np.full((len(rows), cfg.horizon), np.nan) for q in cfg.quantiles}
        model = np.full(len(rows), "fallback", dtype=object)
        candidates: dict[str, np.ndarray] = {}
        selection_mae: dict[str, np.ndarray] = {}
        calibration: dict[str, np.ndarray] = {}
        if fitted is not None:
            model_rows = rows[~fallback]
            quantiles, medians = self._predict(fitted, fill_for_features(past[model_rows]), index, at)
            for q in cfg.quantiles:
                out[q][~fallback] = quantiles[q]
            model[~fallback] = fitted.chosen
            for name, median in medians.items():
                candidates[name] = _spread(median, ~fallback, cfg.horizon)
                selection_mae[name] = _spread(fitted.selection_mae[name], ~fallback)
            for name, points in fitted.calibration.items():  # windows x rows x horizon
                calibration[name] = np.full((len(points), len(rows), cfg.horizon), np.nan)
                calibration[name][:, ~fallback] = points
        if fallback.any():
            flat = flat_fallback(past[rows[fallback]], cfg.horizon, cfg.quantiles)
            for q in cfg.quantiles:
                out[q][fallback] = flat[q]
        return PanelForecast(rows, out, fallback, model, candidates, selection_mae, calibration)

    def _anchors(self, origin: int) -> tuple[list[int], list[int]]:
        """Training windows (start positions) whose targets end before the origin: (fit, calibration).

        Calibration windows are those of the last `calibration_days` days; fit windows end before the first of them,
        so the model that is conformalised has never seen a calibration target.
        """
        cfg = self.config
        last = origin - cfg.horizon
        first = max(WEEK, origin - DAY * cfg.train_days)
        anchors = list(range(last, first - 1, -cfg.anchor_step))[::-1]
        cal = [a for a in anchors if a > last - DAY * cfg.calibration_days]
        fit = [a for a in anchors if a + cfg.horizon <= (cal[0] if cal else origin)]
        return fit, cal

    def _fit(
        self, filled: np.ndarray, raw: np.ndarray, index: pd.DatetimeIndex, fit_anchors: list[int],
        cal_anchors: list[int],
    ) -> _Fitted:  # fmt: skip
        """Fits on all but the last calibration days, conformalises on those, refits on all, then chooses per series."""
        cfg = self.config
        levels = tuple(sorted(set(cfg.quantiles) | {0.5}))
        x_fit, y_fit = _flatten(*self._windows(filled, raw, index, fit_anchors)[:2])
        x_cal, y_cal, cal_scale = self._windows(filled, raw, index, cal_anchors)
        x_seen, y_seen = _flatten(x_cal, y_cal)
        rows = min(min(len(y_fit), cfg.max_train_rows) + len(y_seen), cfg.max_train_rows)
        models, offsets, cal_median = {}, {}, None
        for step, q in enumerate(levels, 1):
            self._progress(f"fitting quantile {q:g} ({step}/{len(levels)}) on {rows} windows-hours")
            bag = cfg.median_bag if q == 0.5 else 1
            first = self._bagged(q, [(x_fit, y_fit)], bag)
            cal_pred = first(x_cal.reshape(-1, x_cal.shape[-1])).reshape(y_cal.shape)
            offsets[q] = _conformal_offset(y_cal - cal_pred, q) if cfg.conformal else 0.0
            if q == 0.5:
                cal_median = np.maximum((cal_pred + offsets[q]) * cal_scale[..., None], 0.0)
            models[q] = self._bagged(q, [(x_fit, y_fit), (x_seen, y_seen)], bag) if cfg.refit else first
        assert cal_median is not None
        actual = np.stack([raw[:, a : a + cfg.horizon] for a in cal_anchors])
        cal_points = {"global_gbm": cal_median}
        past_baselines = [baselines(filled, a, cfg.horizon) for a in cal_anchors]
        for name in BASELINES:
            cal_points[name] = np.stack([b[name] for b in past_baselines])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a series unseen on every calibration day: NaN, kept
            mae = {name: np.nanmean(np.abs(actual - p), axis=(0, 2)) for name, p in cal_points.items()}
        chosen = choose(mae, cfg.selection_margin) if cfg.select else np.full(len(filled), "global_gbm", dtype=object)
        return _Fitted(models, offsets, chosen, mae, {**cal_points, "actual": actual})

    def _predict(
        self, fitted: _Fitted, filled: np.ndarray, index: pd.DatetimeIndex, at: int
    ) -> tuple[dict[float, np.ndarray], dict[str, np.ndarray]]:
        """(quantiles, each candidate's median) from position `at`: the global model's quantiles, and for a series
        whose chosen candidate is a simple one, that candidate's median with the global model's spread around it."""
        cfg = self.config
        x_new, scale = features(filled, index, at, cfg.horizon, self.event_days, cfg.rich)
        out = {}
        for q, predict in fitted.models.items():
            pred = predict(x_new.reshape(-1, x_new.shape[-1]))
            out[q] = np.maximum((pred.reshape(len(filled), cfg.horizon) + fitted.offsets[q]) * scale[:, None], 0.0)
        out = uncross(out)
        candidates = {"global_gbm": out[0.5], **baselines(filled, at, cfg.horizon)}
        final = {q: out[q].copy() for q in cfg.quantiles}
        for name in set(fitted.chosen) - {"global_gbm"}:
            pick = fitted.chosen == name
            for q in cfg.quantiles:  # the candidate's median with the global model's calibrated spread around it
                final[q][pick] = np.maximum(candidates[name][pick] + out[q][pick] - out[0.5][pick], 0.0)
        return uncross(final), candidates

    def _windows(
        self, filled: np.ndarray, raw: np.ndarray, index: pd.DatetimeIndex, anchors: list[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features (A x N x H x F), scaled targets (A x N x H, NaN where unobserved) and scales (A x N) per anchor."""
        xs, ys, scales = [], [], []
        for a in anchors:
            x, scale = features(filled[:, :a], index, a, self.config.horizon, self.event_days, self.config.rich)
            xs.append(x)
            ys.append(raw[:, a : a + self.config.horizon] / scale[:, None])
            scales.append(scale)
        return np.stack(xs), np.stack(ys), np.stack(scales)

    def _bagged(
        self, q: float, parts: list[tuple[np.ndarray, np.ndarray]], bag: int, weights: np.ndarray | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """Fits `bag` models of quantile q, each on its own seeded subsample; returns their mean prediction.

        The subsample is drawn from the first part, the later (more recent) parts are added, and the whole is drawn
        down to `max_train_rows` again: recent windows weigh more than their share. `weights` (one per row of the first
        part) make the first draw favour heavy rows.
        """
        cfg = self.config
        models = []
        for member in range(bag):
            seed = cfg.seed + member
            xs, ys = _subsample(*parts[0], cfg.max_train_rows, seed, weights)
            for x_more, y_more in parts[1:]:
                xs, ys = np.concatenate([xs, x_more]), np.concatenate([ys, y_more])
            xs, ys = _subsample(xs, ys, cfg.max_train_rows, seed)
            models.append(self._model(q, seed).fit(xs, ys))
        return Bag(tuple(models))

    def fit_quantile_models(
        self, values: np.ndarray, index: pd.DatetimeIndex, end: int, levels: Iterable[float]
    ) -> dict[float, Bag]:
        """One predictor of scaled targets per level, fitted on every window of `train_days` whose target ends
        before position `end` (no per-series choice, no calibration: the fleet model's serving path makes those
        per entity from its own recent past)."""
        cfg = self.config
        last = end - cfg.horizon
        anchors = list(range(last, max(MIN_PAST, end - DAY * cfg.train_days) - 1, -cfg.anchor_step))[::-1]
        if len(anchors) * cfg.anchor_step < 3 * DAY:
            raise ValueError(f"{len(anchors) * cfg.anchor_step} h of training windows; at least {3 * DAY} are needed")
        raw = values[:, :end]
        filled = fill_for_features(raw)
        xa, ya, scales = self._windows(filled, raw, index, anchors)
        w = None
        if cfg.weight_floor > 0:
            w = np.repeat(noise_weights(filled, anchors, scales, cfg.weight_floor)[..., None], cfg.horizon, axis=2)
            w = w.reshape(-1)[~np.isnan(ya.reshape(-1))]
        x, y = _flatten(xa, ya)
        if len(y) == 0:
            raise ValueError("no observed target hour in the training windows")
        out = {}
        for q in sorted(set(levels) | {0.5}):
            self._progress(f"fitting quantile {q:g} on {min(len(y), cfg.max_train_rows)} window-hours")
            out[q] = self._bagged(q, [(x, y)], cfg.median_bag if q == 0.5 else 1, w)
        return out

    def _model(self, q: float, seed: int) -> HistGradientBoostingRegressor:
        cfg = self.config
        return HistGradientBoostingRegressor(
            loss="quantile", quantile=q, max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, random_state=seed
        )


@dataclass(frozen=True)
class Bag:
    """Gradient-boosted models of one quantile whose mean is the prediction (picklable, unlike a closure)."""

    members: tuple[HistGradientBoostingRegressor, ...]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if len(self.members) == 1:
            return self.members[0].predict(rows)
        return np.mean([m.predict(rows) for m in self.members], axis=0)


def _a_week_before(filled: np.ndarray, at: int) -> tuple[np.ndarray, int]:
    """(filled, at) with at least a week before `at`: with less, the first day is repeated backwards."""
    if at >= WEEK:
        return filled, at
    pad = -(-(WEEK - at) // DAY) * DAY
    return np.concatenate([np.tile(filled[:, :DAY], (1, pad // DAY)), filled[:, :at]], axis=1), at + pad


def last_days(filled: np.ndarray, at: int) -> np.ndarray:
    """The 24 hours of each of the 7 days before `at` (N x 7 x 24; index 0 is yesterday)."""
    return np.stack([filled[:, at - DAY * d : at - DAY * d + DAY] for d in range(1, 8)], axis=1)


def baselines(filled: np.ndarray, at: int, horizon: int) -> dict[str, np.ndarray]:
    """Simple candidates from `filled[:, :at]` (N x horizon): same hour yesterday, same hour last week, last value."""
    filled, at = _a_week_before(filled, at)
    day = filled[:, at - DAY : at]
    week = filled[:, at - WEEK : at - WEEK + min(horizon, WEEK)]
    days = last_days(filled, at)
    return {
        "seasonal_naive_24h": np.tile(day, (1, -(-horizon // DAY)))[:, :horizon],
        "seasonal_naive_168h": np.tile(week, (1, -(-horizon // week.shape[1])))[:, :horizon],
        "last_value": np.repeat(filled[:, at - 1 : at], horizon, axis=1),
        "same_hour_mean_7d": np.tile(days.mean(axis=1), (1, -(-horizon // DAY)))[:, :horizon],
        "median_24h": np.repeat(np.median(day, axis=1, keepdims=True), horizon, axis=1),
    }


def choose(mae: dict[str, np.ndarray], margin: float) -> np.ndarray:
    """Per series, the candidate with the lowest calibration MAE if it beats the global model's by `margin`."""
    names = [n for n in mae if n != "global_gbm"]
    others = np.stack([mae[n] for n in names])
    best = np.argmin(np.where(np.isnan(others), np.inf, others), axis=0)
    best_mae = others[best, np.arange(others.shape[1])]
    better = best_mae < (1 - margin) * mae["global_gbm"]  # NaN compares False: the global model stays
    return np.where(better, np.array(names, dtype=object)[best], "global_gbm")


def _weighted_rows(weights: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """`limit` row numbers drawn without replacement with probability by weight (Efraimidis-Spirakis keys), seeded.
    Beyond `limit` rows a row's chance grows with its weight; at or under it every row is kept."""
    if len(weights) <= limit:
        return np.arange(len(weights))
    keys = np.log(np.random.default_rng(seed).random(len(weights))) / np.maximum(weights, 1e-12)
    return np.sort(np.argpartition(-keys, limit)[:limit])


def _subsample(
    x: np.ndarray, y: np.ndarray, limit: int, seed: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` rows, drawn with a fixed seed (the same past gives the same sample), by weight if given."""
    if len(y) <= limit:
        return x, y
    if weights is not None:
        keep = _weighted_rows(weights, limit, seed)
    else:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), limit, replace=False))
    return x[keep], y[keep]


def noise_weights(filled: np.ndarray, anchors: list[int], scales: np.ndarray, floor: float) -> np.ndarray:
    """Per anchor and series (A x N): 1 / the series' mean absolute day-on-day change over the week before the
    anchor, in units of its scale (floored at `floor`), normalised to mean 1."""
    out = np.empty((len(anchors), len(filled)))
    for i, a in enumerate(anchors):
        lo = max(a - WEEK, DAY)
        change = np.abs(filled[:, lo:a] - filled[:, lo - DAY : a - DAY]).mean(axis=1) if a > lo else 0.0
        out[i] = 1.0 / np.maximum(change / scales[i], floor)
    out[~np.isfinite(out)] = 1.0 / floor
    return out / out.mean()


def _flatten(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training rows where the target was observed: missing hours are never targets, never "zero load"."""
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1)
    seen = ~np.isnan(y)
    return x[seen], y[seen]


def _spread(values: np.ndarray, where: np.ndarray, horizon: int | None = None) -> np.ndarray:
    shape = (len(where),) if horizon is None else (len(where), horizon)
    out = np.full(shape, np.nan)
    out[where] = values
    return out


def features(
    filled: np.ndarray,
    index: pd.DatetimeIndex,
    at: int,
    horizon: int,
    event_days: frozenset[date] = frozenset(),
    rich: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale-free features for forecasting hours at..at+horizon-1 from `filled[:, :at]` (N x H x F), and scales.

    Fewer than 7 days before `at` (at least one): the first day is repeated backwards to make up the week.
    """
    n = len(filled)
    moment0 = index[0] + pd.Timedelta(hours=at)
    filled, at = _a_week_before(filled, at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a series with no value yet: NaN features, never a target
        scale = np.nanmean(filled[:, at - WEEK : at], axis=1) + 1.0
    recent = filled[:, at - DAY : at] / scale[:, None]
    days = last_days(filled, at) / scale[:, None, None]
    out = []
    for h in range(horizon):
        moment = moment0 + pd.Timedelta(hours=h)
        same = days[:, :, h % DAY]
        calendar = [moment.hour, moment.day_of_week, float(moment.date() in event_days)]
        columns = [
            np.full(n, h), *(np.full(n, c) for c in calendar), same, same.mean(axis=1),
            np.median(same, axis=1), same.std(axis=1), recent[:, -1], recent[:, -6:].mean(axis=1),
            recent.mean(axis=1), np.log1p(scale),
        ]  # fmt: skip
        if rich:
            around = (days[:, :, (h - 1) % DAY] + days[:, :, (h + 1) % DAY]) / 2
            columns += [recent[:, -2], recent[:, -3], recent.max(axis=1), recent.min(axis=1),
                        np.median(around, axis=1), around.mean(axis=1), recent[:, -1] - recent[:, -2]]  # fmt: skip
        out.append(np.column_stack(columns))
    return np.stack(out, axis=1), scale


def fill_for_features(values: np.ndarray) -> np.ndarray:
    """Fills gaps for features only: same hour the day before (three times), then carry forward/back."""
    filled = values.copy()
    for _ in range(3):
        gap = np.isnan(filled)
        shifted = np.full_like(filled, np.nan)
        shifted[:, DAY:] = filled[:, :-DAY]
        filled[gap] = shifted[gap]
    for _ in range(7):  # before a series' first day: its first days repeated backwards (a week of daily shape)
        gap = np.isnan(filled)
        if not gap.any():
            break
        shifted = np.full_like(filled, np.nan)
        shifted[:, :-DAY] = filled[:, DAY:]
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
    return uncross(out)


def _conformal_offset(residuals: np.ndarray, q: float) -> float:
    """The shift that makes quantile q's prediction exceeded by exactly 1-q of the calibration targets."""
    seen = residuals[~np.isnan(residuals)]
    if len(seen) < 50:
        return 0.0
    return float(np.quantile(seen, q))


def uncross(out: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
    levels = sorted(out)
    stacked = np.sort(np.stack([out[q] for q in levels]), axis=0)
    return {q: stacked[i] for i, q in enumerate(levels)}
