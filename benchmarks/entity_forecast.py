"""`make bench-entity-forecast`: what PredictDemand's per-entity forecast costs and where its CPU goes.

    python -m benchmarks.entity_forecast [--entities 25] [--origins 4] [--hours 2] [--json PATH]

PredictDemand forecasts each metric of an entity with `forecasting.engine.forecast_series`: every darts candidate
the history supports is backtested from five daily origins, then the winner is refitted on the whole history. On
the same series and origins this prints, side by side: the engine, the engine as it was before its Holt-Winters
start was taken from the first cycles (fitted as 26 more parameters: half the engine's CPU then), and the
seasonal-naive baseline (same hour yesterday with the week's day-to-day spread, no fit), with CPU-seconds per
forecast (this process: fits included), the median's
MAE against what happened, pinball loss of q0.1/0.5/0.9 and the share of actuals inside the 10-90 % band; then the
profile: each candidate's share of the engine's CPU (its backtest and final fits, timed around
`engine._fit_predict`) and how often it won.

Series: hourly mean CPU of every `stride`-th entity of the shared Bitbrains file; origins daily at midnight from
2013-08-18; history the 14 days before each origin (what PredictDemand reads from CloudWatch); horizon `--hours`
from the origin (a slice forecast `lead_time` ahead covers the hour in progress and the slice: 2 hours).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting import engine
from forecasting.panel import load_panel

TRACE = Path(__file__).resolve().parents[2] / "shared/data/bitbrains_rnd/usage_hourly_2013-07_2013-08.csv.gz"
LEVELS = (0.1, 0.5, 0.9)
ENGINE, BEFORE, BASELINE = "engine", "engine, HW start fitted", "seasonal naive (baseline)"


def before(candidates: tuple[engine.Candidate, ...]) -> tuple[engine.Candidate, ...]:
    """The engine as it was: Holt-Winters' start (level, trend, seasonal states) fitted with its parameters."""
    return tuple(
        replace(c, build=lambda: engine._holt_winters("estimated")) if c.name == "holt_winters_24h" else c
        for c in candidates
    )


