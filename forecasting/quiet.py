"""darts' optional-dependency notices, silenced one by one.

Importing darts logs a WARNING for every optional backend it lacks (PyTorch twice, StatsForecast, XGBoost twice) and
prophet logs that plotly is missing: notices about features this product never uses, printed into every command
that forecasts (and FFT's one benign notice per forecast, below). `install()` drops exactly those records, by logger
and message; any other record of those loggers, and every `warnings.warn`, still shows.
"""

from __future__ import annotations

import logging
import re

#: logger name -> the notices it emits on import (darts 0.3x: models/__init__.py, utils/likelihood_models/__init__.py,
#: utils/utils.py NotImportedModule; prophet/plot.py).
KNOWN_IMPORT_NOTICES: dict[str, re.Pattern[str]] = {
    "darts.models": re.compile(
        r"Support for Torch based models not available\. |The StatsForecast module could not be imported\. "
    ),
    "darts.utils.likelihood_models": re.compile(r"Support for PyTorch based likelihood models not available\. "),
    "darts.utils.utils": re.compile(r"The `(XGBoost|LightGBM|CatBoost|Prophet)` module could not be imported\. "),
    "prophet.plot": re.compile(r"Importing plotly failed\. "),
    # Not an import notice: FFT's `required_matches` crop finds no matching start hour in a history that does not
    # begin at midnight and fits the whole series instead, which is what the FFT candidate wants; once per forecast.
    "darts.models.forecasting.fft": re.compile(r"No matching timestamp could be found, returning original TimeSeries"),
}


class _DropKnownNotices(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.ERROR and self.pattern.match(record.getMessage()))


def install() -> None:
    """Idempotent; call before darts (or prophet) is imported."""
    for name, pattern in KNOWN_IMPORT_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNotices) for f in logger.filters):
            logger.addFilter(_DropKnownNotices(pattern))
