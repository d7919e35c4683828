"""Event calendars as covariates: public holidays (the `holidays` package) and a user calendar file."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import holidays
import pandas as pd

from forecasting.data import UsageDataError


def event_days(
    index: pd.DatetimeIndex, country: str | None = None, calendar: str | Path | None = None
) -> frozenset[date]:
    """Days flagged as events over the years of `index`: the country's public holidays and the calendar's dates.

    The calendar is a CSV with a `date` column (ISO dates; other columns, such as a name, are ignored).
    """
    days: set[date] = set()
    if country:
        years = range(index[0].year, index[-1].year + 2) if len(index) else range(0)
        try:
            days |= set(holidays.country_holidays(country, years=years))
        except NotImplementedError as exc:
            raise UsageDataError(f"unknown holiday country {country!r}") from exc
    if calendar:
        try:
            frame = pd.read_csv(calendar)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise UsageDataError(f"{calendar}: cannot read calendar: {exc}") from exc
        if "date" not in frame.columns:
            raise UsageDataError(f"{calendar}: calendar needs a 'date' column (columns: {', '.join(frame.columns)})")
        try:
            days |= set(pd.to_datetime(frame["date"]).dt.date)
        except (ValueError, TypeError) as exc:
            raise UsageDataError(f"{calendar}: column 'date' is not ISO dates: {exc}") from exc
    return frozenset(days)
