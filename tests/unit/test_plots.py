"""shadowctl.plots: the forecast picture (band, actual usage, chosen capacity) and the migration timeline drawn from
recorded ShadowMigration histories. Each test checks what is drawn (the plot data and the figure's artists), not
only that a PNG appeared."""

from __future__ import annotations

import copy
import json
import math
import os
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from shadowctl import plots
from shadowing.catalog import INSTANCE_TYPES
from shadowing.errors import InvalidRequest, ShadowingError
from shadowing.models import (
    DemandForecast,
    EntityPolicy,
    EntitySpec,
    EntityStatus,
    FleetRef,
    HourQuantiles,
    MetricForecast,
    MigrationInput,
    ScheduledSlice,
    SliceStatus,
    TimeSlice,
)
from workflows.policy import decide, instances_needed

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
T0 = datetime(2026, 11, 20, 8, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- builders -------------------------------------------------------------------------------------------------


def _spec() -> EntitySpec:
    return EntitySpec(
        entity_id="shop", home_region="us-east-1", instance_types=("m5.large", "c5.xlarge"), initial_instances=2,
        dns_name="shop.example.internal", hosted_zone_id="Z1", policy=EntityPolicy(target_utilisation=0.7),
    )  # fmt: skip


def _forecast(slot: ScheduledSlice, hours: int, cpu: float, mem_gib: float) -> DemandForecast:
    """Hourly quantiles with a daily-ish shape; memory in KB as the product measures it."""

    def metric(name: str, unit: str, level: float) -> MetricForecast:
        rows = []
        for i in range(hours):
            mid = level * (1 + 0.25 * math.sin(i / 2))
            rows.append(HourQuantiles(hour=slot.start + timedelta(hours=i),
                                      quantiles={"0.1": mid * 0.8, "0.5": mid, "0.9": mid * 1.25}))  # fmt: skip
        return MetricForecast(metric=name, unit=unit, model="test", hours=tuple(rows))

    return DemandForecast(
        entity_id="shop", time_slice=slot.as_time_slice(), history_end=slot.start - timedelta(hours=1),
        history_hours=336, sizing_quantile=0.9, readiness=0.9,
        metrics={"cpu_mhz": metric("cpu_mhz", "MHz", cpu), "memory_kb": metric("memory_kb", "KB", mem_gib * 1024**2)},
    )  # fmt: skip


def _status(forecast_slices: int = 2) -> EntityStatus:
    """Three 4-hour slices (us-east-1 -> eu-west-1 -> eu-west-1 -> ap-southeast-2); the first `forecast_slices` are
    forecast and decided by the product's own policy, the rest pending."""
    spec = _spec()
    regions = ("eu-west-1", "eu-west-1", "ap-southeast-2")
    slots = [ScheduledSlice(start=T0 + timedelta(hours=4 * i), end=T0 + timedelta(hours=4 * (i + 1)), region=r)
             for i, r in enumerate(regions)]  # fmt: skip
    active = FleetRef(fleet_id="shop:initial", entity_id="shop", region="us-east-1", instance_type="m5.large",
                      instance_ids=("i-1", "i-2"), role="active")  # fmt: skip
    slices = []
    for i, slot in enumerate(slots):
        if i >= forecast_slices:
            slices.append(SliceStatus(time_slice=slot, state="pending"))
            continue
        fc = _forecast(slot, 4, cpu=9000.0 + 4000 * i, mem_gib=6.0)
        decision = decide(spec, slot, active, fc, now=slot.start - timedelta(hours=1))
        slices.append(SliceStatus(time_slice=slot, state="done", forecast=fc, decision=decision))
        if decision.action == "shadow":
            ids = tuple(f"i-{n}" for n in range(decision.quantity))
            active = active.model_copy(
                update={"region": slot.region, "instance_type": decision.instance_type, "instance_ids": ids}
            )
    return EntityStatus(entity_id="shop", phase="waiting", active_fleet=active, slices=tuple(slices), events=())


def _actual() -> dict[str, pd.Series]:
    """Actual hourly usage from 6 hours before the first slice to the end of the second, one hour missing."""
    index = pd.date_range(T0 - timedelta(hours=6), T0 + timedelta(hours=8), freq="h", inclusive="left")
    cpu = pd.Series(np.linspace(7000, 14000, len(index)), index=index)
    cpu.iloc[3] = np.nan
    mem = pd.Series(np.full(len(index), 6.2 * 1024**2), index=index)
    return {"cpu_mhz": cpu, "memory_kb": mem}


def _history(name: str, body: dict | None = None) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"migration/shop/{name}", body or json.loads((HISTORIES / name).read_text()))


