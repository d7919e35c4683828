"""The committed IAM policy for the worker grants exactly the AWS actions its code calls, each scoped by tags."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tools.iam import IMPLIED, PLACEHOLDERS, actions_in, classify, needed, violations

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "iam-worker-policy.json"
SECURITY_DOC = ROOT / "docs" / "security.md"

Policy = dict[str, Any]


def _policy() -> Policy:
    return dict(json.loads(POLICY.read_text()))


def _granted(policy: Policy) -> set[str]:
    return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


def _called() -> set[str]:
    return actions_in(p for d in ("activities", "workers") for p in (ROOT / d).rglob("*.py"))


def test_policy_grants_exactly_what_the_worker_calls() -> None:
    """Every action the code calls (and what AWS authorizes behind it) is granted, and nothing else."""
    called, granted = _called(), _granted(_policy())
    assert needed(called) - granted == set(), "the code calls actions the policy does not grant"
    assert granted - needed(called) == set(), "the policy grants actions the code never calls (not least privilege)"
    assert not any("*" in a for a in granted), "no wildcard actions"


def test_every_implied_action_has_a_trigger_the_code_calls() -> None:
    """An implied grant (e.g. elasticloadbalancing:AddTags behind CreateTargetGroup) goes when its trigger goes."""
    called = _called()
    assert {trigger for trigger, _ in IMPLIED.values()} <= called
    assert "elasticloadbalancing:AddTags" in needed(called), "CreateTargetGroup with Tags needs AddTags"


def test_the_committed_policy_scopes_every_grant() -> None:
    """No destructive action without the ownership tag, no create without the request tag, no unscoped write."""
    assert violations(_policy()) == []


def test_placeholders_are_in_the_policy_and_documented() -> None:
    """What the operator fills in is in the policy and docs/security.md says what to put there."""
    text, doc = POLICY.read_text(), SECURITY_DOC.read_text()
    for placeholder in PLACEHOLDERS:
        assert placeholder in text and placeholder in doc, placeholder


def _statements(policy: Policy, action: str) -> list[dict[str, Any]]:
    found = [s for s in policy["Statement"] if action in s["Action"]]
    assert found, f"no statement grants {action}"
    return found


def _drop_condition(action: str) -> Callable[[Policy], None]:
    def mutate(policy: Policy) -> None:
        for stmt in _statements(policy, action):
            stmt.pop("Condition", None)

    return mutate


def _loosen_owner_tag(policy: Policy) -> None:
    """The ownership tag tested with StringLike "*": any value, so any resource with the key at all."""
    stmt = _statements(policy, "rds:DeleteDBInstance")[0]
    stmt["Condition"] = {"StringLike": {"aws:ResourceTag/shadowing:managed-by": "*"}}


def _forget_create_action(policy: Policy) -> None:
    for stmt in _statements(policy, "ec2:CreateTags"):
        stmt.get("Condition", {}).get("StringEquals", {}).pop("ec2:CreateAction", None)


def _create_action_for_anything(policy: Policy) -> None:
    for stmt in _statements(policy, "ec2:CreateTags"):
        if "ec2:CreateAction" in stmt.get("Condition", {}).get("StringEquals", {}):
            stmt["Condition"]["StringEquals"]["ec2:CreateAction"] = ["RunInstances", "CreateVolume"]


def _add_statement(actions: list[str], resource: Any, condition: dict | None = None) -> Callable[[Policy], None]:
    def mutate(policy: Policy) -> None:
        stmt: dict[str, Any] = {"Sid": "Added", "Effect": "Allow", "Action": actions, "Resource": resource}
        if condition:
            stmt["Condition"] = condition
        policy["Statement"].append(stmt)

    return mutate


def _write_into_metadata(policy: Policy) -> None:
    """A mutating action slipped into the Describe/List statement on Resource "*"."""
    stmt = _statements(policy, "ec2:DescribeInstances")[0]
    stmt["Action"].append("sqs:DeleteQueue")


def _launch_without_request_tag(policy: Policy) -> None:
    for stmt in _statements(policy, "ec2:RunInstances"):
        stmt.get("Condition", {}).get("StringEquals", {}).pop("aws:RequestTag/shadowing:managed-by", None)


def _unbounded_tag_keys(policy: Policy) -> None:
    stmt = _statements(policy, "sqs:CreateQueue")[0]
    stmt["Condition"].pop("ForAllValues:StringLike", None)


def _adopt_without_marker(policy: Policy) -> None:
    """Adoption's tagging without the `shadowing:adopted = true` request tag: any untagged instance could be taken."""
    stmt = next(s for s in policy["Statement"] if s["Sid"] == "Ec2AdoptInstances")
    stmt["Condition"]["StringEquals"].pop("aws:RequestTag/shadowing:adopted")


