"""Pictures for operators: an entity's demand forecast against its actual usage and chosen capacity, and the
timeline of one `ShadowMigration` run from its Temporal history.

Each picture is built in two steps so that what is drawn can be checked without looking at pixels:
`forecast_plot` / `migration_timeline` turn the product's records into plain data (and raise a `ValueError`
naming what is missing), `draw_forecast` / `draw_migration` draw that data on a matplotlib `Figure`, and
`forecast_png` / `migration_png` do both and write the PNG. Figures are rendered by the non-interactive Agg
canvas, never through `pyplot`: no screen, no global state, safe in a worker thread.

    shadowctl plot forecast rnd-024                       # -> .shadowing/plots/forecast-rnd-024.png
    shadowctl plot migration rnd-024 20261129T083937Z     # -> .shadowing/plots/migration-rnd-024-....png
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from forecasting.data import METRICS
from shadowing.catalog import INSTANCE_TYPES
from shadowing.errors import InvalidRequest, ShadowingError
from shadowing.models import EntitySpec, EntityStatus, ScheduledSlice, SliceStatus, TimeSlice

HOUR = timedelta(hours=1)

#: What one instance of a type carries of each metric, in the metric's unit: the relation
#: `workflows.policy.instances_needed` sizes with (sizing-quantile peak <= quantity x capacity x utilisation).
CAPACITY_ATTR: dict[str, str] = {"cpu_mhz": "cpu_mhz", "memory_kb": "memory_kb", "network_kbps": "network_kbps",
                                 "network_out_kbps": "network_kbps"}  # fmt: skip
#: Axis display only (`ForecastPlot` keeps the product's units): unit -> (divisor, unit shown).
DISPLAY_UNITS: dict[str, tuple[float, str]] = {"KB": (1024.0 * 1024.0, "GiB"), "KB/s": (1000.0, "MB/s")}
ACTION_COLOURS = {"shadow": "#1565c0", "grow": "#6a1b9a", "stay": "#2e7d32", "skip": "#9e9e9e"}
BAND_COLOUR, MEDIAN_COLOUR, ACTUAL_COLOUR = "#90caf9", "#0d47a1", "#212121"


# ---- forecast -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandSegment:
    """One slice's forecast of one metric: per hour (start of the hour, history time) the band and median."""

    slice_key: str
    hours: tuple[datetime, ...]
    low: tuple[float, ...]
    median: tuple[float, ...]
    high: tuple[float, ...]
    sizing: tuple[float, ...]
    levels: tuple[str, str, str, str]  # (low, median, high, sizing) quantile levels, e.g. ("0.1", "0.5", "0.9", "0.9")


@dataclass(frozen=True)
class SliceCapacity:
    """What the slice's decision provides of one metric: `quantity` x the type's capacity (and x utilisation)."""

    slice_key: str
    region: str
    action: str
    instance_type: str
    quantity: int
    start: datetime
    end: datetime
    capacity: float
    usable: float | None  # capacity x target utilisation: what the sizing peak must stay under
    sizing_peak: float  # the forecast's sizing-quantile peak over the slice


@dataclass(frozen=True)
class MetricPanel:
    metric: str
    unit: str
    segments: tuple[BandSegment, ...]
    actual: tuple[tuple[datetime, float], ...]
    capacity: tuple[SliceCapacity, ...]

    @property
    def hours(self) -> tuple[datetime, ...]:
        return tuple(h for s in self.segments for h in s.hours)


@dataclass(frozen=True)
class SliceMark:
    index: int
    slice_key: str
    region: str
    state: str
    start: datetime  # first forecast hour (history time)
    decision: str  # e.g. "shadow 3 x m5.large"


@dataclass(frozen=True)
class ForecastPlot:
    entity_id: str
    panels: tuple[MetricPanel, ...]
    slices: tuple[SliceMark, ...]
    not_forecast: tuple[str, ...]  # keys of the slices without a forecast (not drawn)
    target_utilisation: float | None


def forecast_plot(
    status: EntityStatus, actual: Mapping[str, pd.Series] | None = None, *, target_utilisation: float | None = None
) -> ForecastPlot:
    """What `draw_forecast` draws: per forecast metric the slices' quantile bands, the actual usage given and
    the capacity each slice's decision chose. ValueError when no slice of `status` has a forecast."""
    forecast = [s for s in status.slices if _has_forecast(s)]
    if not forecast:
        raise ValueError(nothing_forecast(status))
    seen = {name for s in forecast for name, m in s.forecast.metrics.items() if m.hours}  # type: ignore[union-attr]
    names = [m for m in METRICS if m in seen] + sorted(seen - METRICS.keys())
    panels = tuple(_panel(name, forecast, actual or {}, target_utilisation) for name in names)
    marks = tuple(
        SliceMark(index=i + 1, slice_key=s.time_slice.key, region=s.time_slice.region, state=s.state,
                  start=_first_hour(s), decision=_decision_text(s))
        for i, s in enumerate(forecast)
    )  # fmt: skip
    skipped = tuple(s.time_slice.key for s in status.slices if s not in forecast)
    return ForecastPlot(status.entity_id, panels, marks, skipped, target_utilisation)


