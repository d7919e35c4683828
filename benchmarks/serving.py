"""`make bench-forecast`: the product's one forecaster, measured on the path PredictDemand serves.

    python -m benchmarks.serving [--trace FILE] [--stress-seeds 2,3] [--days 14] [--json PATH] [--model-cache DIR]

1. Accuracy: `shadowctl backtest`'s path (forecasting.backtest.fleet_trainer + serve_backtest: the daily training's
   fit, validation and publish rule at each origin's midnight on the data before it, then per-entity choice and
   calibration, and the per-entity darts engine where the serving path sends an entity) from daily origins over
   the last `--days` days, 24 h ahead, every entity with data; scored against seasonal naive, naive and
   Holt-Winters from the same origins (relative MAE, geometric mean over entities) and by the coverage of the
   10-90 % band and of q0.9. On the shared Bitbrains trace and on the second evaluation set
   (benchmarks/stress_set.py, seeds never tuned on).
2. Serving: CPU per entity forecast (`fleet.Forecaster.forecast`, one metric, 16 days of history, an 8-hour slice
   starting 2 h ahead) with a published model, p50/p99 over entities; beside it, the per-entity darts engine on
   the same series (the path PredictDemand used before: the baseline).
3. Training: the fleet model on 500 entities x 35 days (the newest 35 days of the trace), wall and CPU time and
   the process's peak memory, in a fresh process; beside it the darts engine's CPU per forecast, so that the
   ratio holds on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.stress_set import COLUMN as STRESS_COLUMN
from benchmarks.stress_set import generate
from forecasting.backtest import fleet_trainer, score_backtest, serve_backtest
from forecasting.engine import ForecastError, forecast_series
from forecasting.fleet import FleetModel, Forecaster, fleet_config, train_fleet
from forecasting.panel import Panel, load_panel

TRACE = Path(__file__).resolve().parents[2] / "shared/data/bitbrains_rnd/usage_hourly_2013-07_2013-08.csv.gz"
TARGETS = {"relative_mae_seasonal_naive": 0.75, "relative_mae_naive": 0.85, "relative_mae_holt_winters": 0.75}


def last_days(panel: Panel, days: int) -> list[pd.Timestamp]:
    """Midnights of the last `days` days whose 24 h lie inside the data."""
    last = (panel.index[-1] - pd.Timedelta(hours=23)).normalize()
    return list(pd.date_range(last - pd.Timedelta(days=days - 1), last, freq="D"))


def accuracy(panel: Panel, days: int, cache: str | None, progress) -> dict:  # type: ignore[no-untyped-def]
    origins = last_days(panel, days)
    engines: dict[str, int] = {}
    started = time.perf_counter()
    train = fleet_trainer(panel, cache_dir=cache, progress=progress)
    frame = serve_backtest(panel, origins, 24, (0.1, 0.5, 0.9), train, engines=engines, progress=progress)
    seconds = time.perf_counter() - started
    scores = score_backtest(panel, frame)
    met = {k: scores[k] <= v for k, v in TARGETS.items()}
    met["coverage_80"] = 0.77 <= scores["coverage_80"] <= 0.83
    met["q90_coverage"] = scores["q90_coverage"] >= 0.88
    return {**scores, "first_origin": origins[0].isoformat(), "last_origin": origins[-1].isoformat(),
            "answered_by": engines, "seconds": round(seconds, 1), "targets_met": met}  # fmt: skip


def serving(model: FleetModel, panel: Panel, at: int, entities: int, progress) -> dict:  # type: ignore[no-untyped-def]
    forecaster = Forecaster(model)
    rows = np.linspace(0, len(panel.entities) - 1, entities).astype(int)
    start = panel.index[at] + pd.Timedelta(hours=2)
    fleet_cpu, darts_cpu, engine = [], [], []
    for k, r in enumerate(rows):
        history = pd.Series(panel.values[r, at - 16 * 24 : at], index=panel.index[at - 16 * 24 : at])
        if history.notna().sum() < 48:
            continue
        began = time.process_time()
        fc = forecaster.forecast(history, start, 8, (0.1, 0.5, 0.9))
        fleet_cpu.append(time.process_time() - began)
        engine.append(fc.engine)
        if k % 10 == 0:  # the baseline on every 10th series (1-2 CPU-s each)
            began = time.process_time()
            try:
                forecast_series(history, start, 8, (0.1, 0.5, 0.9))
                darts_cpu.append(time.process_time() - began)
            except ForecastError:
                pass
    progress(f"serving: {len(fleet_cpu)} forecasts")
    ms = np.array(fleet_cpu) * 1000  # every forecast the path answered, the darts fallbacks included
    by_fleet = ms[np.array(engine) == "fleet"]
    return {
        "forecasts": len(fleet_cpu),
        "answered_by": dict(Counter(engine)),
        "cpu_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "cpu_ms_p99": round(float(np.percentile(ms, 99)), 2),
        "fleet_answered_cpu_ms_p50": round(float(np.percentile(by_fleet, 50)), 2) if len(by_fleet) else None,
        "fleet_answered_cpu_ms_p99": round(float(np.percentile(by_fleet, 99)), 2) if len(by_fleet) else None,
        "baseline_entity_engine_cpu_ms_p50": round(float(np.median(darts_cpu)) * 1000, 1) if darts_cpu else None,
        "target_cpu_ms_p99": 50,
    }


def training(trace: Path, progress) -> dict:  # type: ignore[no-untyped-def]
    """Trains in a fresh process (its peak memory is the training's own) on 500 entities x the newest 35 days."""
    code = (
        "import json, resource, sys, time\n"
        "from benchmarks.serving import _train_child\n"
        "print(json.dumps(_train_child(sys.argv[1])))\n"
    )
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(trace)], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(time.perf_counter() - began, 1)
    progress(f"training: {out}")
    return out


