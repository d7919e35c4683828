"""Migration readiness: one number in [0, 1] saying how far a forecast may be trusted to act on."""

from __future__ import annotations

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
