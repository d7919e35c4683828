"""Pure cutover decisions: weight steps, the TTL retirement rule and the degradation verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.monitoring import FleetSignals
from shadowing.models import DegradationPolicy
from workflows.verdict import cutover_steps, judge, listener_weights, retire_after_s, step_weights

POLICY = DegradationPolicy()  # min 20 samples, errors x2 or +1%, p99 x1.5 above 50 ms, 2 s ceiling, 3 empty probes


def sig(samples: int = 1000, errors: int = 0, p99: float | None = 40.0, fleet: str = "shop:new") -> FleetSignals:
    return FleetSignals(fleet_id=fleet, source="probe", samples=samples, errors=errors,
                        p50_ms=None if p99 is None else p99 / 2, p99_ms=p99)  # fmt: skip


BASE = sig(errors=5, p99=40.0, fleet="shop:old")  # 0.5 % errors


@pytest.mark.parametrize(
    ("strategy", "steps"),
    [("all-at-once", [100]), ("canary", [10, 100]), ("linear", [25, 50, 75, 100])],
)
def test_cutover_steps(strategy: str, steps: list[int]) -> None:
    """Each strategy ends at 100 and ramps as named."""
    assert cutover_steps(strategy) == steps  # type: ignore[arg-type]


def test_cutover_steps_options_and_bad_input() -> None:
    """Canary share and linear step are tunable; nonsense is refused."""
    assert cutover_steps("canary", canary_percent=5) == [5, 100]
    assert cutover_steps("linear", linear_step=40) == [40, 80, 100]
    for bad in (lambda: cutover_steps("blue-green"), lambda: cutover_steps("canary", 100),  # type: ignore[arg-type]
                lambda: cutover_steps("linear", linear_step=0)):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


def test_step_weights_keep_the_old_record_at_zero() -> None:
    """The old fleet takes the remainder, down to 0 (never dropped); with no old fleet the new one has it all."""
    assert step_weights("new", "old", 10) == {"new": 10, "old": 90}
    assert step_weights("new", "old", 100) == {"new": 100, "old": 0}
    assert step_weights("new", None, 10) == {"new": 100}


def test_retire_after_waits_ttl_plus_margin_since_last_switch() -> None:
    """The old fleet may go only once TTL + margin have passed since the last weight change."""
    switch = datetime(2026, 1, 1, tzinfo=UTC)
    assert retire_after_s(30, switch, switch, margin_s=5) == 35
    assert retire_after_s(30, switch, switch + timedelta(seconds=20), margin_s=5) == 15
    assert retire_after_s(30, switch, switch + timedelta(seconds=36), margin_s=5) == 0
    assert retire_after_s(2, switch, switch) > 2, "a default margin applies"


def test_healthy_fleet_is_not_degraded() -> None:
    """Error rate and p99 within the thresholds of the baseline give a clean verdict."""
    verdict = judge(BASE, sig(errors=9, p99=55.0), POLICY)  # 0.9 % < 1.5 %, 55 ms < 60 ms
    assert not verdict.degraded and verdict.reasons == ()


def test_error_spike_is_degraded() -> None:
    """Error rate above max(2x baseline, baseline + 1 %) is degraded, with the numbers in the reason."""
    verdict = judge(BASE, sig(errors=20), POLICY)  # 2 % > 1.5 %
    assert verdict.degraded and "error rate 2.00%" in verdict.reasons[0] and "1.50%" in verdict.reasons[0]
    noisy_base = sig(errors=100, fleet="shop:old")  # 10 %: limit is 2x = 20 %
    assert not judge(noisy_base, sig(errors=190), POLICY).degraded
    assert judge(noisy_base, sig(errors=210), POLICY).degraded


def test_too_few_samples_are_not_judged_on_rates() -> None:
    """A handful of requests with one error is not an error spike (below min_samples)."""
    assert not judge(BASE, sig(samples=5, errors=1, p99=900.0), POLICY).degraded


def test_latency_spike_is_degraded_only_above_the_floor() -> None:
    """p99 above 1.5x baseline and above the absolute floor is degraded; a fast baseline's small rise is not."""
    assert judge(BASE, sig(p99=70.0), POLICY).degraded  # > 60 and > 50
    fast = sig(p99=4.0, fleet="shop:old")
    assert not judge(fast, sig(p99=30.0), POLICY).degraded, "7x of 4 ms is still under the 50 ms floor"
    assert judge(fast, sig(p99=51.0), POLICY).degraded


def test_latency_ceiling_applies_without_a_baseline() -> None:
    """With no usable baseline only the absolute ceiling can call latency degraded."""
    empty = sig(samples=0, p99=None, fleet="shop:old")
    assert not judge(empty, sig(p99=1500.0), POLICY).degraded
    verdict = judge(empty, sig(p99=2500.0), POLICY)
    assert verdict.degraded and "ceiling" in verdict.reasons[0]


def test_no_data_for_k_consecutive_signals_is_degraded() -> None:
    """Empty signals count only when the last K are all empty; one with data resets the streak."""
    empty = sig(samples=0, p99=None)
    assert not judge(BASE, empty, POLICY, earlier=[empty]).degraded
    verdict = judge(BASE, empty, POLICY, earlier=[sig(), empty, empty])
    assert verdict.degraded and "no samples" in verdict.reasons[0]
    assert not judge(BASE, empty, POLICY, earlier=[empty, empty, sig()]).degraded


def test_several_reasons_are_all_reported() -> None:
    """An error spike and a latency spike together give two reasons."""
    assert len(judge(BASE, sig(errors=100, p99=300.0), POLICY).reasons) == 2


@pytest.mark.parametrize(
    ("previous", "weight", "expected"),
    [
        ({"a": 1, "b": 3}, 20, {"a": 20, "b": 60, "n": 20}),  # old groups keep their proportions
        ({"a": 1, "b": 1, "c": 1}, 0, {"a": 34, "b": 33, "c": 33, "n": 0}),  # rounding remainder to one group
        ({"a": 5}, 100, {"a": 0, "n": 100}),  # the last step keeps the old group at weight 0
        ({"a": 0, "b": 0}, 50, {"a": 50, "b": 0, "n": 50}),  # no weights before: the rest to one group
        ({}, 10, {"n": 10}),  # nothing forwarded before
        ({"a": 2, "n": 7}, 25, {"a": 75, "n": 25}),  # a retried step: the new group's old weight is ignored
    ],
)
def test_listener_weights_share_the_rest_in_previous_proportions(
    previous: dict[str, int], weight: int, expected: dict[str, int]
) -> None:
    """ELB steps: the new target group gets the step's weight; the groups before share the rest; sums stay 100."""
    got = listener_weights(previous, "n", weight)
    assert got == expected
    assert sum(got.values()) == (100 if previous else weight)
