"""The worker's IAM policy (`deploy/iam-worker-policy.json`), read two ways.

`actions_in` reads the code: the AWS actions the worker calls. Per source file, every `clients("<service>", ...)`
literal names a service the file uses; every method called on an object (and every `get_paginator("<op>")` /
`get_waiter("<name>")`) that is an operation of one of those services is an action (a helper module that only
receives clients declares their services as `AWS_SERVICES = ("<service>", ...)`). Attributing by file keeps an
operation name shared by two services (`add_tags_to_resource`) to the service the file really talks to. `IMPLIED`
adds the actions AWS authorizes behind a call without the code naming them (tags given to a create).

`violations` reads the policy: every granted action belongs to one class below, and each class says what a
statement granting it must carry, following AWS's guidance for least privilege with tags:

* metadata (Describe*, List*, a few Gets that AWS does not scope by resource): any resource;
* create: the statement covering the created resource type requires the request tag
  `aws:RequestTag/shadowing:managed-by = shadowing` and bounds `aws:TagKeys`;
* owned: anything that reads data from or changes an existing resource requires
  `aws:ResourceTag/shadowing:managed-by = shadowing`: the worker cannot touch what an operator did not tag;
* tagging: only while creating (`ec2:CreateAction`, `elasticloadbalancing:CreateAction`), on what is already
  owned, or (where AWS has no create-action key) with the ownership tags in the request;
* record changes: Route 53 changes only in listed zones, A records only, names under a listed suffix;
* scoped: resource ARNs narrower than `*` (public parameters, change ids, stream ARNs, the model bucket's prefix).

An action in no class is itself a violation: adding a call to the code forces a decision here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import boto3

IAM_PREFIX = {"cloudwatch": "cloudwatch", "elbv2": "elasticloadbalancing", "dynamodbstreams": "dynamodb"}
CLIENT_FACTORIES = {"_clients", "clients", "client", "aws"}

OWNER_KEY = "shadowing:managed-by"
OWNER_VALUE = "shadowing"
RESOURCE_OWNER = f"aws:ResourceTag/{OWNER_KEY}"
REQUEST_OWNER = f"aws:RequestTag/{OWNER_KEY}"

#: What the operator replaces in the committed policy (docs/security.md says how).
PLACEHOLDERS = ("REPLACE-WITH-HOSTED-ZONE-ID", "REPLACE-WITH-RECORD-SUFFIX", "REPLACE-WITH-MODEL-BUCKET")

#: Actions AWS authorizes without the code calling them by name: action -> (the call that needs it, why).
IMPLIED: dict[str, tuple[str, str]] = {
    "elasticloadbalancing:AddTags": ("elasticloadbalancing:CreateTargetGroup", "Tags on a create are AddTags"),
    "sqs:TagQueue": ("sqs:CreateQueue", "tagging a queue on creation needs sqs:TagQueue"),
    "dynamodb:TagResource": ("dynamodb:CreateTable", "Tags on CreateTable are authorized as TagResource"),
    "dynamodb:CreateTableReplica": ("dynamodb:UpdateTable", "ReplicaUpdates Create (global-table mode)"),
    "dynamodb:DeleteTableReplica": ("dynamodb:UpdateTable", "ReplicaUpdates Delete (global-table mode)"),
}

#: Gets that only read metadata and that AWS does not scope by resource.
METADATA_GETS = frozenset({"cloudwatch:GetMetricData", "cloudwatch:GetMetricStatistics", "sqs:GetQueueUrl"})

#: Create actions -> text that marks the ARN of the resource they create (an empty marker: any ARN of the service).
CREATES: dict[str, tuple[str, ...]] = {
    "ec2:RunInstances": (":instance/", ":volume/", ":spot-instances-request/"),
    "ec2:CreateLaunchTemplate": (":launch-template/",),
    "ec2:CopyImage": (":image/",),
    "elasticloadbalancing:CreateTargetGroup": (":targetgroup/",),
    "dynamodb:CreateTable": (":table/",),
    "sqs:CreateQueue": ("",),
    "rds:CreateDBInstanceReadReplica": (":db:",),
    "rds:CreateDBSnapshot": (":snapshot:",),
}

#: Reads of data from, or changes to, an existing resource: only on what carries the ownership tag.
OWNED = frozenset({
    "ec2:TerminateInstances", "ec2:CancelSpotInstanceRequests", "ec2:DeleteLaunchTemplate", "ec2:DeregisterImage",
    "ec2:CreateLaunchTemplateVersion",
    "elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:ModifyListener",
    "rds:DeleteDBInstance", "rds:PromoteReadReplica",
    "dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:CreateTableReplica", "dynamodb:DeleteTableReplica",
    "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "sqs:DeleteQueue", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessageBatch",
    "sqs:DeleteMessageBatch",
})  # fmt: skip

#: Tagging actions -> the guards a statement granting them may use (see `_GUARDS`).
TAGGING: dict[str, tuple[str, ...]] = {
    "ec2:CreateTags": ("create-action", "owned", "adopting"),
    "ec2:DeleteTags": ("owned",),
    "elasticloadbalancing:AddTags": ("create-action",),
    "sqs:TagQueue": ("owned", "request-tagged"),
    "dynamodb:TagResource": ("owned", "request-tagged"),
    "rds:AddTagsToResource": ("owned", "request-tagged"),
}
#: Tagging that must be possible while creating (tag-on-create cannot work otherwise).
NEEDS_CREATE_ACTION = ("ec2:CreateTags", "elasticloadbalancing:AddTags")
CREATE_ACTION_KEYS = {"ec2": "ec2:CreateAction", "elasticloadbalancing": "elasticloadbalancing:CreateAction"}

#: Route 53 record changes: listed zones, A records, names under listed suffixes.
RECORD_CHANGES = frozenset({"route53:ChangeResourceRecordSets"})
#: Reads that AWS scopes by resource and that need no tag: granted on ARNs narrower than `*`.
SCOPED = frozenset({
    "ssm:GetParameter", "route53:GetChange", "route53:GetHostedZone", "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "s3:GetObject", "s3:PutObject",  # the fleet model's objects: one bucket, one prefix (the operator's)
})  # fmt: skip


def actions_in(files: Iterable[Path]) -> set[str]:
    """The IAM actions the code in `files` calls (see the module docstring for how they are found)."""
    found: set[str] = set()
    for path in files:
        services, methods, waiters = _scan(ast.parse(path.read_text()))
        for service in services:
            client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
            mapping = client.meta.method_to_api_mapping
            prefix = IAM_PREFIX.get(service, service)
            found |= {f"{prefix}:{mapping[m]}" for m in methods if m in mapping}
            for name in waiters:
                if name in client.waiter_names:
                    found.add(f"{prefix}:{client.get_waiter(name).config.operation}")
    return found


def needed(called: set[str]) -> set[str]:
    """What the policy must grant: the calls and what AWS authorizes behind them."""
    return called | {action for action, (trigger, _) in IMPLIED.items() if trigger in called}


def classify(action: str) -> str:
    """The class of a granted action: metadata, create, owned, tagging, record-change, scoped or unclassified."""
    verb = action.split(":", 1)[-1]
    if verb.startswith(("Describe", "List")) or action in METADATA_GETS:
        return "metadata"
    for name, members in (("create", CREATES), ("owned", OWNED), ("tagging", TAGGING),
                          ("record-change", RECORD_CHANGES), ("scoped", SCOPED)):  # fmt: skip
        if action in members:
            return name
    return "unclassified"


def violations(policy: Mapping[str, Any]) -> list[str]:
    """Every way the policy grants more than the classes above allow; empty when it is least privilege."""
    found: list[str] = []
    statements = [s for s in policy["Statement"] if s.get("Effect") == "Allow"]
    for i, stmt in enumerate(statements):
        sid = stmt.get("Sid", f"statement {i}")
        if "NotAction" in stmt or "NotResource" in stmt:
            found.append(f"{sid}: NotAction/NotResource in an Allow grants everything not listed")
        for action in _list(stmt.get("Action")):
            if "*" in action:
                found.append(f"{sid}: wildcard action {action}")
                continue
            found += [f"{sid}: {action} {problem}" for problem in _problems(action, stmt)]
    granted = {a for s in statements for a in _list(s.get("Action"))}
    for action in sorted(granted & set(CREATES)):
        if not any(_covers_created(s, action) and _request_tagged(s) for s in statements if _grants(s, action)):
            found.append(f"{action}: no statement allows it with the ownership request tag")
    for action in NEEDS_CREATE_ACTION:
        if action in granted and not any(_create_action(s, action) for s in statements if _grants(s, action)):
            found.append(f"{action}: no statement allows it while creating (a create-action condition)")
    return found


def _problems(action: str, stmt: Mapping[str, Any]) -> list[str]:
    kind = classify(action)
    if kind == "unclassified":
        return ["is not classified in tools/iam.py: decide how it is scoped"]
    if kind != "metadata" and _everything(stmt) and not stmt.get("Condition"):
        return ['is granted on Resource "*" without a condition']
    if kind == "create" and _covers_created(stmt, action) and not _request_tagged(stmt):
        return [f"creates without requiring {REQUEST_OWNER} = {OWNER_VALUE} and bounded aws:TagKeys"]
    if kind == "owned" and not _owned(stmt):
        return [f"touches existing resources without requiring {RESOURCE_OWNER} = {OWNER_VALUE}"]
    if kind == "tagging" and not any(_GUARDS[g](stmt, action) for g in TAGGING[action]):
        return [f"tags without one of the guards {', '.join(TAGGING[action])}"]
    if kind == "record-change":
        return _record_change_problems(stmt)
    if kind == "scoped" and any(_whole_service(r) for r in _list(stmt.get("Resource"))):
        return ["is granted on every resource of its service; name the ARNs"]
    return []


def _record_change_problems(stmt: Mapping[str, Any]) -> list[str]:
    problems = []
    if any(r == "*" or r.endswith("hostedzone/*") for r in _list(stmt.get("Resource"))):
        problems.append("is not limited to listed hosted zones")
    if _cond(stmt, "ForAllValues:StringEquals", "route53:ChangeResourceRecordSetsRecordTypes") != ["A"]:
        problems.append("is not limited to A records (route53:ChangeResourceRecordSetsRecordTypes)")
    names = _cond(stmt, "ForAllValues:StringLike", "route53:ChangeResourceRecordSetsNormalizedRecordNames")
    if not names or any(n.strip("*.") == "" for n in names):
        problems.append("is not limited to names under a suffix (ChangeResourceRecordSetsNormalizedRecordNames)")
    return problems


def _list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _cond(stmt: Mapping[str, Any], operator: str, key: str) -> list[str] | None:
    """The values `stmt`'s condition tests `key` against with `operator` (condition keys are case-insensitive)."""
    block = (stmt.get("Condition") or {}).get(operator) or {}
    for name, value in block.items():
        if name.lower() == key.lower():
            return _list(value)
    return None


