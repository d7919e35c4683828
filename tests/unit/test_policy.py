"""The pure decision functions the workflows call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shadowing.catalog import INSTANCE_TYPES
from shadowing.models import (
    DemandForecast,
    FleetRef,
    HourQuantiles,
    MetricForecast,
    ScheduledSlice,
    SliceStatus,
    TimeSlice,
)
from tests.workflows.helpers import spec
from workflows.policy import choose_instance_type, decide, forecast_time, instances_needed, outcomes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LISTENER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/shop/1/2"
SLOT = ScheduledSlice(start=T0, end=T0 + timedelta(hours=1), region="eu-west-1")


def forecast(cpu_p90: float, mem_p90: float = 0.0, readiness: float = 0.9) -> DemandForecast:
    def metric(name: str, p90: float) -> MetricForecast:
        q = {"0.1": p90 * 0.5, "0.5": p90 * 0.8, "0.9": p90}
        return MetricForecast(metric=name, unit="", model="m", hours=(HourQuantiles(hour=T0, quantiles=q),))

    return DemandForecast(
        entity_id="shop", time_slice=TimeSlice(start=T0, end=T0 + timedelta(hours=1)), history_end=T0,
        history_hours=336, sizing_quantile=0.9, readiness=readiness,
        metrics={"cpu_mhz": metric("cpu_mhz", cpu_p90), "memory_kb": metric("memory_kb", mem_p90)},
    )  # fmt: skip


def fleet(region: str, size: int, itype: str = "m5.large") -> FleetRef:
    return FleetRef(fleet_id="f", entity_id="shop", region=region, instance_type=itype,
                    instance_ids=tuple(f"i-{n}" for n in range(size)))  # fmt: skip


@pytest.mark.parametrize(("cpu", "mem_gib", "expected"), [(3500, 0, 1), (3501, 0, 2), (10_000, 0, 3), (0, 11.3, 3)])
def test_instances_cover_the_sizing_quantile_of_every_metric(cpu: float, mem_gib: float, expected: int) -> None:
    """m5.large gives 3500 MHz and 5.6 GiB at 70% utilisation: the binding metric decides the count."""
    fc = forecast(cpu, mem_gib * 1024 * 1024)
    assert instances_needed(fc, INSTANCE_TYPES["m5.large"], 0.7, 20) == expected


def test_network_in_binds_against_the_baseline_bandwidth_not_the_burst() -> None:
    """m5.large sustains 0.75 Gbps (93,750 KB/s; its "up to 10 Gbps" lasts minutes): at 70 % utilisation 65,625 KB/s
    per instance, so 200,000 KB/s of network in needs 4 while CPU and memory need 1; without network data, 1."""
    fc = forecast(1000, 1024 * 1024)
    net = MetricForecast(metric="network_kbps", unit="KB/s", model="m",
                         hours=(HourQuantiles(hour=T0, quantiles={"0.1": 1e5, "0.5": 1.5e5, "0.9": 2e5}),))  # fmt: skip
    with_net = fc.model_copy(update={"metrics": {**fc.metrics, "network_kbps": net}})
    assert instances_needed(fc, INSTANCE_TYPES["m5.large"], 0.7, 20) == 1
    assert instances_needed(with_net, INSTANCE_TYPES["m5.large"], 0.7, 20) == 4
    assert instances_needed(with_net, INSTANCE_TYPES["m5.2xlarge"], 0.7, 20) == 1  # 2.5 Gbps baseline
    out = with_net.model_copy(update={"metrics": {**fc.metrics, "network_out_kbps": net.model_copy(
        update={"metric": "network_out_kbps"})}})  # fmt: skip
    assert instances_needed(out, INSTANCE_TYPES["m5.large"], 0.7, 20) == 4  # each direction has the bandwidth


def test_instances_are_capped_by_the_policy() -> None:
    """A forecast beyond max_instances is sized at the cap, never above."""
    assert instances_needed(forecast(1e9), INSTANCE_TYPES["m5.large"], 0.7, 20) == 20


def test_cheapest_allowed_type_wins() -> None:
    """10 000 MHz: 3 x m5.large ($0.288) beats 2 x c5.xlarge ($0.34) in us-east-1."""
    assert choose_instance_type(spec(), forecast(10_000), "us-east-1") == ("m5.large", 3)


def test_region_move_shadows_when_ready() -> None:
    """A slice in another region than the active fleet is a move: shadow there."""
    d = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000))
    assert d.action == "shadow" and d.target_region == "eu-west-1" and "move" in d.reason


def test_same_region_spike_grows_the_fleet_in_place() -> None:
    """A predicted peak above the active fleet's capacity adds instances of its type to it (no migration)."""
    d = decide(spec(), SLOT, fleet("eu-west-1", 1), forecast(10_000))
    assert d.action == "grow" and d.quantity == 3 and d.current_quantity == 1 and d.instance_type == "m5.large"
    assert "2 added in place" in d.reason and d.hourly_cost_usd == pytest.approx(3 * 0.107)


