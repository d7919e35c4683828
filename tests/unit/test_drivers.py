"""External drivers (forecasting/drivers.py): the registry names the field it rejects, values are used only once
published, coverage gaps name the driver, and the engine's driver candidate never reads a value from its horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting import drivers as dr
from forecasting.engine import forecast_series

SPEC = {"name": "retail", "frequency": "daily", "unit": "index", "publication_lag_hours": 36, "source": "r.csv"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"unit": ""}, r"drivers\[0\]\.unit"),
        ({"frequency": "weekly"}, r"drivers\[0\]\.frequency"),
        ({"publication_lag_hours": -1}, r"drivers\[0\]\.publication_lag_hours"),
        ({"publication_lag_hours": True}, r"drivers\[0\]\.publication_lag_hours"),
        ({"name": "Retail Index"}, r"drivers\[0\]\.name"),
        ({"source": " "}, r"drivers\[0\]\.source"),
        ({"colour": "red"}, r"drivers\[0\]\.colour: unknown field"),
        ({"known_ahead": "yes"}, r"drivers\[0\]\.known_ahead"),
    ],
)
def test_a_bad_registry_entry_is_refused_naming_its_field(change: dict, field: str) -> None:
    with pytest.raises(dr.DriverError, match=field):
        dr.parse_registry({"drivers": [{**SPEC, **change}]})


def test_registry_names_are_unique_and_an_entity_may_name_only_registered_drivers() -> None:
    with pytest.raises(dr.DriverError, match=r"drivers\[1\]\.name: 'retail' is registered twice"):
        dr.parse_registry({"drivers": [SPEC, SPEC]})
    with pytest.raises(dr.DriverError, match="drivers: a list"):
        dr.parse_registry({"driver": []})
    registry = dr.parse_registry({"drivers": [SPEC]})
    assert [d.name for d in dr.resolve(registry, ["retail"])] == ["retail"]
    with pytest.raises(dr.DriverError, match=r"'gdp' is not a registered driver \(registered: retail\)"):
        dr.resolve(registry, ["retail", "gdp"])


def test_a_driver_file_is_checked_line_by_line() -> None:
    driver = dr.parse_registry({"drivers": [SPEC]})["retail"]
    ok = dr.read_values(driver, "timestamp,value\n2024-05-02,101\n2024-05-01T00:00:00Z,100\n")
    assert list(ok.to_numpy()) == [100.0, 101.0] and str(ok.index.tz) == "UTC"  # sorted, UTC
    for text, message in [
        ("time,value\n2024-05-01,1\n", "no 'timestamp' column"),
        ("timestamp,value\n2024-05-01,1\nyesterday,2\n", "line 3: timestamp"),
        ("timestamp,value\n2024-05-01,1\n2024-05-02,n/a\n", "line 3: value is not a number"),
        ("timestamp,value\n2024-05-01,1\n2024-05-01,2\n", "is repeated"),
        ("timestamp,value\n2024-05-01T06:00:00Z,1\n", "not on a daily boundary"),
        ("timestamp,value\n", "no values"),
    ]:
        with pytest.raises(dr.DriverError, match=f"driver retail: .*{message}"):
            dr.read_values(driver, text)


def test_a_value_is_known_only_after_its_period_ends_and_its_publication_lag_passes() -> None:
    driver = dr.parse_registry({"drivers": [SPEC]})["retail"]
    values = pd.Series([100.0, 101.0], index=pd.to_datetime(["2024-05-01", "2024-05-02"], utc=True))
    hours = pd.to_datetime(["2024-05-03T11:00Z", "2024-05-03T12:00Z", "2024-05-04T11:00Z", "2024-05-04T12:00Z"])
    known = dr.known_at(driver, values, pd.DatetimeIndex(hours))
    # the 1st's value covers the 1st and is published 36 h after it ends: from the 3rd at 12:00
    assert np.isnan(known[0]) and list(known[1:]) == [100.0, 100.0, 101.0]
    ahead = dr.Driver("launch", "daily", "flag", 0, "l.csv", known_ahead=True)
    assert list(dr.known_at(ahead, values, pd.DatetimeIndex(hours))) == [101.0] * 4


def test_a_driver_that_starts_late_or_ends_before_the_history_is_refused_by_name() -> None:
    driver = dr.parse_registry({"drivers": [SPEC]})["retail"]
    values = pd.Series(100.0, index=pd.date_range("2024-05-01", "2024-05-20", freq="D", tz="UTC"))
    dr.check_coverage(driver, values, pd.Timestamp("2024-05-04", tz="UTC"), pd.Timestamp("2024-05-22", tz="UTC"))
    with pytest.raises(dr.DriverError, match="driver retail: nothing is known at 2024-05-02"):
        dr.check_coverage(driver, values, pd.Timestamp("2024-05-02", tz="UTC"), pd.Timestamp("2024-05-10", tz="UTC"))
    with pytest.raises(dr.DriverError, match=r"driver retail: its values end 2024-05-20.*update its source"):
        dr.check_coverage(driver, values, pd.Timestamp("2024-05-04", tz="UTC"), pd.Timestamp("2024-05-30", tz="UTC"))


def test_the_engine_tries_the_driver_candidate_and_never_reads_a_value_published_inside_the_horizon() -> None:
    hours = pd.date_range("2024-05-01", periods=14 * 24, freq="h", tz="UTC")
    rng = np.random.default_rng(1)
    history = pd.Series(50 + 10 * np.sin(2 * np.pi * np.arange(len(hours)) / 24) + rng.normal(0, 1, len(hours)), hours)
    start = hours[-1] + pd.Timedelta(hours=1)
    everything = pd.date_range(hours[0], periods=len(hours) + 24, freq="h")
    frame = pd.DataFrame({"retail": np.linspace(90, 110, len(everything))}, index=everything)
    fc = forecast_series(history, start, 24, drivers=frame)
    assert "linear_drivers" in fc.scores
    # what is published after the origin (here: an absurd jump) changes nothing; the value known at it is held
    later = frame.copy()
    later.loc[later.index >= start, "retail"] = 1e6
    again = forecast_series(history, start, 24, drivers=later)
    assert again.model == fc.model and again.scores == fc.scores
    for q in fc.quantiles:
        np.testing.assert_array_equal(again.quantiles[q], fc.quantiles[q])
    assert "linear_drivers" not in forecast_series(history, start, 24).scores  # no drivers named: not tried
