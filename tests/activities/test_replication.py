"""Streams catch-up, conflict rule, sync check, RDS read replica and SQS forwarding against moto."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TAG_ENTITY, TAG_MANAGED
from activities.replication import ReplicationActivities
from shadowing.models import ReplicationInput
from tests.activities.conftest import make_table
from workers.aws import AwsClients

US, EU = "us-east-1", "eu-west-1"


def repl(tables: tuple[str, ...] = ("orders",), src: str = US, dst: str = EU, **kw: Any) -> ReplicationInput:
    return ReplicationInput(entity_id="shop", tables=tables, source_region=src, target_region=dst, **kw)


def items(aws: AwsClients, region: str, table: str) -> dict[str, dict]:
    """pk -> item without the `_ts` replication metadata of unversioned items."""
    scan = aws("dynamodb", region).scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["pk"]["S"]: {k: v for k, v in i.items() if k != "_ts" or "_v" in i} for i in scan}


def put(aws: AwsClients, region: str, pk: str, **attrs: Any) -> None:
    item = {"pk": {"S": pk}} | {k: {"N": str(v)} if isinstance(v, int) else {"S": v} for k, v in attrs.items()}
    aws("dynamodb", region).put_item(TableName="orders", Item=item)


def test_copy_then_catch_up_replays_inserts_modifies_and_deletes(aws: AwsClients) -> None:
    """Writes made after the checkpoint reach the target through catch-up; a re-run applies nothing new."""
    make_table(aws, US, "orders", 20)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    assert first.items == 20 and first.created_tables == ("orders",) and first.checkpoint[0].stream_arn
    put(aws, US, "new", v=1)
    put(aws, US, "k3", v=333)
    aws("dynamodb", US).delete_item(TableName="orders", Key={"pk": {"S": "k4"}})
    caught = env.run(act.catch_up, repl(checkpoint=first.checkpoint))
    assert caught.applied == 3 and caught.pending == 0 and caught.lag_s == 0 and caught.in_sync
    assert items(aws, EU, "orders") == items(aws, US, "orders")
    assert "k4" not in items(aws, EU, "orders") and items(aws, EU, "orders")["k3"]["v"] == {"N": "333"}
    again = env.run(act.catch_up, repl(checkpoint=first.checkpoint))
    assert again.applied == 0 and again.conflicts == 0 and again.checkpoint == caught.checkpoint
    assert items(aws, EU, "orders") == items(aws, US, "orders")
    assert env.run(act.check_sync, repl(checkpoint=caught.checkpoint)).in_sync


class _WritesDuringScan:
    """A client factory whose source scan lets the application write between the scan and the copy."""

    def __init__(self, aws: AwsClients, write: Any) -> None:
        self._aws, self._write, self.scanned = aws, write, False

    def __call__(self, service: str, region: str) -> Any:
        client = self._aws(service, region)
        if (service, region) != ("dynamodb", US):
            return client
        outer = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def get_paginator(self, op: str) -> Any:
                pager = client.get_paginator(op)

                class Pager:
                    def paginate(self, **kw: Any) -> Iterator[dict]:
                        for page in pager.paginate(**kw):
                            yield page
                            if op == "scan" and not outer.scanned:
                                outer.scanned = True
                                outer._write()

                return Pager() if op == "scan" else pager

        return Proxy()


def test_writes_during_the_copy_are_not_lost(aws: AwsClients) -> None:
    """A modify, a delete and an insert made while the scan is copying reach the target after catch-up."""
    make_table(aws, US, "orders", 10)

    def write() -> None:
        put(aws, US, "k1", v=100)
        aws("dynamodb", US).delete_item(TableName="orders", Key={"pk": {"S": "k2"}})
        put(aws, US, "during", v=7)

    clients = _WritesDuringScan(aws, write)
    act, env = ReplicationActivities(clients), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    assert clients.scanned and items(aws, EU, "orders") != items(aws, US, "orders"), "the copy alone is stale"
    caught = env.run(act.catch_up, repl(checkpoint=first.checkpoint))
    assert caught.applied >= 3 and caught.pending == 0
    assert items(aws, EU, "orders") == items(aws, US, "orders")


def test_conflicts_resolve_by_version_in_both_directions(aws: AwsClients) -> None:
    """Both sides written: the higher (_v, _ts) wins on both after replicating each way; losers are reported."""
    make_table(aws, US, "orders", 3)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    put(aws, US, "a", _v=2, _ts=1000, who="us")
    put(aws, EU, "a", _v=3, _ts=900, who="eu")  # higher version: eu wins
    put(aws, US, "b", _v=5, _ts=1000, who="us")  # higher version: us wins
    put(aws, EU, "b", _v=4, _ts=2000, who="eu")
    put(aws, US, "c", _v=1, _ts=1000, who="us")
    put(aws, EU, "c", _v=1, _ts=1500, who="eu")  # same version, later ts: eu wins
    forward = env.run(act.catch_up, repl(checkpoint=first.checkpoint))
    assert {(c.table, c.key, c.winner) for c in forward.conflict_report} == {
        ("orders", '{"pk": {"S": "a"}}', "target"),
        ("orders", '{"pk": {"S": "c"}}', "target"),
    }
    assert forward.conflicts == 2
    backward = env.run(act.catch_up, repl(src=EU, dst=US))
    assert backward.pending == 0
    us, eu = items(aws, US, "orders"), items(aws, EU, "orders")
    assert us == eu
    assert {k: us[k]["who"]["S"] for k in "abc"} == {"a": "eu", "b": "us", "c": "eu"}
    assert env.run(act.check_sync, repl(checkpoint=forward.checkpoint)).in_sync


def test_check_sync_reports_lag_over_the_bound(aws: AwsClients) -> None:
    """Records the pass cannot apply are pending; their age over max_lag_s makes the check fail with detail."""
    make_table(aws, US, "orders", 5)
    first = ActivityEnvironment().run(ReplicationActivities(aws).replicate_tables, repl())
    for i in range(4):
        put(aws, US, f"late{i}", v=i)
    later = datetime.now(UTC) + timedelta(seconds=12)
    act = ReplicationActivities(aws, now=lambda: later)
    status = ActivityEnvironment().run(act.check_sync, repl(checkpoint=first.checkpoint, max_records=1))
    assert not status.in_sync and status.pending == 3 and 11 < status.lag_s < 14
    assert "lag 1" in status.detail and "> 5.0s" in status.detail
    assert "table orders: 3 items differ" in status.detail
    ok = ActivityEnvironment().run(act.check_sync, repl(checkpoint=status.checkpoint))
    assert ok.in_sync and ok.lag_s == 0, ok.detail


def test_check_sync_digest_mismatch_names_table_and_count(aws: AwsClients) -> None:
    """A target-only change that no stream record explains is reported as differing items."""
    make_table(aws, US, "orders", 5)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    put(aws, EU, "k0", v=999)
    put(aws, EU, "stray", v=1)
    status = env.run(act.check_sync, repl(checkpoint=first.checkpoint))
    assert not status.in_sync and status.detail == "table orders: 2 items differ"


def test_missing_source_table_is_invalid_and_creates_nothing(aws: AwsClients) -> None:
    """A table absent in the source region is a non-retryable InvalidRequest naming it; no target table appears."""
    make_table(aws, US, "orders", 1)
    act = ReplicationActivities(aws)
    for activity_fn in (act.replicate_tables, act.catch_up, act.check_sync):
        with pytest.raises(ApplicationError, match="'ghost' does not exist in us-east-1") as err:
            ActivityEnvironment().run(activity_fn, repl(("orders", "ghost")))
        assert err.value.non_retryable and err.value.type == "InvalidRequest"
    assert aws("dynamodb", EU).list_tables()["TableNames"] == []


def test_global_table_mode_asks_for_a_replica_and_waits_for_active(aws: AwsClients) -> None:
    """moto ignores replicas, so a recording client stands in: Create is requested once, ACTIVE ends the wait."""
    make_table(aws, US, "orders", 1)
    calls: list[dict] = []

    def clients(service: str, region: str) -> Any:
        client = aws(service, region)
        if service != "dynamodb":
            return client

        class Recorder:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def update_table(self, **kw: Any) -> Any:
                if "ReplicaUpdates" in kw:
                    calls.append(kw)
                    return {}
                return client.update_table(**kw)

            def describe_table(self, **kw: Any) -> Any:
                out = client.describe_table(**kw)
                if calls:
                    out["Table"]["Replicas"] = [{"RegionName": EU, "ReplicaStatus": "ACTIVE"}]
                return out

        return Recorder()

    status = ActivityEnvironment().run(ReplicationActivities(clients).replicate_tables, repl(mode="global-table"))
    assert status.in_sync and calls == [{"TableName": "orders", "ReplicaUpdates": [{"Create": {"RegionName": EU}}]}]
    assert aws("dynamodb", US).describe_table(TableName="orders")["Table"]["StreamSpecification"]["StreamEnabled"]


# ---- SQS ----------------------------------------------------------------------------------------------


def _queue(aws: AwsClients, region: str, name: str, n: int) -> str:
    sqs = aws("sqs", region)
    fifo = name.endswith(".fifo")
    attrs = {"FifoQueue": "true"} if fifo else {}
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    for i in range(n):
        extra = {"MessageGroupId": f"g{i % 3}", "MessageDeduplicationId": f"d{i}"} if fifo else {}
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", **extra)
    return str(url)


def _drain(aws: AwsClients, region: str, name: str) -> list[dict]:
    sqs = aws("sqs", region)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    out = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    ).get("Messages", []):
        out += batch
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )
    return out


class _CrashAfterSend:
    """Source SQS client whose first delete fails, as if the worker died after sending a batch."""

    def __init__(self, aws: AwsClients) -> None:
        self._aws, self.crashed = aws, False

    def __call__(self, service: str, region: str) -> Any:
        client = self._aws(service, region)
        if (service, region) != ("sqs", US):
            return client
        outer = self

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def delete_message_batch(self, **kw: Any) -> Any:
                if not outer.crashed:
                    outer.crashed = True
                    raise RuntimeError("worker died")
                return client.delete_message_batch(**kw)

        return Proxy()


@pytest.mark.parametrize("name", ["jobs", "jobs.fifo"])
def test_forward_queue_moves_every_message_once_even_after_a_crash(aws: AwsClients, name: str) -> None:
    """A crash between send and delete, then a retry from the heartbeat: each message arrives exactly once."""
    _queue(aws, US, name, 25)
    clients = _CrashAfterSend(aws)
    env, beats = ActivityEnvironment(), []
    env.on_heartbeat = lambda *d: beats.append(d)
    req = repl(queues=(name,), visibility_timeout_s=0)
    with pytest.raises(RuntimeError, match="worker died"):
        env.run(ReplicationActivities(clients).forward_queue, req)
    assert beats and len(beats[-1][0]["sent"]) == 10
    env.info = dataclasses.replace(env.info, heartbeat_details=beats[-1])
    result = env.run(ReplicationActivities(clients).forward_queue, req)
    assert result.moved == {name: 15} and result.skipped_duplicates == 10 and result.created_queues == ()
    got = _drain(aws, EU, name)
    assert sorted(m["Body"] for m in got) == sorted(f"m{i}" for i in range(25))
    assert _drain(aws, US, name) == []
    tags = aws("sqs", EU).list_queue_tags(QueueUrl=aws("sqs", EU).get_queue_url(QueueName=name)["QueueUrl"])["Tags"]
    assert tags[TAG_MANAGED] == "shadowing" and tags[TAG_ENTITY] == "shop"
    if name.endswith(".fifo"):
        assert {m["Attributes"]["MessageGroupId"] for m in got} == {"g0", "g1", "g2"}
        by_group = [m["Body"] for m in got if m["Attributes"]["MessageGroupId"] == "g0"]
        assert by_group == sorted(by_group, key=lambda b: int(b[1:])), "order within a group is kept"
    else:
        assert all("shadowing-source-id" in m["MessageAttributes"] for m in got)


def test_forward_back_and_drop_leaves_only_what_is_not_ours(aws: AwsClients) -> None:
    """Forwarding back (regions swapped) empties the created queue; drop_replicas then deletes it."""
    _queue(aws, US, "jobs", 5)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    assert env.run(act.forward_queue, repl((), queues=("jobs",))).created_queues == ("jobs",)
    assert env.run(act.drop_replicas, repl((), queues=("jobs",))) == 0, "a queue holding messages is kept"
    back = env.run(act.forward_queue, repl((), src=EU, dst=US, queues=("jobs",)))
    assert back.moved == {"jobs": 5}
    assert env.run(act.drop_replicas, repl((), queues=("jobs",))) == 1
    assert env.run(act.drop_replicas, repl((), queues=("jobs",))) == 0
    assert len(_drain(aws, US, "jobs")) == 5
    with pytest.raises(ApplicationError, match="'nope' does not exist in us-east-1"):
        env.run(act.forward_queue, repl((), queues=("nope",)))


# ---- RDS ----------------------------------------------------------------------------------------------


def _db(aws: AwsClients) -> str:
    db = aws("rds", US).create_db_instance(
        DBInstanceIdentifier="shopdb", Engine="postgres", DBInstanceClass="db.t3.micro",
        MasterUsername="admin", MasterUserPassword="secret123", AllocatedStorage=20,
    )  # fmt: skip
    return str(db["DBInstance"]["DBInstanceArn"])


def _moto_cross_region_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5.2 records a cross-region replica on its primary by ARN but removes it by identifier (ValueError)."""
    from moto.rds.models import DBInstance

    def remove_replica(self: Any, replica: Any) -> None:
        for ref in (replica.db_instance_identifier, replica.db_instance_arn):
            if ref in self.replicas:
                self.replicas.remove(ref)

    monkeypatch.setattr(DBInstance, "remove_replica", remove_replica)


