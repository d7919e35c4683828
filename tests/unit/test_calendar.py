"""Event calendars: public holidays by country and a user calendar file."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from forecasting.calendar import event_days
from forecasting.data import UsageDataError

INDEX = pd.date_range("2013-07-01T00:00Z", "2013-12-31T23:00Z", freq="h")


def test_country_holidays_and_user_events(tmp_path: Path) -> None:
    """Dutch holidays and the calendar's launch day are both event days; ordinary days are not."""
    calendar = tmp_path / "events.csv"
    calendar.write_text("date,name\n2013-08-20,product launch\n")
    days = event_days(INDEX, "NL", calendar)
    assert date(2013, 12, 25) in days and date(2013, 8, 20) in days
    assert date(2013, 8, 21) not in days


BAD = [("day,name\n2013-01-01,x\n", "'date' column"), ("date\nsoon\n", "not ISO")]


@pytest.mark.parametrize(("content", "words"), BAD)
def test_bad_calendar_names_the_problem(tmp_path: Path, content: str, words: str) -> None:
    """A calendar without a date column or with unparsable dates is a clear error."""
    calendar = tmp_path / "events.csv"
    calendar.write_text(content)
    with pytest.raises(UsageDataError, match=words):
        event_days(INDEX, None, calendar)


def test_unknown_country_is_an_error() -> None:
    """A country the holidays package does not know is named in the error."""
    with pytest.raises(UsageDataError, match="ZZ"):
        event_days(INDEX, "ZZ")
