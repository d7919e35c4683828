"""Pure decision functions the workflows call (and the simulator will): no I/O, no Temporal."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from activities.warmup import WarmupInput
from shadowing import prices
from shadowing.catalog import INSTANCE_TYPES, InstanceType
from shadowing.models import (
    CostEntry,
    Decision,
    DemandForecast,
    EntityPolicy,
    EntitySpec,
    FleetRef,
    ScheduledSlice,
    SliceStatus,
)


def launch_image(spec: EntitySpec) -> dict[str, str | None]:
    """The image and boot payload every fleet of the entity is launched with (`ProvisionInput` fields)."""
    return {
        "source_image_id": spec.image_id, "source_region": spec.home_region if spec.image_id else None,
        "user_data": spec.user_data, "container_image": spec.container_image,
    }  # fmt: skip


def warmup(fleet: FleetRef, policy: EntityPolicy) -> WarmupInput:
    """The warm-up of `fleet` the entity's policy asks for (its timeout and p99 threshold)."""
    return WarmupInput(fleet=fleet, timeout_s=policy.warmup_timeout_s, p99_threshold_ms=policy.warm_p99_ms)


def instances_needed(forecast: DemandForecast, itype: InstanceType, utilisation: float, max_instances: int) -> int:
    """Instances of `itype` that keep every metric's sizing-quantile peak under `utilisation` of capacity."""
    q = forecast.sizing_quantile
    capacity = {"cpu_mhz": itype.cpu_mhz, "memory_kb": itype.memory_kb, "network_kbps": itype.network_kbps,
                "network_out_kbps": itype.network_kbps}  # fmt: skip
    counts = [
        math.ceil(m.peak(q) / (capacity[name] * utilisation))
        for name, m in forecast.metrics.items()
        if capacity.get(name, 0) > 0
    ]
    return max(1, min(max_instances, max(counts, default=1)))


def choose_instance_type(spec: EntitySpec, forecast: DemandForecast, region: str) -> tuple[str, int]:
    """The allowed type (and count) that covers the forecast at the lowest hourly price in `region`."""
    options = []
    for name in spec.instance_types:
        itype = INSTANCE_TYPES[name]
        count = instances_needed(forecast, itype, spec.policy.target_utilisation, spec.policy.max_instances)
        options.append((count * itype.price(region), name, count))
    _, name, count = min(options)
    return name, count


def migration_readiness(
    forecast_confidence: float,
    warmups: tuple[int, int] = (0, 0),
    migrations: tuple[int, int] = (0, 0),
    time_left_s: float = float("inf"),
    time_needed_s: float = 0.0,
    prior: tuple[float, float] = (9.0, 1.0),
) -> tuple[float, dict[str, float]]:
    """Readiness in [0, 1] and its inputs.

    Args:
        forecast_confidence: `readiness()` of the slice's forecast.
        warmups: (successes, failures) of the entity's past warm-ups and replication catch-ups.
        migrations: (successes, failures) of the entity's past migrations.
        time_left_s / time_needed_s: time before the slice, and what provisioning + warm-up needs.
        prior: Beta prior (successes, failures) of both rates before the entity has any history.

    Past outcomes enter as the means of Beta(prior + successes, prior + failures) posteriors. The default prior
    says most migrations succeed (mean 0.9, worth ten observations), so a new entity with a sound forecast may
    move, and each failure lowers the score until the entity stops being moved; clean runs earn trust back.
    The score is the product: a forecast to trust, shadows that warm up, a cutover that holds, and time to do it.
    """
    a, b = prior
    warm = (a + warmups[0]) / (a + b + sum(warmups))
    moved = (a + migrations[0]) / (a + b + sum(migrations))
    timing = 1.0 if time_needed_s <= 0 else min(1.0, max(0.0, time_left_s / time_needed_s))
    inputs = {"forecast_confidence": forecast_confidence, "warmup_success": round(warm, 4),
              "migration_success": round(moved, 4), "time_left": round(timing, 4)}  # fmt: skip
    score = forecast_confidence * warm * moved * timing
    return round(max(0.0, min(1.0, score)), 3), inputs