def _has_forecast(s: SliceStatus) -> bool:
    return s.forecast is not None and any(m.hours for m in s.forecast.metrics.values())


def _first_hour(s: SliceStatus) -> datetime:
    assert s.forecast is not None
    return min(h.hour for m in s.forecast.metrics.values() for h in m.hours)


def _decision_text(s: SliceStatus) -> str:
    d = s.decision
    return "no decision" if d is None else f"{d.action} {d.quantity} x {d.instance_type}"


def _level(quantiles: Mapping[str, float], wanted: str, pick: Any) -> str:
    return wanted if wanted in quantiles else pick(quantiles, key=float)


def _panel(
    name: str, slices: list[SliceStatus], actual: Mapping[str, pd.Series], utilisation: float | None
) -> MetricPanel:
    segments, capacity, unit = [], [], METRICS[name].unit if name in METRICS else ""
    for s in slices:
        assert s.forecast is not None
        mf = s.forecast.metrics.get(name)
        if mf is None or not mf.hours:
            continue
        unit = mf.unit or unit
        hours = sorted(mf.hours, key=lambda h: h.hour)
        first = hours[0].quantiles
        q = f"{s.forecast.sizing_quantile:g}"
        levels = (_level(first, "0.1", min), _level(first, "0.5", min), _level(first, "0.9", max),
                  _level(first, q, max))  # fmt: skip
        lo, med, hi, size = ([h.quantiles[lv] for h in hours] for lv in levels)
        segments.append(BandSegment(s.time_slice.key, tuple(h.hour for h in hours), tuple(lo), tuple(med), tuple(hi),
                                    tuple(size), levels))  # fmt: skip
        d = s.decision
        if d is not None and name in CAPACITY_ATTR:
            per_instance = float(getattr(INSTANCE_TYPES[d.instance_type], CAPACITY_ATTR[name]))
            total = per_instance * d.quantity
            capacity.append(SliceCapacity(
                slice_key=s.time_slice.key, region=s.time_slice.region, action=d.action,
                instance_type=d.instance_type, quantity=d.quantity, start=hours[0].hour, end=hours[-1].hour + HOUR,
                capacity=total, usable=None if utilisation is None else total * utilisation, sizing_peak=max(size),
            ))  # fmt: skip
    series = actual.get(name)
    points: tuple[tuple[datetime, float], ...] = ()
    if series is not None and len(series):
        index = pd.DatetimeIndex(series.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        points = tuple(
            (t.to_pydatetime(), float(v)) for t, v in zip(index, series.to_numpy(dtype=float), strict=True)
            if not math.isnan(v)
        )  # fmt: skip
    return MetricPanel(name, unit, tuple(segments), tuple(sorted(points)), tuple(capacity))


def draw_forecast(plot: ForecastPlot) -> Figure:
    """One subplot per metric: band (low-high quantile) and median per slice hour, the sizing quantile when it is
    neither, actual usage, each slice's capacity (and usable share); slice starts numbered, listed below."""
    n = len(plot.panels)
    fig = Figure(figsize=(12, 2.9 * n + 0.5 + 0.22 * len(plot.slices)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n + 1, 1, height_ratios=[3.0] * n + [0.35 + 0.2 * len(plot.slices)])
    axes = [fig.add_subplot(grid[i, 0]) for i in range(n)]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    for ax, panel in zip(axes, plot.panels, strict=True):
        _draw_panel(ax, panel, plot)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    locator = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=14)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    axes[-1].set_xlabel("usage hour (UTC; history time when the entity has a demand clock)")
    info = fig.add_subplot(grid[n, 0])
    info.axis("off")
    lines = [f"S{m.index}  {m.slice_key}  {m.region:15} {m.state:10} {m.decision}" for m in plot.slices]
    if plot.not_forecast:
        lines.append(f"not forecast (not drawn): {', '.join(plot.not_forecast)}")
    info.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8,
              transform=info.transAxes)  # fmt: skip
    util = "" if plot.target_utilisation is None else f", usable at {plot.target_utilisation:.0%} utilisation"
    fig.suptitle(f"{plot.entity_id}: demand forecast vs actual usage and chosen capacity{util}", fontsize=12)
    return fig


