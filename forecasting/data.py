"""Usage history in the shared format: entity_id, timestamp, metric columns (see ../shared/data/README.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Metric:
    """A demand metric: its column in the usage files and its CloudWatch metric name."""

    name: str
    column: str
    cloudwatch_name: str
    unit: str
    required: bool = True  # a usage file must have its column (network ones may be absent: not forecast then)


#: Metrics the product forecasts and sizes for. Peaks (hourly maximum of 5-minute values) are what capacity
#: must cover, so the `_max` columns are used.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("cpu_mhz", "cpu_usage_mhz_max", "CpuUsageMHz", "MHz"),
        Metric("memory_kb", "mem_usage_kb_max", "MemoryUsageKB", "KB"),
        Metric("network_kbps", "net_rx_kbps_max", "NetworkInKBps", "KB/s", required=False),
        Metric("network_out_kbps", "net_tx_kbps_max", "NetworkOutKBps", "KB/s", required=False),
    ]
}

REQUIRED_COLUMNS = ("entity_id", "timestamp", "n_samples")


class UsageDataError(ValueError):
    """A usage file is malformed; the message names the file and the problem."""


def load_usage(path: str | Path, entity_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Reads a usage CSV (optionally gzipped), keeping only `entity_ids` when given.

    Hours whose `n_samples` is 0 (monitoring gaps) keep NaN metric values: they are missing, not zero load.
    """
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UsageDataError(f"{path}: cannot read usage CSV: {exc}") from exc
    needed = (*REQUIRED_COLUMNS, *(m.column for m in METRICS.values() if m.required))
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UsageDataError(f"{path}: missing columns {missing}")
    try:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise UsageDataError(f"{path}: column 'timestamp' is not ISO 8601: {exc}") from exc
    if (empty := frame.index[frame["timestamp"].isna()]).size:
        raise UsageDataError(f"{path}: column 'timestamp' is empty in {empty.size} rows (first: line {empty[0] + 2})")
    if entity_ids is not None:
        frame = frame[frame["entity_id"].isin(list(entity_ids))]
    for m in METRICS.values():
        if m.column not in frame.columns:  # an optional metric the file does not have: every hour missing
            frame[m.column] = np.nan
    frame.loc[frame["n_samples"] <= 0, [m.column for m in METRICS.values()]] = np.nan
    return frame.reset_index(drop=True)


def hourly_series(frame: pd.DataFrame, entity_id: str, metric: str) -> pd.Series:
    """The entity's metric on a regular hourly UTC grid; absent hours are NaN."""
    column = METRICS[metric].column
    rows = frame[frame["entity_id"] == entity_id]
    if rows.empty:
        raise UsageDataError(f"no usage rows for entity {entity_id!r}")
    values = pd.to_numeric(rows[column], errors="coerce")
    bad = rows.loc[(values.isna() & rows[column].notna()) | (values < 0) | np.isinf(values), column]
    if len(bad):
        raise UsageDataError(
            f"entity {entity_id!r}: column {column!r} holds {len(bad)} values that are not usage (not a number, "
            f"negative or infinite), e.g. {bad.iloc[0]!r}"
        )
    series = pd.Series(values.to_numpy(dtype=float), index=rows["timestamp"]).sort_index()
    return regularise(series)


def regularise(series: pd.Series) -> pd.Series:
    """Puts a series on a complete hourly grid (UTC), averaging duplicates and leaving gaps as NaN."""
    if series.empty:
        return series
    index = pd.DatetimeIndex(series.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    series = pd.Series(series.to_numpy(dtype=float), index=index.floor("h"))
    series = series.groupby(level=0).mean()
    grid = pd.date_range(series.index[0], series.index[-1], freq="h")
    return series.reindex(grid)


def points_to_series(
    timestamps: Iterable[datetime], values: Iterable[float], start: datetime, end: datetime
) -> pd.Series:
    """Builds the hourly series over [start, end) from sparse (timestamp, value) points, e.g. CloudWatch's."""
    grid = pd.date_range(pd.Timestamp(start).floor("h"), pd.Timestamp(end).ceil("h"), freq="h", inclusive="left")
    points = pd.Series(list(values), index=pd.DatetimeIndex(list(timestamps)), dtype=float)
    if points.empty:
        return pd.Series(np.nan, index=grid)
    return regularise(points).reindex(grid)