def outcomes(slices: tuple[SliceStatus, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(successes, failures) of the entity's past warm-ups/replication catch-ups and of its past migrations.

    A migration that reached cutover or was released had warm shadows in sync; one that failed on data sync or
    warm-up counts against warm-ups; any other failure of a started migration counts against migrations.
    """
    warm_ok = warm_bad = moved_ok = moved_bad = 0
    for s in slices:
        if s.migration_id is None:
            continue
        if s.state == "done" and s.outcome == "migrated":
            warm_ok, moved_ok = warm_ok + 1, moved_ok + 1
        elif s.state == "released":
            warm_ok += 1
        elif s.state == "failed":
            error = (s.error or "").lower()
            if "synchronization" in error or "warm" in error:
                warm_bad += 1
            else:
                moved_bad += 1
    return (warm_ok, warm_bad), (moved_ok, moved_bad)


def decide(
    spec: EntitySpec,
    slot: ScheduledSlice,
    active: FleetRef | None,
    forecast: DemandForecast,
    history: tuple[SliceStatus, ...] = (),
    now: datetime | None = None,
    prepare_s: float | None = None,
) -> Decision:
    """Shadow when the slice needs more than the entity has where it must run, and the forecast is trusted.

    "More" is a region move (the active fleet is elsewhere) or a predicted peak the active fleet cannot carry.
    A move with readiness below the threshold is skipped: acting on an untrusted forecast costs more than it
    saves, and the entity keeps serving from where it is. The policy is elastic: with the policy's `scale_in`, a
    fleet with at least `scale_in_min` instances more than the forecast's sizing quantile needs is shrunk at the
    slice start ("shrink"; only on a trusted forecast with `scale_in_trusted_only`), and a same-region peak the
    fleet cannot carry is shadowed whatever the forecast's trust (`shadowctl simulate` on the Bitbrains trace:
    gating both on readiness left 2x reactive's under-provisioned hours; ungated growth and gated shrink cost 1.40x
    reactive; both ungated 1.27x). A fleet that covers the slice is replaced in place by a cheaper type when that
    saves at least `rightsize_min_saving` of the hourly cost, on a trusted forecast ("shadow"): a peak that made a
    bigger type the cheapest one no longer keeps it after the peak (on the Bitbrains trace, ~30 % of the
    predictive policy's cost was m5.large entities left on c5.xlarge). A same-region peak the active type can
    carry grows the fleet in place ("grow", with `scale_out`: no migration, no overlap) unless the cheapest type for
    the peak saves at least `rightsize_min_saving` of what the grown fleet would cost.
    """
    itype, quantity = choose_instance_type(spec, forecast, slot.region)
    current = active.size if active else 0
    cost = round(quantity * INSTANCE_TYPES[itype].price(slot.region), 4)
    base = {"target_region": slot.region, "instance_type": itype, "quantity": quantity, "current_quantity": current}
    moving = active is None or active.region != slot.region
    if not moving and active is not None:
        capacity = instances_needed_for_fleet(forecast, active, spec)
        p = spec.policy
        surplus = current - capacity
        trusted = forecast.readiness >= p.readiness_threshold or not p.scale_in_trusted_only
        shrinking = p.scale_in and surplus >= p.scale_in_min and trusted
        per_instance = INSTANCE_TYPES[active.instance_type].price(slot.region)
        if capacity <= current and itype != active.instance_type:
            kept = (capacity if shrinking else current) * per_instance
            if cost <= (1 - p.rightsize_min_saving) * kept and forecast.readiness >= p.readiness_threshold:
                why = (f"rightsize: {quantity} x {itype} cover the p{_pct(forecast)} peak for ${cost:g}/h instead "
                       f"of ${kept:g}/h on {active.instance_type}")  # fmt: skip
                return Decision(action="shadow", reason=why, hourly_cost_usd=cost, **base)
        if shrinking:
            why = (f"{capacity} x {active.instance_type} cover the p{_pct(forecast)} peak (have {current}): "
                   f"{surplus} released at the slice start")  # fmt: skip
            return Decision(action="shrink", reason=why, hourly_cost_usd=round(capacity * per_instance, 4),
                            **{**base, "instance_type": active.instance_type, "quantity": capacity})  # fmt: skip
        if capacity <= current:
            why = f"{current} x {active.instance_type} in {slot.region} cover the p{_pct(forecast)} peak"
            return Decision(action="stay", reason=why, hourly_cost_usd=cost, **{**base, "quantity": current})
        grown = capacity * per_instance
        if _grows_in_place(spec, forecast, active, capacity) and cost > (1 - p.rightsize_min_saving) * grown:
            why = (f"predicted peak: p{_pct(forecast)} needs {capacity} x {active.instance_type} (have {current}): "
                   f"{capacity - current} added in place for ${grown:g}/h")  # fmt: skip
            return Decision(action="grow", reason=why, hourly_cost_usd=round(grown, 4),
                            **{**base, "instance_type": active.instance_type, "quantity": capacity})  # fmt: skip
    warmups, migrations = outcomes(history)
    time_left = (slot.start - now).total_seconds() if now is not None else float("inf")
    needed = spec.policy.prepare_s if prepare_s is None else prepare_s
    score, inputs = migration_readiness(forecast.readiness, warmups, migrations, time_left, needed)
    gate = {"readiness": score, "readiness_inputs": inputs}
    # A peak the fleet in place cannot carry is provisioned whatever the forecast's trust: a slice with too many
    # instances costs less than one under-provisioned. Moves stay gated.
    if score < spec.policy.readiness_threshold and moving:
        weakest = min(inputs, key=inputs.__getitem__)
        why = f"readiness {score:.2f} < threshold {spec.policy.readiness_threshold:.2f} (weakest: {weakest})"
        return Decision(action="skip", reason=why, hourly_cost_usd=cost, **base, **gate)
    where = f"move {active.region if active else '-'} -> {slot.region}" if moving else "predicted peak"
    why = f"{where}: p{_pct(forecast)} needs {quantity} x {itype} (have {current}); readiness {score:.2f}"
    return Decision(action="shadow", reason=why, hourly_cost_usd=cost, **base, **gate)


def _grows_in_place(spec: EntitySpec, forecast: DemandForecast, active: FleetRef, capacity: int) -> bool:
    """The active fleet can carry the peak by adding instances of its own type: the policy allows it, the type
    covers the peak within `max_instances`, the type is still one the spec allows, and the fleet is served by its
    weighted record (an ELB listener's target group keeps its size, as for scale-in)."""
    p = spec.policy
    if not p.scale_out or spec.listener_arn or active.instance_type not in spec.instance_types:
        return False
    unclamped = instances_needed(forecast, INSTANCE_TYPES[active.instance_type], p.target_utilisation, 10**6)
    return unclamped == capacity <= p.max_instances


def instances_needed_for_fleet(forecast: DemandForecast, fleet: FleetRef, spec: EntitySpec) -> int:
    itype = INSTANCE_TYPES[fleet.instance_type]
    return instances_needed(forecast, itype, spec.policy.target_utilisation, spec.policy.max_instances)


def forecast_time(slot: ScheduledSlice, lead: timedelta, now: datetime) -> datetime:
    """When to forecast and prepare a slice: `lead` before it starts, or now if that has passed."""
    return max(now, slot.start - lead)


def fleet_id(entity_id: str, slice_key: str) -> str:
    return f"{entity_id}:{slice_key}"


def _pct(forecast: DemandForecast) -> str:
    return f"{forecast.sizing_quantile * 100:g}"


def lead_time_s(configured_s: float, measured_s: tuple[float, ...], margin: float) -> float:
    """When to start preparing a slice: the configured lead, or longer when recent preparations were slow.

    `measured_s` are the entity's newest provision + warm-up + replication durations; the slowest of them times
    `margin` must fit, so a preparation that took 20 minutes last time is not started 15 minutes ahead again.
    """
    return max(configured_s, margin * max(measured_s, default=0.0))


def expected_prepare_s(configured_s: float, measured_s: tuple[float, ...]) -> float:
    """What the readiness score assumes preparation needs: the measured median once there is one."""
    if not measured_s:
        return configured_s
    ordered = sorted(measured_s)
    return ordered[len(ordered) // 2]


def spot_bid(on_demand: float, typical_spot: float, confidence: float, max_ratio: float) -> float:
    """Highest spot price to offer per instance-hour.

    A confident forecast says the capacity will be needed, so losing it to the market costs more: the bid rises
    from the typical spot price (confidence 0) toward on-demand (confidence 1). It never exceeds the policy's cap
    (`max_ratio` x on-demand), and never goes below the typical price (a bid that would almost never fill).
    """
    c = min(max(confidence, 0.0), 1.0)
    bid = typical_spot + c * (on_demand - typical_spot)
    return round(max(typical_spot, min(bid, on_demand * max_ratio)), 5)


def cost_entry(
    slice_key: str, outcome: str, fleet: FleetRef, shadow_s: float, overlap: tuple[FleetRef | None, float] = (None, 0),
    extra: tuple[FleetRef | None, int, float] = (None, 0, 0.0),
) -> CostEntry:  # fmt: skip
    """The ledger line of one migration from what ran and for how long (seconds), at price-table prices.

    Shadows cost their hours before serving (spot ones at the typical spot price); an old fleet kept warm after
    cutover costs its overlap; a late migration's temporary scale-up of the old fleet costs its extra instances.
    Shadows that never served (released, rolled back) are wasted pre-warm.
    """
    on_demand = prices.on_demand(fleet.instance_type, fleet.region)
    spot = prices.typical_spot(fleet.instance_type, fleet.region)
    n_spot = len(fleet.spot_instance_ids)
    hours = shadow_s / 3600
    shadow_cost = hours * ((fleet.size - n_spot) * on_demand + n_spot * spot)
    old, overlap_s = overlap
    overlap_hours = old.size * overlap_s / 3600 if old is not None else 0.0
    overlap_cost = overlap_hours * prices.on_demand(old.instance_type, old.region) if old is not None else 0.0
    grown, extra_n, extra_s = extra
    extra_hours = extra_n * extra_s / 3600 if grown is not None else 0.0
    extra_cost = extra_hours * prices.on_demand(grown.instance_type, grown.region) if grown is not None else 0.0
    return CostEntry(
        slice_key=slice_key, outcome=outcome, region=fleet.region, instance_type=fleet.instance_type,
        instances=fleet.size, spot_instances=n_spot, shadow_hours=round(fleet.size * hours, 4),
        overlap_hours=round(overlap_hours, 4), extra_hours=round(extra_hours, 4),
        cost_usd=round(shadow_cost + overlap_cost + extra_cost, 4),
        spot_savings_usd=round(n_spot * hours * (on_demand - spot), 4),
        wasted_usd=round(shadow_cost, 4) if outcome != "migrated" else 0.0,
    )  # fmt: skip
