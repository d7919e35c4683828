"""A panel of hourly series (entities x hours) from a usage file, validated entity by entity.

Bad rows never crash a batch: an entity whose data is unusable is left out with a message naming it and the
problem (`Panel.problems`), and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.data import UsageDataError


@dataclass
class Panel:
    """`values[i, t]` is entity `entities[i]` at hour `index[t]` (NaN = missing)."""

    entities: list[str]
    index: pd.DatetimeIndex
    values: np.ndarray
    problems: dict[str, str] = field(default_factory=dict)

    def position(self, moment: pd.Timestamp) -> int:
        """Index of the first hour at or after `moment` (may be len(index) when beyond the data)."""
        return int(self.index.searchsorted(moment))


def load_panel(path: str | Path, target: str, entities: list[str] | None = None) -> Panel:
    """Reads `path` (CSV, optionally gzipped) into a panel of column `target`.

    Raises:
        UsageDataError: the file cannot be read, is empty, or lacks the needed columns.
    """
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise UsageDataError(f"{path}: no such file") from exc
    except pd.errors.EmptyDataError as exc:
        raise UsageDataError(f"{path}: the file is empty") from exc
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UsageDataError(f"{path}: cannot read CSV: {exc}") from exc
    if frame.empty:
        raise UsageDataError(f"{path}: no data rows")
    for column in ("entity_id", "timestamp", target):
        if column not in frame.columns:
            raise UsageDataError(f"{path}: unknown column {column!r} (columns: {', '.join(frame.columns)})")
    if entities:
        unknown = sorted(set(entities) - set(frame["entity_id"].astype(str)))
        if unknown:
            raise UsageDataError(f"{path}: no rows for entities {unknown}")
        frame = frame[frame["entity_id"].astype(str).isin(entities)]
    return panel_from_frame(frame, target)


def panel_from_frame(frame: pd.DataFrame, target: str) -> Panel:
    """Builds the panel; rows with `n_samples` = 0 (when the column exists) are missing hours."""
    frame = frame.copy()
    frame["entity_id"] = frame["entity_id"].astype(str)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    values = pd.to_numeric(frame[target], errors="coerce")
    if "n_samples" in frame.columns:
        values[frame["n_samples"] <= 0] = np.nan
    frame["value"] = values
    problems: dict[str, str] = {}
    good = []
    for entity, rows in frame.groupby("entity_id", sort=True):
        problem = _problem(rows)
        if problem:
            problems[str(entity)] = problem
        else:
            good.append(rows)
    if not good:
        return Panel([], pd.DatetimeIndex([], tz="UTC"), np.empty((0, 0)), problems)
    data = pd.concat(good)
    start, end = data["timestamp"].min().floor("h"), data["timestamp"].max().floor("h")
    index = pd.date_range(start, end, freq="h")
    wide = data.assign(hour=data["timestamp"].dt.floor("h")).pivot_table(
        index="hour", columns="entity_id", values="value", aggfunc="mean", dropna=False
    )
    wide = wide.reindex(index)
    names = sorted(str(c) for c in wide.columns)
    return Panel(names, index, wide[names].to_numpy(dtype=float).T, problems)


def _problem(rows: pd.DataFrame) -> str | None:
    """Why an entity's rows cannot be used, or None. Unordered rows are fine: they are sorted."""
    if rows["timestamp"].isna().any():
        return f"{int(rows['timestamp'].isna().sum())} timestamps are not ISO 8601"
    dupes = rows["timestamp"][rows["timestamp"].duplicated()]
    if len(dupes):
        return f"duplicate timestamp {dupes.iloc[0].isoformat()} ({len(dupes)} duplicates)"
    negative = rows.loc[rows["value"] < 0, "timestamp"]
    if len(negative):
        return f"negative usage at {negative.min().isoformat()} ({len(negative)} rows)"
    infinite = rows.loc[np.isinf(rows["value"]), "timestamp"]
    if len(infinite):
        return f"infinite usage at {infinite.min().isoformat()} ({len(infinite)} rows)"
    if rows["value"].notna().sum() == 0:
        return "no observed value"
    return None