def run(path: Path, entities: int, origins: int, hours: int, progress=print) -> dict:  # type: ignore[no-untyped-def]
    panel = load_panel(str(path), "cpu_usage_mhz_mean")
    stride = max(1, len(panel.entities) // entities)
    rows = list(range(0, len(panel.entities), stride))[:entities]
    starts = [pd.Timestamp("2013-08-18", tz="UTC") + pd.Timedelta(days=d) for d in range(origins)]
    cases = []
    for start in starts:
        at = panel.position(start)
        for r in rows:
            history = pd.Series(panel.values[r, at - 14 * 24 : at], index=panel.index[at - 14 * 24 : at])
            actual = panel.values[r, at : at + hours]
            if history.notna().sum() >= 24 * 7 and not np.isnan(actual).all():
                cases.append((start, history, actual))
    progress(f"{len(cases)} forecasts ({len(rows)} series x {len(starts)} origins, {hours} h ahead)")
    by_candidate: dict[str, float] = Counter()
    fits: dict[str, int] = Counter()
    real_fit = engine._fit_predict

    def timed_fit(cand: engine.Candidate, *args: object, **kwargs: object) -> np.ndarray:
        began = time.process_time()
        try:
            return real_fit(cand, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            by_candidate[cand.name] += time.process_time() - began
            fits[cand.name] += 1

    scores = {name: Score() for name in (ENGINE, BEFORE, BASELINE)}
    won: Counter[str] = Counter()
    saved = engine.CANDIDATES
    try:
        for k, (start, history, actual) in enumerate(cases, 1):
            for name, candidates in ((ENGINE, saved), (BEFORE, before(saved))):
                engine.CANDIDATES = candidates
                engine._fit_predict = timed_fit if name == ENGINE else real_fit  # type: ignore[assignment]
                began = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fc = engine.forecast_series(history, start, hours, LEVELS)
                scores[name].add(actual, fc.quantiles, time.process_time() - began)
                if name == ENGINE:
                    won[fc.model] += 1
            began = time.process_time()
            naive = naive_quantiles(history, hours)
            scores[BASELINE].add(actual, naive, time.process_time() - began)
            if k % 25 == 0:
                progress(f"{k}/{len(cases)}")
    finally:
        engine._fit_predict = real_fit  # type: ignore[assignment]
        engine.CANDIDATES = saved
    total = sum(by_candidate.values())
    return {
        "forecasts": len(cases),
        "configs": {name: sc.report(len(cases)) for name, sc in scores.items()},
        "candidates": {
            name: {"cpu_s": round(cpu, 2), "share": round(cpu / total, 3), "fits": fits[name], "won": won[name]}
            for name, cpu in sorted(by_candidate.items(), key=lambda kv: -kv[1])
        },
    }


class Score:
    def __init__(self) -> None:
        self.cpu, self.abs_err, self.inside, self.seen = 0.0, 0.0, 0, 0
        self.pinball = dict.fromkeys(LEVELS, 0.0)

    def add(self, actual: np.ndarray, quantiles: dict[float, np.ndarray], cpu: float) -> None:
        ok = ~np.isnan(actual)
        a = actual[ok]
        q = {level: quantiles[level][ok] for level in LEVELS}
        self.cpu += cpu
        self.abs_err += float(np.sum(np.abs(a - q[0.5])))
        for level in LEVELS:
            diff = a - q[level]
            self.pinball[level] += float(np.sum(np.maximum(level * diff, (level - 1) * diff)))
        self.inside += int(np.sum((a >= q[0.1]) & (a <= q[0.9])))
        self.seen += int(ok.sum())

    def report(self, forecasts: int) -> dict:
        return {
            "cpu_s_per_forecast": round(self.cpu / forecasts, 4), "mae": round(self.abs_err / self.seen, 2),
            "pinball": {f"{lv:g}": round(v / self.seen, 2) for lv, v in self.pinball.items()},
            "coverage_80": round(self.inside / self.seen, 3),
        }  # fmt: skip


def naive_quantiles(history: pd.Series, hours: int) -> dict[float, np.ndarray]:
    """Same hour yesterday, with the spread of the last week's day-to-day changes (the baseline's interval)."""
    values = history.to_numpy()
    point = np.array([values[len(values) - 24 + h % 24] for h in range(hours)])
    changes = values[-7 * 24 :] - values[-8 * 24 : -24]
    changes = changes[~np.isnan(changes)]
    spread = {lv: float(np.quantile(changes, lv)) if len(changes) else 0.0 for lv in LEVELS}
    return {lv: np.maximum(np.nan_to_num(point, nan=float(np.nanmean(values))) + spread[lv], 0.0) for lv in LEVELS}


def table(result: dict) -> str:
    configs = result["configs"]
    base = configs[BASELINE]
    lines = [f"{result['forecasts']} forecasts",
             f"{'config':<26} {'CPU-s/forecast':>14} {'MAE':>9} {'vs baseline':>11} {'pinball q10/50/90':>24} "
             f"{'80% coverage':>12}"]  # fmt: skip
    for name, r in configs.items():
        pin = "/".join(f"{v:.1f}" for v in r["pinball"].values())
        lines.append(f"{name:<26} {r['cpu_s_per_forecast']:>14.4f} {r['mae']:>9.1f} {r['mae'] / base['mae']:>10.3f}x "
                     f"{pin:>24} {r['coverage_80']:>12.3f}")  # fmt: skip
    lines.append(f"engine's CPU by candidate (backtest and final fits):\n{'candidate':<26} {'CPU-s':>8} {'share':>7} "
                 f"{'fits':>6} {'won':>5}")  # fmt: skip
    for name, c in result["candidates"].items():
        lines.append(f"{name:<26} {c['cpu_s']:>8.1f} {c['share']:>7.1%} {c['fits']:>6} {c['won']:>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=TRACE)
    ap.add_argument("--entities", type=int, default=25)
    ap.add_argument("--origins", type=int, default=4)
    ap.add_argument("--hours", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    for name, value in (("--entities", args.entities), ("--origins", args.origins), ("--hours", args.hours)):
        if value < 1:
            ap.error(f"{name} must be at least 1, got {value}")
    result = run(args.input, args.entities, args.origins, args.hours)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
