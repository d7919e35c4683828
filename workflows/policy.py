"""Pure decision functions the workflows call (and the simulator will): no I/O, no Temporal."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from shadowing.catalog import INSTANCE_TYPES, InstanceType
from shadowing.models import Decision, DemandForecast, EntitySpec, FleetRef, ScheduledSlice


def instances_needed(forecast: DemandForecast, itype: InstanceType, utilisation: float, max_instances: int) -> int:
    """Instances of `itype` that keep every metric's sizing-quantile peak under `utilisation` of capacity."""
    q = forecast.sizing_quantile
    capacity = {"cpu_mhz": itype.cpu_mhz, "memory_kb": itype.memory_kb, "network_kbps": itype.network_kbps}
    counts = [
        math.ceil(m.peak(q) / (capacity[name] * utilisation))
        for name, m in forecast.metrics.items()
        if name in capacity
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


def decide(spec: EntitySpec, slot: ScheduledSlice, active: FleetRef | None, forecast: DemandForecast) -> Decision:
    """Shadow when the slice needs more than the entity has where it must run, and the forecast is trusted.

    "More" is a region move (the active fleet is elsewhere) or a predicted peak the active fleet cannot carry.
    A move with readiness below the threshold is skipped: acting on an untrusted forecast costs more than it
    saves, and the entity keeps serving from where it is.
    """
    itype, quantity = choose_instance_type(spec, forecast, slot.region)
    current = active.size if active else 0
    cost = round(quantity * INSTANCE_TYPES[itype].price(slot.region), 4)
    base = {"target_region": slot.region, "instance_type": itype, "quantity": quantity, "current_quantity": current}
    moving = active is None or active.region != slot.region
    if not moving and active is not None:
        capacity = instances_needed_for_fleet(forecast, active, spec)
        if capacity <= current:
            why = f"{current} x {active.instance_type} in {slot.region} cover the p{_pct(forecast)} peak"
            return Decision(action="stay", reason=why, hourly_cost_usd=cost, **{**base, "quantity": current})
    if forecast.readiness < spec.policy.readiness_threshold:
        why = f"readiness {forecast.readiness:.2f} < threshold {spec.policy.readiness_threshold:.2f}"
        return Decision(action="skip", reason=why, hourly_cost_usd=cost, **base)
    where = f"move {active.region if active else '-'} -> {slot.region}" if moving else "predicted peak"
    why = f"{where}: p{_pct(forecast)} needs {quantity} x {itype} (have {current})"
    return Decision(action="shadow", reason=why, hourly_cost_usd=cost, **base)


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