def test_same_region_spike_shadows_when_growing_is_not_the_way() -> None:
    """Without scale-out, behind an ELB listener, past max_instances of the active type, or when another type
    saves at least `rightsize_min_saving`, the peak is a migration to a fleet sized for it, as before."""
    off = decide(spec(scale_out=False), SLOT, fleet("eu-west-1", 1), forecast(10_000))
    assert off.action == "shadow" and off.quantity == 3 and off.current_quantity == 1
    listener = spec().model_copy(update={"listener_arn": LISTENER})
    assert decide(listener, SLOT, fleet("eu-west-1", 1), forecast(10_000)).action == "shadow"
    capped = decide(spec(max_instances=2), SLOT, fleet("eu-west-1", 1), forecast(10_000))
    assert capped.action == "shadow"
    # 4 x c5.xlarge ($0.768/h) carry what 8 x r5.large ($1.128/h) would: 32 % less
    big = spec().model_copy(update={"instance_types": ("m5.large", "c5.xlarge", "r5.large")})
    cheaper = decide(big, SLOT, fleet("eu-west-1", 1, "r5.large"), forecast(25_000))
    assert cheaper.action == "shadow" and cheaper.instance_type == "c5.xlarge", cheaper.reason
    # a type the spec no longer allows is never grown
    gone = decide(spec(), SLOT, fleet("eu-west-1", 1, "r5.large"), forecast(5_000))
    assert gone.action == "shadow" and gone.instance_type in spec().instance_types, gone.reason


def test_covered_slice_stays() -> None:
    """No move and enough capacity: nothing is provisioned."""
    assert decide(spec(), SLOT, fleet("eu-west-1", 3), forecast(10_000)).action == "stay"


def test_low_readiness_skips() -> None:
    """A move on a forecast below the readiness threshold is skipped, with the reason."""
    d = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000, readiness=0.1))
    assert d.action == "skip" and "readiness" in d.reason


def test_forecast_time_is_lead_before_start_or_now() -> None:
    """Prepare `lead` before the slice; a late registration prepares at once."""
    assert forecast_time(SLOT, timedelta(minutes=15), T0 - timedelta(hours=1)) == T0 - timedelta(minutes=15)
    assert forecast_time(SLOT, timedelta(minutes=15), T0) == T0


def past(state: str, outcome: str | None = None, error: str | None = None) -> SliceStatus:
    slot = ScheduledSlice(start=T0 - timedelta(days=1), end=T0 - timedelta(hours=23), region="eu-west-1")
    return SliceStatus(time_slice=slot, state=state, outcome=outcome, error=error, migration_id="m")  # type: ignore[arg-type]