def _grants(stmt: Mapping[str, Any], action: str) -> bool:
    return action in _list(stmt.get("Action"))


def _everything(stmt: Mapping[str, Any]) -> bool:
    return "*" in _list(stmt.get("Resource"))


def _whole_service(arn: str) -> bool:
    """`*`, or an ARN whose resource part is a bare wildcard (`arn:aws:ec2:*:*:*`)."""
    return arn == "*" or ":".join(arn.split(":")[5:]).startswith("*")


def _covers_created(stmt: Mapping[str, Any], action: str) -> bool:
    return any(_whole_service(r) or any(m in r for m in CREATES[action]) for r in _list(stmt.get("Resource")))


def _owned(stmt: Mapping[str, Any], *_: Any) -> bool:
    return _cond(stmt, "StringEquals", RESOURCE_OWNER) == [OWNER_VALUE]


def _request_tagged(stmt: Mapping[str, Any], *_: Any) -> bool:
    """The request must set the ownership tag and may set only keys from a bounded list."""
    keys = _cond(stmt, "ForAllValues:StringEquals", "aws:TagKeys") or _cond(stmt, "ForAllValues:StringLike",
                                                                           "aws:TagKeys")  # fmt: skip
    return _cond(stmt, "StringEquals", REQUEST_OWNER) == [OWNER_VALUE] and bool(keys) and "*" not in (keys or [])


