"""Real-time refinement: sharpen a slice forecast with what was observed since it was made.

The forecast error e = actual - median is modelled as Normal(mu, sigma^2) with a Normal-Inverse-Gamma prior
centred on no bias and on the spread the quantile forecast itself states. Each newly observed hour (for which a
forecast existed) updates (mu, sigma^2) by conjugacy; the slice's quantiles are then shifted by the posterior bias
and rescaled around the median by the posterior scale over the prior one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z90 = 1.2815515655446004  # the 0.9 quantile of a standard normal


@dataclass(frozen=True)
class Posterior:
    mu: float
    sigma: float
    prior_sigma: float
    observations: int


def error_posterior(
    forecast_median: np.ndarray,
    forecast_q10: np.ndarray,
    forecast_q90: np.ndarray,
    actual: np.ndarray,
    prior_strength: float = 4.0,
) -> Posterior:
    """Posterior of the error's bias and scale from hours that have been observed (NaN actuals are skipped)."""
    prior_sigma = float(np.nanmean((forecast_q90 - forecast_q10) / (2 * Z90))) or 1e-9
    seen = ~np.isnan(actual)
    errors = (actual - forecast_median)[seen]
    n = len(errors)
    kappa0, alpha0 = prior_strength, prior_strength / 2
    beta0 = alpha0 * prior_sigma**2
    if n == 0:
        return Posterior(0.0, prior_sigma, prior_sigma, 0)
    mean = float(errors.mean())
    kappa = kappa0 + n
    mu = n * mean / kappa
    alpha = alpha0 + n / 2
    beta = beta0 + 0.5 * float(((errors - mean) ** 2).sum()) + kappa0 * n * mean**2 / (2 * kappa)
    return Posterior(mu=mu, sigma=float(np.sqrt(beta / alpha)), prior_sigma=prior_sigma, observations=n)


def refine(quantiles: dict[float, np.ndarray], posterior: Posterior) -> dict[float, np.ndarray]:
    """Applies the posterior to the slice's hourly quantiles: shift by the bias, scale the spread."""
    median = quantiles[0.5]
    ratio = posterior.sigma / posterior.prior_sigma if posterior.prior_sigma > 0 else 1.0
    out = {q: np.maximum(median + posterior.mu + (v - median) * ratio, 0.0) for q, v in quantiles.items()}
    return out
