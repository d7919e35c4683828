"""What shadowctl prints for people (rich tables); `--json` prints the contract's models instead, for scripts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shadowing.models import (
    CostLedger,
    DemandForecast,
    EntityPlan,
    EntityStatus,
    FleetRef,
    ModelScores,
    TrainFleetModelResult,
)

EVENTS_SHOWN = 8


def render(result: BaseModel | dict) -> RenderableType:
    """The view of a result: a dedicated one for status, plan, ledger and forecasts, else its fields as a table."""
    for kind, view in VIEWS:
        if isinstance(result, kind):
            return view(result)
    return _fields(result.model_dump(mode="json") if isinstance(result, BaseModel) else result)


def _fleet(fleet: FleetRef | None) -> str:
    if fleet is None:
        return "-"
    return f"{fleet.fleet_id} in {fleet.region}: {fleet.size} x {fleet.instance_type} ({fleet.role})"


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def status_view(status: EntityStatus) -> RenderableType:
    head = Text.assemble(
        (status.entity_id, "bold"), f"  phase {status.phase}  mode {status.mode}",
        "  PAUSED" if status.paused else "", f"  migrations {status.migrations}",
    )  # fmt: skip
    fleet = Text(f"serving: {_fleet(status.active_fleet)}")
    slices = Table("slice", "region", "start", "state", "decision", "outcome", title="slices", title_justify="left")
    for s in status.slices:
        d = s.decision
        decision = f"{d.action} {d.quantity} x {d.instance_type}" if d else "-"
        slices.add_row(s.time_slice.key, s.time_slice.region, _time(s.time_slice.start), s.state, decision,
                       s.error or s.outcome or "")  # fmt: skip
    events = Table("at", "kind", "message", title="recent events", title_justify="left")
    for e in status.events[-EVENTS_SHOWN:]:
        events.add_row(_time(e.at), e.kind, e.message)
    return Group(head, fleet, slices, events, ledger_view(status.ledger))


def plan_view(plan: EntityPlan) -> RenderableType:
    table = Table(
        "slice", "region", "start", "forecast at", "state", "action", "approval",
        title=f"{plan.entity_id}: lead time {plan.lead_time_s:.0f}s, preparation {plan.prepare_s:.0f}s"
        + (" (PAUSED)" if plan.paused else ""), title_justify="left",
    )  # fmt: skip
    for e in plan.entries:
        action = f"{e.action} {e.quantity} x {e.instance_type}" if e.action and e.quantity else (e.action or "-")
        approval = "approved" if e.approved else ("needed" if e.needs_approval else "")
        table.add_row(e.slice_key, e.region, _time(e.start), _time(e.forecast_at), e.state, action, approval)
    return table


def ledger_view(ledger: CostLedger) -> RenderableType:
    table = Table(
        "slice", "outcome", "region", "instances", "shadow h", "overlap h", "cost $", "spot saved $", "wasted $",
        title=(f"cost: ${ledger.cost_usd:.2f} over {ledger.migrations} migrations ({ledger.released} released), "
               f"{ledger.shadow_hours:.2f} shadow hours, spot saved ${ledger.spot_savings_usd:.2f}, "
               f"wasted ${ledger.wasted_usd:.2f}"),
        title_justify="left",
    )  # fmt: skip
    for c in ledger.entries:
        money = (f"{v:.2f}" for v in (c.shadow_hours, c.overlap_hours, c.cost_usd, c.spot_savings_usd, c.wasted_usd))
        table.add_row(c.slice_key, c.outcome, c.region, f"{c.instances} x {c.instance_type}", *money)
    return table


def forecast_view(fc: DemandForecast) -> RenderableType:
    q = fc.sizing_quantile
    table = Table(
        "metric", "engine", "model", f"peak p{q * 100:g}", "peak p50", "backtest MAPE", "interval coverage",
        title=(f"{fc.entity_id} {fc.time_slice.start:%Y-%m-%d %H:%M} - {fc.time_slice.end:%H:%M}: readiness "
               f"{fc.readiness:.2f}" + (f" ({'; '.join(fc.readiness_reasons)})" if fc.readiness_reasons else "")),
        title_justify="left",
    )  # fmt: skip
    for name, m in fc.metrics.items():
        mape = f"{m.backtest_mape:.3f}" if m.backtest_mape is not None else "-"
        cover = f"{m.interval_coverage:.2f}" if m.interval_coverage is not None else "-"
        table.add_row(name, m.engine, m.model, f"{m.peak(q):,.0f} {m.unit}", f"{m.peak(0.5):,.0f} {m.unit}", mape,
                      cover)  # fmt: skip
    reasons = [f"{name}: {m.engine_reason}" for name, m in fc.metrics.items() if m.engine_reason]
    table.caption, table.caption_justify = "\n".join(reasons) or None, "left"
    return table


def training_view(result: TrainFleetModelResult) -> RenderableType:
    """A training's outcome and the candidate's and the incumbent's scores on the same held-out days."""
    table = Table(
        "model", "relative MAE vs seasonal naive", "vs naive", "80 % band covers", "q0.9 covers", "entities",
        title=f"{result.outcome}: {result.version} ({result.reason})", title_justify="left",
    )  # fmt: skip
    rows: list[tuple[str, ModelScores | None]] = [(f"candidate {result.version}", result.scores)]
    if result.incumbent_version:
        rows.append((f"published {result.incumbent_version}", result.incumbent_scores))
    for name, s in rows:
        if s is None:
            table.add_row(name, "-", "-", "-", "-", "-")
            continue
        cells = (s.relative_mae.get("seasonal_naive"), s.relative_mae.get("naive"), s.coverage_80, s.q90_coverage)
        table.add_row(name, *("-" if v is None else f"{v:.3f}" for v in cells), str(s.entities))
    return table


def _fields(data: dict) -> RenderableType:
    table = Table("field", "value", show_header=False)
    for key, value in data.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        table.add_row(key, shown)
    return table


VIEWS: tuple[tuple[type, Any], ...] = (
    (EntityStatus, status_view), (EntityPlan, plan_view), (CostLedger, ledger_view), (DemandForecast, forecast_view),
    (TrainFleetModelResult, training_view),
)  # fmt: skip

__all__ = ["render"]