def test_past_outcomes_enter_readiness_as_beta_posteriors() -> None:
    """Failed migrations lower readiness until a move is skipped; clean ones raise it; the inputs are shown."""
    clean = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000, readiness=0.7), (past("done", "migrated"),) * 3)
    fresh = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000, readiness=0.7))
    failed = (past("failed", error="Migration failed: cutover"),) * 3 + (past("failed", error="warm-up timed out"),) * 3
    burnt = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000, readiness=0.7), failed)
    assert clean.readiness is not None and fresh.readiness is not None and burnt.readiness is not None
    assert clean.readiness > fresh.readiness > burnt.readiness
    assert clean.action == "shadow" and burnt.action == "skip" and "migration_success" in burnt.readiness_inputs
    assert clean.action == fresh.action == "shadow"
    assert burnt.readiness_inputs["migration_success"] == pytest.approx(9 / 13, abs=1e-4)
    assert outcomes(failed) == ((0, 3), (0, 3))


def test_too_little_time_before_the_slice_lowers_readiness() -> None:
    """With much less time left than preparation needs (`prepare_s`), a move is not started."""
    need = spec().policy.prepare_s
    early = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000), now=T0 - timedelta(seconds=need))
    late = decide(spec(), SLOT, fleet("us-east-1", 2), forecast(5000), now=T0 - timedelta(seconds=need / 10))
    assert early.action == "shadow" and early.readiness_inputs["time_left"] == 1.0
    assert late.action == "skip" and "time_left" in late.reason


# ---- issue 5: lead time, bidding, ledger ------------------------------------------------------------------


def test_lead_time_grows_with_the_slowest_measured_preparation() -> None:
    from workflows.policy import expected_prepare_s, lead_time_s

    assert lead_time_s(900, (), 1.5) == 900
    assert lead_time_s(900, (300, 800, 400), 1.5) == 1200
    assert expected_prepare_s(300, ()) == 300
    assert expected_prepare_s(300, (500, 100, 200)) == 200


def test_spot_bid_rises_with_confidence_within_the_cap() -> None:
    from workflows.policy import spot_bid

    low, high = spot_bid(0.10, 0.03, 0.0, 1.0), spot_bid(0.10, 0.03, 1.0, 1.0)
    assert low == 0.03 and high == 0.10 and low < spot_bid(0.10, 0.03, 0.5, 1.0) < high
    assert spot_bid(0.10, 0.03, 1.0, 0.5) == 0.05, "capped at max_ratio x on-demand"
    assert spot_bid(0.10, 0.03, 1.0, 0.1) == 0.03, "never below the typical price"


def test_cost_entry_counts_shadow_spot_overlap_and_waste() -> None:
    from shadowing import prices
    from shadowing.models import CostLedger, FleetRef
    from workflows.policy import cost_entry

    fleet = FleetRef(fleet_id="e:s", entity_id="e", region="eu-west-1", instance_type="m5.large",
                     instance_ids=("a", "b"), spot_instance_ids=("b",))  # fmt: skip
    old = FleetRef(fleet_id="e:o", entity_id="e", region="us-east-1", instance_type="m5.large", instance_ids=("c",))
    od, spot = prices.on_demand("m5.large", "eu-west-1"), prices.typical_spot("m5.large", "eu-west-1")
    moved = cost_entry("k", "migrated", fleet, 3600, (old, 1800))
    assert moved.shadow_hours == 2 and moved.overlap_hours == 0.5 and moved.wasted_usd == 0
    assert moved.cost_usd == round(od + spot + 0.5 * prices.on_demand("m5.large", "us-east-1"), 4)
    assert moved.spot_savings_usd == round(od - spot, 4)
    released = cost_entry("k2", "released", fleet, 1800)
    assert released.wasted_usd == released.cost_usd == round(0.5 * (od + spot), 4)
    ledger = CostLedger().add(moved).add(released)
    assert ledger.migrations == 1 and ledger.released == 1 and len(ledger.entries) == 2
    assert ledger.wasted_usd == released.wasted_usd


