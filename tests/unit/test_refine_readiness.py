"""Bayesian refinement of a slice forecast and the migration readiness score."""

from __future__ import annotations

import numpy as np

from forecasting.refine import error_posterior, refine
from workflows.policy import migration_readiness


def test_observations_above_the_forecast_shift_it_up() -> None:
    """Hours observed 100 above the median move the refined median up, by less than the raw bias (shrinkage)."""
    median, q10, q90 = np.full(6, 1000.0), np.full(6, 900.0), np.full(6, 1100.0)
    actual = np.array([1100.0, 1095.0, 1105.0, np.nan, np.nan, np.nan])
    post = error_posterior(median[:3], q10[:3], q90[:3], actual[:3])
    assert post.observations == 3 and 0 < post.mu < 100
    refined = refine({0.1: q10, 0.5: median, 0.9: q90}, post)
    assert (
        np.all(refined[0.5] > median) and np.all(refined[0.1] <= refined[0.5]) and np.all(refined[0.5] <= refined[0.9])
    )


def test_accurate_observations_narrow_the_interval() -> None:
    """Observations right on the median tighten the band; wild ones widen it."""
    median, q10, q90 = np.full(4, 1000.0), np.full(4, 800.0), np.full(4, 1200.0)
    calm = error_posterior(median, q10, q90, np.array([1001.0, 999.0, 1000.0, 1002.0]), prior_strength=1.0)
    wild = error_posterior(median, q10, q90, np.array([1500.0, 500.0, 1600.0, 400.0]), prior_strength=1.0)
    assert calm.sigma < calm.prior_sigma < wild.sigma


def test_no_observation_changes_nothing() -> None:
    """Without observed hours the posterior is the prior and refine is the identity."""
    median, q10, q90 = np.full(2, 10.0), np.full(2, 8.0), np.full(2, 12.0)
    post = error_posterior(median, q10, q90, np.array([np.nan, np.nan]))
    refined = refine({0.1: q10, 0.5: median, 0.9: q90}, post)
    np.testing.assert_allclose(refined[0.9], q90)


def test_readiness_grows_with_clean_history_and_shrinks_without_time() -> None:
    """Clean migrations raise readiness (Beta posterior); too little time before the slice lowers it."""
    new, _ = migration_readiness(0.9)
    trusted, inputs = migration_readiness(0.9, warmups=(10, 0), migrations=(10, 0))
    rushed, _ = migration_readiness(0.9, warmups=(10, 0), migrations=(10, 0), time_left_s=60, time_needed_s=600)
    assert new < trusted and rushed < trusted and 0 <= rushed <= 1
    assert set(inputs) == {"forecast_confidence", "warmup_success", "migration_success", "time_left"}