def _recorded_input(name: str) -> MigrationInput:
    """The MigrationInput a committed ShadowMigration history was started with."""
    started = _history(name).events[0].workflow_execution_started_event_attributes
    return MigrationInput.model_validate_json(started.input.payloads[0].data)


def _assert_png(path: Path, min_bytes: int = 20_000) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes: an empty picture?"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


def _by_gid(fig: Any, gid: str) -> list[Any]:
    return [a for a in fig.findobj() if a.get_gid() == gid]


# ---- forecast -------------------------------------------------------------------------------------------------


def test_forecast_plot_holds_every_forecast_hour_band_and_actual_point() -> None:
    status, actual = _status(), _actual()
    plot = plots.forecast_plot(status, actual, target_utilisation=0.7)
    assert [p.metric for p in plot.panels] == ["cpu_mhz", "memory_kb"]
    assert [m.slice_key for m in plot.slices] == [s.time_slice.key for s in status.slices[:2]]
    assert plot.not_forecast == (status.slices[2].time_slice.key,)
    for panel in plot.panels:
        assert len(panel.hours) == 8, "two forecast slices of four hours"
        assert panel.hours == tuple(T0 + timedelta(hours=i) for i in range(8))
        for seg in panel.segments:
            assert seg.levels == ("0.1", "0.5", "0.9", "0.9")
            assert all(lo <= med <= hi for lo, med, hi in zip(seg.low, seg.median, seg.high, strict=True))
    cpu = plot.panels[0]
    first = status.slices[0].forecast.metrics["cpu_mhz"].hours  # type: ignore[union-attr]
    assert cpu.segments[0].high == tuple(h.quantiles["0.9"] for h in first)
    assert len(cpu.actual) == 13, "14 actual hours, the missing one is not drawn as zero"
    assert all(not math.isnan(v) for _, v in cpu.actual)


def test_capacity_is_the_decision_sized_as_the_policy_sizes_it() -> None:
    """capacity = quantity x the type's capacity in the metric's unit; the usable share (x target utilisation)
    covers the sizing-quantile peak, and one instance fewer would not: the relation of `instances_needed`."""
    status = _status()
    plot = plots.forecast_plot(status, None, target_utilisation=0.7)
    for panel in plot.panels:
        assert len(panel.capacity) == 2
        for cap in panel.capacity:
            itype = INSTANCE_TYPES[cap.instance_type]
            per = {"cpu_mhz": itype.cpu_mhz, "memory_kb": itype.memory_kb}[panel.metric]
            assert cap.capacity == pytest.approx(per * cap.quantity)
            assert cap.usable == pytest.approx(per * cap.quantity * 0.7)
            assert (cap.end - cap.start) == timedelta(hours=4)
    for s in status.slices[:2]:
        d, fc = s.decision, s.forecast
        assert d is not None and fc is not None and d.action in ("shadow", "grow")
        assert d.quantity == instances_needed(fc, INSTANCE_TYPES[d.instance_type], 0.7, 20) >= 2
        caps = [c for p in plot.panels for c in p.capacity if c.slice_key == s.time_slice.key]
        assert all(c.sizing_peak <= c.usable for c in caps)  # type: ignore[operator]
        assert any(c.sizing_peak > c.usable * (d.quantity - 1) / d.quantity for c in caps), "not minimal"  # type: ignore[operator]


