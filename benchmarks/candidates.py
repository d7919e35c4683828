"""`make bench-candidates`: each per-entity forecasting candidate alone, on the same series and origins (issue 22).

    python -m benchmarks.candidates [--entities 20] [--every 3] [--hours 24] [--candidates a,b] [--json PATH]

For every candidate (the per-entity engine's, plus the ones under evaluation: an automatically ordered ARIMA, the
calendar model with and without an event calendar) and every series and origin, what the engine would do if that
candidate were its only one: a backtest from 5 daily origins on the series' own past, a fit on the whole history, a
band from the backtest's residuals (`engine._backtest`, `_fit_predict`, `_quantiles`). Printed per data set:
relative MAE (geometric mean over series of the candidate's MAE / seasonal naive's on the same hours), the 10-90 %
band's coverage, q0.9's, CPU-seconds per forecast (backtest and final fit, this process) and, for the calendar
rows, the MAE on event days alone.

Data sets: the shared Bitbrains trace's last 14 days (every `--every`-th day an origin, every k-th entity with a
week of history) and the second evaluation set (benchmarks/stress_set.py, seed 2, never tuned on) generated with
4 event days whose load surges on ~60 % of the VMs: the one place here where an event calendar is known to matter.
Bitbrains (2013-07/08, the Netherlands) has no public holiday in its window, so its calendar rows read the same
empty calendar; they are kept to show the calendar model costs nothing there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.serving import last_days
from benchmarks.stress_set import COLUMN as STRESS_COLUMN
from benchmarks.stress_set import event_days, generate
from forecasting import engine, lstm
from forecasting.backtest import score_backtest, seasonal_naive
from forecasting.global_model import WEEK
from forecasting.panel import Panel, load_panel, panel_from_frame
from forecasting.threads import single_blas_thread

TRACE = Path(__file__).resolve().parents[2] / "shared/data/bitbrains_rnd/usage_hourly_2013-07_2013-08.csv.gz"
LEVELS = (0.1, 0.5, 0.9)
HISTORY_DAYS = 14  # what PredictDemand reads for the per-entity engine
STRESS_SEED, STRESS_EVENTS = 2, 4


class AutoOrderARIMA:
    """ARIMA with its order chosen at every fit: d from a KPSS test (0, or 1 when the level is not stationary at
    5 %), then (p, q) in 0..2 x 0..2 by AIC, fitted with statsmodels (what darts' ARIMA wraps). darts' own AutoARIMA
    wraps statsforecast, which pins pandas below 3 (docs/forecasting.md, "AutoARIMA"). The fit/predict surface is
    the part of darts' that `engine._fit_predict` uses."""

    def __init__(self) -> None:
        self._fit: Any = None
        self.order: tuple[int, int, int] | None = None

    def fit(self, series: Any, **_: object) -> AutoOrderARIMA:
        from statsmodels.tsa.arima.model import ARIMA
        from statsmodels.tsa.stattools import kpss

        y = series.values(copy=False).ravel().astype(float)
        self._times = series.time_index
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = 1 if kpss(y, regression="c", nlags="auto")[1] < 0.05 else 0
            best = None
            for p in range(3):
                for q in range(3):
                    try:
                        res = ARIMA(y, order=(p, d, q), trend="c" if d == 0 else "n").fit()
                    except (ValueError, np.linalg.LinAlgError):
                        continue
                    if np.isfinite(res.aic) and (best is None or res.aic < best.aic):
                        best, self.order = res, (p, d, q)
        if best is None:
            raise ValueError("no ARIMA order could be fitted")
        self._fit = best
        return self

    def predict(self, n: int, **_: object) -> Any:
        from darts import TimeSeries

        times = pd.date_range(self._times[-1] + pd.Timedelta(hours=1), periods=n, freq="h")
        return TimeSeries.from_times_and_values(times, np.asarray(self._fit.forecast(n), dtype=float))


def candidates() -> dict[str, tuple[engine.Candidate, bool]]:
    """name -> (candidate, uses the event calendar)."""
    by_name = {c.name: c for c in engine.CANDIDATES}
    table = {name: (c, False) for name, c in by_name.items() if name != "linear_calendar"}
    table["auto_arima (KPSS + AIC, not served)"] = (engine.Candidate("auto_arima", 24 * 3, AutoOrderARIMA), False)
    table["linear_calendar, no event calendar"] = (by_name["linear_calendar"], False)
    table["linear_calendar + event calendar"] = (by_name["linear_calendar"], True)
    return table


@dataclass
class Score:
    cpu: float = 0.0
    forecasts: int = 0
    failed: int = 0
    too_short: int = 0  # histories shorter than the candidate's minimum (the engine would not try it)
    inside: int = 0
    under: int = 0
    seen: int = 0
    mae: dict[str, list[float]] = field(default_factory=dict)  # series -> per-origin MAE
    naive: dict[str, list[float]] = field(default_factory=dict)
    event_err: list[float] = field(default_factory=list)
    event_naive: list[float] = field(default_factory=list)

    def add(self, series: str, actual: np.ndarray, q: dict[float, np.ndarray], naive: np.ndarray,
            on_event: np.ndarray) -> None:  # fmt: skip
        """One forecast's observed hours (and its event-day hours) against seasonal naive's."""
        ok = ~np.isnan(actual)
        a = actual[ok]
        self.mae.setdefault(series, []).append(float(np.mean(np.abs(a - q[0.5][ok]))))
        self.naive.setdefault(series, []).append(float(np.mean(np.abs(a - naive[ok]))))
        self.inside += int(np.sum((a >= q[0.1][ok]) & (a <= q[0.9][ok])))
        self.under += int(np.sum(a <= q[0.9][ok]))
        self.seen += int(ok.sum())
        if on_event.any():
            self.event_err.append(float(np.sum(np.abs(actual[on_event] - q[0.5][on_event]))))
            self.event_naive.append(float(np.sum(np.abs(actual[on_event] - naive[on_event]))))

    def report(self) -> dict[str, Any]:
        ratios = [np.mean(self.mae[k]) / np.mean(self.naive[k]) for k in self.mae if np.mean(self.naive[k]) > 0]
        out = {
            "relative_mae_seasonal_naive": round(float(np.exp(np.mean(np.log(ratios)))), 4) if ratios else None,
            "coverage_80": round(self.inside / self.seen, 3) if self.seen else None,
            "q90_coverage": round(self.under / self.seen, 3) if self.seen else None,
            "cpu_s_per_forecast": round(self.cpu / max(self.forecasts, 1), 4),
            "forecasts": self.forecasts,
            "failed": self.failed,
            "too_short": self.too_short,
        }
        if self.event_err:
            out["event_days_mae_vs_seasonal_naive"] = round(float(np.sum(self.event_err) / np.sum(self.event_naive)), 4)
        return out


def cases(panel: Panel, entities: int, every: int, hours: int, also: frozenset[date] = frozenset()) -> list[
        tuple[str, pd.Timestamp, pd.Series, np.ndarray]]:  # fmt: skip
    """(series, origin, history, actual): origins daily over the last 14 days (every `every`-th, and the days in
    `also`), `entities` series spread over the panel, each with a week observed in its history and an actual."""
    last = (panel.index[-1] + pd.Timedelta(hours=1) - pd.Timedelta(hours=hours)).normalize()
    origins = {last - pd.Timedelta(days=d) for d in range(0, 14, every)}
    origins |= {pd.Timestamp(d, tz=panel.index.tz) for d in also if pd.Timestamp(d, tz=panel.index.tz) <= last}
    origins = sorted(origins)
    stride = max(1, len(panel.entities) // entities)
    rows = list(range(0, len(panel.entities), stride))[:entities]
    out = []
    for origin in origins:
        at = panel.position(origin)
        for r in rows:
            history = pd.Series(panel.values[r, max(at - HISTORY_DAYS * 24, 0) : at],
                                index=panel.index[max(at - HISTORY_DAYS * 24, 0) : at])  # fmt: skip
            actual = panel.values[r, at : at + hours]
            if history.notna().sum() >= 24 * 7 and len(actual) == hours and not np.isnan(actual).all():
                out.append((panel.entities[r], origin, history, actual))
    return out


def alone(
    sc: Score,
    cand: engine.Candidate,
    filled: pd.Series,
    history: pd.Series,
    hours: int,
    flags: Any,
    known: pd.DataFrame | None = None,
) -> dict[float, np.ndarray] | None:
    """What the engine answers with `cand` as its only candidate (backtest, final fit, band), timed into `sc`;
    None when it cannot fit (counted as failed)."""
    began = time.process_time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, _ = engine._backtest(cand, filled, history, hours, 5, flags, known)
            point = engine._fit_predict(cand, filled, hours, flags, known)
    except engine.ForecastError:
        sc.failed += 1
        return None
    q = engine._quantiles(point, np.concatenate(res) if res else np.array([]), list(LEVELS), filled)
    sc.cpu += time.process_time() - began
    sc.forecasts += 1
    return q


def score(cases_: list, hours: int, events: frozenset[date], progress: Callable[[str], None]) -> dict[str, Any]:
    table = candidates()
    scores = {name: Score() for name in table}
    for k, (series, origin, history, actual) in enumerate(cases_, 1):
        filled = engine._fill_gaps(history)
        naive = seasonal_naive(filled.to_numpy()[None, :], hours)[0]
        on_event = ~np.isnan(actual) & np.isin(pd.date_range(origin, periods=hours, freq="h").date, list(events))
        for name, (cand, calendar) in table.items():
            sc = scores[name]
            if len(filled) < cand.min_history:
                sc.too_short += 1
                continue
            flags = engine._event_covariate(filled.index[0], len(filled) + hours, events if calendar else frozenset())
            q = alone(sc, cand, filled, history, hours, flags)
            if q is not None:
                sc.add(series, actual, q, naive, on_event)
        if k % 20 == 0:
            progress(f"{k}/{len(cases_)}")
    return {name: sc.report() for name, sc in scores.items()}


def driver_panel(seed: int = 5, n: int = 20, days: int = 28, lead_days: int = 3) -> tuple[Panel, pd.Series, pd.Series]:
    """Series whose daily level follows a daily driver `lead_days` earlier (a leading indicator such as a retail
    index: published 36 h after its day, so at a day's midnight the value of 3 days before is the newest known),
    the driver, and an unrelated daily index (independent draws: a second random walk would stand in for the level
    and "help" spuriously)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-05-06", periods=days * 24, freq="h", tz="UTC")
    day_index = pd.date_range(index[0], periods=days + lead_days, freq="D") - pd.Timedelta(days=lead_days)
    walk = 100 + np.cumsum(rng.normal(0, 3, len(day_index)))
    driver = pd.Series(walk, index=day_index)
    unrelated = pd.Series(100 + rng.normal(0, 3, len(day_index)), index=day_index)  # no memory, no trend
    effect = (walk[:days] - 100) / 100  # the driver `lead_days` before each day, relative
    t = np.arange(len(index))
    rows = []
    for _ in range(n):
        base, amp, phase = rng.uniform(20, 200), rng.uniform(0.2, 0.6), rng.integers(0, 24)
        shape = 1 + amp * np.sin(2 * np.pi * (t + phase) / 24)
        level = 1 + rng.uniform(1.5, 3.0) * np.repeat(effect, 24)
        rows.append(np.maximum(base * shape * level * np.exp(rng.normal(0, 0.05, len(t))), 0.0))
    return Panel([f"d-{i:02d}" for i in range(n)], index, np.stack(rows)), driver, unrelated


def score_drivers(every: int, hours: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """The calendar model without drivers, with the driver that leads the load, and with an unrelated one."""
    from forecasting import drivers as dr

    panel, lead, noise = driver_panel()
    spec = {"frequency": "daily", "unit": "index", "publication_lag_hours": 36, "source": "(simulated)"}
    registry = dr.parse_registry({"drivers": [{"name": "leading_index", **spec}, {"name": "unrelated_index", **spec}]})
    frames = {
        name: dr.covariates([registry[name]], {name: values}, panel.index)
        for name, values in (("leading_index", lead), ("unrelated_index", noise))
    }
    by_name = {c.name: c for c in engine.CANDIDATES + engine.DRIVER_CANDIDATES}
    rows = {"linear_calendar, no driver": (by_name["linear_calendar"], None),
            "linear_drivers + a leading driver (36 h publication lag)": (by_name["linear_drivers"], "leading_index"),
            "linear_drivers + an unrelated driver": (by_name["linear_drivers"], "unrelated_index")}  # fmt: skip
    scores = {name: Score() for name in rows}
    todo = cases(panel, len(panel.entities), every, hours)
    for k, (series, _origin, history, actual) in enumerate(todo, 1):
        filled = engine._fill_gaps(history)
        naive = seasonal_naive(filled.to_numpy()[None, :], hours)[0]
        flags = engine._event_covariate(filled.index[0], len(filled) + hours, frozenset())
        for name, (cand, driver) in rows.items():
            known = engine._driver_frame(frames[driver], filled.index, hours) if driver else None
            q = alone(scores[name], cand, filled, history, hours, flags, known)
            if q is not None:
                scores[name].add(series, actual, q, naive, np.zeros(hours, dtype=bool))
        if k % 20 == 0:
            progress(f"drivers {k}/{len(todo)}")
    return {name: sc.report() for name, sc in scores.items()}


def lstm_backtest(panel: Panel, days: int, cfg: lstm.LSTMConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """The global LSTM alone over the panel's last `days` days (daily origins, 24 h ahead, every entity), fitted on
    the 35 days before the first origin and refitted weekly (the fleet model's training is daily), scored by
    `backtest.score_backtest` exactly as the serving path's figures are (seasonal naive, naive, Holt-Winters)."""
    import tempfile

    origins = last_days(panel, days)
    frames, fits, predict_cpu, forecasts, model = [], [], 0.0, 0, None
    for k, origin in enumerate(origins):
        at = panel.position(origin)
        if k % 7 == 0:
            start = max(0, at - 35 * 24)
            began = time.perf_counter()
            model = lstm.fit_lstm(panel.values[:, start:at], panel.index[start:at], at - start, cfg)
            fits.append(round(time.perf_counter() - began, 1))
            progress(f"lstm fitted on {model.series} series before {origin.date()} in {fits[-1]} s")
        assert model is not None
        ok = np.sum(~np.isnan(panel.values[:, max(0, at - WEEK) : at]), axis=1) >= 24
        began = time.process_time()
        out = model.predict(panel.values, panel.index, at)
        predict_cpu += time.process_time() - began
        forecasts += int(ok.sum())
        stamps = pd.date_range(origin, periods=cfg.horizon, freq="h")
        for r in np.flatnonzero(ok):
            frame = pd.DataFrame({"entity_id": panel.entities[r], "origin": origin.isoformat(),
                                  "timestamp": [t.isoformat() for t in stamps]})  # fmt: skip
            for q in cfg.quantiles:
                frame[f"q{q:g}"] = out[q][r]
            frames.append(frame)
    scores = score_backtest(panel, pd.concat(frames, ignore_index=True))
    with tempfile.TemporaryDirectory() as tmp:
        model.model.save(f"{tmp}/lstm.pt")
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()},
            "cpu_s_per_forecast": round(predict_cpu / max(forecasts, 1), 5), "fit_wall_s": fits,
            "model_bytes": size, "config": cfg.__dict__}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.candidates", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--trace", default=str(TRACE))
    parser.add_argument("--entities", type=int, default=20)
    parser.add_argument("--every", type=int, default=3, help="an origin every N days of the last 14")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: bitbrains,stress,drivers,lstm")
    parser.add_argument("--lstm-epochs", type=int, default=lstm.LSTMConfig.epochs)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    single_blas_thread()  # one small fit at a time: a BLAS thread team costs more than the fit
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    out: dict[str, Any] = {"settings": {"entities": args.entities, "every": args.every, "hours": args.hours,
                                        "history_days": HISTORY_DAYS, "backtest_origins": 5}}  # fmt: skip
    began = time.time()
    if "bitbrains" not in skip:
        panel = load_panel(args.trace, "cpu_usage_mhz_mean")
        todo = cases(panel, args.entities, args.every, args.hours)
        progress(f"bitbrains: {len(todo)} forecasts per candidate")
        out["bitbrains"] = score(todo, args.hours, frozenset(), progress)
    if "stress" not in skip:
        events = event_days(STRESS_SEED, events=STRESS_EVENTS)
        panel = panel_from_frame(generate(STRESS_SEED, events=STRESS_EVENTS), STRESS_COLUMN)
        todo = cases(panel, args.entities, args.every, args.hours, also=events)
        progress(f"stress seed {STRESS_SEED} with events on {sorted(d.isoformat() for d in events)}: {len(todo)}")
        out[f"stress_seed_{STRESS_SEED}_events"] = score(todo, args.hours, events, progress)
        out["stress_event_days"] = sorted(d.isoformat() for d in events)
    if "drivers" not in skip:
        out["drivers_simulated"] = score_drivers(args.every, args.hours, progress)
        for cand, row in out["drivers_simulated"].items():
            print(f"{'drivers_simulated':24s} {cand:42s} {json.dumps(row)}")
    if "lstm" not in skip:
        if not lstm.available():
            out["lstm"] = "skipped: the lstm extra (torch) is not installed"
        else:
            cfg = lstm.LSTMConfig(epochs=args.lstm_epochs)
            panel = load_panel(args.trace, "cpu_usage_mhz_mean")
            out["lstm_bitbrains"] = lstm_backtest(panel, 14, cfg, progress)
            panel = panel_from_frame(generate(STRESS_SEED), STRESS_COLUMN)  # 8 days before its first origin:
            short = lstm.LSTMConfig(epochs=args.lstm_epochs, input_hours=72)  # a 3-day input window
            out[f"lstm_stress_seed_{STRESS_SEED}"] = lstm_backtest(panel, 14, short, progress)
            for name in ("lstm_bitbrains", f"lstm_stress_seed_{STRESS_SEED}"):
                print(f"{name:24s} {json.dumps(out[name])}")
    out["wall_s"] = round(time.time() - began, 1)
    for name in ("bitbrains", f"stress_seed_{STRESS_SEED}_events"):
        for cand, row in out.get(name, {}).items():
            print(f"{name:24s} {cand:42s} {json.dumps(row)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