def test_rds_cross_region_replica_create_is_idempotent_and_drop_deletes_it(
    aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tagged cross-region replica of the source is made once; the compensation deletes it."""
    _moto_cross_region_delete(monkeypatch)
    _db(aws)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    made = env.run(act.create_read_replica, repl((), rds_instance="shopdb"))
    again = env.run(act.create_read_replica, repl((), rds_instance="shopdb"))
    assert made.created and not again.created and made.region == EU and made.db_instance_arn.split(":")[3] == EU
    replica = aws("rds", EU).describe_db_instances(DBInstanceIdentifier="shopdb")["DBInstances"][0]
    assert replica["ReadReplicaSourceDBInstanceIdentifier"].endswith(":db:shopdb")
    assert env.run(act.drop_replicas, repl((), rds_instance="shopdb")) == 1
    gone = env.run(act.delete_read_replica, repl((), rds_instance="shopdb"))
    assert not gone.deleted and gone.status in ("absent", "deleting")


def test_rds_promoted_replica_is_never_deleted_and_foreign_instances_are_refused(aws: AwsClients) -> None:
    """After promotion the compensation keeps the new primary; a same-named instance not ours is an error."""
    _db(aws)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    env.run(act.create_read_replica, repl((), rds_instance="shopdb"))
    assert env.run(act.promote_read_replica, repl((), rds_instance="shopdb")).promoted
    assert env.run(act.promote_read_replica, repl((), rds_instance="shopdb")).promoted
    kept = env.run(act.delete_read_replica, repl((), rds_instance="shopdb"))
    assert not kept.deleted and "promoted" in kept.status
    with pytest.raises(ApplicationError, match="does not exist in us-east-1") as err:
        env.run(act.create_read_replica, repl((), rds_instance="other"))
    assert err.value.non_retryable
