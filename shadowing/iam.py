"""The AWS actions the worker's code calls, found by reading it: the least-privilege policy is checked against this.

Per source file, every `clients("<service>", ...)` literal names a service the file uses; every method called on
an object (and every `get_paginator("<op>")` / `get_waiter("<name>")`) that is an operation of one of those
services is an action. Attributing by file keeps an operation name shared by two services (`add_tags_to_resource`)
to the service the file really talks to.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import boto3

IAM_PREFIX = {"cloudwatch": "cloudwatch", "elbv2": "elasticloadbalancing", "dynamodbstreams": "dynamodb"}
CLIENT_FACTORIES = {"_clients", "clients", "client", "aws"}


def actions_in(files: Iterable[Path]) -> set[str]:
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


def _scan(tree: ast.AST) -> tuple[set[str], set[str], set[str]]:
    services, methods, waiters = set(), set(), set()
    for node in ast.walk(tree):
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
