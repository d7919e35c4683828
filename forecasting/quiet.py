"""Third-party notices about features this product never uses, silenced one by one.

prophet logs that plotly is missing when it is imported (darts imports it for the Prophet candidate), and darts' FFT
logs one benign notice per forecast (below): printed into every command that forecasts. `install()` drops exactly
those records, by logger and message; any other record of those loggers, and every `warnings.warn`, still shows.
darts 0.41 also logged a WARNING on import for every optional backend it lacked (PyTorch twice, StatsForecast,
XGBoost twice); darts 0.48 imports its models lazily and says nothing about a missing backend (using one of its
models raises ImportError): tests/unit/test_quiet.py checks that importing the engine prints nothing at all.
"""

from __future__ import annotations

import logging
import re

#: logger name -> the notices it emits (prophet/plot.py on import; darts/models/forecasting/fft.py per forecast).
KNOWN_IMPORT_NOTICES: dict[str, re.Pattern[str]] = {
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
