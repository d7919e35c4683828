"""The committed least-privilege IAM policy for the worker grants exactly the AWS actions its code calls."""

from __future__ import annotations

import json
from pathlib import Path

from shadowing.iam import actions_in

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "iam-worker-policy.json"


def _granted() -> set[str]:
    policy = json.loads(POLICY.read_text())
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


def test_policy_grants_exactly_what_the_worker_calls() -> None:
    called = actions_in(p for d in ("activities", "workers") for p in (ROOT / d).rglob("*.py"))
    granted = _granted()
    assert called - granted == set(), "the code calls actions the policy does not grant"
    assert granted - called == set(), "the policy grants actions the code never calls (not least privilege)"
    assert not any("*" in a for a in granted), "no wildcard actions"


def test_scanner_attributes_operations_to_the_file_services(tmp_path: Path) -> None:
    """A call only counts for a service the same file creates a client for (no cross-service guesses)."""
    src = tmp_path / "x.py"
    src.write_text('rds = clients("rds", r)\nrds.add_tags_to_resource()\nrds.get_paginator("describe_db_instances")\n')
    assert actions_in([src]) == {"rds:AddTagsToResource", "rds:DescribeDBInstances"}
