"""DynamoDB Streams reading and item digests, the pieces `activities/replication.py` replays and verifies with.

Split out of the replication module so that it keeps the activities and their models; nothing here calls AWS on
its own: every function receives the client it reads with (a `dynamodbstreams` client, or a `dynamodb` one).

Positions are DynamoDB sequence numbers: decimal strings, ordered as integers within a shard. A shard position of
None means "nothing read yet" (TRIM_HORIZON).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

#: The services whose clients these functions receive (what tools/iam.py attributes this module's calls to).
AWS_SERVICES = ("dynamodb", "dynamodbstreams")
#: Conflict-rule attributes a writer may put on an item: version, hybrid timestamp (ms), writer region.
V, TS, R = "_v", "_ts", "_r"


def key_json(key: Mapping[str, Any]) -> str:
    """An item key (DynamoDB JSON) as canonical JSON: the one spelling maps and reports share."""
    return json.dumps(key, sort_keys=True)


def short_digest(text: str) -> str:
    """`sha256:` + 16 hex digits: what reports and logs show of a key."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def item_digest(item: Mapping[str, Any] | None) -> str | None:
    """Digest of an item's content (None when absent); `_ts` of an unversioned item is the replica's bookkeeping
    (its replication time), not data, so it is left out: both sides of an equal item digest alike."""
    if item is None:
        return None
    body = item if V in item else {k: v for k, v in item.items() if k != TS}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def version_label(item: Mapping[str, Any] | None) -> str:
    """An item's place under the conflict rule, for conflict logs: "v=3 ts=1700000000123 r=eu-west-1",
    "unversioned ts=1700000000123" or "absent". Values only, never the item's data or key."""
    if item is None:
        return "absent"

    def scalar(name: str) -> str:
        value = item.get(name) or {}
        return str(next(iter(value.values()), "-")) if isinstance(value, Mapping) else "-"

    if V not in item:
        return f"unversioned ts={scalar(TS)}"
    return f"v={scalar(V)} ts={scalar(TS)} r={scalar(R)}"


def record_ms(record: Mapping[str, Any]) -> int:
    """A stream record's ApproximateCreationDateTime in ms (0 when absent)."""
    at = record["dynamodb"].get("ApproximateCreationDateTime")
    if isinstance(at, datetime):
        return int(at.timestamp() * 1000)
    return int(float(at) * 1000) if at is not None else 0


def shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    """All shards, parents before children (a key's records must be replayed in order)."""
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": arn}
    while True:
        desc = streams.describe_stream(**kwargs)["StreamDescription"]
        found += desc.get("Shards", [])
        if not desc.get("LastEvaluatedShardId"):
            break
        kwargs["ExclusiveStartShardId"] = desc["LastEvaluatedShardId"]
    ids, ordered, seen = {s["ShardId"] for s in found}, [], set()

    def visit(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in seen:
            return
        seen.add(shard["ShardId"])
        parent = next((s for s in found if s["ShardId"] == shard.get("ParentShardId")), None)
        if parent is not None and parent["ShardId"] in ids:
            visit(parent)
        ordered.append(shard)

    for shard in found:
        visit(shard)
    return ordered


def records(streams: Any, arn: str, shard_id: str, after: str | None) -> Iterator[dict[str, Any]]:
    """The shard's records after sequence number `after` (from TRIM_HORIZON when None), up to its current end."""
    kwargs = {"StreamArn": arn, "ShardId": shard_id}
    if after:
        kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
    else:
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    iterator = streams.get_shard_iterator(**kwargs)["ShardIterator"]
    while iterator:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        if not page["Records"]:
            return  # an open shard's end, for now
        yield from page["Records"]
        iterator = page.get("NextShardIterator")


def shard_end(streams: Any, arn: str, shard: Mapping[str, Any], after: str | None = None) -> str | None:
    """The shard's last sequence number now: a closed shard says it; an open one is read to its end from `after`
    (a known earlier position), so finding the end costs the records written since, not the shard's history."""
    ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
    if ending:
        return str(ending)
    last = after
    for record in records(streams, arn, shard["ShardId"], after):
        last = record["dynamodb"]["SequenceNumber"]
    return last


def later(a: str | None, b: str | None) -> str | None:
    """The later of two positions in one shard (None: nothing read yet)."""
    if a is None or b is None:
        return a or b
    return a if int(a) >= int(b) else b


def changed_images(
    streams: Any, arn: str, since: Mapping[str, str | None], fence: Mapping[str, str | None]
) -> dict[str, dict[str, Any] | None]:
    """key_json -> the key's newest image at or before the fence (None: deleted), for every key with a record
    after `since` (shard -> position) and at or before `fence` (shard -> position, parents first).

    It reads only the records between the two positions: what changed, never the table.
    """
    out: dict[str, dict[str, Any] | None] = {}
    for shard_id, end in fence.items():
        start = since.get(shard_id)
        if end is None or (start is not None and int(start) >= int(end)):
            continue
        for record in records(streams, arn, shard_id, start):
            d = record["dynamodb"]
            if int(d["SequenceNumber"]) > int(end):
                break
            out[key_json(d["Keys"])] = None if record["eventName"] == "REMOVE" else d.get("NewImage")
    return out