def _release_anything(policy: Policy) -> None:
    _statements(policy, "ec2:DeleteTags")[0]["Condition"]["StringEquals"].pop("aws:ResourceTag/shadowing:managed-by")


def _any_zone(policy: Policy) -> None:
    _statements(policy, "route53:ChangeResourceRecordSets")[0]["Resource"] = "arn:aws:route53:::hostedzone/*"


def _any_record_type(policy: Policy) -> None:
    cond = _statements(policy, "route53:ChangeResourceRecordSets")[0]["Condition"]
    cond["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsRecordTypes"] = ["A", "NS", "MX"]


def _any_record_name(policy: Policy) -> None:
    cond = _statements(policy, "route53:ChangeResourceRecordSets")[0]["Condition"]
    cond["ForAllValues:StringLike"]["route53:ChangeResourceRecordSetsNormalizedRecordNames"] = ["*"]


def _not_resource(policy: Policy) -> None:
    stmt = _statements(policy, "ssm:GetParameter")[0]
    stmt["NotResource"] = stmt.pop("Resource")


@pytest.mark.parametrize(
    ("mutate", "reported"),
    [
        (_drop_condition("ec2:TerminateInstances"), "ec2:TerminateInstances"),
        (_drop_condition("dynamodb:DeleteTable"), "dynamodb:DeleteTable"),
        (_drop_condition("sqs:DeleteQueue"), "sqs:DeleteQueue"),
        (_drop_condition("elasticloadbalancing:ModifyListener"), "elasticloadbalancing:ModifyListener"),
        (_drop_condition("elasticloadbalancing:AddTags"), "elasticloadbalancing:AddTags"),
        (_loosen_owner_tag, "rds:DeleteDBInstance"),
        (_forget_create_action, "ec2:CreateTags"),
        (_create_action_for_anything, "ec2:CreateTags"),
        (_add_statement(["ec2:CreateTags"], "*"), "ec2:CreateTags"),
        (_add_statement(["dynamodb:PutItem"], "*"), 'dynamodb:PutItem is granted on Resource "*"'),
        (_add_statement(["rds:DeleteDBInstance"], "arn:aws:rds:*:*:db:*"), "rds:DeleteDBInstance"),
        (_add_statement(["ec2:ModifyInstanceAttribute"], "arn:aws:ec2:*:*:instance/*",
                        {"StringEquals": {"aws:ResourceTag/shadowing:managed-by": "shadowing"}}), "not classified"),
        (_add_statement(["ec2:*"], "*"), "wildcard action"),
        (_write_into_metadata, "sqs:DeleteQueue"),
        (_launch_without_request_tag, "ec2:RunInstances"),
        (_unbounded_tag_keys, "sqs:CreateQueue"),
        (_any_zone, "listed hosted zones"),
        (_any_record_type, "A records"),
        (_any_record_name, "names under a suffix"),
        (_not_resource, "NotAction/NotResource"),
        (_adopt_without_marker, "ec2:CreateTags"),
        (_release_anything, "ec2:DeleteTags"),
    ],
)  # fmt: skip
def test_the_checker_reports_a_weakened_policy(mutate: Callable[[Policy], None], reported: str) -> None:
    """Each way of widening the committed policy (a lost tag condition, a lost ec2:CreateAction, an unscoped
    write, a Route 53 change anywhere) is reported: the scoping test above can fail."""
    policy = copy.deepcopy(_policy())
    mutate(policy)
    found = violations(policy)
    assert any(reported in v for v in found), found


def test_every_granted_action_is_classified() -> None:
    """A new call forces a decision on how it is scoped: an unknown action is a violation, not a pass."""
    assert {a: classify(a) for a in _granted(_policy()) if classify(a) == "unclassified"} == {}
    assert classify("ec2:ModifyInstanceAttribute") == "unclassified"


def test_scanner_attributes_operations_to_the_file_services(tmp_path: Path) -> None:
    """A call only counts for a service the same file creates a client for (no cross-service guesses)."""
    src = tmp_path / "x.py"
    src.write_text('rds = clients("rds", r)\nrds.add_tags_to_resource()\nrds.get_paginator("describe_db_instances")\n')
    assert actions_in([src]) == {"rds:AddTagsToResource", "rds:DescribeDBInstances"}
