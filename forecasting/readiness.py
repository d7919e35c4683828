"""Migration readiness: one number in [0, 1] saying how far a forecast may be trusted to act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forecasting.engine import SeriesForecast

FULL_HISTORY_HOURS = 24 * 14


def readiness(forecasts: list[SeriesForecast]) -> tuple[float, list[str]]:
    """Scores the weakest of an entity's metric forecasts: history length, gaps and backtest error.

    Returns the score and the reasons that lowered it.
    """
    score, reasons = 1.0, []
    for fc in forecasts:
        length = min(1.0, fc.history_hours / FULL_HISTORY_HOURS) ** 0.5
        gaps = 1.0 - fc.missing_fraction
        accuracy = 1.0 - min(fc.wape, 1.0) if fc.wape is not None else 0.3
        part = length * gaps * accuracy
        if length < 1.0:
            reasons.append(f"only {fc.history_hours} h of history")
        if fc.missing_fraction > 0.05:
            reasons.append(f"{fc.missing_fraction:.0%} of history hours missing")
        if fc.wape is None:
            reasons.append(f"{fc.model}: no backtest possible")
        elif fc.wape > 0.3:
            reasons.append(f"{fc.model}: backtest error {fc.wape:.0%}")
        score = min(score, part)
    return round(max(0.0, min(1.0, score)), 3), reasons


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
