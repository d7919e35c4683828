"""Streams catch-up, conflict rule, sync check, RDS read replica and SQS forwarding against moto, and the
ownership rule: only the entity's resources are touched, only the product's replicas are deleted."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TAG_ENTITY, TAG_MANAGED, TAG_ROLE
from activities.ownership import ownership_tags
from activities.replication import TAG_PROMOTED, ReplicationActivities, ReplicationInput, final_snapshot_id, key_digest
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


def test_a_replica_deleted_outside_the_product_is_made_again_by_the_next_pass(aws: AwsClients) -> None:
    """The target table `replicate_tables` made is deleted behind the product's back (an operator, a lost emulator
    state): catch-up and the sync check make it again, copy it whole, replay the stream and say so."""
    make_table(aws, US, "orders", 8)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    put(aws, US, "after", v=1)
    aws("dynamodb", EU).delete_table(TableName="orders")
    caught = env.run(act.catch_up, repl(checkpoint=first.checkpoint))
    assert "replica missing in eu-west-1, made again and 9 items copied" in caught.detail, caught.detail
    assert items(aws, EU, "orders") == items(aws, US, "orders")
    assert _table_tags(aws, EU, "orders")[TAG_ROLE] == "replica"
    aws("dynamodb", EU).delete_table(TableName="orders")
    checked = env.run(act.check_sync, repl(checkpoint=caught.checkpoint, verify="full-scan"))
    assert checked.in_sync and "made again and 9 items copied" in checked.detail, checked.detail
    assert items(aws, EU, "orders") == items(aws, US, "orders")


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
        ("orders", key_digest({"pk": {"S": "a"}}), "target"),
        ("orders", key_digest({"pk": {"S": "c"}}), "target"),
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
    status = ActivityEnvironment().run(
        act.check_sync, repl(checkpoint=first.checkpoint, max_records=1, recheck_rounds=0)
    )
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
    assert not status.in_sync and status.detail.startswith("table orders: 2 items differ; ")
    assert status.mode == "full-scan" and "full scan (no verified fence yet)" in status.detail
    assert status.verified == () and status.checked == 6


def _verified(aws: AwsClients, items_: int = 5) -> tuple[ReplicationActivities, ActivityEnvironment, Any]:
    """A source table copied, caught up and verified by a full scan: the starting point of a changed-mode check."""
    make_table(aws, US, "orders", items_)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    status = env.run(act.check_sync, repl(checkpoint=first.checkpoint, verify="full-scan"))
    assert status.in_sync and status.mode == "full-scan" and status.verified and status.reverse_checkpoint
    return act, env, status


def _next(status: Any, **kw: Any) -> ReplicationInput:
    """The input that carries on from `status`: its checkpoints and verified fence."""
    carried = {"checkpoint": status.checkpoint, "verified": status.verified}
    return repl(**(carried | {"reverse_checkpoint": status.reverse_checkpoint} | kw))


def test_writes_on_both_sides_converge_and_echoes_are_skipped(aws: AwsClients) -> None:
    """During the two-way window each side's writes reach the other; what a pass wrote is not replayed back."""
    act, env, status = _verified(aws)
    put(aws, US, "k1", _v=2, _ts=2000, _r=US, who="us")
    put(aws, US, "new-us", _v=1, _ts=2000, _r=US)
    put(aws, EU, "k2", _v=2, _ts=2000, _r=EU, who="eu")
    put(aws, EU, "new-eu", _v=1, _ts=2000, _r=EU)
    aws("dynamodb", EU).delete_item(TableName="orders", Key={"pk": {"S": "k3"}})
    both = env.run(act.replicate_both_ways, _next(status))
    assert (both.forward.applied, both.forward.skipped_echoes) == (2, 0)
    assert (both.back.applied, both.back.skipped_echoes) == (3, 2), "the forward pass's two writes are echoes"
    assert items(aws, US, "orders") == items(aws, EU, "orders") and "k3" not in items(aws, US, "orders")
    again = env.run(
        act.replicate_both_ways,
        _next(status, checkpoint=both.forward.checkpoint, reverse_checkpoint=both.back.checkpoint),
    )
    assert (again.forward.applied, again.forward.skipped_echoes) == (0, 2), "the back pass's puts, not replayed"
    assert again.back.applied == 0 and again.forward.conflicts == again.back.conflicts == 0
    retry = env.run(act.replicate_both_ways, _next(status))
    assert retry.forward.applied == retry.back.applied == 0, "a retry from the same checkpoints changes nothing"
    assert items(aws, US, "orders") == items(aws, EU, "orders")