def display_unit(unit: str) -> tuple[float, str]:
    """(divisor, unit shown) of a metric unit on a plot axis: memory in GiB, not millions of KB."""
    return DISPLAY_UNITS.get(unit, (1.0, unit))


def axis_label(metric: str, unit: str) -> str:
    """The y-axis label: the metric without the unit its name carries, then the unit drawn ("memory (GiB)", not
    "memory_kb (GiB)"; "cpu (MHz)")."""
    shown = display_unit(unit)[1]
    suffix = "_" + unit.lower().replace("/s", "ps")
    name = metric.removesuffix(suffix) if metric.endswith(suffix) and metric != suffix else metric
    return f"{name}\n({shown})"


def _draw_panel(ax: Any, panel: MetricPanel, plot: ForecastPlot) -> None:
    scale = display_unit(panel.unit)[0]
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for seg in panel.segments:
        x = mdates.date2num([*seg.hours, seg.hours[-1] + HOUR])
        lo, med, hi, size = ([x / scale for x in (*v, v[-1])] for v in (seg.low, seg.median, seg.high, seg.sizing))
        low_l, med_l, high_l, size_l = seg.levels
        band = f"forecast p{_pct(low_l)}-p{_pct(high_l)}"
        ax.fill_between(x, lo, hi, step="post", color=BAND_COLOUR, alpha=0.55, linewidth=0, label=once(band),
                        gid=f"band:{seg.slice_key}")  # fmt: skip
        ax.step(x, med, where="post", color=MEDIAN_COLOUR, linewidth=1.6, label=once(f"forecast p{_pct(med_l)}"),
                gid=f"median:{seg.slice_key}")  # fmt: skip
        if size_l not in (low_l, med_l, high_l):
            ax.step(x, size, where="post", color=MEDIAN_COLOUR, linestyle="--", linewidth=1.0,
                    label=once(f"p{_pct(size_l)} (sizing quantile)"), gid=f"sizing:{seg.slice_key}")  # fmt: skip
    if panel.actual:
        seen = dict(panel.actual)
        grid = pd.date_range(panel.actual[0][0], panel.actual[-1][0], freq="h").to_pydatetime().tolist()
        values = [seen.get(t, math.nan) / scale for t in grid]  # a missing hour is a gap, not a ramp
        ax.step(mdates.date2num([*grid, grid[-1] + HOUR]), [*values, values[-1]], where="post",
                color=ACTUAL_COLOUR, linewidth=1.1, label="actual (hourly max, CloudWatch)", gid="actual")  # fmt: skip
    times = [*panel.hours, *(t for t, _ in panel.actual)]
    span = mdates.date2num(max(times) + HOUR) - mdates.date2num(min(times))
    for cap in panel.capacity:
        colour = ACTION_COLOURS.get(cap.action, "#6d4c41")
        style = ":" if cap.action == "skip" else "-"
        x0, x1 = mdates.date2num([cap.start, cap.end])
        what = "not provisioned (skip)" if cap.action == "skip" else f"capacity ({cap.action})"
        ax.hlines(cap.capacity / scale, x0, x1, colors=colour, linestyles=style, linewidth=2.2, label=once(what),
                  gid=f"capacity:{cap.slice_key}")  # fmt: skip
        if x1 - x0 >= 0.12 * span:  # narrow slices: the list below the plot says what they chose
            ax.annotate(f"{cap.quantity} x {cap.instance_type}", (x0, cap.capacity / scale), xytext=(2, 3),
                        textcoords="offset points", fontsize=7, color=colour)  # fmt: skip
        if cap.usable is not None and cap.action != "skip":
            ax.hlines(cap.usable / scale, x0, x1, colors=colour, linestyles="--", linewidth=1.0,
                      label=once("usable (x target utilisation)"), gid=f"usable:{cap.slice_key}")  # fmt: skip
    for mark in plot.slices:
        x = mdates.date2num(mark.start)
        ax.axvline(x, color="#616161", linestyle=":", linewidth=0.9)
        if panel is plot.panels[0]:
            ax.annotate(f"S{mark.index}", (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, 2),
                        textcoords="offset points", fontsize=8, color="#424242", va="bottom")  # fmt: skip
    values = [v for s in panel.segments for v in (*s.high, *s.sizing)] + [v for _, v in panel.actual]
    values += [c.capacity for c in panel.capacity]
    ax.set_ylim(0, max([*values, 1e-9]) / scale * 1.45)  # headroom for the legend
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
    ax.set_ylabel(axis_label(panel.metric, panel.unit))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7, ncols=3, framealpha=0.85)


def _pct(level: str) -> str:
    return f"{float(level) * 100:g}"


