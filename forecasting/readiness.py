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
        part, why = series_score(fc.history_hours, fc.missing_fraction, fc.wape, fc.model)
        reasons.extend(why)
        score = min(score, part)
    return round(max(0.0, min(1.0, score)), 3), reasons


def series_score(
    history_hours: int, missing_fraction: float, wape: float | None, model: str
) -> tuple[float, list[str]]:
    """One series' part of the score: sqrt(history / 14 days) x share observed x (1 - backtest WAPE)."""
    length = min(1.0, history_hours / FULL_HISTORY_HOURS) ** 0.5
    gaps = 1.0 - missing_fraction
    accuracy = 1.0 - min(wape, 1.0) if wape is not None else 0.3
    reasons = []
    if length < 1.0:
        reasons.append(f"only {history_hours} h of history")
    if missing_fraction > 0.05:
        reasons.append(f"{missing_fraction:.0%} of history hours missing")
    if wape is None:
        reasons.append(f"{model}: no backtest possible")
    elif wape > 0.3:
        reasons.append(f"{model}: backtest error {wape:.0%}")
    return length * gaps * accuracy, reasons