def test_forecast_figure_draws_band_median_actual_and_capacity_where_the_data_says() -> None:
    status = _status()
    plot = plots.forecast_plot(status, _actual(), target_utilisation=0.7)
    fig = plots.draw_forecast(plot)
    key = status.slices[1].time_slice.key
    band = _by_gid(fig, f"band:{key}")
    assert len(band) == 2, "one band per metric subplot"
    extent = band[0].get_paths()[0].get_extents()
    assert extent.x0 == pytest.approx(mdates.date2num(T0 + timedelta(hours=4)))
    assert extent.x1 == pytest.approx(mdates.date2num(T0 + timedelta(hours=8)))
    assert extent.y1 == pytest.approx(max(plot.panels[0].segments[1].high))
    median = _by_gid(fig, f"median:{key}")[0]
    assert list(median.get_ydata()[:-1]) == pytest.approx(plot.panels[0].segments[1].median)
    capacity = _by_gid(fig, f"capacity:{key}")
    assert capacity[0].get_segments()[0][0][1] == pytest.approx(plot.panels[0].capacity[1].capacity)
    gib, unit = plots.display_unit("KB")
    assert unit == "GiB" and capacity[1].get_segments()[0][0][1] == pytest.approx(
        plot.panels[1].capacity[1].capacity / gib
    )
    assert len(_by_gid(fig, f"usable:{key}")) == 2
    actual = _by_gid(fig, "actual")[0].get_ydata()
    assert len(actual) == 14 + 1 and np.isnan(actual[3]), "14 hours (and the step's end); the missing one a gap"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"forecast p10-p90", "forecast p50", "actual (hourly max, CloudWatch)", "capacity (shadow)"} <= set(legend)
    cpu_top = fig.axes[0].get_ylim()[1]
    assert cpu_top > max(c.capacity for c in plot.panels[0].capacity), "capacity lines are inside the axes"


def test_forecast_png_writes_a_readable_picture(tmp_path: Path) -> None:
    path = plots.forecast_png(_status(), _actual(), tmp_path / "sub" / "forecast.png", target_utilisation=0.7)
    assert path == tmp_path / "sub" / "forecast.png"
    width, height = _assert_png(path)
    assert width > 1000 and height > 600


def test_a_status_without_forecasts_is_a_clear_error(tmp_path: Path) -> None:
    status = _status(forecast_slices=0)
    with pytest.raises(ValueError, match=r"'shop' has no forecast to plot.*\d{8}T\d{6}Z pending"):
        plots.forecast_png(status, None, tmp_path / "f.png")
    with pytest.raises(ValueError, match="no forecast"):
        plots.forecast_window(status)
    assert not (tmp_path / "f.png").exists()


def test_nothing_forecast_says_when_the_first_slice_is_and_that_predict_records_nothing() -> None:
    """Right after `shadowctl predict`, `plot forecast` says why there is nothing to draw (predict records nothing)
    and when the schedule forecasts its first slice (its start less the entity's lead time)."""
    status = _status(forecast_slices=0).model_copy(update={"lead_time_s": 900.0})
    first = min(s.time_slice.start for s in status.slices) - timedelta(seconds=900)
    message = plots.nothing_forecast(status)
    assert f"the first is forecast at {first:%Y-%m-%d %H:%M} UTC" in message
    assert "`shadowctl predict` returns its forecast without recording it" in message
    assert "forecast at" not in plots.nothing_forecast(_status(forecast_slices=0))  # no lead time known: no guess


