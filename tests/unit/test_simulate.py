"""The simulator's accounting on tiny traces checked by hand (m5.large: 5000 MHz, 8 GiB; sized at 70%)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from shadowctl.simulate import (
    Entity,
    SimConfig,
    needed,
    point_at_cost,
    point_forecasts,
    shortfall,
    simulate_oracle,
    simulate_point,
    simulate_predictive,
    simulate_reactive,
    simulate_static,
)
from shadowing.catalog import INSTANCE_TYPES
from shadowing.models import EntityPolicy

M5 = INSTANCE_TYPES["m5.large"]
PRICE = M5.price("us-east-1")
NAN = float("nan")
INDEX = pd.date_range("2013-08-20", periods=4, freq="h", tz="UTC")
CFG = SimConfig(start=INDEX[1], end=INDEX[-1], instance_types=("m5.large",),
                policy=EntityPolicy(sizing_quantile=0.9))  # fmt: skip


def entity(peaks: list[float], means: list[float], p90: list[float] | None = None, ready: float = 0.9) -> Entity:
    """Hour 0 is history; hours 1.. are simulated. Memory is idle."""
    hours = len(peaks) - 1
    forecast = np.array(p90 if p90 is not None else [NAN] * hours, dtype=float)
    return Entity(
        "e", np.array(peaks, float), np.zeros(len(peaks)), np.array(means, float), np.zeros(len(peaks)), 1,
        {0.1: forecast * 0.5, 0.5: forecast * 0.8, 0.85: forecast * 0.95, 0.9: forecast},
        {q: np.zeros(hours) for q in (0.1, 0.5, 0.85, 0.9)},
        np.full(hours, ready),
    )  # fmt: skip


def test_needed_sizes_the_binding_metric_at_the_utilisation_target() -> None:
    assert needed(3500, 0, M5, 0.7, 20) == 1 and needed(3501, 0, M5, 0.7, 20) == 2
    assert needed(NAN, 7 * 1024**2, M5, 0.7, 20) == 2  # 7 GiB > 5.6 GiB usable; the unobserved CPU asks nothing
    assert needed(1e9, 0, M5, 0.7, 20) == 20


def test_shortfall_is_fractional_instances_missing_and_nan_when_unobserved() -> None:
    short = shortfall(np.array([7500, 4000, NAN]), np.array([0, 0, NAN]), np.array([1.0, 1.0, 1.0]), [M5] * 3)
    assert short[0] == pytest.approx(0.5) and short[1] == 0 and np.isnan(short[2])


SPIKE = {"peaks": [1000, 1000, 9000, 1000], "means": [1000, 1000, 6000, 1000]}


def test_reactive_misses_the_spike_and_pays_the_late_instances() -> None:
    """Hour 2 starts with 1 instance (hour 1's average); its 9000 MHz peak needs 3: under-provisioned by 0.8 of an
    instance, 2 more run for the last 0.75 h; hour 3 starts at hour 2's average need (2)."""
    t = simulate_reactive(entity(**SPIKE), M5, CFG)
    assert t.underprovisioned_entity_hours == 1 and t.shortfall_capacity_hours == pytest.approx(0.8)
    assert t.instance_hours == pytest.approx(1 + 1 + 2 + 2 * 0.75)
    assert t.cost_usd == pytest.approx(t.instance_hours * PRICE) and t.entity_hours == 3


def test_oracle_covers_every_hour_and_pays_the_warm_up_of_what_it_adds() -> None:
    t = simulate_oracle(entity(**SPIKE), M5, CFG)
    assert t.underprovisioned_entity_hours == 0
    assert t.instance_hours == pytest.approx(1 + 3 + 1 + 2 * CFG.warmup_h)


def test_static_is_sized_for_the_history_peak_only() -> None:
    t = simulate_static(entity(**SPIKE), M5, CFG)
    assert t.instance_hours == 3 and t.underprovisioned_entity_hours == 1


def test_point_forecast_without_a_week_of_history_follows_what_it_has() -> None:
    """Hour 2's point forecast needs a day back: there is none in this trace, so it stays at 1 instance."""
    t = simulate_point(entity(**SPIKE), M5, CFG)
    assert t.underprovisioned_entity_hours == 1


def test_the_point_forecast_is_the_daily_and_weekly_pattern_and_its_buffer_buys_coverage() -> None:
    """Eight days of history, then the spike hour: 7 days back the same hour averaged 4000 (1 day) and 2000
    (6 days) -> 16000 / 7; a week back 2000: forecast 0.5 x 16000 / 7 + 0.5 x 2000 = 2142.86. Sized at 70 % of
    5000 MHz: +10 % (2357) asks 1 instance, short of the 9000 MHz peak by 0.8 of one; +200 % (6429) asks 2,
    which cover it; +300 % (8571) asks 3."""
    day = [1000.0] * 24
    means = day * 8 + [1000.0]
    for k in range(1, 8):
        means[192 - 24 * k] = 2000.0
    means[192 - 24] = 4000.0
    peaks = [1000.0] * 192 + [9000.0]
    e = Entity("e", np.array(peaks), np.zeros(193), np.array(means), np.zeros(193), 192, {}, {}, np.ones(1))
    assert point_forecasts(e.cpu_mean, 192)[0] == pytest.approx(0.5 * 16000 / 7 + 0.5 * 2000)
    assert np.isnan(point_forecasts(np.array([NAN, 1.0, 2.0]), 1)).all()  # nothing a day or a week back
    curve = {b: simulate_point(e, M5, CFG, b) for b in (0.1, 2.0, 3.0)}
    assert curve[0.1].shortfall_capacity_hours == pytest.approx(0.8)
    assert [t.instance_hours for t in curve.values()] == [1, 2, 3]  # one hour, nothing grown inside the window
    assert [t.underprovisioned_entity_hours for t in curve.values()] == [1, 0, 0]
    assert simulate_point(e, M5, CFG).instance_hours == 1  # the configured buffer, +10 %
    assert point_at_cost(curve, 2.5 * PRICE) == (2.0, curve[2.0])  # the largest buffer within the budget
    assert point_at_cost(curve, 3 * PRICE)[0] == 3.0 and point_at_cost(curve, 0.5 * PRICE) is None


def test_predictive_grows_ahead_of_the_spike_then_shrinks() -> None:
    """The p90 forecast says 9000 MHz for hour 2: the fleet grows in place from 1 to 3 (the 2 added warm up
    ahead, 0.25 h paid; nothing overlaps); hour 3's forecast needs 1: 2 are released after the record's TTL."""
    t = simulate_predictive(entity(**SPIKE, p90=[1000, 9000, 1000]), M5, CFG, INDEX)
    assert t.underprovisioned_entity_hours == 0 and t.migrations == 0
    assert t.decisions == {"stay": 1, "grow": 1, "shrink": 1}
    ttl_h = CFG.policy.record_ttl_s / 3600
    assert t.instance_hours == pytest.approx(1 + 3 + 1 + 2 * CFG.warmup_h + 2 * ttl_h)
    assert t.cost_usd == pytest.approx(t.instance_hours * PRICE)


def test_predictive_without_scale_out_shadows_ahead_of_the_spike_then_shrinks() -> None:
    """With `scale_out` off the same peak is a migration: shadows of 3 warm up ahead (0.25 h paid), the old fleet
    runs through the overlap; hour 3's forecast needs 1: 2 are released after the record's TTL."""
    cfg = dataclasses.replace(CFG, policy=CFG.policy.model_copy(update={"scale_out": False}))
    t = simulate_predictive(entity(**SPIKE, p90=[1000, 9000, 1000]), M5, cfg, INDEX)
    assert t.underprovisioned_entity_hours == 0 and t.migrations == 1
    ttl_h = CFG.policy.record_ttl_s / 3600
    assert t.instance_hours == pytest.approx(1 + 3 + 1 + 3 * CFG.warmup_h + 1 * CFG.overlap_h + 2 * ttl_h)
    assert t.cost_usd == pytest.approx(t.instance_hours * PRICE)


def test_predictive_on_an_untrusted_forecast_still_follows_it_in_place() -> None:
    """Readiness below the threshold: a same-region peak is still carried (grown in place) and the surplus still
    released (the elastic policy); the accounting is the trusted case's."""
    trusted = simulate_predictive(entity(**SPIKE, p90=[1000, 9000, 1000]), M5, CFG, INDEX)
    t = simulate_predictive(entity(**SPIKE, p90=[1000, 9000, 1000], ready=0.1), M5, CFG, INDEX)
    assert t.migrations == 0 and t.underprovisioned_entity_hours == 0
    assert t.instance_hours == pytest.approx(trusted.instance_hours)
    assert t.decisions == {"stay": 1, "grow": 1, "shrink": 1}


def test_predictive_without_a_forecast_keeps_its_fleet() -> None:
    t = simulate_predictive(entity(**SPIKE), M5, CFG, INDEX)
    assert t.migrations == 0 and t.underprovisioned_entity_hours == 1 and t.decisions == {"no-forecast": 3}


def test_a_run_on_real_entities_forecasts_every_slice_and_reuses_its_cache(shared_trace, tmp_path) -> None:
    """Three Bitbrains VMs, one day: every slice gets a forecast made before it (no "no-forecast"), the JSON has the
    issue's shape, and a second run from the cache gives the same figures without fitting."""
    from forecasting.fleet import fleet_config
    from shadowctl.simulate import POINT_BUFFERS, POLICIES, run

    cfg = SimConfig(
        start=pd.Timestamp("2013-08-20", tz="UTC"),
        end=pd.Timestamp("2013-08-21", tz="UTC"),
        workers=1,
        engine=fleet_config(max_iter=80),
    )  # the default's 800 rounds run in full below 10,000 rows (no early stopping): 16 s here instead of 6 s
    names = ["rnd-001", "rnd-002", "rnd-003"]
    cache, said = tmp_path / "fc.npz", []
    first = run(str(shared_trace), cfg, names, said.append, str(cache))
    assert first["entities"] == 3 and set(first["policies"]) == set(POLICIES)
    keys = {"underprovisioned_entity_hours", "shortfall_capacity_hours", "cost_usd", "migrations"}
    assert all(keys <= set(p) for p in first["policies"].values())
    decisions = first["policies"]["predictive"]["decisions"]
    assert "no-forecast" not in decisions and sum(decisions.values()) == 3 * 24
    curve = first["point_forecast_curve"]  # the buffer sweep; +10 % is the point_forecast policy itself
    assert [c["point_buffer"] for c in curve] == list(POINT_BUFFERS)
    at_10 = next(c for c in curve if c["point_buffer"] == 0.1)
    assert at_10["cost_usd"] == pytest.approx(first["policies"]["point_forecast"]["cost_usd"])
    matched = first["point_forecast_at_predictive_cost"]
    if matched is not None:  # the dearest buffer the predictive cost affords
        assert matched["cost_usd"] <= first["policies"]["predictive"]["cost_usd"]
        above = [c for c in curve if c["point_buffer"] > matched["point_buffer"]]
        assert not above or above[0]["cost_usd"] > first["policies"]["predictive"]["cost_usd"]
    assert cache.exists() and not any("forecasts from" in m for m in said)
    again = run(str(shared_trace), cfg, names, said.append, str(cache))
    assert any("forecasts from" in m for m in said)
    assert again["policies"] == first["policies"]


def test_the_cli_names_a_bad_sizing_quantile_and_a_window_without_history(shared_trace) -> None:
    from typer.testing import CliRunner

    from shadowctl.cli import app

    common = ["simulate", "--input", str(shared_trace), "--entities", "rnd-001"]
    bad = CliRunner().invoke(app, [*common, "--start", "2013-08-20", "--end", "2013-08-21", "--sizing-quantile", "1.5"])
    assert bad.exit_code == 2 and "--sizing-quantile" in bad.output
    early = CliRunner().invoke(app, [*common, "--start", "2013-07-02", "--end", "2013-07-03"])
    assert early.exit_code != 0 and "8 days of data before it" in str(early.exception)  # main() prints it


def test_a_run_stopped_part_way_goes_on_from_its_last_finished_day(shared_trace, tmp_path) -> None:
    """The forecasts of each finished day are kept; a run stopped after day 1 of 2 resumes at day 2 and ends with the
    figures of a run that was never stopped."""
    from forecasting.fleet import fleet_config
    from shadowctl.simulate import run

    cfg = SimConfig(start=pd.Timestamp("2013-08-20", tz="UTC"), end=pd.Timestamp("2013-08-22", tz="UTC"), workers=1,
                    engine=fleet_config(max_iter=40))  # fmt: skip
    names = ["rnd-001", "rnd-002"]

    class Stop(Exception):
        pass

    def stop_after_day_one(message: str) -> None:
        if message.startswith("forecast 1/2"):
            raise Stop

    cache = tmp_path / "fc.npz"
    with pytest.raises(Stop):
        run(str(shared_trace), cfg, names, stop_after_day_one, str(cache))
    assert not cache.exists() and (tmp_path / "fc.npz.partial.npz").exists()
    said: list[str] = []
    resumed = run(str(shared_trace), cfg, names, said.append, str(cache))
    assert any(m.startswith("1 day(s) of forecasts from") for m in said)
    assert not any(m.startswith("forecast 1/2") for m in said) and any(m.startswith("forecast 2/2") for m in said)
    assert cache.exists() and not (tmp_path / "fc.npz.partial.npz").exists()
    whole = run(str(shared_trace), cfg, names, lambda _m: None, str(tmp_path / "other.npz"))
    assert resumed["policies"] == whole["policies"]