def forecast_png(
    status: EntityStatus, actual: Mapping[str, pd.Series] | None, path: str | Path, *,
    target_utilisation: float | None = None,
) -> Path:  # fmt: skip
    """Writes the forecast picture of `status` (see `forecast_plot`) to `path`; returns the path."""
    return _save(draw_forecast(forecast_plot(status, actual, target_utilisation=target_utilisation)), path)


def forecast_window(status: EntityStatus, context_hours: int = 24) -> tuple[datetime, datetime]:
    """The hours a forecast picture spans: `context_hours` of history before the first forecast hour, to the end of
    the last one (history time). ValueError when nothing is forecast."""
    hours = [h.hour for s in status.slices if s.forecast for m in s.forecast.metrics.values() for h in m.hours]
    if not hours:
        raise ValueError(nothing_forecast(status))
    return min(hours) - timedelta(hours=context_hours), max(hours) + HOUR


def nothing_forecast(status: EntityStatus) -> str:
    """Why there is no forecast to draw, and when there will be: the picture shows the forecasts the entity's
    schedule records for its slices; `predict` (PredictDemand) answers its caller and records nothing."""
    states = ", ".join(f"{s.time_slice.key} {s.state}" for s in status.slices) or "no slices"
    when = ""
    pending = [s.time_slice.start for s in status.slices if s.state == "pending"]
    if pending and status.lead_time_s is not None:
        first = min(pending) - timedelta(seconds=status.lead_time_s)
        when = f"; the first is forecast at {first:%Y-%m-%d %H:%M} UTC"
    return (f"entity {status.entity_id!r} has no forecast to plot: none of its slices has been forecast yet "
            f"({states}){when}. The picture draws the forecasts the entity records for its slices (`shadowctl plan` "
            "shows when each is made); `shadowctl predict` returns its forecast without recording it")  # fmt: skip


def read_actual_usage(
    cloudwatch: Any, entity_id: str, start: datetime, end: datetime, *, namespace: str = "Shadowing/Usage",
    metrics: tuple[str, ...] | None = None,
) -> dict[str, pd.Series]:  # fmt: skip
    """The entity's hourly usage maxima over [start, end) per metric, read from CloudWatch (`cloudwatch`: a boto3
    client of the entity's home region) by the forecast activity's own reader: same namespace, `EntityId`
    dimension, hourly `Maximum`. Missing hours are NaN."""
    from activities.forecast import FORECAST_METRICS, usage_history  # heavy (the forecasting models)

    stop = pd.Timestamp(end).ceil("h")
    first = pd.Timestamp(start).floor("h")
    out = {}
    for name in metrics or FORECAST_METRICS:
        series = usage_history(cloudwatch, namespace, entity_id, name, stop)
        out[name] = series[(series.index >= first) & (series.index < stop)]
    return out


def entity_forecast_png(
    status: EntityStatus, spec: EntitySpec | None, cloudwatch: Any | None, path: str | Path, context_hours: int = 24
) -> Path:
    """`forecast_png` with the actual usage read from CloudWatch (when `cloudwatch` is given) over the forecast hours
    and `context_hours` before them, and the usable capacity at the spec's target utilisation."""
    start, end = forecast_window(status, context_hours)
    actual = None
    if cloudwatch is not None:
        metrics = tuple(sorted({n for s in status.slices if s.forecast for n in s.forecast.metrics}))
        namespace = spec.metrics_namespace if spec is not None else "Shadowing/Usage"
        actual = read_actual_usage(cloudwatch, status.entity_id, start, end, namespace=namespace, metrics=metrics)
    utilisation = spec.policy.target_utilisation if spec is not None else None
    return forecast_png(status, actual, path, target_utilisation=utilisation)


# ---- migration timeline ---------------------------------------------------------------------------------------

Outcome = Literal["completed", "retried", "failed", "timed out", "canceled", "running"]

#: Rows of the timeline, top to bottom; only the steps a run has are drawn.
STEPS = ("provision", "late scale-up", "warm", "replicate", "re-forecast", "sync check", "cutover", "watch",
         "retire", "compensate", "other")  # fmt: skip