def _create_action(stmt: Mapping[str, Any], action: str) -> bool:
    service = action.split(":", 1)[0]
    allowed = {a.split(":", 1)[1] for a in CREATES if a.startswith(service + ":")}
    values = _cond(stmt, "StringEquals", CREATE_ACTION_KEYS.get(service, "")) or []
    return bool(values) and set(values) <= allowed


def _adopting(stmt: Mapping[str, Any], *_: Any) -> bool:
    """Adoption (spec.adopt) tags instances the product did not launch: only with the ownership request tag, the
    `shadowing:adopted = true` marker and bounded keys (release_adopted then untags only what carries the marker)."""
    return _request_tagged(stmt) and _cond(stmt, "StringEquals", "aws:RequestTag/shadowing:adopted") == ["true"]


_GUARDS = {
    "create-action": _create_action, "owned": _owned, "request-tagged": _request_tagged, "adopting": _adopting,
}  # fmt: skip


def _scan(tree: ast.AST) -> tuple[set[str], set[str], set[str]]:
    services, methods, waiters = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "AWS_SERVICES" for t in node.targets
        ):
            if isinstance(node.value, ast.Tuple):
                services |= {
                    e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
            continue
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if name in CLIENT_FACTORIES and isinstance(first, str):
            services.add(first)
        elif isinstance(func, ast.Attribute):
            if name == "get_paginator" and isinstance(first, str):
                methods.add(first)
            elif name == "get_waiter" and isinstance(first, str):
                waiters.add(first)
            else:
                methods.add(name)
    return services, methods, waiters