def test_a_trusted_smaller_forecast_shrinks_the_fleet_to_what_it_needs() -> None:
    """6 x m5.large for a 10 000 MHz p90 peak: 3 cover it, 3 are released at the slice start."""
    d = decide(spec(), SLOT, fleet("eu-west-1", 6), forecast(10_000))
    assert d.action == "shrink" and d.quantity == 3 and d.current_quantity == 6 and d.instance_type == "m5.large"
    assert d.hourly_cost_usd == pytest.approx(3 * INSTANCE_TYPES["m5.large"].price("eu-west-1"))


@pytest.mark.parametrize(
    ("readiness", "policy"),
    [
        (0.1, {"scale_in_trusted_only": True}),  # the policy wants trust to remove capacity
        (0.9, {"scale_in": False}),  # the entity's policy turned it off
        (0.9, {"scale_in_min": 4}),  # 3 surplus, fewer than the policy's minimum
    ],
)
def test_scale_in_needs_a_trusted_forecast_and_the_policy(readiness: float, policy: dict) -> None:
    d = decide(spec(**policy), SLOT, fleet("eu-west-1", 6), forecast(10_000, readiness=readiness))
    assert d.action == "stay" and d.quantity == 6


def test_an_untrusted_forecast_still_shrinks_and_still_grows_in_place() -> None:
    """Elastic: the p90 sizes both ways whatever the readiness; a region move stays gated."""
    low = forecast(10_000, readiness=0.1)
    assert decide(spec(), SLOT, fleet("eu-west-1", 6), low).action == "shrink"
    assert decide(spec(), SLOT, fleet("eu-west-1", 1), low).action == "grow"
    assert decide(spec(scale_out=False), SLOT, fleet("eu-west-1", 1), low).action == "shadow"
    assert decide(spec(), SLOT, fleet("us-east-1", 1), low).action == "skip"


def test_a_fleet_left_on_a_dearer_type_is_rightsized_in_place() -> None:
    """1 x c5.xlarge ($0.192/h in eu-west-1) for a 2000 MHz p90 peak that 1 x m5.large ($0.107/h) covers: 44 % saved,
    above the policy's 20 %, so a trusted forecast shadows the cheaper fleet in place (same region)."""
    d = decide(spec(), SLOT, fleet("eu-west-1", 1, "c5.xlarge"), forecast(2000))
    assert d.action == "shadow" and d.instance_type == "m5.large" and d.quantity == 1 and d.target_region == "eu-west-1"
    assert d.reason.startswith("rightsize:") and d.hourly_cost_usd == pytest.approx(0.107)


def test_rightsizing_compares_with_the_fleet_after_scale_in() -> None:
    """4 x c5.xlarge where 1 covers the peak: the saving is judged against the 1 kept ($0.192), not the 4."""
    d = decide(spec(), SLOT, fleet("eu-west-1", 4, "c5.xlarge"), forecast(2000))
    assert d.action == "shadow" and d.quantity == 1 and "instead of $0.192/h" in d.reason
    keep = decide(spec(rightsize_min_saving=0.5), SLOT, fleet("eu-west-1", 4, "c5.xlarge"), forecast(2000))
    assert keep.action == "shrink" and keep.instance_type == "c5.xlarge" and keep.quantity == 1


@pytest.mark.parametrize(
    ("readiness", "policy"),
    [
        (0.1, {}),  # an untrusted forecast never changes the type
        (0.9, {"rightsize_min_saving": 0.5}),  # 44 % < 50 %
        (0.9, {"rightsize_min_saving": 1.0}),  # off
    ],
)
def test_rightsizing_needs_trust_and_the_saving(readiness: float, policy: dict) -> None:
    d = decide(spec(**policy), SLOT, fleet("eu-west-1", 1, "c5.xlarge"), forecast(2000, readiness=readiness))
    assert d.action == "stay" and d.instance_type == "m5.large" and d.quantity == 1


def test_a_fleet_on_the_cheapest_type_is_never_rightsized() -> None:
    d = decide(spec(), SLOT, fleet("eu-west-1", 1), forecast(2000))
    assert d.action == "stay"
