"""Shadowing: dynamic resource allocation with predictive instance shadowing on Temporal and AWS."""

TASK_QUEUE = "shadowing"

__all__ = ["TASK_QUEUE"]
