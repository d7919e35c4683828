"""The worker registers every activity the workflows call by reference: a missing one is not a start-up error in
Temporal, it is a step that is retried forever (`Activity function ... is not registered on this worker`)."""

from __future__ import annotations

import ast
from pathlib import Path

from temporalio import activity

from shadowing.endpoints import DirectEndpoints
from workers.main import activities

ROOT = Path(__file__).resolve().parents[2]


def _called_by_workflows() -> set[str]:
    """`SomeActivities.method` references in workflows/*.py whose class comes from the activities package."""
    found = set()
    for path in (ROOT / "workflows").glob("*.py"):
        tree = ast.parse(path.read_text())
        classes = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("activities")
            for alias in node.names
            if alias.name.endswith("Activities")
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in classes:
                module = __import__(
                    next(
                        n.module
                        for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and any(a.name == node.value.id for a in n.names)
                    ),
                    fromlist=[node.value.id],
                )
                method = getattr(getattr(module, node.value.id), node.attr)
                found.add(activity._Definition.must_from_callable(method).name)
    return found


def test_every_activity_a_workflow_calls_is_registered_on_the_worker() -> None:
    registered = {
        activity._Definition.must_from_callable(fn).name
        for fn in activities(None, lambda *_: None, DirectEndpoints())  # type: ignore[arg-type]
    }
    called = _called_by_workflows()
    assert "replicate_both_ways" in called and "set_write_fence" in called  # the scan finds what it must
    assert called - registered == set(), "workflows call activities the worker does not register"
