"""External drivers (issue 22): named series such as an economic indicator, a marketing calendar or a partner's
traffic, that an entity's demand may depend on. Plain library: a registry of drivers, their values read from CSV
text, and the value of each driver *as it was known* at every hour, so a forecast never sees a value before it
was published.

A registry is JSON/YAML-shaped data: ``{"drivers": [{"name": "eu_retail_index", "frequency": "daily",
"unit": "index", "publication_lag_hours": 36, "source": "drivers/eu_retail.csv"}, ...]}``. A value stamped with
period ``t`` (an hour, or a day at 00:00 UTC) covers that period and becomes known ``publication_lag_hours`` after
the period ends; until the next one is known it is held. ``known_ahead: true`` marks a driver whose values are set
in advance (a scheduled launch, a planned campaign): it is used at its own timestamps, never lagged.
Reading an S3 source is an activity's job (side effects stay out of this package); this module takes the text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
FREQUENCIES = {"hourly": pd.Timedelta(hours=1), "daily": pd.Timedelta(days=1)}


class DriverError(ValueError):
    """A registry, driver file or coverage problem; the message names the field or the driver."""


@dataclass(frozen=True)
class Driver:
    name: str
    frequency: str  # "hourly" | "daily"
    unit: str
    publication_lag_hours: int
    source: str  # a CSV path or an s3:// URI (timestamp,value)
    known_ahead: bool = False

    @property
    def period(self) -> pd.Timedelta:
        return FREQUENCIES[self.frequency]


def parse_registry(data: Mapping[str, Any]) -> dict[str, Driver]:
    """The registry's drivers by name. Raises DriverError naming the field (``drivers[1].unit: ...``)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("drivers"), list):
        raise DriverError("drivers: a list of drivers is required")
    out: dict[str, Driver] = {}
    for i, raw in enumerate(data["drivers"]):
        where = f"drivers[{i}]"
        if not isinstance(raw, Mapping):
            raise DriverError(f"{where}: an object with name, frequency, unit, publication_lag_hours and source")
        unknown = sorted(set(raw) - {"name", "frequency", "unit", "publication_lag_hours", "source", "known_ahead"})
        if unknown:
            raise DriverError(f"{where}.{unknown[0]}: unknown field")
        name = raw.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise DriverError(f"{where}.name: lower-case letters, digits, '_', '.', '-', starting with a letter")
        if name in out:
            raise DriverError(f"{where}.name: {name!r} is registered twice")
        if raw.get("frequency") not in FREQUENCIES:
            raise DriverError(f"{where}.frequency: one of {', '.join(FREQUENCIES)}")
        if not isinstance(raw.get("unit"), str) or not raw["unit"].strip():
            raise DriverError(f"{where}.unit: the values' unit is required (e.g. 'index', 'percent', 'EUR')")
        lag = raw.get("publication_lag_hours", 0)
        if not isinstance(lag, int) or isinstance(lag, bool) or not 0 <= lag <= 24 * 366:
            raise DriverError(f"{where}.publication_lag_hours: a whole number of hours, 0-8784")
        source = raw.get("source")
        if not isinstance(source, str) or not source.strip():
            raise DriverError(f"{where}.source: a CSV path or an s3:// URI is required")
        ahead = raw.get("known_ahead", False)
        if not isinstance(ahead, bool):
            raise DriverError(f"{where}.known_ahead: true or false")
        out[name] = Driver(name, raw["frequency"], raw["unit"].strip(), lag, source.strip(), ahead)
    return out


def resolve(registry: Mapping[str, Driver], names: Iterable[str]) -> list[Driver]:
    """The drivers an entity names, in order; an unknown name is an error naming it and the known ones."""
    out = []
    for name in names:
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none registered"
            raise DriverError(f"drivers: {name!r} is not a registered driver (registered: {known})")
        out.append(registry[name])
    return out


def read_values(driver: Driver, text: str) -> pd.Series:
    """The driver's values from CSV text with columns timestamp,value (ISO 8601, UTC when no offset is given)."""
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DriverError(f"driver {driver.name}: cannot read its CSV: {exc}") from exc
    for column in ("timestamp", "value"):
        if column not in frame.columns:
            raise DriverError(f"driver {driver.name}: no {column!r} column (columns: {', '.join(frame.columns)})")
    if frame.empty:
        raise DriverError(f"driver {driver.name}: no values")
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0]) + 2
        raise DriverError(f"driver {driver.name}: line {row}: timestamp is not an ISO 8601 time")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0]) + 2
        raise DriverError(f"driver {driver.name}: line {row}: value is not a number")
    series = pd.Series(values.to_numpy(dtype=float), index=pd.DatetimeIndex(stamps)).sort_index()
    if series.index.has_duplicates:
        raise DriverError(f"driver {driver.name}: timestamp {series.index[series.index.duplicated()][0]} is repeated")
    off = series.index != series.index.floor("D" if driver.frequency == "daily" else "h")
    if off.any():
        raise DriverError(f"driver {driver.name}: {series.index[off][0].isoformat()} is not on a {driver.frequency} "
                          "boundary")  # fmt: skip
    return series


def known_at(driver: Driver, values: pd.Series, hours: pd.DatetimeIndex) -> np.ndarray:
    """The value known at each of `hours`: the newest value published by then (held until the next), NaN before the
    first. A known-ahead driver's value at its own period instead."""
    if driver.known_ahead:
        at = values.index
    else:
        at = values.index + driver.period + pd.Timedelta(hours=driver.publication_lag_hours)
    pos = np.searchsorted(at.to_numpy(), pd.DatetimeIndex(hours).to_numpy(), side="right") - 1
    out = np.full(len(hours), np.nan)
    ok = pos >= 0
    out[ok] = values.to_numpy()[pos[ok]]
    return out


def check_coverage(driver: Driver, values: pd.Series, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """A driver must be known from the history's first hour to its last (`first`..`last`); otherwise the error
    names the driver and the hours it misses."""
    hours = pd.date_range(first, last, freq="h")
    known = known_at(driver, values, hours)
    if np.isnan(known[0]):
        raise DriverError(
            f"driver {driver.name}: nothing is known at {first.isoformat()}, the history's first hour (its first "
            f"value, {values.index[0].isoformat()}, is published {driver.publication_lag_hours} h after its period)"
        )
    freq = "D" if driver.frequency == "daily" else "h"
    if driver.known_ahead:
        expected = last.floor(freq)  # set in advance: it must reach the history's end
    else:  # the newest period published by `last`, with one period of slack for a late publication
        expected = (last - pd.Timedelta(hours=driver.publication_lag_hours) - driver.period).floor(freq) - driver.period
    if values.index[-1] < expected:
        raise DriverError(
            f"driver {driver.name}: its values end {values.index[-1].isoformat()}, before the history's last hour "
            f"{last.isoformat()} needs (newest expected by then: {expected.isoformat()}): update its source"
        )


def covariates(drivers: list[Driver], values: Mapping[str, pd.Series], hours: pd.DatetimeIndex) -> pd.DataFrame:
    """One column per driver, the value known at each hour (see `known_at`)."""
    return pd.DataFrame({d.name: known_at(d, values[d.name], hours) for d in drivers}, index=hours)
