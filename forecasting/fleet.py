"""The fleet model and the product's one serving path (PredictDemand, refine, the simulator, `shadowctl backtest`).

A fleet model is the global gradient-boosted quantile model (global_model.py) fitted once across every entity's
history and published as an artifact. Serving it costs milliseconds: the features of one entity's recent past, a
prediction per quantile. What the global engine decided per series at fit time is decided here per entity at
serving time, from the entity's own recent past only (`ServeConfig.backtest_days` daily origins before the forecast
origin, each forecasting as many hours ahead as the request):

- **choice**: the fleet model's median, or a simple candidate (same hour yesterday or last week, last value, ...)
  when its recent error is lower by `selection_margin`; when even the chosen one does worse than seasonal naive by
  `entity_ratio`, or the entity is too new for the fleet model's features (8 days), or the request reaches past
  the model's horizon, the answer comes from the per-entity darts engine (engine.py) instead. Every forecast says
  which engine answered and why.
- **calibration**: each quantile is shifted by the entity's own recent conformity scores (split conformal per
  entity, in units of the entity's recent level, so a level shift rescales the band), shrunk towards the fleet's
  pooled shift by `shrink_hours` pseudo-observations. A band is then as wide as this entity's recent errors say,
  not as wide as the fleet's average entity's.

All of it is plain numpy over a panel of entities, so one entity (PredictDemand) and 500 (the simulator, the
backtest) take the same path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from forecasting.engine import ForecastError, SeriesForecast, forecast_series, normal_quantile
from forecasting.global_model import (
    DAY,
    MIN_PAST,
    WEEK,
    Bag,
    GlobalConfig,
    GlobalQuantileForecaster,
    baselines,
    features,
    fill_for_features,
    uncross,
)

FORMAT = 1  # bumped when an artifact written by an older version can no longer be read
MAGIC = b"SHADOWING-FLEET-MODEL\n"
FLEET_HORIZON = 24


class FleetModelError(ValueError):
    """An artifact that cannot be read (wrong format, corrupt, or its digest does not match)."""


@dataclass(frozen=True)
class ServeConfig:
    """Per-entity choice and calibration at serving time (chosen on 2013-07-21..08-03 only; docs/forecasting.md)."""

    history_days: int = 16  # the past a forecast reads (PredictDemand reads as much from CloudWatch)
    backtest_days: int = 7  # daily origins before the forecast origin that the choice and calibration read
    min_backtest_days: int = 2  # fewer observed origins: the per-entity darts engine answers
    selection_margin: float = 0.25  # a simple candidate replaces the fleet median when its recent MAE is this lower
    entity_ratio: float = 1.25  # chosen candidate's recent MAE above this x seasonal naive's: the darts engine answers
    calibrate: bool = True
    shrink_hours: float = 48.0  # pseudo-observations of the pooled shift in each entity's conformal shift
    decay: float = 0.85  # weight of a backtest origin k days older than the newest: decay**k


@dataclass(frozen=True)
class FleetModel:
    """A fitted fleet model: scaled-target predictors per quantile, pooled conformal shifts, and its metadata."""

    config: GlobalConfig
    models: dict[float, Bag]
    pooled: dict[float, float]  # the validation's pooled conformity-score quantile per level (scaled units)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(self.models))

    def to_bytes(self) -> bytes:
        """The artifact: a header line, then gzip'd pickle. Only load artifacts from a bucket you control."""
        body = gzip.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL), compresslevel=6)
        return MAGIC + f"{FORMAT}\n".encode() + body

    @staticmethod
    def from_bytes(data: bytes, sha256: str | None = None) -> FleetModel:
        """Reads an artifact; `sha256` (the published digest) is checked before anything is unpickled."""
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise FleetModelError("artifact: its SHA-256 does not match the published digest")
        if not data.startswith(MAGIC):
            raise FleetModelError("artifact: not a Shadowing fleet model")
        head, _, body = data[len(MAGIC) :].partition(b"\n")
        if head != str(FORMAT).encode():
            raise FleetModelError(f"artifact: format {head.decode(errors='replace')!r}, this version reads {FORMAT}")
        try:
            model = pickle.loads(gzip.decompress(body))  # the digest above pins what was published
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
            raise FleetModelError(f"artifact: cannot be read: {exc}") from exc
        if not isinstance(model, FleetModel):
            raise FleetModelError("artifact: not a fleet model")
        return model


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_hash(values: np.ndarray, entities: Sequence[str], index: pd.DatetimeIndex) -> str:
    """A digest of exactly the training data (entities, hours, values; NaN as NaN)."""
    h = hashlib.sha256()
    h.update("\n".join(entities).encode())
    h.update(f"{index[0].isoformat()}|{len(index)}".encode())
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float64))
    h.update(buffer.getvalue())
    return h.hexdigest()