def test_the_same_key_written_on_both_sides_resolves_by_version_and_is_reported(
    aws: AwsClients, caplog: pytest.LogCaptureFixture
) -> None:
    """A higher _v wins; equal (_v, _ts) fall to _r; the losing write is counted and logged with both versions."""
    act, env, status = _verified(aws)
    put(aws, US, "k1", _v=3, _ts=1000, _r=US, who="us")  # higher version: us wins
    put(aws, EU, "k1", _v=2, _ts=5000, _r=EU, who="eu")
    put(aws, US, "k2", _v=2, _ts=1000, _r=US, who="us")  # exact (_v, _ts) tie: "us-east-1" > "eu-west-1"
    put(aws, EU, "k2", _v=2, _ts=1000, _r=EU, who="eu")
    with caplog.at_level("WARNING"):
        both = env.run(act.replicate_both_ways, _next(status))
    assert both.forward.conflicts == 0 and both.back.conflicts == 2
    assert {(c.key, c.winner_version, c.loser_version) for c in both.back.conflict_report} == {
        (key_digest({"pk": {"S": "k1"}}), f"v=3 ts=1000 r={US}", f"v=2 ts=5000 r={EU}"),
        (key_digest({"pk": {"S": "k2"}}), f"v=2 ts=1000 r={US}", f"v=2 ts=1000 r={EU}"),
    }
    logged = [r.getMessage() for r in caplog.records if "replication conflict" in r.getMessage()]
    assert len(logged) == 2 and all(f"r={US}" in m and f"r={EU}" in m and "sha256:" in m for m in logged)
    us, eu = items(aws, US, "orders"), items(aws, EU, "orders")
    assert us == eu and us["k1"]["who"] == us["k2"]["who"] == {"S": "us"}


def test_changed_mode_verifies_what_changed_and_full_scan_verifies_everything(aws: AwsClients) -> None:
    """A corrupted target item changed since the verified fence fails the changed-mode check; an untouched
    corrupted item is outside what that mode reads, and only the full scan finds it."""
    act, env, status = _verified(aws)
    put(aws, US, "k2", v=200)
    put(aws, US, "k4", v=400)
    caught = env.run(act.catch_up, _next(status))
    put(aws, EU, "k1", v=-1)  # untouched in the source since the fence
    put(aws, EU, "k2", v=-2)  # changed in the source since the fence
    changed = env.run(act.check_sync, _next(status, checkpoint=caught.checkpoint))
    assert not changed.in_sync and changed.mode == "changed" and (changed.changed, changed.checked) == (2, 2)
    assert changed.detail == "table orders: 1 items differ" and changed.verified == status.verified
    full = env.run(act.check_sync, _next(status, checkpoint=caught.checkpoint, verify="full-scan"))
    assert not full.in_sync and full.mode == "full-scan" and full.checked == 5
    assert full.detail == "table orders: 2 items differ"


class _WriteBeforeSourceRead:
    """A client factory that lets the application write to the source just before the check reads it."""

    def __init__(self, aws: AwsClients, write: Any) -> None:
        self._aws, self._write, self.written = aws, write, False

    def __call__(self, service: str, region: str) -> Any:
        client, outer = self._aws(service, region), self
        if (service, region) != ("dynamodb", US):
            return client

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def batch_get_item(self, **kw: Any) -> Any:
                if not outer.written:
                    outer.written = True
                    outer._write()
                return client.batch_get_item(**kw)

        return Proxy()


