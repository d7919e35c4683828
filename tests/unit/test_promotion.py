"""workflows/promotion.py: a candidate replaces the published fleet model only when it beats seasonal naive and
does no worse than the published model on the same held-out origins."""

from __future__ import annotations

import pytest

from forecasting.fleet import publish_decision
from shadowing.models import ModelScores
from workflows.promotion import judge


def _s(rel: float | None) -> ModelScores:
    return ModelScores(origins=2, entities=10, relative_mae={"seasonal_naive": rel})


@pytest.mark.parametrize(
    ("candidate", "incumbent", "publish"),
    [(0.7, None, True), (0.99, None, True), (1.0, None, False), (1.3, None, False), (None, None, False),
     (0.7, 0.8, True), (0.8, 0.8, True), (0.81, 0.8, False), (0.7, None, True), (1.1, 1.2, False)],
)  # fmt: skip
def test_publish_only_below_naive_and_not_above_the_incumbent(
    candidate: float | None, incumbent: float | None, publish: bool
) -> None:
    ok, why = judge(_s(candidate), _s(incumbent) if incumbent is not None else None)
    assert ok is publish and why
    # the backtest and the simulator replay trainings with forecasting's copy of the rule (a workflow may not
    # import the forecasting library): both must give the same verdict and reason
    as_dict = {"relative_mae": {"seasonal_naive": candidate}}
    before = None if incumbent is None else {"relative_mae": {"seasonal_naive": incumbent}}
    assert publish_decision(as_dict, before) == (ok, why)


def test_an_incumbent_without_a_score_is_no_bar_but_naive_still_is() -> None:
    """A published model that served no entity on the held-out days (NaN relative MAE) cannot block a good one."""
    assert judge(_s(0.9), _s(None))[0] is True
    assert judge(_s(1.05), _s(None))[0] is False