def test_actual_usage_is_read_from_cloudwatch_as_the_forecast_reads_it(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    """Hourly maxima under Shadowing/Usage, dimension EntityId, within [start, end); then the whole picture."""
    from moto import mock_aws

    from shadowing.settings import Settings
    from workers.aws import AwsClients

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    status = _status()
    start, end = plots.forecast_window(status, context_hours=6)
    assert (start, end) == (T0 - timedelta(hours=6), T0 + timedelta(hours=8))
    with mock_aws():
        cw = AwsClients(Settings(aws_endpoint_url=None, aws_profile=None))("cloudwatch", "us-east-1")
        data = []
        for h in range(-8, 8):
            at = T0 + timedelta(hours=h)
            for name, value in (("CpuUsageMHz", 1000.0 + h), ("MemoryUsageKB", 2000.0 + h)):
                dims = [{"Name": "EntityId", "Value": "shop"}]
                data += [{"MetricName": name, "Dimensions": dims, "Timestamp": at + timedelta(minutes=m),
                          "Value": value + m / 100} for m in (5, 35)]  # fmt: skip
        data.append({"MetricName": "CpuUsageMHz", "Dimensions": [{"Name": "EntityId", "Value": "other"}],
                     "Timestamp": T0, "Value": 99999.0})  # fmt: skip
        cw.put_metric_data(Namespace="Shadowing/Usage", MetricData=data)
        actual = plots.read_actual_usage(cw, "shop", start, end)
        path = plots.entity_forecast_png(status, _spec(), cw, tmp_path / "f.png", context_hours=6)
    assert set(actual) == {"cpu_mhz", "memory_kb"}
    cpu = actual["cpu_mhz"]
    assert list(cpu.index) == list(pd.date_range(start, end, freq="h", inclusive="left"))
    assert cpu[pd.Timestamp(T0)] == pytest.approx(1000.35), "the hour's maximum, of this entity only"
    assert actual["memory_kb"][pd.Timestamp(T0 - timedelta(hours=6))] == pytest.approx(1994.35)
    _assert_png(path)


# ---- migration timeline ----------------------------------------------------------------------------------------


def test_a_successful_migration_shows_its_steps_in_order() -> None:
    tl = plots.migration_timeline(_history("shadow_migration_success.json"))
    assert tl.steps == ("provision", "warm", "sync check", "cutover", "watch", "retire")
    assert tl.outcome == "migrated"
    assert [b.activity for b in tl.bars if b.step == "cutover"] == [
        "probe_fleet", "routing_state", "set_weights", "mark_fleet_role"]  # fmt: skip
    assert [b.activity for b in tl.bars if b.step == "retire"] == ["remove_fleet_record", "terminate_fleet"]
    assert {b.outcome for b in tl.bars} == {"completed"}
    recorded = _recorded_input("shadow_migration_success.json").time_slice  # as the recording asked for it
    assert tl.time_slice is not None and tl.time_slice.key == recorded.key
    starts = [m for m in tl.markers if m.kind == "slice start"]
    assert len(starts) == 1 and starts[0].at == recorded.start
    assert tl.timers and all(t.ended is not None for t in tl.timers)
    order = {step: min(b.scheduled for b in tl.bars if b.step == step) for step in tl.steps}
    assert sorted(order, key=order.__getitem__) == list(tl.steps), "steps are rows in the order they ran"


@pytest.mark.parametrize("phases", [True, False], ids=["phases", "no-phases"])
def test_a_rolled_back_migration_groups_its_compensations(phases: bool) -> None:
    """With phases recorded (search attributes) or without them (a history that never upserted any): the undo
    steps after the degraded watch are compensations."""
    body = json.loads((HISTORIES / "shadow_migration_rolled_back.json").read_text())
    if not phases:
        body["events"] = [e for e in body["events"] if "upsertWorkflowSearchAttributesEventAttributes" not in e]
    tl = plots.migration_timeline(_history("shadow_migration_rolled_back.json", body))
    assert bool(tl.phases) == phases
    assert tl.steps == ("provision", "warm", "replicate", "sync check", "cutover", "watch", "compensate")
    # the two-way passes go on until the restored records' TTL ran out, then the data goes home
    undo = [b.activity for b in tl.bars if b.step == "compensate"]
    assert [a for a in undo if a != "replicate_both_ways"] == [
        "restore_weights", "catch_up", "catch_up", "drop_replicas", "terminate_fleet"]  # fmt: skip
    assert undo.index("replicate_both_ways") < undo.index("catch_up")
    replicate = [b.activity for b in tl.bars if b.step == "replicate"]
    assert replicate[:10] == ["replicate_tables"] + ["catch_up"] * 9
    assert set(replicate[10:]) == {"replicate_both_ways"}, "both ways from the first weight change"
    assert tl.outcome.startswith("failed: Migration failed: new fleet degraded")


def test_the_late_path_shows_the_old_fleets_scale_up() -> None:
    tl = plots.migration_timeline(_history("shadow_migration_late.json"))
    assert tl.steps[:3] == ("provision", "late scale-up", "warm")
    assert [b.activity for b in tl.bars if b.step == "late scale-up"] == ["provision_fleet", "routing_state",
                                                                          "set_weights"]  # fmt: skip


def _failed_and_retried() -> dict:
    """The sync-failed history with the final check_sync failing (instead of reporting drift) and replicate_tables
    succeeding on its third attempt, as Temporal records both. (The first check_sync verifies the copy.)"""
    body = copy.deepcopy(json.loads((HISTORIES / "shadow_migration_sync_failed.json").read_text()))
    events = body["events"]
    names = {e["eventId"]: e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
             for e in events if "activityTaskScheduledEventAttributes" in e}  # fmt: skip
    final_check = max((i for i, name in names.items() if name == "check_sync"), key=int)  # ids are JSON strings
    for e in events:
        if "activityTaskStartedEventAttributes" in e:
            attrs = e["activityTaskStartedEventAttributes"]
            if names[attrs["scheduledEventId"]] == "replicate_tables":
                attrs["attempt"] = 3
                attrs["lastFailure"] = {"message": "throttled", "applicationFailureInfo": {"type": "Throttling"}}
        if "activityTaskCompletedEventAttributes" in e:
            attrs = e["activityTaskCompletedEventAttributes"]
            if attrs["scheduledEventId"] == final_check:
                e["eventType"] = "EVENT_TYPE_ACTIVITY_TASK_FAILED"
                e["activityTaskFailedEventAttributes"] = {
                    "failure": {"message": "Data synchronization failed: stream expired",
                                "applicationFailureInfo": {"type": "DataSyncFailed", "nonRetryable": True}},
                    "scheduledEventId": attrs["scheduledEventId"], "startedEventId": attrs["startedEventId"],
                    "retryState": "RETRY_STATE_NON_RETRYABLE_FAILURE",
                }  # fmt: skip
                del e["activityTaskCompletedEventAttributes"]
    return body


def test_failed_and_retried_activities_are_coloured_by_outcome(tmp_path: Path) -> None:
    history = _history("shadow_migration_sync_failed.json", _failed_and_retried())
    tl = plots.migration_timeline(history)
    by_name = {b.activity: (i, b) for i, b in enumerate(tl.bars)}
    failed_i, failed = by_name["check_sync"]
    retried_i, retried = by_name["replicate_tables"]
    assert failed.outcome == "failed" and "stream expired" in failed.failure
    assert retried.outcome == "retried" and retried.attempt == 3 and retried.failure == "throttled"
    assert [b.step for b in tl.bars[failed_i + 1 :]] == ["compensate", "compensate"]
    fig = plots.draw_migration(tl)
    (failed_bar,) = _by_gid(fig, f"bar:{failed_i}")
    (retried_bar,) = _by_gid(fig, f"bar:{retried_i}")
    (ok_bar,) = _by_gid(fig, "bar:0")
    assert failed_bar.get_facecolor() == to_rgba(plots.OUTCOME_COLOURS["failed"])
    assert retried_bar.get_facecolor() == to_rgba(plots.OUTCOME_COLOURS["retried"])
    assert ok_bar.get_facecolor() == to_rgba(plots.OUTCOME_COLOURS["completed"])
    red, green, _, _ = failed_bar.get_facecolor()
    assert red > 0.7 and green < 0.4, "a failure is drawn red"
    assert len({failed_bar.get_facecolor(), retried_bar.get_facecolor(), ok_bar.get_facecolor()}) == 3
    assert len(_by_gid(fig, f"retry-wait:{retried_i}")) == (retried.started > retried.scheduled)  # type: ignore[operator]
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["provision (1)", "warm (1)", "replicate (10)", "sync check (2)", "compensate (2)", "timers"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"completed", "retried", "failed", "slice start"} <= set(legend)
    _assert_png(plots.migration_png(history, tmp_path / "m.png"))


def test_migration_png_draws_one_bar_per_activity_execution(tmp_path: Path) -> None:
    history = _history("shadow_migration_rolled_back.json")
    tl = plots.migration_timeline(history)
    fig = plots.draw_migration(tl)
    bars = [a for a in fig.findobj() if str(a.get_gid()).startswith("bar:")]
    scheduled = sum(e.HasField("activity_task_scheduled_event_attributes") for e in history.events)
    assert len(bars) == len(tl.bars) == scheduled > 20
    rows = {round(b.get_y() + b.get_height() / 2) for b in bars}
    assert rows == set(range(len(tl.steps))), "every step has its row"
    width, height = _assert_png(plots.migration_png(history, tmp_path / "m.png"))
    assert width > 1000 and height > 400


def test_a_history_that_is_not_a_shadow_migration_is_a_clear_error(tmp_path: Path) -> None:
    entity = _history("entity_schedule_success.json")
    with pytest.raises(ValueError, match="run of EntitySchedule, not of ShadowMigration"):
        plots.migration_png(entity, tmp_path / "m.png")
    with pytest.raises(ValueError, match="no events"):
        plots.migration_timeline(WorkflowHistory("migration/shop/x", []))
    assert not (tmp_path / "m.png").exists()


# ---- fetching the history for the CLI ----------------------------------------------------------------------------


class _Handle:
    def __init__(self, history: WorkflowHistory | None) -> None:
        self.history = history

    async def fetch_history(self) -> WorkflowHistory:
        if self.history is None:
            raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
        return self.history


class _Client:
    """What `migration_history` uses of a ShadowingClient: status() and the Temporal client's handles."""

    def __init__(self, status: EntityStatus, history: WorkflowHistory | None) -> None:
        self._status, self.client, self.asked = status, self, []  # type: ignore[var-annotated]
        self.history = history

    async def status(self, entity_id: str) -> EntityStatus:
        return self._status

    def get_workflow_handle(self, workflow_id: str) -> _Handle:
        self.asked.append(workflow_id)
        return _Handle(self.history)


async def test_migration_history_finds_the_slices_migration_or_says_why_not() -> None:
    status = _status()
    moved = status.slices[0].model_copy(update={"migration_id": "migration/p-abc/" + status.slices[0].time_slice.key})
    status = status.model_copy(update={"slices": (moved, *status.slices[1:])})
    history = _history("shadow_migration_success.json")
    client = _Client(status, history)
    got, entry = await plots.migration_history(client, "shop", moved.time_slice.key)
    assert got is history and entry == moved and client.asked == [moved.migration_id]
    got, _ = await plots.migration_history(client, "shop", moved.time_slice.as_time_slice())
    assert got is history
    with pytest.raises(InvalidRequest, match="20991231T000000Z is not a slice of shop's schedule"):
        await plots.migration_history(client, "shop", "20991231T000000Z")
    with pytest.raises(ShadowingError, match=r"no migration ran for slice \d{8}T\d{6}Z of shop \(slice pending\)"):
        await plots.migration_history(client, "shop", status.slices[2].time_slice.key)
    with pytest.raises(ShadowingError, match=r"history of migration/p-abc/\d+T\d+Z is gone"):
        await plots.migration_history(_Client(status, None), "shop", moved.time_slice.key)


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["plot", "forecast", "Not_An_Id"], 2, "entity_id"),
        (["plot", "migration", "shop"], 2, "time_slice"),
        (["plot", "migration", "shop", "tomorrow"], 2, "not a slice key"),
        (["plot", "migration", "shop", "--start", "2026-01-01T00:00:00", "--end", "2026-01-01T01:00:00Z"], 2,
         "time_slice.start"),
        (["plot", "forecast", "shop"], 1, "127.0.0.1:9"),
    ],
    ids=["bad-entity", "no-slice", "bad-key", "naive-start", "no-server"],
)  # fmt: skip
def test_plot_commands_fail_with_a_message_not_a_traceback(args: list[str], code: int, named: str) -> None:
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "shadowctl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert named in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("metric", "unit", "label"),
    [("memory_kb", "KB", "memory\n(GiB)"), ("cpu_mhz", "MHz", "cpu\n(MHz)"),
     ("network_kbps", "KB/s", "network\n(MB/s)"), ("requests", "count", "requests\n(count)")],
)  # fmt: skip
def test_axis_labels_name_the_unit_drawn_not_the_unit_of_the_metric_name(metric: str, unit: str, label: str) -> None:
    assert plots.axis_label(metric, unit) == label


