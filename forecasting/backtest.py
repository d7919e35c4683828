"""Backtests on a usage file: the engine's forecasts from given origins, and the evaluation against baselines.

    python -m forecasting backtest --input FILE.csv.gz --target cpu_usage_mhz_mean --horizon 24 \
        --origins 2013-08-30T00:00:00Z --quantiles 0.1,0.5,0.9 --output forecasts.csv
    python -m forecasting evaluate --input FILE.csv.gz --target cpu_usage_mhz_mean --holdout-days 14
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.engine import ForecastError, forecast_series
from forecasting.fleet import (
    FleetModel,
    FleetModelError,
    ServeConfig,
    data_hash,
    fleet_config,
    publish_decision,
    serve_panel,
    train_fleet,
    validate,
)
from forecasting.global_model import DAY, GlobalConfig, GlobalQuantileForecaster, fill_for_features
from forecasting.panel import Panel
from forecasting.threads import single_blas_thread

Progress = Callable[[str], None]


def parse_quantiles(text: str) -> tuple[float, ...]:
    """ "0.1,0.5,0.9" -> sorted levels, each strictly between 0 and 1 (ValueError naming the problem)."""
    try:
        values = tuple(sorted(float(x) for x in text.split(",") if x))
    except ValueError as exc:
        raise ValueError(f"not a comma-separated list of numbers: {text!r}") from exc
    if not values or any(not 0 < q < 1 for q in values):
        raise ValueError(f"quantiles must lie strictly between 0 and 1: {text!r}")
    return values


def parse_origins(text: str) -> list[pd.Timestamp]:
    """ "2013-08-18T00:00:00Z,..." -> UTC hours (ValueError naming the origin that is not one)."""
    out = []
    for part in filter(None, text.split(",")):
        try:
            stamp = pd.Timestamp(part)
        except ValueError as exc:
            raise ValueError(f"origin {part!r} is not ISO 8601") from exc
        if stamp.tzinfo is None:
            raise ValueError(f"origin {part!r} needs a time zone (e.g. Z)")
        if stamp != stamp.floor("h"):
            raise ValueError(f"origin {part!r} must be on the hour")
        out.append(stamp.tz_convert("UTC"))
    if not out:
        raise ValueError("at least one origin is needed")
    return out


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

    single_blas_thread()  # a fit per series: a spinning BLAS team costs more than the fit
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


# ---- the product's serving path (fleet.py) ------------------------------------------------------------------


def serve_backtest(
    panel: Panel,
    origins: list[pd.Timestamp],
    horizon: int,
    quantiles: tuple[float, ...],
    train: Callable[[int], FleetModel | None],
    serve: ServeConfig | None = None,
    events: frozenset[date] = frozenset(),
    progress: Progress | None = None,
    engines: dict[str, int] | None = None,
) -> pd.DataFrame:
    """What the product would have answered from each origin: the fleet model published by the training that ran
    at the origin's midnight (`train(position)` fits on data before that position only; None: no model was
    published, as when the data is too short to train on or the training was rejected), served per entity
    through `fleet.serve_panel`, and the per-entity darts engine for the entities it routes there. One row per
    entity, origin and hour (entity_id, origin, timestamp, q<level>...). `engines` counts who answered."""
    serve = serve or ServeConfig()
    frames, models = [], {}
    for i, origin in enumerate(origins, 1):
        pos = int((origin - panel.index[0]) / pd.Timedelta(hours=1))
        if pos <= 0:
            raise ValueError(
                f"origin {origin.isoformat()} is not after the data's first hour {panel.index[0].isoformat()}"
            )
        if pos > len(panel.index):
            raise ValueError(
                f"origin {origin.isoformat()} is past the hour after the data's last {panel.index[-1].isoformat()}"
            )
        midnight = pos - int(origin.hour)
        if midnight not in models:
            models[midnight] = train(midnight)
        values = _extend(panel, pos + horizon)
        index = pd.date_range(panel.index[0], periods=values.shape[1], freq="h")
        served = serve_panel(models[midnight], values, index, pos, horizon, quantiles, events, serve)
        out = {q: served.quantiles[q].copy() for q in quantiles}
        stamps = pd.date_range(index[0] + pd.Timedelta(hours=pos), periods=horizon, freq="h")
        rows = []
        for r in range(len(panel.entities)):
            if served.engine[r] == "fleet":
                rows.append(r)
                continue
            history = pd.Series(values[r, max(0, pos - DAY * serve.history_days) : pos],
                                index=index[max(0, pos - DAY * serve.history_days) : pos])  # fmt: skip
            try:
                fc = forecast_series(history, stamps[0], horizon, quantiles, event_days=events)
            except ForecastError:
                continue  # no observed history before this origin: nothing to answer with
            for q in quantiles:
                out[q][r] = fc.quantiles[q]
            rows.append(r)
        if engines is not None:
            for r in rows:
                key = str(served.engine[r])
                engines[key] = engines.get(key, 0) + 1
        for r in rows:
            frame = pd.DataFrame({"entity_id": panel.entities[r], "origin": origin.isoformat(),
                                  "timestamp": [t.isoformat() for t in stamps]})  # fmt: skip
            for q in quantiles:
                frame[f"q{q:g}"] = np.round(out[q][r], 4)
            frames.append(frame)
        if progress:
            fleet_rows = int(np.sum(served.engine == "fleet"))
            progress(f"origin {i}/{len(origins)} {origin.isoformat()}: {len(rows)} entities, fleet model {fleet_rows}")
    columns = ["entity_id", "origin", "timestamp", *(f"q{q:g}" for q in quantiles)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def score_backtest(panel: Panel, frame: pd.DataFrame, hw_workers: int = 2) -> dict[str, float]:
    """The backtest's forecasts against the actuals and the baselines from the same origins: relative MAE
    (geometric mean over entities of MAE / baseline MAE) against seasonal naive, naive and Holt-Winters, and the
    coverage of the 10-90 % band and of q0.9 (hours with an observed actual only)."""
    first = frame[frame["origin"] == frame["origin"].iloc[0]]
    h = len(first) // max(first["entity_id"].nunique(), 1)
    errs: dict[str, list[np.ndarray]] = {m: [] for m in ("model", "seasonal_naive", "naive", "holt_winters")}
    inside, under, seen_total = 0, 0, 0
    pos_of = {e: i for i, e in enumerate(panel.entities)}
    for origin, part in frame.groupby("origin", sort=True):
        pos = panel.position(pd.Timestamp(origin))
        ids = part["entity_id"].drop_duplicates().tolist()
        rows = np.array([pos_of[e] for e in ids])
        values = _extend(panel, pos + h)
        actual = values[rows, pos : pos + h]
        pred = {q: part[f"q{q:g}"].to_numpy().reshape(len(ids), h) for q in (0.1, 0.5, 0.9)}
        filled = fill_for_features(values[rows, :pos])
        preds = {"model": pred[0.5], "seasonal_naive": seasonal_naive(filled, h), "naive": naive(filled, h),
                 "holt_winters": holt_winters(filled, h, hw_workers)}  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for name, p in preds.items():
                e = np.full(len(panel.entities), np.nan)
                e[rows] = np.nanmean(np.abs(actual - p), axis=1)
                errs[name].append(e)
        seen = ~np.isnan(actual)
        inside += int(np.sum(seen & (actual >= pred[0.1]) & (actual <= pred[0.9])))
        under += int(np.sum(seen & (actual <= pred[0.9])))
        seen_total += int(seen.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mae = {m: np.nanmean(np.stack(v, axis=1), axis=1) for m, v in errs.items()}
    return {
        "relative_mae_seasonal_naive": _geomean_ratio(mae["model"], mae["seasonal_naive"]),
        "relative_mae_naive": _geomean_ratio(mae["model"], mae["naive"]),
        "relative_mae_holt_winters": _geomean_ratio(mae["model"], mae["holt_winters"]),
        "coverage_80": inside / seen_total if seen_total else float("nan"),
        "q90_coverage": under / seen_total if seen_total else float("nan"),
        "entities": int(np.sum(np.isfinite(mae["model"]))),
        "origins": int(frame["origin"].nunique()),
        "hours_scored": seen_total,
    }


def fleet_trainer(
    panel: Panel,
    config: GlobalConfig | None = None,
    events: frozenset[date] = frozenset(),
    cache_dir: str | None = None,
    progress: Progress | None = None,
) -> Callable[[int], FleetModel | None]:
    """`train(position)` as the product's daily training would have run at that hour: fits on the data before it,
    publishes by `fleet.publish_decision` against the model then serving (scored on the same held-out
    days), and returns the model serving afterwards (None while none was ever published). With `cache_dir`,
    fitted candidates are kept on disk by data digest and settings, so a second run skips fitting."""
    config = config or fleet_config()
    serving: list[FleetModel | None] = [None]

    def train(pos: int) -> FleetModel | None:
        stamp = panel.index[min(pos, len(panel.index)) - 1].isoformat()
        key = hashlib.sha256(f"{data_hash(panel.values[:, :pos], panel.entities, panel.index[:pos])}|{config}|"
                             f"{sorted(events)}".encode()).hexdigest()[:20]  # fmt: skip
        path = os.path.join(cache_dir, f"fleet-{key}.bin") if cache_dir else None
        candidate = None
        if path and os.path.exists(path):
            try:
                candidate = FleetModel.from_bytes(Path(path).read_bytes())
            except FleetModelError:
                candidate = None
        if candidate is None:
            started = time.perf_counter()
            try:
                result = train_fleet(panel.values, panel.index, panel.entities, end=pos, config=config, events=events,
                                     version=f"backtest-{stamp}")  # fmt: skip
            except ValueError as exc:
                if progress:
                    progress(f"training at {stamp}: {exc}; the serving model stays")
                return serving[0]
            candidate = result.model
            if path:
                os.makedirs(cache_dir or ".", exist_ok=True)
                Path(path).write_bytes(result.artifact)
            if progress:
                progress(f"trained on data to {stamp} in {time.perf_counter() - started:.0f} s")
        scores = candidate.metadata.get("validation", {})
        before = None
        if serving[0] is not None:
            origins = [panel.position(pd.Timestamp(t)) for t in scores.get("origin_times", [])]
            before = validate(serving[0], panel.values, panel.index, origins, config.horizon, events).as_dict()
        ok, why = publish_decision(scores, before)
        if progress:
            progress(f"training at {stamp}: {why}")
        if ok:
            serving[0] = candidate
        return serving[0]

    return train