def test_a_write_after_the_fence_does_not_fail_the_check(aws: AwsClients) -> None:
    """The target holding a key's image at the fence passes while the source moved on; the next check covers it."""
    _, env, status = _verified(aws)
    put(aws, US, "k2", v=200)
    clients = _WriteBeforeSourceRead(aws, lambda: put(aws, US, "k2", v=201))
    act = ReplicationActivities(clients)
    checked = env.run(act.check_sync, _next(status, recheck_rounds=0))
    assert clients.written and checked.in_sync and checked.changed == 1, checked.detail
    assert items(aws, EU, "orders")["k2"]["v"] == {"N": "200"} and checked.verified != status.verified
    after = env.run(act.check_sync, _next(checked, recheck_rounds=0))
    assert after.in_sync and after.changed == 1 and items(aws, EU, "orders")["k2"]["v"] == {"N": "201"}


def test_two_way_replication_without_a_reverse_checkpoint_is_invalid(aws: AwsClients) -> None:
    """Without the target streams' position there is no start for target -> source: non-retryable, named."""
    make_table(aws, US, "orders", 1)
    with pytest.raises(ApplicationError, match="reverse_checkpoint") as err:
        ActivityEnvironment().run(ReplicationActivities(aws).replicate_both_ways, repl())
    assert err.value.non_retryable and err.value.type == "InvalidRequest"


def test_missing_source_table_is_invalid_and_creates_nothing(aws: AwsClients) -> None:
    """A table absent in the source region is a non-retryable InvalidRequest naming it; no target table appears."""
    make_table(aws, US, "orders", 1)
    act = ReplicationActivities(aws)
    for activity_fn in (act.replicate_tables, act.catch_up, act.check_sync):
        with pytest.raises(ApplicationError, match="'ghost' does not exist in us-east-1") as err:
            ActivityEnvironment().run(activity_fn, repl(("orders", "ghost")))
        assert err.value.non_retryable and err.value.type == "InvalidRequest"
    assert aws("dynamodb", EU).list_tables()["TableNames"] == []


def test_a_key_the_replicator_cannot_handle_is_refused_before_anything_changes(aws: AwsClients) -> None:
    """A binary key, or a same-named target table with another key, is an InvalidRequest naming the table, raised
    before a stream is enabled or an item copied (before any traffic could move)."""
    aws("dynamodb", US).create_table(
        TableName="blobs", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "B"}], BillingMode="PAY_PER_REQUEST",
        Tags=ownership_tags("shop"),
    )  # fmt: skip
    with pytest.raises(ApplicationError, match="'blobs' in us-east-1 has the binary key attribute 'id'") as err:
        ActivityEnvironment().run(ReplicationActivities(aws).replicate_tables, repl(("blobs",)))
    assert err.value.non_retryable and err.value.type == "InvalidRequest"
    assert "StreamSpecification" not in aws("dynamodb", US).describe_table(TableName="blobs")["Table"]
    make_table(aws, US, "orders", 2)
    aws("dynamodb", EU).create_table(
        TableName="orders", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}], BillingMode="PAY_PER_REQUEST",
        Tags=ownership_tags("shop"),
    )  # fmt: skip
    with pytest.raises(ApplicationError, match=r"table 'orders' in eu-west-1 has the key .*'id'.* the source"):
        ActivityEnvironment().run(ReplicationActivities(aws).replicate_tables, repl())
    assert items(aws, EU, "orders") == {}


# ---- ownership: DynamoDB ------------------------------------------------------------------------------

FOREIGN = {
    "untagged": [],
    "other-entity": ownership_tags("billing"),
    "entity-tag-only": [{"Key": TAG_ENTITY, "Value": "shop"}],
}


def _table_tags(aws: AwsClients, region: str, table: str) -> dict[str, str]:
    ddb = aws("dynamodb", region)
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    return {t["Key"]: t["Value"] for t in ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]}


class _Counting:
    """A client factory that counts the calls made per (service, region, operation)."""

    def __init__(self, aws: AwsClients) -> None:
        self._aws, self.calls = aws, []

    def __call__(self, service: str, region: str) -> Any:
        client, calls = self._aws(service, region), self.calls

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                calls.append((service, region, name))
                return getattr(client, name)

        return Proxy()

    def made(self, *names: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[2] in names]