def test_the_memory_panel_is_labelled_in_gib_without_kb(tmp_path: Path) -> None:
    fig = plots.draw_forecast(plots.forecast_plot(_status(), _actual()))
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert "memory\n(GiB)" in labels and not any("_kb" in label for label in labels), labels


def test_a_slice_start_hours_from_the_run_is_noted_not_drawn() -> None:
    """A released migration ends hours before its slice starts: the axis keeps the run's scale, the slice start is
    named below it with its distance."""
    tl = plots.migration_timeline(_history("shadow_migration_success.json"))
    far_start = tl.ended + timedelta(hours=5, minutes=12)
    far = plots.migration_timeline(
        _history("shadow_migration_success.json"), TimeSlice(start=far_start, end=far_start + timedelta(hours=8))
    )
    fig = plots.draw_migration(far)
    ax = fig.axes[0]
    assert not [a for a in fig.findobj() if a.get_gid() == "marker:slice start"]
    assert "5 h 12 min after the run ended" in ax.get_xlabel() and "off the axis" in ax.get_xlabel()
    assert ax.get_xlabel().startswith("s since the run started")  # a 14 s run keeps its seconds scale
    soon = tl.ended + timedelta(seconds=1)
    near = plots.migration_timeline(
        _history("shadow_migration_success.json"), TimeSlice(start=soon, end=soon + timedelta(hours=8))
    )
    assert [a for a in plots.draw_migration(near).findobj() if a.get_gid() == "marker:slice start"]


def test_an_activity_name_is_written_once_per_row() -> None:
    """Five wide probe_fleet executions in the watch row and one provision_fleet: each name appears once."""
    t0 = datetime(2026, 12, 7, tzinfo=UTC)

    def bar(step: str, activity: str, start_s: int, length_s: int) -> plots.ActivityBar:
        return plots.ActivityBar(step=step, activity=activity, activity_id=f"{activity}-{start_s}",
                                 scheduled=t0 + timedelta(seconds=start_s), started=t0 + timedelta(seconds=start_s),
                                 closed=t0 + timedelta(seconds=start_s + length_s), outcome="completed")  # fmt: skip

    bars = (
        bar("provision", "provision_fleet", 0, 60),
        *(bar("watch", "probe_fleet", 60 + 60 * i, 50) for i in range(5)),
    )
    tl = plots.MigrationTimeline(workflow_id="migration/shop/x", started=t0, ended=t0 + timedelta(seconds=360),
                                 outcome="migrated", steps=("provision", "watch"), bars=bars, timers=(), markers=(),
                                 phases=(), time_slice=None)  # fmt: skip
    written = sorted(t.get_text() for t in plots.draw_migration(tl).axes[0].texts)
    assert written == ["probe_fleet", "provision_fleet"], written
