"""A plain forecasting library (no Temporal, no AWS): usage history -> candidates -> backtest -> quantiles.

Pipeline, following darts' own shape:
    data.py       load the usage format, regularise to an hourly grid (missing hours stay missing)
    engine.py     per-series candidates, rolling-origin backtest, residual-calibrated quantiles
    readiness.py  how far to trust a forecast (history coverage, backtest error)
    panel.py, global_model.py, backtest.py   the global quantile engine across many series and its benchmark
    calendar.py, refine.py                   event-day covariates; Bayesian refinement from new observations

Nothing is imported here: each module loads only what it needs (darts only with engine.py).
"""