#: ShadowMigration's activities (workflows/migrate.py) by the step they serve when the saga runs forward.
STEP_OF: dict[str, str] = {
    "provision_fleet": "provision", "register_fleet_targets": "provision",
    "warm_fleet": "warm", "check_fleet_health": "warm",
    "replicate_tables": "replicate", "create_read_replica": "replicate", "catch_up": "replicate",
    "replicate_both_ways": "replicate",
    "check_write_fence": "sync check", "set_write_fence": "cutover",
    "refine_forecast": "re-forecast",
    "check_sync": "sync check",
    "promote_read_replica": "cutover", "routing_state": "cutover", "set_weights": "cutover",
    "listener_state": "cutover", "set_listener_weights": "cutover", "forward_queue": "cutover",
    "mark_fleet_role": "cutover",
    "probe_fleet": "watch",
    "remove_fleet_record": "retire", "deregister_fleet_targets": "retire", "terminate_fleet": "retire",
    "restore_weights": "compensate", "drop_replicas": "compensate", "delete_read_replica": "compensate",
    "shrink_fleet": "re-forecast",
}  # fmt: skip
#: Activities only a compensation runs: once one is scheduled the saga is unwinding.
COMPENSATION_ONLY = frozenset({"restore_weights", "drop_replicas", "delete_read_replica"})
#: Phases (the `ShadowingPhase` search attribute / progress signals) in which shadows wait for the slice.
WAITING_PHASES = frozenset({"ready", "resized"})
OUTCOME_COLOURS: dict[str, str] = {
    "completed": "#43a047", "retried": "#fb8c00", "failed": "#e53935", "timed out": "#8e24aa",
    "canceled": "#9e9e9e", "running": "#1e88e5",
}  # fmt: skip
TIMER_COLOUR = "#cfd8dc"


@dataclass(frozen=True)
class ActivityBar:
    """One activity execution: scheduled, (last attempt) started, closed; the step of the saga it served."""

    step: str
    activity: str
    activity_id: str
    scheduled: datetime
    started: datetime | None
    closed: datetime | None
    outcome: Outcome
    attempt: int = 1
    failure: str = ""


@dataclass(frozen=True)
class TimerBar:
    timer_id: str
    started: datetime
    ended: datetime | None
    fired: bool


@dataclass(frozen=True)
class Marker:
    at: datetime
    kind: Literal["slice start", "slice end", "signal", "cancel requested"]
    label: str


@dataclass(frozen=True)
class MigrationTimeline:
    workflow_id: str
    started: datetime
    ended: datetime
    outcome: str  # "migrated", "released", "failed: <message>", "canceled", "running", ...
    steps: tuple[str, ...]  # the steps present, in STEPS order
    bars: tuple[ActivityBar, ...]
    timers: tuple[TimerBar, ...]
    markers: tuple[Marker, ...]
    phases: tuple[tuple[datetime, str], ...]  # phase changes, when the history records them
    time_slice: TimeSlice | None


def migration_timeline(history: Any, time_slice: TimeSlice | None = None) -> MigrationTimeline:
    """The activity executions, timers, signals and slice start of one ShadowMigration run, from its Temporal
    history (`temporalio.client.WorkflowHistory`). `time_slice` defaults to the one in the workflow's input when
    its payload is readable (not encrypted). ValueError when the history is not a ShadowMigration run."""
    events = list(getattr(history, "events", None) or ())
    wid = getattr(history, "workflow_id", "") or "?"
    if not events:
        raise ValueError(f"history of workflow {wid!r} has no events: not a ShadowMigration run")
    first = events[0]
    kind = first.WhichOneof("attributes")
    if kind != "workflow_execution_started_event_attributes":
        raise ValueError(f"history of workflow {wid!r} does not start with WorkflowExecutionStarted ({kind}): "
                         "not a complete ShadowMigration run")  # fmt: skip
    wtype = first.workflow_execution_started_event_attributes.workflow_type.name
    if wtype != "ShadowMigration":
        raise ValueError(f"history of workflow {wid!r} is a run of {wtype}, not of ShadowMigration")
    started_attrs = first.workflow_execution_started_event_attributes
    if time_slice is None:
        body = _payload(started_attrs.input.payloads[0]) if started_attrs.input.payloads else None
        time_slice = _time_slice(body)
    return _Walk(events).timeline(wid, time_slice)


