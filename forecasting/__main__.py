"""Command line of the forecasting engine: `python -m forecasting backtest|evaluate ...` (see backtest.py)."""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from forecasting.backtest import backtest, evaluate, parse_origins, parse_quantiles
from forecasting.calendar import event_days
from forecasting.data import UsageDataError
from forecasting.global_model import GlobalConfig
from forecasting.panel import load_panel


def _floats(text: str) -> tuple[float, ...]:
    try:
        return parse_quantiles(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _origins(text: str) -> list[pd.Timestamp]:
    try:
        return parse_origins(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m forecasting", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("backtest", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--input", required=True, help="usage CSV (optionally .gz)")
        p.add_argument("--target", default="cpu_usage_mhz_mean", help="column to forecast")
        p.add_argument("--horizon", type=int, default=24)
        p.add_argument("--quantiles", type=_floats, default=(0.1, 0.5, 0.9))
        p.add_argument("--entities", type=lambda t: [e for e in t.split(",") if e], default=None)
        p.add_argument("--country", default=None, help="public holidays of this ISO country as a covariate, e.g. NL")
        p.add_argument("--events", default=None, help="calendar CSV with a 'date' column (launches, conferences)")
        p.add_argument("--train-days", type=int, default=GlobalConfig.train_days, help="days of training windows")
        p.add_argument("--max-iter", type=int, default=GlobalConfig.max_iter, help="boosting rounds per quantile")
        p.add_argument("--median-bag", type=int, default=GlobalConfig.median_bag,
                       help="median models averaged, each on its own subsample of the training rows")  # fmt: skip
    bt = sub.choices["backtest"]
    bt.add_argument("--origins", type=_origins, required=True, help="comma-separated ISO 8601 hours")
    bt.add_argument("--output", required=True, help="CSV to write")
    ev = sub.choices["evaluate"]
    ev.add_argument("--holdout-days", type=int, default=14, help="the tail used only for scoring")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.horizon < 1 or args.horizon > 168:
        print("error: --horizon must be between 1 and 168 hours", file=sys.stderr)
        return 2
    levels = tuple(sorted(set(args.quantiles) | {0.1, 0.5, 0.9})) if args.command == "evaluate" else args.quantiles
    if args.train_days < 2 or args.max_iter < 1 or args.median_bag < 1:
        print("error: --train-days must be at least 2, --max-iter and --median-bag at least 1", file=sys.stderr)
        return 2
    config = GlobalConfig(horizon=args.horizon, quantiles=levels, train_days=args.train_days, max_iter=args.max_iter,
                          median_bag=args.median_bag)  # fmt: skip
    started = time.perf_counter()
    try:
        panel = load_panel(args.input, args.target, args.entities)
        events = event_days(panel.index, args.country, args.events)
    except UsageDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for entity, problem in panel.problems.items():
        print(f"warning: {entity} left out: {problem}", file=sys.stderr)
    if not panel.entities:
        print("error: no entity has usable data", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    if args.command == "backtest":
        try:
            frame = backtest(panel, args.origins, config, progress, events)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        frame.to_csv(args.output, index=False)
        progress(f"wrote {len(frame)} rows for {frame['entity_id'].nunique()} entities to {args.output}")
        return 0
    result, origins, picks = evaluate(panel, args.holdout_days, config, progress=progress, events=events)
    print(f"{len(panel.entities)} series, {len(origins)} daily origins {origins[0].date()}..{origins[-1].date()}, "
          f"horizon {args.horizon} h, target {args.target}")  # fmt: skip
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(result.to_string())
    total = sum(picks.values()) or 1
    print(
        "engine's choice per series and origin: " + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(picks.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
