"""A plain forecasting library (no Temporal, no AWS): usage history -> candidates -> backtest -> quantiles.

Pipeline, following darts' own shape:
    data.py       load the usage format, regularise to an hourly grid (missing hours stay missing)
    engine.py     per-series candidates, rolling-origin backtest, residual-calibrated quantiles
    readiness.py  how far to trust a forecast (history coverage, backtest error)
"""

from forecasting.engine import SeriesForecast, forecast_series

__all__ = ["SeriesForecast", "forecast_series"]