@pytest.mark.parametrize("tags", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_source_table_not_the_entitys_is_refused_untouched(aws: AwsClients, tags: list) -> None:
    """A spec naming another team's table: NotOwned naming dynamodb_tables; no stream enabled, no scan, no copy."""
    make_table(aws, US, "orders", 3, tags=tags, owner=None)
    clients = _Counting(aws)
    act = ReplicationActivities(clients)
    for activity_fn in (act.replicate_tables, act.catch_up, act.check_sync):
        with pytest.raises(ApplicationError) as err:
            ActivityEnvironment().run(activity_fn, repl())
        assert err.value.type == "NotOwned" and err.value.non_retryable
        assert "dynamodb_tables" in str(err.value) and "'orders' in us-east-1" in str(err.value)
    assert "StreamSpecification" not in aws("dynamodb", US).describe_table(TableName="orders")["Table"]
    assert clients.made("update_table", "scan", "get_paginator", "batch_write_item", "put_item", "create_table") == []
    assert aws("dynamodb", EU).list_tables()["TableNames"] == []


@pytest.mark.parametrize("tags", FOREIGN.values(), ids=FOREIGN.keys())
def test_an_existing_target_table_not_the_entitys_is_never_written(aws: AwsClients, tags: list) -> None:
    """Another team's same-named table in the target region: refused before anything changed, on either side."""
    make_table(aws, US, "orders", 3)
    make_table(aws, EU, "orders", 1, tags=tags, owner=None)
    before = items(aws, EU, "orders")
    act = ReplicationActivities(aws)
    for activity_fn in (act.replicate_tables, act.catch_up, act.check_sync):
        with pytest.raises(ApplicationError) as err:
            ActivityEnvironment().run(activity_fn, repl())
        assert err.value.type == "NotOwned" and "dynamodb_tables" in str(err.value)
        assert "'orders' in eu-west-1" in str(err.value)
    assert items(aws, EU, "orders") == before
    assert "StreamSpecification" not in aws("dynamodb", US).describe_table(TableName="orders")["Table"]
    assert ActivityEnvironment().run(act.drop_replicas, repl()) == 0
    assert items(aws, EU, "orders") == before


def test_follow_the_sun_return_writes_into_the_home_table_and_never_drops_it(aws: AwsClients) -> None:
    """home -> eu -> home: the eu copy is a replica (dropped by a compensation); the home table, the entity's
    origin that the return writes into, survives the return's compensation."""
    make_table(aws, US, "orders", 4)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    out = env.run(act.replicate_tables, repl())
    assert out.created_tables == ("orders",) and _table_tags(aws, EU, "orders")[TAG_ROLE] == "replica"
    put(aws, EU, "written-in-eu", v=1)
    back = env.run(act.replicate_tables, repl(src=EU, dst=US))
    assert back.created_tables == () and "written-in-eu" in items(aws, US, "orders")
    assert env.run(act.drop_replicas, repl(src=EU, dst=US)) == 0, "the return failed: home is kept"
    assert len(items(aws, US, "orders")) == 5 and TAG_ROLE not in _table_tags(aws, US, "orders")
    assert env.run(act.drop_replicas, repl()) == 1, "the eu replica may go"
    assert aws("dynamodb", EU).list_tables()["TableNames"] == []


def test_conflict_report_carries_key_digests_not_keys(aws: AwsClients) -> None:
    """The conflict report (the workflow logs it) names a losing key only by its sha256 prefix."""
    make_table(aws, US, "orders", 0)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    first = env.run(act.replicate_tables, repl())
    put(aws, US, "alice@example.com", _v=1, _ts=1000)
    put(aws, EU, "alice@example.com", _v=2, _ts=900)
    status = env.run(act.catch_up, repl(checkpoint=first.checkpoint))
    assert status.conflicts == 1 and "alice" not in status.model_dump_json()
    assert status.conflict_report[0].key == key_digest({"pk": {"S": "alice@example.com"}})
    assert status.conflict_report[0].key.startswith("sha256:") and len(status.conflict_report[0].key) == 23


class _GlobalTables:
    """moto ignores global-table replicas, so this client factory plays them: a Create makes the replica table in
    the target region (untagged, as AWS makes it) and reports it ACTIVE; a Delete is recorded."""

    def __init__(self, aws: AwsClients, existing: bool = False) -> None:
        self._aws, self.calls, self.active = aws, [], existing

    def __call__(self, service: str, region: str) -> Any:
        client = self._aws(service, region)
        if service != "dynamodb":
            return client
        outer = self

        class Recorder:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def update_table(self, **kw: Any) -> Any:
                if "ReplicaUpdates" not in kw:
                    return client.update_table(**kw)
                outer.calls.append(kw)
                if "Create" in kw["ReplicaUpdates"][0]:
                    make_table(outer._aws, EU, kw["TableName"], 0, owner=None)
                    outer.active = True
                return {}

            def describe_table(self, **kw: Any) -> Any:
                out = client.describe_table(**kw)
                if outer.active:
                    out["Table"]["Replicas"] = [{"RegionName": EU, "ReplicaStatus": "ACTIVE"}]
                return out

        return Recorder()


def test_global_table_mode_asks_for_a_replica_waits_for_active_and_tags_it(aws: AwsClients) -> None:
    """Create is requested once, ACTIVE ends the wait, the new replica is tagged ours and the compensation drops it."""
    make_table(aws, US, "orders", 1)
    clients = _GlobalTables(aws)
    act, env = ReplicationActivities(clients), ActivityEnvironment()
    status = env.run(act.replicate_tables, repl(mode="global-table"))
    create = {"TableName": "orders", "ReplicaUpdates": [{"Create": {"RegionName": EU}}]}
    assert status.in_sync and clients.calls == [create]
    assert aws("dynamodb", US).describe_table(TableName="orders")["Table"]["StreamSpecification"]["StreamEnabled"]
    assert _table_tags(aws, EU, "orders")[TAG_ROLE] == "replica"
    assert env.run(act.drop_replicas, repl(mode="global-table")) == 1
    assert clients.calls[-1] == {"TableName": "orders", "ReplicaUpdates": [{"Delete": {"RegionName": EU}}]}


def test_global_table_replica_that_was_there_before_is_never_dropped(aws: AwsClients) -> None:
    """The home replica a cycle comes back to (the entity's, not made by this migration) survives a failed return."""
    make_table(aws, US, "orders", 1)
    make_table(aws, EU, "orders", 1)  # the entity's own replica in EU: handed over, no replica role
    clients = _GlobalTables(aws, existing=True)
    act, env = ReplicationActivities(clients), ActivityEnvironment()
    assert env.run(act.replicate_tables, repl(mode="global-table")).in_sync
    assert env.run(act.drop_replicas, repl(mode="global-table")) == 0
    assert clients.calls == [], "neither a Create nor a Delete of the existing replica"
    assert TAG_ROLE not in _table_tags(aws, EU, "orders")


# ---- SQS ----------------------------------------------------------------------------------------------


def _queue(aws: AwsClients, region: str, name: str, n: int, tags: dict | None = None) -> str:
    """A queue with `n` messages, handed to entity "shop" unless `tags` say otherwise."""
    sqs = aws("sqs", region)
    fifo = name.endswith(".fifo")
    attrs = {"FifoQueue": "true"} if fifo else {}
    tags = {t["Key"]: t["Value"] for t in ownership_tags("shop")} if tags is None else tags
    url = sqs.create_queue(QueueName=name, Attributes=attrs, **({"tags": tags} if tags else {}))["QueueUrl"]
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
    assert tags[TAG_MANAGED] == "shadowing" and tags[TAG_ENTITY] == "shop" and tags[TAG_ROLE] == "replica"
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


def _queue_tags(aws: AwsClients, region: str, name: str) -> dict[str, str]:
    sqs = aws("sqs", region)
    return dict(sqs.list_queue_tags(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"]).get("Tags", {}))


FOREIGN_QUEUE = {name: {t["Key"]: t["Value"] for t in tags} for name, tags in FOREIGN.items()}


@pytest.mark.parametrize("tags", FOREIGN_QUEUE.values(), ids=FOREIGN_QUEUE.keys())
def test_a_source_queue_not_the_entitys_is_refused_and_keeps_its_messages(aws: AwsClients, tags: dict) -> None:
    """A spec naming another team's queue: NotOwned naming sqs_queues; nothing received, nothing created."""
    _queue(aws, US, "jobs", 3, tags=tags)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(ReplicationActivities(aws).forward_queue, repl((), queues=("jobs",)))
    assert err.value.type == "NotOwned" and "sqs_queues" in str(err.value) and "'jobs' in us-east-1" in str(err.value)
    assert aws("sqs", EU).list_queues().get("QueueUrls", []) == []
    assert len(_drain(aws, US, "jobs")) == 3, "every message still visible: none was received"


@pytest.mark.parametrize("tags", FOREIGN_QUEUE.values(), ids=FOREIGN_QUEUE.keys())
def test_an_existing_target_queue_not_the_entitys_gets_no_message(aws: AwsClients, tags: dict) -> None:
    """Another team's same-named queue in the target region: refused before the first message moves."""
    _queue(aws, US, "jobs", 3)
    _queue(aws, US, "audit", 2)
    _queue(aws, EU, "audit", 0, tags=tags)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(ReplicationActivities(aws).forward_queue, repl((), queues=("jobs", "audit")))
    assert err.value.type == "NotOwned" and "'audit' in eu-west-1" in str(err.value)
    assert _drain(aws, EU, "audit") == [] and aws("sqs", EU).list_queues()["QueueUrls"][0].endswith("/audit")
    assert len(_drain(aws, US, "jobs")) == 3 and len(_drain(aws, US, "audit")) == 2


def test_an_empty_home_queue_a_return_forwards_to_is_never_dropped(aws: AwsClients) -> None:
    """home -> eu -> home: the compensation of the return keeps the entity's own (empty) home queue."""
    _queue(aws, US, "jobs", 2)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    assert env.run(act.forward_queue, repl((), queues=("jobs",))).created_queues == ("jobs",)
    assert env.run(act.forward_queue, repl((), src=EU, dst=US, queues=("jobs",))).moved == {"jobs": 2}
    _drain(aws, US, "jobs")
    assert env.run(act.drop_replicas, repl((), src=EU, dst=US, queues=("jobs",))) == 0
    assert _queue_tags(aws, US, "jobs") == {TAG_MANAGED: "shadowing", TAG_ENTITY: "shop"}
    assert env.run(act.drop_replicas, repl((), queues=("jobs",))) == 1, "the eu replica queue may go"


# ---- RDS ----------------------------------------------------------------------------------------------


def _db(aws: AwsClients, region: str = US, tags: list | None = None) -> str:
    """A DB instance `shopdb`, handed to entity "shop" unless `tags` say otherwise."""
    db = aws("rds", region).create_db_instance(
        DBInstanceIdentifier="shopdb", Engine="postgres", DBInstanceClass="db.t3.micro",
        MasterUsername="admin", MasterUserPassword="secret123", AllocatedStorage=20,
        Tags=ownership_tags("shop") if tags is None else tags,
    )  # fmt: skip
    return str(db["DBInstance"]["DBInstanceArn"])


@pytest.fixture
def rds(aws: AwsClients, monkeypatch: pytest.MonkeyPatch) -> AwsClients:
    """moto 5.2 as AWS behaves: a cross-region replica is removed from its primary by ARN too (moto records it by
    ARN and removes it by identifier: ValueError), and promotion clears ReadReplicaSourceDBInstanceIdentifier."""
    from moto.rds.models import DBInstance, RDSBackend

    def remove_replica(self: Any, replica: Any) -> None:
        for ref in (replica.db_instance_identifier, replica.db_instance_arn):
            if ref in self.replicas:
                self.replicas.remove(ref)

    promote = RDSBackend.promote_read_replica

    def promote_read_replica(self: Any, db_kwargs: dict[str, Any]) -> Any:
        database = promote(self, db_kwargs)
        database.source_db_instance_identifier = None
        return database

    monkeypatch.setattr(DBInstance, "remove_replica", remove_replica)
    monkeypatch.setattr(RDSBackend, "promote_read_replica", promote_read_replica)
    return aws


def _instance(aws: AwsClients, region: str = EU) -> dict[str, Any] | None:
    found = aws("rds", region).describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": ["shopdb"]}])
    return found["DBInstances"][0] if found["DBInstances"] else None


def _db_tags(aws: AwsClients, region: str = EU) -> dict[str, str]:
    db = _instance(aws, region)
    assert db is not None
    return {t["Key"]: t["Value"] for t in db.get("TagList", [])}


def _snapshots(aws: AwsClients, region: str = EU) -> dict[str, str]:
    """Manual snapshots (moto also makes an automated one per instance)."""
    found = aws("rds", region).describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return {s["DBSnapshotIdentifier"]: s["Status"] for s in found}


RDS = repl((), rds_instance="shopdb")


def test_rds_replica_is_made_once_and_dropped_only_after_its_final_snapshot(rds: AwsClients) -> None:
    """A tagged cross-region replica of the source is made once; the compensation snapshots it, then deletes it."""
    _db(rds)
    act, env = ReplicationActivities(rds), ActivityEnvironment()
    made = env.run(act.create_read_replica, RDS)
    again = env.run(act.create_read_replica, RDS)
    assert made.created and not again.created and made.region == EU and made.db_instance_arn.split(":")[3] == EU
    replica = _instance(rds)
    assert replica is not None and replica["ReadReplicaSourceDBInstanceIdentifier"].endswith(":db:shopdb")
    assert _db_tags(rds)[TAG_ROLE] == "replica" and _db_tags(rds)[TAG_ENTITY] == "shop"
    assert env.run(act.drop_replicas, RDS) == 1
    assert _instance(rds) is None and _snapshots(rds) == {final_snapshot_id(replica): "available"}
    gone = env.run(act.delete_read_replica, RDS)
    assert not gone.deleted and gone.status == "absent"
    assert _instance(rds, US) is not None, "the source is never touched"


class _Rds:
    """EU RDS client whose snapshots report `snapshot_status`; records what exists when the delete is called."""

    def __init__(self, aws: AwsClients, snapshot_status: str = "available") -> None:
        self._aws, self.snapshot_status, self.at_delete = aws, snapshot_status, []

    def __call__(self, service: str, region: str) -> Any:
        client, outer = self._aws(service, region), self
        if (service, region) != ("rds", EU):
            return client

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def describe_db_snapshots(self, **kw: Any) -> Any:
                out = client.describe_db_snapshots(**kw)
                for snap in out["DBSnapshots"]:
                    snap["Status"] = outer.snapshot_status
                return out

            def create_db_snapshot(self, **kw: Any) -> Any:
                out = client.create_db_snapshot(**kw)
                out["DBSnapshot"]["Status"] = outer.snapshot_status
                return out

            def delete_db_instance(self, **kw: Any) -> Any:
                outer.at_delete.append((kw, _snapshots(outer._aws)))
                return client.delete_db_instance(**kw)

        return Proxy()


def test_rds_delete_waits_for_the_final_snapshot_and_a_retry_reuses_it(rds: AwsClients) -> None:
    """While the final snapshot is being made the step fails retryably and deletes nothing; the retry finds the
    same snapshot (deterministic id) and deletes the replica only then."""
    _db(rds)
    env = ActivityEnvironment()
    env.run(ReplicationActivities(rds).create_read_replica, RDS)
    replica = _instance(rds)
    assert replica is not None
    clients = _Rds(rds, snapshot_status="creating")
    for _ in range(2):
        with pytest.raises(ApplicationError, match="final snapshot") as err:
            env.run(ReplicationActivities(clients).delete_read_replica, RDS)
        assert err.value.type == "FinalSnapshotPending" and not err.value.non_retryable
    assert clients.at_delete == [] and _instance(rds) is not None
    clients.snapshot_status = "available"
    assert env.run(ReplicationActivities(clients).delete_read_replica, RDS).deleted
    [(_, snapshots)] = clients.at_delete
    assert snapshots == {final_snapshot_id(replica): "available"}, "one snapshot, made before the delete"
    assert _instance(rds) is None


def test_rds_promoted_replica_is_never_deleted(rds: AwsClients) -> None:
    """After promotion (tagged promoted) the compensation keeps the new primary; promote is idempotent."""
    _db(rds)
    act, env = ReplicationActivities(rds), ActivityEnvironment()
    env.run(act.create_read_replica, RDS)
    assert env.run(act.promote_read_replica, RDS).promoted
    assert env.run(act.promote_read_replica, RDS).promoted
    assert TAG_PROMOTED in _db_tags(rds)
    kept = env.run(act.delete_read_replica, RDS)
    assert not kept.deleted and "promoted" in kept.status
    assert env.run(act.drop_replicas, RDS) == 0 and _instance(rds) is not None and _snapshots(rds) == {}


def test_rds_crash_between_promote_and_tag_leaves_the_primary(rds: AwsClients) -> None:
    """A replica promoted but never tagged (the old order's crash window) is a primary: the compensation keeps it."""
    _db(rds)
    act, env = ReplicationActivities(rds), ActivityEnvironment()
    env.run(act.create_read_replica, RDS)
    rds("rds", EU).promote_read_replica(DBInstanceIdentifier="shopdb")  # ... and the worker died here
    kept = env.run(act.delete_read_replica, RDS)
    assert not kept.deleted and "a primary is never deleted" in kept.status
    assert env.run(act.drop_replicas, RDS) == 0
    assert _instance(rds) is not None and _instance(rds)["DBInstanceStatus"] == "available"  # type: ignore[index]


def test_rds_promote_tags_before_it_promotes(rds: AwsClients) -> None:
    """The promoted marker is on the replica when promote is called, so a crash right there deletes nothing."""
    _db(rds)
    env = ActivityEnvironment()
    env.run(ReplicationActivities(rds).create_read_replica, RDS)
    seen: list[dict[str, str]] = []

    def crashing(service: str, region: str) -> Any:
        client = rds(service, region)
        if (service, region) != ("rds", EU):
            return client

        class Proxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def promote_read_replica(self, **kw: Any) -> Any:
                seen.append(_db_tags(rds))
                raise RuntimeError("worker died")

        return Proxy()

    with pytest.raises(RuntimeError, match="worker died"):
        env.run(ReplicationActivities(crashing).promote_read_replica, RDS)
    assert seen and seen[0].get(TAG_PROMOTED) and seen[0][TAG_ROLE] == "replica"
    kept = env.run(ReplicationActivities(rds).delete_read_replica, RDS)
    assert not kept.deleted and "promoted" in kept.status and _instance(rds) is not None
    assert env.run(ReplicationActivities(rds).promote_read_replica, RDS).promoted, "the retry promotes it"


@pytest.mark.parametrize("tags", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_source_db_not_the_entitys_is_never_replicated(rds: AwsClients, tags: list) -> None:
    """A spec naming another team's DB: NotOwned naming rds_instance, and no replica anywhere."""
    _db(rds, tags=tags)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(ReplicationActivities(rds).create_read_replica, RDS)
    assert err.value.type == "NotOwned" and err.value.non_retryable
    assert "rds_instance" in str(err.value) and "'shopdb' in us-east-1" in str(err.value)
    assert _instance(rds) is None


@pytest.mark.parametrize("tags", FOREIGN.values(), ids=FOREIGN.keys())
def test_an_existing_target_db_not_the_entitys_is_refused_and_kept(rds: AwsClients, tags: list) -> None:
    """Another team's same-named DB in the target region: refused (NotOwned), never promoted, never deleted."""
    _db(rds)
    _db(rds, EU, tags=tags)
    act, env = ReplicationActivities(rds), ActivityEnvironment()
    for activity_fn in (act.create_read_replica, act.promote_read_replica):
        with pytest.raises(ApplicationError) as err:
            env.run(activity_fn, RDS)
        assert err.value.type == "NotOwned" and "'shopdb' in eu-west-1" in str(err.value)
    assert env.run(act.delete_read_replica, RDS).status == "kept: not the entity's"
    assert _instance(rds) is not None and _snapshots(rds) == {}


def test_the_home_db_a_return_meets_is_neither_replaced_nor_deleted(rds: AwsClients) -> None:
    """The entity's own primary in the target region (home, on a cycle's return) is refused as a replica target
    and survives the compensation: only a replica the product made is ever deleted."""
    _db(rds)
    _db(rds, EU)  # the entity's primary in EU, handed over (managed-by + entity, no replica role)
    act, env = ReplicationActivities(rds), ActivityEnvironment()
    for activity_fn in (act.create_read_replica, act.promote_read_replica):
        with pytest.raises(ApplicationError, match="rds_instance") as err:
            env.run(activity_fn, RDS)
        assert err.value.non_retryable
    assert env.run(act.drop_replicas, RDS) == 0
    assert _instance(rds) is not None and _snapshots(rds) == {}