class _Walk:
    """One pass over the events, tracking the phase and whether the saga is compensating."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.phase = ""
        self.compensating = False
        self.provisioned = self.switched = self.removed = False

    def step(self, activity: str) -> str:
        if activity in COMPENSATION_ONLY:
            self.compensating = True
        if activity in ("terminate_fleet", "deregister_fleet_targets") and not self.removed:
            self.compensating = True  # retiring removes the old fleet's record first; anything else is undoing
        if activity == "shrink_fleet" and self.phase not in WAITING_PHASES:
            self.compensating = True  # outside the wait a shrink scales a late scale-up back
        if self.compensating:
            return "compensate"
        if self.phase == "late" and activity in ("provision_fleet", "routing_state", "set_weights"):
            return "late scale-up"
        if activity in ("provision_fleet", "warm_fleet") and self.phase in WAITING_PHASES and self.provisioned:
            return "re-forecast"  # the waiting shadows resized after a re-forecast
        if activity == "probe_fleet" and not self.switched:
            return "cutover"  # the old fleet's baseline, measured before the first weight change
        if activity == "set_weights":
            self.switched = True
        if activity == "remove_fleet_record":
            self.removed = True
        if activity == "provision_fleet":
            self.provisioned = True
        return STEP_OF.get(activity, "other")

    def timeline(self, wid: str, time_slice: TimeSlice | None) -> MigrationTimeline:
        t0 = _time(self.events[0])
        end = _time(self.events[-1])
        scheduled: dict[int, dict[str, Any]] = {}
        timers: dict[str, dict[str, Any]] = {}
        markers: list[Marker] = []
        phases: list[tuple[datetime, str]] = []
        outcome = "running"
        for ev in self.events:
            kind = ev.WhichOneof("attributes") or ""
            a = getattr(ev, kind) if kind else None
            at = _time(ev)
            if kind == "activity_task_scheduled_event_attributes":
                name = a.activity_type.name
                scheduled[ev.event_id] = {"step": self.step(name), "activity": name, "activity_id": a.activity_id,
                                          "scheduled": at, "started": None, "closed": None, "outcome": "running",
                                          "attempt": 1, "failure": ""}  # fmt: skip
            elif kind == "activity_task_started_event_attributes":
                row = scheduled.get(a.scheduled_event_id)
                if row is not None:
                    row.update(started=at, attempt=a.attempt)
                    if a.attempt > 1 and a.HasField("last_failure"):
                        row["failure"] = a.last_failure.message
            elif kind in _CLOSES:
                row = scheduled.get(a.scheduled_event_id)
                if row is not None:
                    row["closed"] = at
                    row["outcome"] = _CLOSES[kind]
                    if row["outcome"] == "completed" and row["attempt"] > 1:
                        row["outcome"] = "retried"
                    if kind == "activity_task_failed_event_attributes":
                        row["failure"] = _failure(a.failure)
                    elif kind == "activity_task_timed_out_event_attributes":
                        row["failure"] = _failure(a.failure) or "timed out"
                    if row["outcome"] in ("failed", "timed out"):
                        self.compensating = True  # the failure propagates: the saga unwinds next
            elif kind == "timer_started_event_attributes":
                timers[a.timer_id] = {"timer_id": a.timer_id, "started": at, "ended": None, "fired": False}
            elif kind in ("timer_fired_event_attributes", "timer_canceled_event_attributes"):
                if a.timer_id in timers:
                    timers[a.timer_id].update(ended=at, fired=kind == "timer_fired_event_attributes")
            elif kind == "workflow_execution_signaled_event_attributes":
                markers.append(Marker(at, "signal", a.signal_name))
                if a.signal_name == "release":
                    self.compensating = True
            elif kind == "workflow_execution_cancel_requested_event_attributes":
                markers.append(Marker(at, "cancel requested", "cancel requested (abort)"))
                self.compensating = True
            elif kind == "upsert_workflow_search_attributes_event_attributes":
                field = a.search_attributes.indexed_fields.get("ShadowingPhase")
                phase = _payload(field) if field is not None else None
                if isinstance(phase, str):
                    self._enter(phase, at, phases)
            elif kind == "signal_external_workflow_execution_initiated_event_attributes":
                if a.signal_name == "migration_progress" and a.input.payloads:
                    body = _payload(a.input.payloads[0])
                    if isinstance(body, dict) and isinstance(body.get("phase"), str):
                        self._enter(body["phase"], at, phases)
            elif kind == "workflow_execution_completed_event_attributes":
                body = _payload(a.result.payloads[0]) if a.result.payloads else None
                outcome = body.get("outcome", "completed") if isinstance(body, dict) else "completed"
            elif kind == "workflow_execution_failed_event_attributes":
                outcome = f"failed: {_failure(a.failure)}"
            elif kind in _RUN_ENDS:
                outcome = _RUN_ENDS[kind]
        if time_slice is not None:
            markers.append(Marker(time_slice.start, "slice start", f"slice start {time_slice.key}"))
            if time_slice.end <= end:
                markers.append(Marker(time_slice.end, "slice end", "slice end"))
        bars = tuple(ActivityBar(**row) for row in scheduled.values())
        present = {b.step for b in bars}
        return MigrationTimeline(
            workflow_id=wid, started=t0, ended=end, outcome=outcome, steps=tuple(s for s in STEPS if s in present),
            bars=bars, timers=tuple(TimerBar(**t) for t in timers.values()),
            markers=tuple(sorted(markers, key=lambda m: m.at)), phases=tuple(phases), time_slice=time_slice,
        )  # fmt: skip

    def _enter(self, phase: str, at: datetime, phases: list[tuple[datetime, str]]) -> None:
        if phases and phases[-1][1] == phase:
            return  # a child migration records each phase twice: search attribute and progress signal
        phases.append((at, phase))
        self.phase = phase
        if phase == "compensating":
            self.compensating = True


_RUN_ENDS = {
    "workflow_execution_canceled_event_attributes": "canceled",
    "workflow_execution_terminated_event_attributes": "terminated",
    "workflow_execution_timed_out_event_attributes": "timed out",
    "workflow_execution_continued_as_new_event_attributes": "continued as new",
}
_CLOSES: dict[str, Outcome] = {
    "activity_task_completed_event_attributes": "completed",
    "activity_task_failed_event_attributes": "failed",
    "activity_task_timed_out_event_attributes": "timed out",
    "activity_task_canceled_event_attributes": "canceled",
}


def _time(event: Any) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def _payload(payload: Any) -> Any:
    """A json/plain payload's value; None for anything else (an encrypted payload, binary data)."""
    if payload.metadata.get("encoding") != b"json/plain":
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        return None


