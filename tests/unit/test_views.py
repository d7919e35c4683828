"""What shadowctl prints for people: the fields an operator looks for are in the tables."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console

from shadowctl.views import render
from shadowing.models import CostEntry, CostLedger, EntityPlan, Event, PlanEntry
from tests.unit.test_plots import T0, _status


def _text(result: object) -> str:
    console = Console(record=True, width=220)
    console.print(render(result))  # type: ignore[arg-type]
    return console.export_text()


def test_status_shows_phase_fleet_slices_decisions_events_and_cost() -> None:
    entry = CostEntry(slice_key="s1", outcome="migrated", region="eu-west-1", instance_type="c5.xlarge",
                      instances=3, shadow_hours=0.5, cost_usd=1.23)  # fmt: skip
    status = _status().model_copy(update={
        "events": (Event(at=T0, kind="migration", message="cutover to eu-west-1 done"),),
        "ledger": CostLedger().add(entry),
    })  # fmt: skip
    text = _text(status)
    assert "shop" in text and "phase waiting" in text and "shop:initial in" in text
    for s in status.slices:
        assert s.time_slice.key in text and s.time_slice.region in text
    decided = status.slices[0].decision
    assert decided is not None and f"{decided.action} {decided.quantity} x {decided.instance_type}" in text
    assert "cutover to eu-west-1 done" in text and "$1.23" in text and "pending" in text


def test_plan_shows_every_entry_and_approval() -> None:
    entries = tuple(
        PlanEntry(slice_key=f"k{i}", region="eu-west-1", start=T0 + timedelta(hours=i), end=T0 + timedelta(hours=i + 1),
                  forecast_at=T0, state="pending", action="shadow", instance_type="m5.large", quantity=4,
                  needs_approval=i == 1)
        for i in range(3)
    )  # fmt: skip
    text = _text(EntityPlan(entity_id="shop", lead_time_s=900, prepare_s=300, paused=True, entries=entries))
    assert all(f"k{i}" in text for i in range(3)) and "shadow 4 x m5.large" in text
    assert "needed" in text and "PAUSED" in text and "lead time 900s" in text


def test_forecast_shows_each_metric_with_its_peak_and_readiness() -> None:
    forecast = _status().slices[0].forecast
    assert forecast is not None
    text = _text(forecast)
    cpu = forecast.metrics["cpu_mhz"]
    assert "cpu_mhz" in text and "memory_kb" in text and f"{cpu.peak(0.9):,.0f} MHz" in text
    assert "readiness 0.90" in text


def test_anything_else_is_shown_field_by_field() -> None:
    text = _text({"entity_id": "shop", "workflow_id": "entity/shop", "pseudonymous": False})
    assert "workflow_id" in text and "entity/shop" in text
