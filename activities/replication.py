"""DynamoDB data for the target region: a copy of each of the entity's tables, and a check that they agree.

The foundation copies the tables (scan, batch write); the data-plane issue adds Streams catch-up, global tables
on real AWS, RDS and SQS. Tables the product creates in the target region are reported so that the saga can
drop them again on failure.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from temporalio import activity

from activities import TAG_ENTITY, TAG_MANAGED, ClientFactory
from shadowing.models import ReplicationInput, ReplicationStatus


class ReplicationActivities:
    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    @activity.defn(name="replicate_tables")
    def replicate_tables(self, req: ReplicationInput) -> ReplicationStatus:
        """Creates missing target tables (same keys) and copies every item; idempotent (puts overwrite)."""
        if req.source_region == req.target_region or not req.tables:
            return ReplicationStatus(in_sync=True, detail="nothing to replicate")
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        created, copied = [], 0
        for table in req.tables:
            if self._ensure_table(src, dst, table, req.entity_id):
                created.append(table)
            for page in src.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
                items = page["Items"]
                for i in range(0, len(items), 25):
                    _write_batch(dst, table, items[i : i + 25])
                copied += len(items)
                activity.heartbeat(copied)
        return ReplicationStatus(in_sync=True, items=copied, created_tables=tuple(created))

    @activity.defn(name="check_sync")
    def check_sync(self, req: ReplicationInput) -> ReplicationStatus:
        """Compares every table's item digest in both regions."""
        if req.source_region == req.target_region or not req.tables:
            return ReplicationStatus(in_sync=True, detail="nothing to replicate")
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        total, differ = 0, []
        for table in req.tables:
            a, count = _digest(src, table)
            try:
                b, _ = _digest(dst, table)
            except dst.exceptions.ResourceNotFoundException:
                b = "absent"
            total += count
            if a != b:
                differ.append(table)
        detail = f"tables differ: {', '.join(differ)}" if differ else f"{total} items equal in both regions"
        return ReplicationStatus(in_sync=not differ, items=total, detail=detail)

    @activity.defn(name="drop_replicas")
    def drop_replicas(self, req: ReplicationInput) -> int:
        """Compensation: deletes the replicas this product created in the target region; returns how many.

        Only tables tagged as the entity's and managed by shadowing go: a table someone else made, or the
        source itself, is never touched.
        """
        if req.source_region == req.target_region:
            return 0
        dst = self._clients("dynamodb", req.target_region)
        dropped = 0
        for table in req.tables:
            try:
                arn = dst.describe_table(TableName=table)["Table"]["TableArn"]
                tags = {t["Key"]: t["Value"] for t in dst.list_tags_of_resource(ResourceArn=arn).get("Tags", [])}
                if tags.get(TAG_MANAGED) == "shadowing" and tags.get(TAG_ENTITY) == req.entity_id:
                    dst.delete_table(TableName=table)
                    dropped += 1
            except dst.exceptions.ResourceNotFoundException:
                pass
        return dropped

    @staticmethod
    def _ensure_table(src: Any, dst: Any, table: str, entity_id: str) -> bool:
        try:
            dst.describe_table(TableName=table)
            return False
        except dst.exceptions.ResourceNotFoundException:
            pass
        desc = src.describe_table(TableName=table)["Table"]
        keys = {k["AttributeName"] for k in desc["KeySchema"]}
        dst.create_table(
            TableName=table,
            KeySchema=desc["KeySchema"],
            AttributeDefinitions=[a for a in desc["AttributeDefinitions"] if a["AttributeName"] in keys],
            BillingMode="PAY_PER_REQUEST",
            Tags=[{"Key": TAG_ENTITY, "Value": entity_id}, {"Key": TAG_MANAGED, "Value": "shadowing"}],
        )
        dst.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        return True


def _write_batch(dst: Any, table: str, items: list[dict]) -> None:
    pending = {table: [{"PutRequest": {"Item": item}} for item in items]}
    while pending:
        pending = dst.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def _digest(client: Any, table: str) -> tuple[str, int]:
    lines = sorted(
        json.dumps(item, sort_keys=True)
        for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        for item in page["Items"]
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)