# ---- serving --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedPanel:
    """Forecasts for rows of a panel from one origin: `quantiles[q]` is (rows x steps); NaN rows were not served."""

    quantiles: dict[float, np.ndarray]
    engine: np.ndarray  # "fleet" or "entity" (the caller runs the per-entity engine for those) per row
    model: np.ndarray  # the chosen candidate ("global_gbm", "seasonal_naive_24h", ...) per row
    reason: np.ndarray  # why, per row
    wape: np.ndarray  # the chosen candidate's recent backtest WAPE (NaN: none)
    coverage: np.ndarray  # held-out coverage of the 10-90 % band on the recent origins (NaN: none)
    observed_hours: np.ndarray


def serve_panel(
    model: FleetModel | None,
    values: np.ndarray,
    index: pd.DatetimeIndex,
    at: int,
    steps: int,
    quantiles: Iterable[float],
    events: frozenset[date] = frozenset(),
    cfg: ServeConfig | None = None,
) -> ServedPanel:
    """Forecasts hours at..at+steps-1 of every row of `values` (N x T, hours before `at` are the past) with the fleet
    model, choosing and calibrating per row from the row's own past; rows it cannot serve are marked "entity"."""
    cfg = cfg or ServeConfig()
    levels = tuple(sorted(set(quantiles) | {0.1, 0.5, 0.9}))
    n = len(values)
    skip = max(0, at - DAY * cfg.history_days)  # the same past whether the caller holds 16 days or two months
    values, index, at = values[:, skip:], index[skip:], at - skip
    past = values[:, :at]
    observed = np.sum(~np.isnan(past), axis=1)
    out = {q: np.full((n, steps), np.nan) for q in levels}
    engine = np.full(n, "entity", dtype=object)
    chosen = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    wape = np.full(n, np.nan)
    coverage = np.full(n, np.nan)
    if model is None:
        reason[:] = "no fleet model is published"
        return ServedPanel(out, engine, chosen, reason, wape, coverage, observed)
    if steps > model.config.horizon:
        reason[:] = f"{steps} h ahead is past the fleet model's {model.config.horizon} h horizon"
        return ServedPanel(out, engine, chosen, reason, wape, coverage, observed)
    if at < MIN_PAST + DAY:
        reason[:] = f"{at} h of history; the fleet model needs {MIN_PAST + DAY}"
        return ServedPanel(out, engine, chosen, reason, wape, coverage, observed)
    filled = fill_for_features(past)
    recent = np.sum(~np.isnan(past[:, -WEEK:]), axis=1)
    origins = [b for b in (at - steps - DAY * k for k in range(cfg.backtest_days)) if b >= MIN_PAST]
    # what each backtest origin and the forecast origin predict, all in one call per quantile
    positions = [*origins, at]
    xs, scales = [], []
    for b in positions:
        x, scale = features(filled[:, :b], index, b, steps, events, model.config.rich)
        xs.append(x)
        scales.append(scale)
    x_all = np.stack(xs)  # P x N x steps x F
    scale_all = np.stack(scales)  # P x N
    pred, rows = {}, x_all.reshape(-1, x_all.shape[-1])
    # One OpenMP thread: on a few hundred rows sklearn's thread team costs 50x the prediction (1 s vs 15 ms CPU).
    with threadpool_limits(limits=1, user_api="openmp"):
        raw = {q: model.models[q](rows).reshape(x_all.shape[:3]) for q in model.levels}
    for q in sorted(set(model.levels) | set(levels)):
        pred[q] = np.maximum(_at_level(raw, q) * scale_all[..., None], 0.0)
    pred = uncross(pred)
    cands = [{"global_gbm": pred[0.5][p], **baselines(filled, b, steps)} for p, b in enumerate(positions)]
    actual = np.stack([past[:, b : b + steps] for b in origins]) if origins else np.zeros((0, n, steps))
    # per row and origin: an origin counts when the row was observed in the week before it and in its window
    seen_before = np.stack([np.sum(~np.isnan(past[:, max(b - WEEK, 0) : b]), axis=1) >= DAY for b in origins]) if (
        origins) else np.zeros((0, n), dtype=bool)  # fmt: skip
    usable = seen_before & np.any(~np.isnan(actual), axis=2)
    n_origins = usable.sum(axis=0)
    names = list(cands[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mae = {}
        for name in names:
            err = np.stack([np.abs(actual[k] - cands[k][name]) for k in range(len(origins))]) if origins else actual
            err = np.where(usable[..., None], err, np.nan)
            mae[name] = np.nanmean(err, axis=(0, 2)) if origins else np.full(n, np.nan)
    simple = [m for m in names if m != "global_gbm"]
    best_simple = np.argmin(np.stack([np.where(np.isnan(mae[m]), np.inf, mae[m]) for m in simple]), axis=0)
    best_mae = np.stack([mae[m] for m in simple])[best_simple, np.arange(n)]
    take_simple = best_mae < (1 - cfg.selection_margin) * mae["global_gbm"]
    pick = np.where(take_simple, np.array(simple, dtype=object)[best_simple], "global_gbm")
    pick_mae = np.where(take_simple, best_mae, mae["global_gbm"])
    naive_mae = mae["seasonal_naive_24h"]
    served = (recent >= DAY) & (n_origins >= min(cfg.min_backtest_days, len(origins))) & (len(origins) > 0)
    for i in np.flatnonzero(~served):
        reason[i] = (f"{int(n_origins[i])} recent day(s) to check the fleet model on, {cfg.min_backtest_days} needed"
                     if recent[i] >= DAY else f"{int(recent[i])} h seen in the last week: a new entity")  # fmt: skip
    bad = served & (pick_mae > cfg.entity_ratio * naive_mae)
    for i in np.flatnonzero(bad):
        reason[i] = (f"the fleet model's recent error is {pick_mae[i] / max(naive_mae[i], 1e-9):.2f}x seasonal naive's"
                     f" (above {cfg.entity_ratio:g}x)")  # fmt: skip
    ok = served & ~bad
    engine[ok] = "fleet"
    chosen[ok] = pick[ok]
    # bands: the chosen median with the fleet model's spread around it, at every position
    bands = {q: np.empty_like(pred[q]) for q in levels}
    for p in range(len(positions)):
        median = np.stack([cands[p][name][i] for i, name in enumerate(np.where(ok, pick, "global_gbm"))])
        for q in levels:
            bands[q][p] = np.maximum(median + pred[q][p] - pred[0.5][p], 0.0)
    shift = {q: np.zeros(n) for q in levels}
    if cfg.calibrate and origins:
        scores = {q: (actual - bands[q][:-1]) / scale_all[:-1, :, None] for q in levels}
        pooled = {0.5: 0.0, **{q: model.pooled.get(q, 0.0) for q in model.levels if q != 0.5}}
        weights = np.repeat((cfg.decay ** np.arange(len(origins)))[:, None], n, axis=1) * usable
        for q in levels:
            if q != 0.5:
                shift[q] = _shrunk_shift(scores[q], weights, q, _at_level(pooled, q), cfg.shrink_hours)
        coverage = _held_out_coverage(scores, weights, model.pooled, cfg.shrink_hours)
    for q in levels:
        final = np.maximum(bands[q][-1] + shift[q][:, None] * scale_all[-1][:, None], 0.0)
        out[q][ok] = final[ok]
    out_sorted = _around_median({q: v[ok] for q, v in out.items()})
    for q in levels:
        out[q][ok] = out_sorted[q]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        total = np.nansum(np.where(usable[..., None], np.abs(actual), 0.0), axis=(0, 2)) if origins else np.zeros(n)
    wape = np.where(ok & (total > 0), pick_mae * np.maximum(usable.sum(0), 1) * steps / np.maximum(total, 1e-9),
                    np.nan)  # fmt: skip
    for i in np.flatnonzero(ok):
        reason[i] = (f"fleet model {model.metadata.get('version', '?')}: {pick[i]} had the lowest error on the last "
                     f"{int(n_origins[i])} days")  # fmt: skip
    return ServedPanel(out, engine, chosen, reason, wape, np.where(ok, coverage, np.nan), observed)


def _at_level(by_level: Mapping[float, Any], q: float) -> Any:
    """The value at level q from those at the model's levels (which include the median): itself when q is one of
    them, else interpolated in normal-quantile units between the two levels around it, or extrapolated from the
    median through the outermost level on its side. A level the model was not fitted for (the policy's sizing
    quantile, 0.85 by default) thus sits between its neighbours, not on the nearest one."""
    if q in by_level:
        return by_level[q]
    z = normal_quantile
    known = sorted(by_level)
    lo = max((level for level in known if level < q), default=None)
    hi = min((level for level in known if level > q), default=None)
    if lo is None or hi is None:  # outside the fitted levels: from the median outwards
        edge = known[-1] if q > 0.5 else known[0]
        return by_level[0.5] if edge == 0.5 else by_level[0.5] + (by_level[edge] - by_level[0.5]) * (z(q) / z(edge))
    t = (z(q) - z(lo)) / (z(hi) - z(lo))
    return by_level[lo] + (by_level[hi] - by_level[lo]) * t


def _weighted_quantile(scores: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Per row (axis 1 of origins x rows x steps scores), the weighted q-quantile of its observed scores, with split
    conformal's finite-sample step (the ceil((n+1)q)-th of n for an upper level). NaN where a row has none."""
    k, n, s = scores.shape
    flat = np.moveaxis(scores, 1, 0).reshape(n, k * s)
    w = np.repeat(np.moveaxis(weights, 1, 0), s, axis=1).astype(float)
    w = np.where(np.isnan(flat), 0.0, w)
    flat = np.where(np.isnan(flat), np.inf if q > 0.5 else -np.inf, flat)
    order = np.argsort(flat, axis=1)
    vals = np.take_along_axis(flat, order, axis=1)
    cw = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    total = cw[:, -1:]
    count = (w > 0).sum(axis=1, keepdims=True)
    m = np.maximum(count, 1)
    level = np.minimum(q * (m + 1) / m, 1.0) if q > 0.5 else np.maximum((q * (m + 1) - 1) / m, 0.0)
    idx = np.minimum((cw < level * total).sum(axis=1), flat.shape[1] - 1)
    out = vals[np.arange(n), idx]
    return np.where((count[:, 0] > 0) & np.isfinite(out), out, np.nan)


def _shrunk_shift(scores: np.ndarray, weights: np.ndarray, q: float, pooled: float, shrink: float) -> np.ndarray:
    """The entity's conformal shift for level q, shrunk towards the pooled shift: (n s + m p) / (n + m)."""
    own = _weighted_quantile(scores, weights, q)
    n_eff = np.sum(np.where(np.isnan(scores).all(axis=2), 0.0, 1.0) * (weights > 0), axis=0) * scores.shape[2]
    own = np.where(np.isnan(own), pooled, own)
    return (n_eff * own + shrink * pooled) / np.maximum(n_eff + shrink, 1e-9)


def _held_out_coverage(scores: dict[float, np.ndarray], weights: np.ndarray, pooled: dict[float, float],
                       shrink: float) -> np.ndarray:  # fmt: skip
    """Per row: the share of each recent origin's actuals inside the 10-90 % band calibrated on the other origins."""
    k = scores[0.1].shape[0]
    if k < 2:
        return np.full(scores[0.1].shape[1], np.nan)
    inside = np.zeros(scores[0.1].shape[1])
    total = np.zeros_like(inside)
    for j in range(k):
        w = weights.copy()
        w[j] = 0
        lo = _shrunk_shift(scores[0.1], w, 0.1, pooled.get(0.1, 0.0), shrink)
        hi = _shrunk_shift(scores[0.9], w, 0.9, pooled.get(0.9, 0.0), shrink)
        s_lo, s_hi = scores[0.1][j], scores[0.9][j]
        seen = ~np.isnan(s_lo) & (weights[j] > 0)[:, None]
        inside += np.sum(seen & (s_lo >= lo[:, None]) & (s_hi <= hi[:, None]), axis=1)
        total += seen.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def _around_median(out: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
    """Uncrosses calibrated levels without moving the median: a lower level is at most the next level up, an upper
    one at least the next level down (sorting would swap a shifted q0.1 into the point forecast)."""
    levels = sorted(out)
    fixed = dict(out)
    below = [q for q in levels if q < 0.5][::-1]
    above = [q for q in levels if q > 0.5]
    for group, op in ((below, np.minimum), (above, np.maximum)):
        ref = out[0.5]
        for q in group:
            fixed[q] = op(out[q], ref)
            ref = fixed[q]
    return fixed


# ---- one entity (PredictDemand, refine) ------------------------------------------------------------------------


class Forecaster:
    """The one serving path for one series: the fleet model when it serves the entity well, else the per-entity
    darts engine, with the engine and the reason on the result."""

    def __init__(self, model: FleetModel | None, cfg: ServeConfig | None = None,
                 entity_engine: Callable[..., SeriesForecast] = forecast_series) -> None:  # fmt: skip
        self.model = model
        self.cfg = cfg or ServeConfig()
        self._entity_engine = entity_engine

    def forecast(
        self,
        history: pd.Series,
        start: pd.Timestamp,
        hours: int,
        quantiles: tuple[float, ...],
        event_days: Iterable[date] = (),
        drivers: pd.DataFrame | None = None,
    ) -> SeriesForecast:
        """Forecasts `hours` hours from `start` from `history` (hourly UTC, NaN = missing, before `start`).

        `drivers` (the entity's external drivers as known at each hour, `forecasting.drivers.covariates`): the fleet
        model reads none, so the per-entity engine is also run with them, and whichever has the lower recent
        backtest error (WAPE) answers; the reason says which and why."""
        history = history[history.index < start]
        if drivers is not None and not len(drivers.columns):
            drivers = None
        if self.model is None:
            return self._entity(history, start, hours, quantiles, event_days, "no fleet model is published", drivers)
        observed = history.dropna()
        if observed.empty:
            return self._entity(history, start, hours, quantiles, event_days, "no observed history", drivers)
        end = history.index[-1] + pd.Timedelta(hours=1)
        gap = int((start - end) / pd.Timedelta(hours=1))
        steps = gap + hours
        index = pd.DatetimeIndex(history.index)
        at = len(index)
        values = history.to_numpy(dtype=float)[None, :]
        served = serve_panel(self.model, values, index, at, steps, quantiles, frozenset(event_days), self.cfg)
        if served.engine[0] != "fleet":
            return self._entity(history, start, hours, quantiles, event_days, str(served.reason[0]), drivers)
        levels = sorted(served.quantiles)
        wanted = sorted(set(quantiles) | {0.5})
        out = {q: served.quantiles[_closest(levels, q)][0, gap:] for q in wanted}
        wape = float(served.wape[0]) if np.isfinite(served.wape[0]) else None
        cov = float(served.coverage[0]) if np.isfinite(served.coverage[0]) else None
        fleet = SeriesForecast(
            model=f"fleet:{served.model[0]}",
            index=pd.date_range(start, periods=hours, freq="h"),
            quantiles=out,
            wape=wape,
            interval_coverage=cov,
            history_hours=len(history.loc[observed.index[0] :]),
            missing_fraction=float(history.loc[observed.index[0] :].isna().mean()),
            engine="fleet",
            reason=str(served.reason[0]),
        )
        if drivers is None:
            return fleet
        names = ", ".join(drivers.columns)
        try:
            own = self._entity(history, start, hours, quantiles, event_days, "", drivers)
        except ForecastError:
            return replace(fleet, reason=f"{fleet.reason}; with drivers {names} the per-entity engine could not fit")
        # The drivers answer only through their own candidate: the per-entity engine winning with another one would be
        # the engine beating the fleet model, not the drivers (and its best-of-several WAPE flatters it).
        if own.model == "linear_drivers" and own.wape is not None and (fleet.wape is None or own.wape < fleet.wape):
            fleet_err = "none" if fleet.wape is None else f"{fleet.wape:.3f}"
            return replace(own, reason=f"per-entity engine with drivers {names}: its recent error {own.wape:.3f} "
                                       f"is below the fleet model's ({fleet_err})")  # fmt: skip
        own_err = "none" if own.wape is None else f"{own.wape:.3f}"
        return replace(fleet, reason=f"{fleet.reason}; with drivers {names} the per-entity engine chose {own.model} "
                                     f"(recent error {own_err}), not better than the fleet model")  # fmt: skip

    def _entity(self, history: pd.Series, start: pd.Timestamp, hours: int, quantiles: tuple[float, ...],
                event_days: Iterable[date], why: str,
                drivers: pd.DataFrame | None = None) -> SeriesForecast:  # fmt: skip
        extra = {"drivers": drivers} if drivers is not None else {}
        fc = self._entity_engine(history, start, hours, quantiles, event_days=event_days, **extra)
        return replace(fc, engine="entity", reason=f"per-entity engine: {why}")


def _closest(levels: list[float], q: float) -> float:
    match = [level for level in levels if math.isclose(level, q)]
    if not match:
        raise ForecastError(f"quantile {q:g} was not served")
    return match[0]


# ---- training -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """A model's scores on the newest held-out days, through the serving path."""

    origins: int
    entities: int
    mae: float
    relative_mae: dict[str, float]  # geometric mean over entities of MAE / baseline's MAE
    coverage_80: float
    q90_coverage: float

    def as_dict(self) -> dict[str, Any]:
        return {"origins": self.origins, "entities": self.entities, "mae": self.mae,
                "relative_mae": self.relative_mae, "coverage_80": self.coverage_80,
                "q90_coverage": self.q90_coverage}  # fmt: skip


def fleet_config(**overrides: Any) -> GlobalConfig:
    """The fleet model's training settings: the global engine's at a 24 h horizon, one median model rather than a
    bag of three, at most 300,000 training window-hours, and up to 800 boosting rounds at learning rate 0.05
    (sklearn's early stopping ends the 0.1 and 0.9 models sooner). Chosen on Bitbrains 2013-08-04..17 and stress
    seed 1, models refitted weekly: 800 x 0.05 took the served median from 0.776x to 0.760x seasonal naive's MAE on
    Bitbrains (200 x 0.1, the global engine's, before; 400 x 0.05 0.764x, 1600 x 0.05 0.760x, a bag of three
    0.771x) and from 0.803x to 0.811x on stress seed 1 (docs/forecasting.md). The 300,000 rows are drawn with
    probability by noise weight (`weight_floor` 0.15, chosen on the same Bitbrains window from 0.05 / 0.15 / 0.3:
    0.772x -> 0.757x seasonal naive's MAE in docs/forecasting.md's harness)."""
    base = GlobalConfig(horizon=FLEET_HORIZON, quantiles=(0.1, 0.5, 0.9), median_bag=1, max_train_rows=300_000,
                        max_iter=800, learning_rate=0.05, weight_floor=0.15)  # fmt: skip
    return replace(base, **overrides)


def fit_fleet(values: np.ndarray, index: pd.DatetimeIndex, end: int, config: GlobalConfig | None = None,
              events: frozenset[date] = frozenset(), progress: Callable[[str], None] | None = None,
              metadata: dict[str, Any] | None = None) -> FleetModel:  # fmt: skip
    """Fits a fleet model on every window before position `end`; pooled shifts are zero until `validate` sets them."""
    config = config or fleet_config()
    forecaster = GlobalQuantileForecaster(config, events, progress)
    models = forecaster.fit_quantile_models(values, index, end, config.quantiles)
    return FleetModel(config, models, {q: 0.0 for q in models}, dict(metadata or {}))


def validate(model: FleetModel, values: np.ndarray, index: pd.DatetimeIndex, origins: Sequence[int], steps: int = 24,
             events: frozenset[date] = frozenset(), cfg: ServeConfig | None = None) -> Validation:  # fmt: skip
    """Scores `model` through the serving path from each origin (rows the fleet path does not serve are left out)."""
    errs: dict[str, list[np.ndarray]] = {"model": [], "seasonal_naive": [], "naive": []}
    inside, under, seen_total = 0, 0, 0
    for at in origins:
        served = serve_panel(model, values, index, at, steps, (0.1, 0.5, 0.9), events, cfg)
        actual = values[:, at : at + steps]
        filled = fill_for_features(values[:, :at])
        base = baselines(filled, at, steps)
        ok = (served.engine == "fleet") & np.any(~np.isnan(actual), axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for name, pred in (("model", served.quantiles[0.5]), ("seasonal_naive", base["seasonal_naive_24h"]),
                               ("naive", base["last_value"])):  # fmt: skip
                e = np.full(len(values), np.nan)
                e[ok] = np.nanmean(np.abs(actual[ok] - pred[ok]), axis=1)
                errs[name].append(e)
        seen = ~np.isnan(actual) & ok[:, None]
        lo, hi = np.nan_to_num(served.quantiles[0.1]), np.nan_to_num(served.quantiles[0.9])
        inside += int(np.sum(seen & (actual >= lo) & (actual <= hi)))
        under += int(np.sum(seen & (actual <= hi)))
        seen_total += int(seen.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an entity no origin served: NaN, left out below
        stacked = {k: np.nanmean(np.stack(v), axis=0) if v else np.array([]) for k, v in errs.items()}
    rel = {}
    for base in ("seasonal_naive", "naive"):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = stacked["model"] / stacked[base]
        good = np.isfinite(ratio) & (ratio > 0)
        rel[base] = float(np.exp(np.mean(np.log(ratio[good])))) if good.any() else math.nan
    mae = stacked["model"]
    return Validation(
        origins=len(origins),
        entities=int(np.sum(np.isfinite(mae))),
        mae=float(np.nanmean(mae)) if np.isfinite(mae).any() else math.nan,
        relative_mae=rel,
        coverage_80=inside / seen_total if seen_total else math.nan,
        q90_coverage=under / seen_total if seen_total else math.nan,
    )


def pooled_shifts(model: FleetModel, values: np.ndarray, index: pd.DatetimeIndex, origins: Sequence[int],
                  steps: int = 24, events: frozenset[date] = frozenset()) -> dict[float, float]:  # fmt: skip
    """The fleet-wide conformal shift per level, from the uncalibrated serving path's scores at `origins`."""
    raw = replace(model, pooled={q: 0.0 for q in model.models})
    scores: dict[float, list[np.ndarray]] = {q: [] for q in model.models}
    for at in origins:
        served = serve_panel(raw, values, index, at, steps, model.levels, events, ServeConfig(calibrate=False))
        actual = values[:, at : at + steps]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an entity with no data yet: NaN, not served
            scale = np.nanmean(fill_for_features(values[:, :at])[:, max(0, at - WEEK) : at], axis=1) + 1.0
        ok = served.engine == "fleet"
        for q in model.models:
            s = (actual[ok] - served.quantiles[q][ok]) / scale[ok, None]
            scores[q].append(s[~np.isnan(s)])
    out = {}
    for q, parts in scores.items():
        flat = np.concatenate(parts) if parts else np.array([])
        out[q] = float(np.quantile(flat, q)) if len(flat) >= 50 and q != 0.5 else 0.0
    return out


def publish_decision(candidate: Mapping[str, Any], incumbent: Mapping[str, Any] | None) -> tuple[bool, str]:
    """(publish?, why) from validation scores on the same held-out days (`Validation.as_dict()` shape).

    The same rule as the TrainFleetModel workflow's `workflows.promotion.judge` (which may not import this
    library; tests/unit/test_promotion.py holds the two to the same verdicts): a candidate is published only when
    it beats seasonal naive there (geometric-mean relative MAE below 1) and does no worse on that scale-free figure
    than the model serving, scored on the same origins.
    """
    rel = _number(candidate.get("relative_mae", {}).get("seasonal_naive"))
    if rel is None:
        return False, "the candidate served no entity on the held-out days"
    if rel >= 1.0:
        return False, f"the candidate does not beat seasonal naive ({rel:.3f}x its MAE)"
    old = _number(incumbent.get("relative_mae", {}).get("seasonal_naive")) if incumbent is not None else None
    if old is not None and rel > old + 1e-9:
        return False, f"the candidate ({rel:.3f}x seasonal naive) does worse than the published model ({old:.3f}x)"
    versus = f", published model {old:.3f}x" if old is not None else ""
    return True, f"{rel:.3f}x seasonal naive's MAE{versus}"


def _number(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def validation_origins(end: int, validation_days: int, horizon: int) -> tuple[list[int], list[int]]:
    """(all held-out origins, the ones scored): `train_fleet` reads the pooled shifts from the first held-out day
    and scores the others (all of them when there is only one)."""
    cut = end - DAY * validation_days
    origins = [cut + DAY * k for k in range(validation_days) if cut + DAY * k + horizon <= end]
    return origins, origins[1:] or origins


@dataclass(frozen=True)
class TrainingResult:
    model: FleetModel
    validation: Validation
    artifact: bytes


def train_fleet(values: np.ndarray, index: pd.DatetimeIndex, entities: Sequence[str], end: int | None = None,
                config: GlobalConfig | None = None, validation_days: int = 3, version: str = "",
                events: frozenset[date] = frozenset(), progress: Callable[[str], None] | None = None,
                ) -> TrainingResult:  # fmt: skip
    """Fits on the hours before the newest `validation_days` days (up to `end`), reads the pooled shifts from the
    first held-out day and validates on the others through the serving path: the model validated is the model
    published (no refit on the held-out days, so its scores are out of sample)."""
    end = values.shape[1] if end is None else end
    config = config or fleet_config()
    while validation_days > 1 and end - DAY * validation_days - config.horizon < MIN_PAST + 3 * DAY:
        validation_days -= 1  # a short history (a new fleet, three weeks of data) keeps its days for training
    cut = end - DAY * validation_days
    if cut - config.horizon < MIN_PAST + 3 * DAY:
        need = MIN_PAST + 3 * DAY + DAY * validation_days + config.horizon
        raise ValueError(f"{end} h of data: training needs at least {need} h")
    origins, scored = validation_origins(end, validation_days, config.horizon)
    meta = {
        "version": version,
        "format": FORMAT,
        "training_start": index[max(0, cut - DAY * config.train_days)].isoformat(),
        "training_end": index[cut - 1].isoformat(),
        "validation_end": index[end - 1].isoformat(),
        "entities": len(entities),
        "data_hash": data_hash(values[:, :end], entities, index[:end]),
        "config": {k: v for k, v in config.__dict__.items() if isinstance(v, int | float | bool | tuple)},
    }
    model = fit_fleet(values, index, cut, config, events, progress, meta)
    pooled = pooled_shifts(model, values, index, origins[:1], config.horizon, events)
    model = replace(model, pooled=pooled)
    if progress:
        progress(f"validating on {len(scored)} held-out day(s)")
    scores = validate(model, values, index, scored, config.horizon, events)
    held_out = {**scores.as_dict(), "origin_times": [index[at].isoformat() for at in scored]}
    model = replace(model, metadata={**meta, "validation": held_out})
    return TrainingResult(model, scores, model.to_bytes())