def _time_slice(body: Any) -> TimeSlice | None:
    if not isinstance(body, dict) or not isinstance(body.get("time_slice"), dict):
        return None
    raw = body["time_slice"]
    try:
        if "region" in raw:
            return ScheduledSlice.model_validate({k: raw.get(k) for k in ("start", "end", "region")})
        return TimeSlice.model_validate({k: raw.get(k) for k in ("start", "end")})
    except ValueError:
        return None


def _failure(failure: Any) -> str:
    parts, current = [], failure
    while current is not None and current.message and len(parts) < 3:
        parts.append(current.message)
        current = current.cause if current.HasField("cause") else None
    return ": ".join(dict.fromkeys(parts))


def draw_migration(tl: MigrationTimeline) -> Figure:
    """Gantt chart: one row per step (and one of timers), one bar per activity execution coloured by outcome, a
    retried execution's wait before its last attempt hatched; slice start, signals and cancel requests marked."""
    rows = [*tl.steps, *(["timers"] if tl.timers else [])]
    if not rows:
        rows = ["(no activities)"]
    fig = Figure(figsize=(12, 2.4 + 0.42 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    markers, far = near_markers(tl)
    points = [tl.started, tl.ended, *(m.at for m in markers)]
    origin = tl.started
    span_s = max((max(points) - min(points)).total_seconds(), 1.0)
    div, unit = (1.0, "s") if span_s <= 900 else (60.0, "min") if span_s <= 4 * 3600 else (3600.0, "h")

    def x(at: datetime) -> float:
        return (at - origin).total_seconds() / div

    span, y = span_s / div, {name: i for i, name in enumerate(rows)}
    min_w = span * 0.004
    named: set[tuple[str, str]] = set()  # an activity's name is written once per row, on its first wide-enough bar
    for i, bar in enumerate(tl.bars):
        begin = bar.started or bar.scheduled
        stop = bar.closed or tl.ended
        left, width = x(begin), max(x(stop) - x(begin), min_w)
        if bar.attempt > 1 and bar.started is not None and bar.started > bar.scheduled:
            ax.barh(y[bar.step], x(bar.started) - x(bar.scheduled), left=x(bar.scheduled), height=0.6, hatch="///",
                    color="white", edgecolor=OUTCOME_COLOURS["retried"], linewidth=0.6,
                    gid=f"retry-wait:{i}")  # fmt: skip
        ax.barh(y[bar.step], width, left=left, height=0.6, color=OUTCOME_COLOURS[bar.outcome], edgecolor="#263238",
                linewidth=0.5, gid=f"bar:{i}")  # fmt: skip
        if width >= span * 0.07 and (bar.step, bar.activity) not in named:
            named.add((bar.step, bar.activity))
            ax.text(left + width / 2, y[bar.step], bar.activity, ha="center", va="center", fontsize=7, clip_on=True)
    for t in tl.timers:
        stop = t.ended or tl.ended
        ax.barh(y["timers"], max(x(stop) - x(t.started), min_w), left=x(t.started), height=0.35,
                color=TIMER_COLOUR if t.fired else "white", edgecolor="#78909c", linewidth=0.6,
                hatch=None if t.fired else "..", gid=f"timer:{t.timer_id}")  # fmt: skip
    styles = {"slice start": ("#1565c0", "-"), "slice end": ("#1565c0", ":"), "signal": ("#6a1b9a", "--"),
              "cancel requested": ("#b71c1c", "--")}  # fmt: skip
    for m in markers:
        colour, style = styles[m.kind]
        ax.axvline(x(m.at), color=colour, linestyle=style, linewidth=1.2, gid=f"marker:{m.kind}")
        ax.annotate(m.label, (x(m.at), 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                    textcoords="offset points", fontsize=7, color=colour, rotation=90, va="bottom")  # fmt: skip
    counts = {name: sum(b.step == name for b in tl.bars) for name in tl.steps}
    ax.set_yticks(range(len(rows)), labels=[f"{r} ({counts[r]})" if r in counts else r for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(min(x(p) for p in points) - span * 0.02, max(x(p) for p in points) + span * 0.02)
    off_axis = "".join(f"\n{note}" for note in far)
    ax.set_xlabel(f"{unit} since the run started ({origin:%Y-%m-%d %H:%M:%S} UTC){off_axis}")
    ax.grid(axis="x", alpha=0.3)
    used = {b.outcome for b in tl.bars} | {"completed", "retried", "failed"}
    handles: list[Any] = [Patch(color=c, label=o) for o, c in OUTCOME_COLOURS.items() if o in used]
    if any(b.attempt > 1 for b in tl.bars):
        handles.append(Patch(facecolor="white", edgecolor=OUTCOME_COLOURS["retried"], hatch="///",
                             label="retrying (earlier attempts)"))  # fmt: skip
    if tl.timers:
        handles += [Patch(facecolor=TIMER_COLOUR, edgecolor="#78909c", label="timer fired"),
                    Patch(facecolor="white", edgecolor="#78909c", hatch="..", label="timer canceled")]  # fmt: skip
    for kind in dict.fromkeys(m.kind for m in markers):
        colour, style = styles[kind]
        handles.append(Line2D([], [], color=colour, linestyle=style, label=kind))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    where = f" · slice {tl.time_slice.key}" if tl.time_slice is not None else ""
    region = getattr(tl.time_slice, "region", None)
    where += f" -> {region}" if region else ""
    fig.suptitle(f"ShadowMigration {tl.workflow_id}{where}\n{_short(tl.outcome, 110)}", fontsize=11)
    return fig


def near_markers(tl: MigrationTimeline) -> tuple[list[Marker], list[str]]:
    """The markers drawn on the axis, and a note for each one far from the run (a released migration can end hours
    before its slice starts: drawn, it would squeeze the whole run into a sliver). Near: within the run's length, at
    least 10 minutes, of its start or end."""
    pad = max(tl.ended - tl.started, timedelta(minutes=10))
    near, far = [], []
    for m in tl.markers:
        if tl.started - pad <= m.at <= tl.ended + pad:
            near.append(m)
            continue
        gap = m.at - tl.ended if m.at > tl.ended else tl.started - m.at
        where = "after the run ended" if m.at > tl.ended else "before the run started"
        far.append(f"{m.label}: {_duration(gap)} {where} ({m.at:%Y-%m-%d %H:%M} UTC; off the axis)")
    return near, far


def _duration(gap: timedelta) -> str:
    minutes = int(gap.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def migration_png(history: Any, path: str | Path, time_slice: TimeSlice | None = None) -> Path:
    """Writes the timeline of one ShadowMigration run (see `migration_timeline`) to `path`; returns the path."""
    return _save(draw_migration(migration_timeline(history, time_slice)), path)


# ---- fetching what to draw ------------------------------------------------------------------------------------


async def entity_status_and_spec(client: Any, entity_id: str) -> tuple[EntityStatus, EntitySpec]:
    """The entity's `status` and `spec` queries (`client`: a ShadowingClient). UnknownEntity when it is not running."""
    status = await client.status(entity_id)
    handle = client.client.get_workflow_handle(client.workflow_id(entity_id))
    return status, await handle.query("spec", result_type=EntitySpec)


async def migration_history(client: Any, entity_id: str, time_slice: TimeSlice | str) -> tuple[Any, SliceStatus]:
    """The Temporal history of the ShadowMigration that ran for one slice of the entity (`time_slice`: the slice or
    its key, e.g. 20261129T083937Z) and the slice's status. InvalidRequest when the slice is not in the entity's
    schedule; ShadowingError when no migration ran for it or its history is gone."""
    from temporalio.service import RPCError, RPCStatusCode

    status = await client.status(entity_id)
    key = time_slice if isinstance(time_slice, str) else time_slice.key
    entry = next(
        (s for s in status.slices if (s.time_slice.key == key if isinstance(time_slice, str)
                                      else s.time_slice.same_as(time_slice))),
        None,
    )  # fmt: skip
    if entry is None:
        known = ", ".join(s.time_slice.key for s in status.slices) or "none"
        raise InvalidRequest(f"{key} is not a slice of {entity_id}'s schedule (slices: {known})", "time_slice")
    if entry.migration_id is None:
        why = f"{entry.state}{': ' + entry.outcome if entry.outcome else ''}"
        raise ShadowingError(f"no migration ran for slice {key} of {entity_id} (slice {why})")
    try:
        history = await client.client.get_workflow_handle(entry.migration_id).fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ShadowingError(f"the history of {entry.migration_id} is gone (namespace retention?)") from exc
        raise
    return history, entry


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110)
    return out