def _train_child(trace: str) -> dict:
    panel = load_panel(trace, "cpu_usage_mhz_max")
    end = len(panel.index)
    first = max(0, end - 35 * 24)
    values, index = panel.values[:, first:end], panel.index[first:end]
    wall, cpu = time.perf_counter(), time.process_time()
    result = train_fleet(values, index, panel.entities, config=fleet_config(), version="bench")
    return {
        "entities": len(panel.entities), "days": round(values.shape[1] / 24, 1),
        "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "artifact_bytes": len(result.artifact), "validation": result.validation.as_dict(),
        "target_wall_s": 300, "target_peak_rss_mb": 2048,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--target", default="cpu_usage_mhz_mean")
    parser.add_argument("--stress-seeds", default="2,3", help="second evaluation set seeds (1 was tuned on)")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--serving-entities", type=int, default=200)
    parser.add_argument("--model-cache", default=None, help="keep fitted fleet models here across runs")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: bitbrains,stress,serving,training")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - began:7.1f}s] {message}", file=sys.stderr, flush=True)

    out: dict = {"date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"), "accuracy": {}}
    panel = load_panel(args.trace, args.target)
    if "bitbrains" not in skip:
        out["accuracy"]["bitbrains"] = accuracy(panel, args.days, args.model_cache, progress)
        progress(f"bitbrains: {out['accuracy']['bitbrains']}")
    if "stress" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in [int(s) for s in args.stress_seeds.split(",") if s]:
                path = Path(tmp) / f"stress{seed}.csv.gz"
                generate(seed).to_csv(path, index=False)
                stress = load_panel(path, STRESS_COLUMN)
                out["accuracy"][f"stress_seed{seed}"] = accuracy(stress, args.days, args.model_cache, progress)
                progress(f"stress seed {seed}: {out['accuracy'][f'stress_seed{seed}']}")
    if "serving" not in skip:
        at = panel.position(pd.Timestamp("2013-08-25T00:00:00Z"))
        model = train_fleet(panel.values, panel.index, panel.entities, end=at, version="bench-serving").model
        out["serving"] = serving(model, panel, at, args.serving_entities, progress)
        progress(f"serving: {out['serving']}")
    if "training" not in skip:
        out["training"] = training(args.trace, progress)
    out["seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
