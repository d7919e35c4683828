"""Pure cutover decisions: the weight steps, when the old fleet may go, and whether the new one degraded.

No I/O and no clock: the workflow passes `workflow.now()` in, so these are safe to call from workflow code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from activities.monitoring import FleetSignals
from shadowing.models import DegradationPolicy, Frozen


class Verdict(Frozen):
    degraded: bool
    reasons: tuple[str, ...] = ()


Strategy = Literal["all-at-once", "canary", "linear"]

#: Extra wait past the record TTL before retiring the old fleet: resolvers round TTLs up, and a client that
#: resolved just before the change still needs time to finish its in-flight requests.
RETIRE_MARGIN_S = 5.0


def cutover_steps(strategy: Strategy, canary_percent: int = 10, linear_step: int = 25) -> list[int]:
    """The new fleet's weight (of 100) after each step; the last step is always 100.

    >>> cutover_steps("canary"), cutover_steps("linear")
    ([10, 100], [25, 50, 75, 100])
    """
    if strategy == "all-at-once":
        return [100]
    if strategy == "canary":
        if not 0 < canary_percent < 100:
            raise ValueError(f"canary_percent must be in 1..99, got {canary_percent}")
        return [canary_percent, 100]
    if strategy == "linear":
        if not 0 < linear_step <= 100:
            raise ValueError(f"linear_step must be in 1..100, got {linear_step}")
        return [*range(linear_step, 100, linear_step), 100]
    raise ValueError(f"unknown cutover strategy {strategy!r} (all-at-once, canary, linear)")


def step_weights(new_fleet: str, old_fleet: str | None, new_weight: int) -> dict[str, int]:
    """Weights of one step: the old fleet keeps the rest (0 at the end, its record stays for cached answers)."""
    if old_fleet is None or old_fleet == new_fleet:
        return {new_fleet: 100}
    return {new_fleet: new_weight, old_fleet: 100 - new_weight}


def listener_weights(previous: dict[str, int], new_group: str, new_weight: int) -> dict[str, int]:
    """ELB forward weights of one step: the new target group gets `new_weight` of 100, the groups the listener
    forwarded to before share the rest in their previous proportions (all of it to the first when they had none).

    >>> listener_weights({"a": 1, "b": 3}, "n", 20)
    {'a': 20, 'b': 60, 'n': 20}
    """
    old = {arn: w for arn, w in previous.items() if arn != new_group}
    rest, total = 100 - new_weight, sum(old.values())
    shares = {arn: (rest * w // total if total else 0) for arn, w in old.items()}
    if old and rest - sum(shares.values()):  # integer rounding: the remainder goes to the heaviest old group
        heaviest = max(old, key=old.__getitem__)  # the first of the heaviest, in the listener's order
        shares[heaviest] += rest - sum(shares.values())
    return {**shares, new_group: new_weight}


def retire_after_s(ttl_s: float, last_switch: datetime, now: datetime, margin_s: float = RETIRE_MARGIN_S) -> float:
    """Seconds still to wait before the old fleet may be retired (0 when it may go now).

    A resolver may serve the pre-switch answer for up to `ttl_s` after the last weight change.
    """
    ready = last_switch + timedelta(seconds=ttl_s + margin_s)
    return max(0.0, (ready - now).total_seconds())


def judge(
    baseline: FleetSignals,
    current: FleetSignals,
    policy: DegradationPolicy,
    earlier: Sequence[FleetSignals] = (),
) -> Verdict:
    """Whether `current` is degraded against `baseline`; `earlier` are this watch's previous signals, oldest first.

    Rates are judged only on signals with at least `policy.min_samples` samples; a baseline without enough
    samples counts as error-free and sets no latency reference (the absolute ceiling still applies).
    """
    reasons = [*_error_reasons(baseline, current, policy), *_latency_reasons(baseline, current, policy)]
    empty = _trailing_empty([*earlier, current])
    if empty >= policy.no_data_probes:
        reasons.append(f"no samples from {current.fleet_id} in the last {empty} signals")
    return Verdict(degraded=bool(reasons), reasons=tuple(reasons))


def _error_reasons(baseline: FleetSignals, current: FleetSignals, policy: DegradationPolicy) -> list[str]:
    rate = current.error_rate
    if rate is None or current.samples < policy.min_samples:
        return []
    base = (baseline.error_rate or 0.0) if baseline.samples >= policy.min_samples else 0.0
    limit = max(base * policy.error_factor, base + policy.error_margin)
    if rate <= limit:
        return []
    return [f"error rate {rate:.2%} over {current.samples} requests exceeds {limit:.2%} (baseline {base:.2%})"]


def _latency_reasons(baseline: FleetSignals, current: FleetSignals, policy: DegradationPolicy) -> list[str]:
    p99 = current.p99_ms
    if p99 is None or current.samples < policy.min_samples:
        return []
    if p99 > policy.latency_ceiling_ms:
        return [f"p99 {p99:.0f} ms exceeds the ceiling of {policy.latency_ceiling_ms:.0f} ms"]
    if baseline.p99_ms is None or baseline.samples < policy.min_samples:
        return []
    limit = max(baseline.p99_ms * policy.latency_factor, policy.latency_floor_ms)
    if p99 <= limit:
        return []
    return [f"p99 {p99:.0f} ms exceeds {limit:.0f} ms (baseline p99 {baseline.p99_ms:.0f} ms)"]


def _trailing_empty(signals: Sequence[FleetSignals]) -> int:
    count = 0
    for signal in reversed(signals):
        if signal.samples:
            break
        count += 1
    return count
