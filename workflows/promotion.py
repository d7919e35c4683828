"""Whether a trained fleet model replaces the published one: a pure function of their scores, tested without
Temporal (TrainFleetModel calls it)."""

from __future__ import annotations

from shadowing.models import ModelScores

#: The candidate must beat seasonal naive (same hour yesterday) by this: relative MAE below 1.
MAX_RELATIVE_TO_NAIVE = 1.0
#: It may not do worse than the incumbent on the same held-out origins (a hair of float noise allowed).
TOLERANCE = 1e-9


def judge(candidate: ModelScores, incumbent: ModelScores | None) -> tuple[bool, str]:
    """(publish?, why). Both scores are relative MAE against seasonal naive, a geometric mean over the entities each
    model's serving path answers for, on the same held-out origins: a scale-free figure both can be held to."""
    rel = candidate.relative_mae.get("seasonal_naive")
    if rel is None:
        return False, "the candidate served no entity on the held-out days"
    if rel >= MAX_RELATIVE_TO_NAIVE:
        return False, f"the candidate does not beat seasonal naive ({rel:.3f}x its MAE)"
    old = incumbent.relative_mae.get("seasonal_naive") if incumbent is not None else None
    if old is not None and rel > old + TOLERANCE:
        return False, f"the candidate ({rel:.3f}x seasonal naive) does worse than the published model ({old:.3f}x)"
    versus = f", published model {old:.3f}x" if old is not None else ""
    return True, f"{rel:.3f}x seasonal naive's MAE{versus}"
