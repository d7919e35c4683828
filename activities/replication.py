"""The entity's data in the target region: DynamoDB tables, an RDS read replica, SQS messages.

DynamoDB has two paths (`ReplicationInput.mode`):

* ``copy`` (default; the only one moto can run, since moto ignores global-table replicas): `replicate_tables`
  makes sure the source table has a NEW_AND_OLD_IMAGES stream, records the stream position *before* it scans,
  copies every item, and returns that position as the checkpoint. `catch_up` replays the stream from the
  checkpoint into the target, so writes made during or after the scan are not lost, and returns the next
  checkpoint. Replaying from any earlier position converges to the same state, so a re-run is harmless.
* ``global-table`` (real AWS): `update_table(ReplicaUpdates=[Create])` on the source and a wait for the replica
  to be ACTIVE. moto accepts nothing of it beyond the API call, so tests drive it through a fake client.

Directions: source -> target (`catch_up`) until the switch; both ways (`replicate_both_ways`: one pass each way,
the backward one from `check_sync`'s `reverse_checkpoint`) from the first weight change until the old fleet is
retired, since cached DNS answers keep some clients writing to the old fleet during the drain; the workflow stops
calling it at retirement or rollback and `drop_replicas` cleans up.

Conflict rule, the one rule for every write replayed in either direction:
  * Writers may give items a version ``_v`` (number, +1 per write), a hybrid timestamp ``_ts`` (ms) and the
    region they wrote in, ``_r``. A replayed write wins when its ``(_v, _ts, _r)`` is greater than the stored
    item's, compared in that order (``_r`` as a string: of two writes with equal ``_v`` and ``_ts``, the one from
    the region named later alphabetically wins, on both sides alike). A versioned write beats an unversioned item.
  * Unversioned items (no ``_v``) are last-writer-wins on the stream record's ApproximateCreationDateTime, which
    the replica stores in ``_ts`` (so ``_ts`` on an unversioned item is replication metadata, and the digests
    ignore it). Under two-way writes that is the replication time, not the write's: give items ``_v`` there.
  * A REMOVE wins when the stored item is not newer than the deleted image (or than the delete's time,
    unversioned); an absent item always takes a replayed put.
  * Each write is a conditional put/delete (`attribute_not_exists(<hash key>) OR #v < :v OR (#v = :v AND #ts <
    :ts) ...`), so the rule also holds against clients writing the target at the same time.
  * Conflict: a key whose newest replayed record of a pass lost (an older record of a key that a later one
    supersedes is a replay, not a conflict). Each is counted (`ReplicationStatus.conflicts`), logged as a warning
    with table, key digest and both versions ("v=3 ts=1700000000123 r=eu-west-1"), and reported up to
    `CONFLICT_REPORT_CAP`. Writers must keep ``(_v, _ts, _r)`` unique per item; an exact tie without ``_r`` keeps
    each side's own item and `check_sync` reports the difference.
  * Echo: what one pass writes appears in the other side's stream. `replicate_both_ways` skips a put whose image
    carries ``_r`` = the region it would be written into (that side wrote it); deletes and records without ``_r``
    are replayed, and the rule above turns an echo into "already there" (it costs calls, never a write).
  So no acknowledged write is lost: every record reaches the other side and only a greater version replaces it.

Final sync check (`check_sync`): a fence (the source streams' ends when the check starts), a catch-up pass, then
a comparison by item digest:
  * ``verify="changed"``: the keys with a source record between `verified` (the previous check's fence) and the
    fence, read from the stream and fetched with BatchGetItem on both sides: the check costs the changes since
    the last verified fence, not the table. Finding the streams' ends reads from the positions given
    (`checkpoint`, `verified`, `reverse_checkpoint`), so those too cost what was written since.
  * ``verify="full-scan"``, and ``"changed"`` without a verified fence: both tables scanned whole.
  * A key whose sides differ passes when the target holds its newest image at the fence (the source moved on; the
    next check covers that), else it is rechecked after another catch-up pass, `recheck_rounds` times.
  Not in sync ("Data synchronization failed") means the bound cannot be met: keys still differ or the lag is
  over `max_lag_s`. Global-table mode has no fence: a full scan with the same rechecks.

RDS: a cross-region read replica (`create_read_replica`), promoted at cutover, deleted as compensation while it
is still a replica. SQS: `forward_queue` moves messages at cutover (and back, as compensation).

Ownership (`activities/ownership.py`), the rule every activity here follows:

* Touch: before the first read or change of a table, queue or DB instance (a stream enabled, a scan, a receive, a
  replica made), in either region, the activity proves it is the entity's: it carries `shadowing:managed-by =
  shadowing` and `shadowing:entity = <ReplicationInput.entity_id>`. A source that is not, or a same-named table,
  queue or DB already in the target region that is not, is refused with a non-retryable `NotOwned` naming the spec
  field (`dynamodb_tables`, `sqs_queues`, `rds_instance`), before anything changed. An existing target that is
  the entity's is written into: it is the entity's own data store, e.g. its home table when a follow-the-sun cycle
  (home -> eu -> us -> home) comes back.
* Delete: what the product creates as a copy also carries `shadowing:role = replica`. A compensation
  (`drop_replicas`, `delete_read_replica`) deletes only a resource with all three tags: never a source, never what
  an operator handed over (managed-by + entity, no role), so the home table, queue or DB that a cycle comes back
  to survives a failed return. A table or queue the product made on an earlier day is a replica too: dropping it
  while the source holds the data loses nothing.
* RDS in addition: a replica is tagged `shadowing:promoted` *before* `promote_read_replica` is called, and it is
  deleted only while `ReadReplicaSourceDBInstanceIdentifier` is still set (so it is a replica, never a primary)
  and after a final snapshot (`final_snapshot_id`) is available. A crash between tagging and promoting leaves a
  marked replica that the compensation keeps (a cost, not a loss).

Conflicting keys are reported as `key_digest` (a sha256 prefix of the key), never the key: the report is logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import TAG_ROLE, ClientFactory
from activities.ownership import not_owned, owned_by, ownership_tags, require_owned, tag_map
from activities.streams import (
    TS,
    R,
    V,
    changed_images,
    item_digest,
    key_json,
    later,
    record_ms,
    records,
    shard_end,
    shards,
    short_digest,
    version_label,
)
from shadowing.models import Frozen, Region


class ShardPosition(Frozen):
    """Where catch-up resumes in one stream shard: after `sequence_number`, or at TRIM_HORIZON when None."""

    shard_id: str
    sequence_number: str | None = None


class TableCheckpoint(Frozen):
    """A table's DynamoDB Streams position: every record up to it is in the target (or superseded there)."""

    table: str
    stream_arn: str
    shards: tuple[ShardPosition, ...] = ()


class ReplicationConflict(Frozen):
    """One write the conflict rule rejected: `key` is `key_digest` of the item key (sha256: + 16 hex), never the
    key itself; `winner` the side that kept its item."""

    table: str
    key: str
    winner: Literal["source", "target"] = "target"
    winner_version: str = Field(default="", description='e.g. "v=3 ts=1700000000123 r=eu-west-1" or "absent"')
    loser_version: str = Field(default="", description='the replayed write that lost, e.g. "unversioned ts=..."')


class ReplicationInput(Frozen):
    """Replication activities' input. `checkpoint` comes from the previous `replicate_tables` / `catch_up`."""

    entity_id: str
    tables: tuple[str, ...]
    source_region: Region
    target_region: Region
    checkpoint: tuple[TableCheckpoint, ...] = ()
    max_lag_s: float = Field(default=5.0, ge=0.0, le=3600, description="check_sync: in sync only when lag_s <= this")
    max_records: int = Field(default=10000, ge=1, description="catch-up: stream records applied per table and pass")
    mode: Literal["copy", "global-table"] = Field(
        default="copy", description="copy: scan + Streams catch-up (moto too); global-table: DynamoDB replicas (AWS)"
    )
    timeout_s: float = Field(
        default=1800.0, gt=0, le=86400, description="global-table / RDS: how long to wait for ACTIVE"
    )
    queues: tuple[str, ...] = ()
    visibility_timeout_s: int = Field(default=30, ge=0, le=43200, description="forward_queue: visibility timeout")
    rds_instance: str | None = Field(default=None, description="source RDS instance id or ARN (source_region)")
    verify: Literal["changed", "full-scan"] = Field(
        default="changed", description="check_sync: compare the keys changed since `verified`, or both tables whole"
    )
    verified: tuple[TableCheckpoint, ...] = Field(
        default=(), description="check_sync: the source stream position of the last verified fence"
    )
    reverse_checkpoint: tuple[TableCheckpoint, ...] = Field(
        default=(), description="target tables' stream positions: where target -> source replication resumes"
    )
    recheck_rounds: int = Field(
        default=3, ge=0, le=10, description="check_sync: catch-up passes that may reconcile a differing key"
    )


class ReplicationStatus(Frozen):
    """What a replication pass or check did. `checkpoint` is where the next catch-up resumes."""

    in_sync: bool
    items: int = 0
    detail: str = ""
    created_tables: tuple[str, ...] = ()
    checkpoint: tuple[TableCheckpoint, ...] = ()
    applied: int = Field(default=0, description="stream records written to the target in this pass")
    conflicts: int = Field(default=0, description="keys whose newest replayed write lost to a newer target item")
    conflict_report: tuple[ReplicationConflict, ...] = Field(default=(), description="the first conflicts (capped)")
    lag_s: float = Field(default=0.0, description="age of the oldest record not yet applied; 0 when caught up")
    pending: int = Field(default=0, description="stream records not yet applied")
    skipped_echoes: int = Field(default=0, description="replicate_both_ways: records the other pass wrote (`_r`)")
    verified: tuple[TableCheckpoint, ...] = Field(
        default=(), description="check_sync: the fence this check verified (set when in_sync, else the given one)"
    )
    reverse_checkpoint: tuple[TableCheckpoint, ...] = Field(
        default=(), description="check_sync: target streams' ends at the fence, where target -> source starts"
    )
    mode: str = Field(default="", description='check_sync: "changed" or "full-scan"')
    changed: int = Field(default=0, description="check_sync: keys changed between `verified` and the fence")
    checked: int = Field(default=0, description="check_sync: keys compared")
    check_s: float = Field(default=0.0, description="check_sync: seconds the check took")


class TwoWayStatus(Frozen):
    """`replicate_both_ways`: the source -> target pass and the target -> source pass, each with its checkpoint."""

    forward: ReplicationStatus
    back: ReplicationStatus


class QueueForwardResult(Frozen):
    """`forward_queue`: messages moved per queue name, and what a retry skipped as already sent."""

    moved: dict[str, int] = {}
    skipped_duplicates: int = 0
    created_queues: tuple[str, ...] = ()
    in_flight: int = Field(default=0, description="source messages held by consumers when forwarding stopped")


class ReadReplicaResult(Frozen):
    """`create_read_replica` / `promote_read_replica` / `delete_read_replica`."""

    db_instance_identifier: str = ""
    db_instance_arn: str = ""
    region: str = ""
    created: bool = False
    promoted: bool = False
    deleted: bool = False
    status: str = ""


#: `shadowing:role` of what the product creates as a copy: the only kind of resource a compensation deletes.
ROLE_REPLICA = "replica"
#: Set on an RDS replica before it is promoted: from then on no compensation deletes it.
TAG_PROMOTED = "shadowing:promoted"
CONFLICT_REPORT_CAP = 50
#: Stream ids a standard-queue forward remembers in its heartbeat (at-least-once dedupe across retries).
SENT_IDS_CAP = 10000
SOURCE_ID_ATTR = "shadowing-source-id"


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


def _replica_tags(entity_id: str) -> list[dict[str, str]]:
    return [*ownership_tags(entity_id), {"Key": TAG_ROLE, "Value": ROLE_REPLICA}]


def _our_replica(tags: dict[str, str], entity_id: str) -> bool:
    """The product made it as a copy for this entity: the only thing a compensation may delete."""
    return owned_by(tags, entity_id) and tags.get(TAG_ROLE) == ROLE_REPLICA


def key_digest(key: dict[str, Any]) -> str:
    """What reports and logs show of an item key: `sha256:` + 16 hex digits of its canonical JSON.

    Enough to match a key an operator already knows (`key_digest({"pk": {"S": "a"}})`), without the key itself.
    """
    return short_digest(key_json(key))


class ReplicationActivities:
    def __init__(self, clients: ClientFactory, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clients = clients
        self._now = now

    # ---- DynamoDB ---------------------------------------------------------------------------------------

    @activity.defn(name="replicate_tables")
    def replicate_tables(self, req: ReplicationInput) -> ReplicationStatus:
        """Initial copy: ownership proved, stream on, position recorded, target created (tagged), items copied.

        Returns the checkpoint `catch_up` starts from. Resumes per table from heartbeat details.
        """
        if req.source_region == req.target_region or not req.tables:
            return ReplicationStatus(in_sync=True, detail="nothing to replicate")
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        _require_tables(src, dst, req)
        if req.mode == "global-table":
            return self._global_tables(req, src, dst)
        streams = self._clients("dynamodbstreams", req.source_region)
        done = _resume()
        for table in req.tables:
            if table in done["checkpoints"]:
                continue
            checkpoint = _stream_position(src, streams, table)
            if _ensure_table(src, dst, table, req.entity_id):
                done["created"].append(table)
            done["copied"] += _copy(src, dst, table, done)
            done["checkpoints"][table] = checkpoint.model_dump()
            activity.heartbeat(done)
        checkpoints = tuple(TableCheckpoint.model_validate(done["checkpoints"][t]) for t in req.tables)
        return ReplicationStatus(
            in_sync=False,
            items=done["copied"],
            created_tables=tuple(done["created"]),
            checkpoint=checkpoints,
            detail=f"copied {done['copied']} items; catch_up replays writes since the checkpoint",
        )

    @activity.defn(name="catch_up")
    def catch_up(self, req: ReplicationInput) -> ReplicationStatus:
        """Replays source stream records from `req.checkpoint` into the target under the conflict rule.

        Idempotent: a re-run from the same checkpoint applies nothing new. `in_sync` means nothing is pending.
        """
        if req.source_region == req.target_region or not req.tables:
            return ReplicationStatus(in_sync=True, detail="nothing to replicate")
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        _require_tables(src, dst, req)
        restored = _restore_replicas(src, dst, req)
        status = self._catch_up(req)
        return status.model_copy(update={"detail": "; ".join([*restored, status.detail])}) if restored else status

    @activity.defn(name="check_sync")
    def check_sync(self, req: ReplicationInput) -> ReplicationStatus:
        """Final sync check: fence, catch-up, compare (what changed, or everything), recheck, lag.

        The fence is the source streams' end when the check starts. After a catch-up pass from `req.checkpoint`,
        `verify="changed"` compares the keys with a source record between `req.verified` and the fence (read from
        the stream, fetched with BatchGetItem on both sides: the cost follows the changes, not the table);
        `"full-scan"`, or `"changed"` without a verified fence for a table, scans both tables whole. A key whose
        sides differ passes when the target holds the key's newest image at the fence (the source moved on after
        it) and is otherwise rechecked after another catch-up pass, up to `req.recheck_rounds`. `in_sync` = no key
        still differs and `lag_s <= req.max_lag_s`; `detail` says what is off, e.g. "table orders: 3 items differ;
        lag 12.0s > 5.0s". In sync, `verified` is the fence: the next check compares only what changed after it.
        `reverse_checkpoint` holds the target streams' ends at the fence (a stream is enabled on a target table
        without one), where `replicate_both_ways` starts; pass the previous one back in `req.reverse_checkpoint`
        (and `req.checkpoint`) so that finding the streams' ends reads only what was written since.

        Global-table mode has no fence of its own (DynamoDB replicates): both tables are scanned whole, rechecked
        the same way, and no stream position is returned.
        """
        if req.source_region == req.target_region or not req.tables:
            return ReplicationStatus(in_sync=True, detail="nothing to replicate")
        started = time.monotonic()
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        _require_tables(src, dst, req)
        restored = _restore_replicas(src, dst, req)
        check = _SyncCheck(src, dst, self._clients("dynamodbstreams", req.source_region), req)
        check.notes += restored
        reverse = self._target_ends(req, check.present) if req.mode == "copy" else ()
        caught = self._catch_up(req) if req.checkpoint else ReplicationStatus(in_sync=True)
        differing = check.first_pass()
        for _ in range(req.recheck_rounds):
            if not any(differing.values()):
                break
            if caught.checkpoint:
                caught = _merge(caught, self._catch_up(req.model_copy(update={"checkpoint": caught.checkpoint})))
            differing = {table: check.compare(table, keys) for table, keys in differing.items()}
            activity.heartbeat({"rechecking": sum(map(len, differing.values()))})
        problems = check.problems + [f"table {t}: {len(keys)} items differ" for t, keys in differing.items() if keys]
        if caught.lag_s > req.max_lag_s:
            problems.append(f"lag {caught.lag_s:.1f}s > {req.max_lag_s:.1f}s ({caught.pending} records pending)")
        equal = f"{check.checked} items equal in both regions; lag {caught.lag_s:.1f}s"
        detail = "; ".join(problems + check.notes) if problems else "; ".join([equal, *check.notes])
        return caught.model_copy(
            update={
                "in_sync": not problems, "items": check.checked, "detail": detail, "mode": check.mode,
                "verified": check.fence if not problems else req.verified, "reverse_checkpoint": reverse,
                "changed": check.changed, "checked": check.checked, "check_s": round(time.monotonic() - started, 3),
            }
        )  # fmt: skip

    def _target_ends(self, req: ReplicationInput, tables: list[str]) -> tuple[TableCheckpoint, ...]:
        """The target tables' stream ends now (streams enabled where off), from `req.reverse_checkpoint` onwards."""
        dst, streams = self._clients("dynamodb", req.target_region), self._clients("dynamodbstreams", req.target_region)
        known = {c.table: c for c in req.reverse_checkpoint}
        return tuple(_stream_position(dst, streams, table, known.get(table)) for table in tables)

    @activity.defn(name="replicate_both_ways")
    def replicate_both_ways(self, req: ReplicationInput) -> TwoWayStatus:
        """The two-way window (from the first weight change until the old fleet is retired): one catch-up pass
        source -> target from `req.checkpoint`, then one target -> source from `req.reverse_checkpoint`.

        Echoes are skipped: the forward pass passes over records stamped `_r` = target region (the backward pass
        wrote them into the source), the backward pass those stamped `_r` = source region; unstamped records are
        applied (the conflict rule makes an echo harmless; it costs calls). Both tables must be the entity's.
        Replaying from the same checkpoints converges, so a retry is harmless.
        """
        if req.source_region == req.target_region or not req.tables:
            idle = ReplicationStatus(in_sync=True, detail="nothing to replicate")
            return TwoWayStatus(forward=idle, back=idle)
        if not req.reverse_checkpoint:
            raise _invalid(
                "reverse_checkpoint: replicate_both_ways needs the target tables' stream position "
                "(check_sync returns it as reverse_checkpoint)"
            )
        back_req = req.model_copy(
            update={
                "source_region": req.target_region, "target_region": req.source_region,
                "checkpoint": req.reverse_checkpoint,
            }
        )  # fmt: skip
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        _require_tables(src, dst, req)
        _require_tables(dst, src, back_req)
        forward = self._catch_up(req, skip_region=req.target_region)
        activity.heartbeat({"forward": forward.applied})
        back = self._catch_up(back_req, skip_region=req.source_region)
        return TwoWayStatus(forward=forward, back=back)

    @activity.defn(name="drop_replicas")
    def drop_replicas(self, req: ReplicationInput) -> int:
        """Compensation: deletes the replicas this product created in the target region; returns how many.

        Tables, the RDS read replica (while still a replica, after its final snapshot) and empty queues go only
        when tagged as the entity's replica (managed-by, entity, role=replica): a source, what an operator handed
        over, or anything someone else made is never touched.
        """
        if req.source_region == req.target_region:
            return 0
        dropped = self._drop_tables(req)
        if req.rds_instance and self._delete_replica(req).deleted:
            dropped += 1
        sqs = self._clients("sqs", req.target_region)
        for name in req.queues:
            dropped += _delete_queue_if_ours_and_empty(sqs, name, req.entity_id)
        return dropped

    def _drop_tables(self, req: ReplicationInput) -> int:
        src, dst = self._clients("dynamodb", req.source_region), self._clients("dynamodb", req.target_region)
        dropped = 0
        for table in req.tables:
            if req.mode == "global-table":
                dropped += _drop_global_replica(src, dst, table, req)
                continue
            try:
                arn = dst.describe_table(TableName=table)["Table"]["TableArn"]
                if _our_replica(_table_tags(dst, arn), req.entity_id):
                    dst.delete_table(TableName=table)
                    dropped += 1
            except dst.exceptions.ResourceNotFoundException:
                pass
        return dropped

    def _global_tables(self, req: ReplicationInput, src: Any, dst: Any) -> ReplicationStatus:
        """Replicas asked for, waited for, then tagged as ours (role=replica) in the target region.

        The tables whose replica this activity asked for ride in the heartbeat, so a retry still tags them; a
        replica that was there before is never tagged, so `drop_replicas` leaves it (e.g. the home table's).
        """
        deadline = time.monotonic() + req.timeout_s
        asked = _resume_asked()
        for table in req.tables:
            _ensure_stream(src, table)
            if _replica_status(src, table, req.target_region) is None:
                src.update_table(TableName=table, ReplicaUpdates=[{"Create": {"RegionName": req.target_region}}])
                asked.append(table)
                activity.heartbeat({"asked": asked})
            while (status := _replica_status(src, table, req.target_region)) != "ACTIVE":
                activity.heartbeat({"asked": asked, "waiting": f"{table}: replica {status}"})
                if time.monotonic() > deadline:
                    raise ApplicationError(
                        f"global table {table}: replica in {req.target_region} not ACTIVE after {req.timeout_s}s "
                        f"(status {status})",
                        type="ReplicaNotActive",
                    )
                time.sleep(5)
            if table in asked:
                arn = dst.describe_table(TableName=table)["Table"]["TableArn"]
                dst.tag_resource(ResourceArn=arn, Tags=_replica_tags(req.entity_id))
        return ReplicationStatus(in_sync=True, detail=f"global-table replicas ACTIVE in {req.target_region}")

    def _catch_up(self, req: ReplicationInput, skip_region: str | None = None) -> ReplicationStatus:
        src = self._clients("dynamodb", req.source_region)
        dst = self._clients("dynamodb", req.target_region)
        streams = self._clients("dynamodbstreams", req.source_region)
        given = {c.table: c for c in req.checkpoint}
        now_ms = self._now().timestamp() * 1000
        applied, pending, skipped, oldest_ms = 0, 0, 0, None
        conflicts: list[ReplicationConflict] = []
        checkpoints = []
        for table in req.tables:
            pass_ = _TablePass(src, dst, streams, table, given.get(table), req.max_records, skip_region)
            pass_.run()
            applied += pass_.applied
            skipped += pass_.skipped
            pending += pass_.pending
            if pass_.oldest_pending_ms is not None:
                oldest_ms = min(oldest_ms or pass_.oldest_pending_ms, pass_.oldest_pending_ms)
            conflicts += pass_.conflicts()
            checkpoints.append(pass_.checkpoint())
            activity.heartbeat(applied)
        lag = max(0.0, (now_ms - oldest_ms) / 1000) if oldest_ms is not None else 0.0
        return ReplicationStatus(
            in_sync=pending == 0,
            items=applied,
            applied=applied,
            conflicts=len(conflicts),
            conflict_report=tuple(conflicts[:CONFLICT_REPORT_CAP]),
            checkpoint=tuple(checkpoints),
            lag_s=round(lag, 3),
            pending=pending,
            skipped_echoes=skipped,
            detail=f"applied {applied}, {len(conflicts)} conflicts kept the target's item, {pending} pending",
        )

    # ---- RDS --------------------------------------------------------------------------------------------

    @activity.defn(name="create_read_replica")
    def create_read_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        """A cross-region read replica of `req.rds_instance`, same identifier, tagged; waits for `available`.

        The source must be the entity's. Idempotent: our replica of this source is reused; a same-named instance
        that is not the entity's is refused (NotOwned), and one that is the entity's but not our replica of this
        source (a primary, e.g. the home DB a cycle comes back to) is refused too: it is never written over.
        """
        if not req.rds_instance or req.source_region == req.target_region:
            return ReadReplicaResult(status="no RDS instance to replicate")
        source = _source_db(self._clients("rds", req.source_region), req)
        rds = self._clients("rds", req.target_region)
        name = source["DBInstanceIdentifier"]
        existing = _describe_db(rds, name)
        if existing is None:
            rds.create_db_instance_read_replica(
                DBInstanceIdentifier=name,
                SourceDBInstanceIdentifier=source["DBInstanceArn"],
                DBInstanceClass=source["DBInstanceClass"],
                SourceRegion=req.source_region,
                Tags=_replica_tags(req.entity_id),
            )
        else:
            _require_replica_of(rds, existing, source, req)
        db = _wait_db_available(rds, name, req.timeout_s)
        return _replica_result(db, req.target_region, created=existing is None)

    @activity.defn(name="promote_read_replica")
    def promote_read_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        """Cutover: our replica becomes a stand-alone primary; idempotent.

        It is tagged `shadowing:promoted` before the promote call, so that no crash can leave a primary that a
        compensation would take for a replica.
        """
        if not req.rds_instance or req.source_region == req.target_region:
            return ReadReplicaResult(status="no RDS instance to promote")
        rds = self._clients("rds", req.target_region)
        name = _db_name(req.rds_instance)
        db = _describe_db(rds, name)
        if db is None:
            raise _invalid(f"rds_instance: no read replica {name!r} in {req.target_region}")
        tags = _db_tags(rds, db)
        # create_read_replica let only our replica of the source stand here; a role tag is not required, so that a
        # replica made before roles were tagged can still be promoted (it is marked promoted first all the same)
        require_owned("rds_instance", f"DB instance {name!r} in {req.target_region}", tags, req.entity_id)
        if _still_replica(db):
            if TAG_PROMOTED not in tags:
                rds.add_tags_to_resource(ResourceName=db["DBInstanceArn"], Tags=[{"Key": TAG_PROMOTED, "Value": "1"}])
            if db.get("DBInstanceStatus") == "available":  # otherwise an earlier attempt's promotion is under way
                rds.promote_read_replica(DBInstanceIdentifier=name)
        elif TAG_PROMOTED not in tags:
            raise _invalid(f"rds_instance: DB instance {name!r} in {req.target_region} is not a read replica")
        db = _wait_db_available(rds, name, req.timeout_s)
        if _still_replica(db):  # it was busy (backing up, modifying) when asked, or RDS has not started yet
            raise ApplicationError(
                f"rds_instance: {name!r} is still a read replica; promoting again", type="NotPromoted"
            )
        return _replica_result(db, req.target_region, promoted=True)

    @activity.defn(name="delete_read_replica")
    def delete_read_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        """Compensation of `create_read_replica`: deletes our replica unless promotion began; idempotent."""
        if not req.rds_instance or req.source_region == req.target_region:
            return ReadReplicaResult(status="no RDS instance")
        return self._delete_replica(req)

    def _delete_replica(self, req: ReplicationInput) -> ReadReplicaResult:
        """Deletes only our unpromoted replica that is still a replica, and only once its final snapshot exists.

        AWS refuses `FinalDBSnapshotIdentifier` when deleting a read replica (`SkipFinalSnapshot` must be set for
        one), so the final snapshot is taken explicitly first; while it is being made the step fails retryably.
        """
        rds = self._clients("rds", req.target_region)
        name = _db_name(req.rds_instance or "")
        db = _describe_db(rds, name)
        if db is None:
            return ReadReplicaResult(db_instance_identifier=name, region=req.target_region, status="absent")
        if why := _keep_reason(_db_tags(rds, db), db, req.entity_id):
            return _replica_result(db, req.target_region, status=f"kept: {why}")
        if db.get("DBInstanceStatus") != "deleting":
            _require_final_snapshot(rds, db, req.entity_id)
            rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True, DeleteAutomatedBackups=False)
        return _replica_result(db, req.target_region, deleted=True, status="deleting")

    # ---- SQS --------------------------------------------------------------------------------------------

    @activity.defn(name="forward_queue")
    def forward_queue(self, req: ReplicationInput) -> QueueForwardResult:
        """Cutover: moves every visible message of each source queue to the same-named target queue.

        Every source queue, and every same-named queue already in the target region, must be the entity's
        (checked for all of them before the first message moves). The target queue is created when missing (FIFO
        like the source, tagged as our replica). A message is deleted from the source only after its send
        succeeded. FIFO sends carry MessageDeduplicationId = the source MessageId and the source MessageGroupId,
        so a retry within SQS's 5-minute window cannot duplicate. Standard queues are at-least-once: sent ids
        ride in the heartbeat details (a retry skips them) and every forwarded message carries the attribute
        `shadowing-source-id` for consumers to dedupe. Compensation: the same activity with the regions swapped.
        """
        if req.source_region == req.target_region or not req.queues:
            return QueueForwardResult()
        src, dst = self._clients("sqs", req.source_region), self._clients("sqs", req.target_region)
        urls = _require_queues(src, dst, req)
        sent: list[str] = list(_resume_ids())
        moved: dict[str, int] = {}
        created, skipped, in_flight = [], 0, 0
        for name, (url, target) in urls.items():
            attrs = src.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            if target is None:
                target = _create_queue(dst, name, attrs, req.entity_id)
                created.append(name)
            mover = _QueueMover(src, dst, url, target, attrs.get("FifoQueue") == "true", sent)
            moved[name], dup = mover.run(req.visibility_timeout_s)
            skipped += dup
            counts = src.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
            in_flight += int(counts["Attributes"].get("ApproximateNumberOfMessagesNotVisible", 0))
        return QueueForwardResult(
            moved=moved, skipped_duplicates=skipped, created_queues=tuple(created), in_flight=in_flight
        )


# ---- DynamoDB helpers ---------------------------------------------------------------------------------


def _require_tables(src: Any, dst: Any, req: ReplicationInput) -> None:
    """Fails before anything is read or changed when a source table is absent, not the entity's or its stream
    cannot carry images, or when a same-named table already in the target region is not the entity's."""
    source, target = req.source_region, req.target_region
    for table in req.tables:
        desc = _describe_table(src, table)
        if desc is None:
            raise _invalid(f"dynamodb_tables: DynamoDB table {table!r} does not exist in {source}")
        tags = _table_tags(src, desc["TableArn"])
        require_owned("dynamodb_tables", f"table {table!r} in {source}", tags, req.entity_id)
        spec = desc.get("StreamSpecification") or {}
        view = spec.get("StreamViewType")
        if spec.get("StreamEnabled") and view not in ("NEW_AND_OLD_IMAGES", "NEW_IMAGE"):
            raise _invalid(
                f"dynamodb_tables: the stream of {table!r} in {source} is {view}; replication needs its images"
            )
        _require_key_schema(desc, f"table {table!r} in {source}")
        if target in {r.get("RegionName") for r in desc.get("Replicas", [])}:
            continue  # the target holds a replica of this very (global) table: the entity's, as its source is
        existing = _describe_table(dst, table)
        if existing is not None and not owned_by(_table_tags(dst, existing["TableArn"]), req.entity_id):
            why = "it exists already; the product never writes into it"
            raise not_owned("dynamodb_tables", f"table {table!r} in {target}", req.entity_id, why)
        if existing is not None and _key_schema(existing) != _key_schema(desc):
            raise _invalid(
                f"dynamodb_tables: table {table!r} in {target} has the key {_key_schema(existing)}, the source "
                f"{_key_schema(desc)}; items cannot be replicated between them"
            )


def _key_schema(desc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, HASH|RANGE, S|N|B) of a table's key attributes."""
    types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}
    return [(k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?")) for k in desc["KeySchema"]]


def _require_key_schema(desc: dict[str, Any], what: str) -> None:
    """Keys are compared and reported as canonical JSON, and conditions name the hash key: string and number keys
    only (a binary key would fail halfway through a pass, after traffic may have moved)."""
    binary = [name for name, _, kind in _key_schema(desc) if kind not in ("S", "N")]
    if binary:
        raise _invalid(
            f"dynamodb_tables: {what} has the binary key attribute {binary[0]!r}; the replicator handles string "
            "and number keys only"
        )


def _describe_table(ddb: Any, table: str) -> dict[str, Any] | None:
    try:
        return dict(ddb.describe_table(TableName=table)["Table"])
    except ddb.exceptions.ResourceNotFoundException:
        return None


def _table_tags(ddb: Any, arn: str) -> dict[str, str]:
    tags: list[dict[str, str]] = []
    kwargs = {"ResourceArn": arn}
    while True:
        page = ddb.list_tags_of_resource(**kwargs)
        tags += page.get("Tags", [])
        if not page.get("NextToken"):
            return tag_map(tags)
        kwargs["NextToken"] = page["NextToken"]


def _resume_asked() -> list[str]:
    details = activity.info().heartbeat_details
    if details and isinstance(details[-1], dict):
        return list(details[-1].get("asked", []))
    return []


def _resume() -> dict[str, Any]:
    details = activity.info().heartbeat_details
    if details and isinstance(details[-1], dict) and "checkpoints" in details[-1]:
        return dict(details[-1])
    return {"checkpoints": {}, "created": [], "copied": 0}


def _ensure_stream(src: Any, table: str) -> str:
    desc = src.describe_table(TableName=table)["Table"]
    if not (desc.get("StreamSpecification") or {}).get("StreamEnabled"):
        src.update_table(
            TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        )
        desc = src.describe_table(TableName=table)["Table"]
    return str(desc["LatestStreamArn"])


def _stream_position(src: Any, streams: Any, table: str, known: TableCheckpoint | None = None) -> TableCheckpoint:
    """The stream's current end (enabled first when off): records after it are replayed by `catch_up` (taken
    before the scan), or verified by the next `check_sync` (its fence). An open shard's end is found by reading
    it, from `known` (an earlier position of the same stream) when given: that costs what was written since."""
    arn = _ensure_stream(src, table)
    _wait_stream_enabled(streams, arn)
    start = _positions(known) if known is not None and known.stream_arn == arn else {}
    ends = []
    for shard in shards(streams, arn):
        end = shard_end(streams, arn, shard, start.get(shard["ShardId"]))
        ends.append(ShardPosition(shard_id=shard["ShardId"], sequence_number=end))
    return TableCheckpoint(table=table, stream_arn=arn, shards=tuple(ends))


def _positions(cp: TableCheckpoint) -> dict[str, str | None]:
    return {p.shard_id: p.sequence_number for p in cp.shards}


def _wait_stream_enabled(streams: Any, arn: str) -> None:
    deadline = time.monotonic() + 120
    while streams.describe_stream(StreamArn=arn)["StreamDescription"]["StreamStatus"] != "ENABLED":
        if time.monotonic() > deadline:
            raise ApplicationError(f"stream {arn} not ENABLED after 120s", type="StreamNotEnabled")
        activity.heartbeat("stream enabling")
        time.sleep(1)


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
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        Tags=_replica_tags(entity_id),
    )
    dst.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return True


def _restore_replicas(src: Any, dst: Any, req: ReplicationInput) -> list[str]:
    """A replica `replicate_tables` made (the input carries its checkpoint) that is gone from the target region
    (deleted outside the product) is made again and copied whole, so the catch-up from the checkpoint has a table to
    replay into; replaying older records onto a fresh copy converges under the conflict rule. Returns a note per
    table, also logged as a warning."""
    if req.mode != "copy" or not req.checkpoint:
        return []
    notes = []
    for table in (c.table for c in req.checkpoint):
        if table not in req.tables or _describe_table(dst, table) is not None:
            continue
        _ensure_table(src, dst, table, req.entity_id)
        copied = _copy(src, dst, table, {"restoring": table})
        notes.append(f"table {table}: replica missing in {req.target_region}, made again and {copied} items copied")
        activity.logger.warning(notes[-1])
    return notes


def _copy(src: Any, dst: Any, table: str, progress: dict[str, Any]) -> int:
    copied = 0
    for page in src.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items = page["Items"]
        for i in range(0, len(items), 25):
            _write_batch(dst, table, items[i : i + 25])
        copied += len(items)
        activity.heartbeat(progress | {"copying": table, "copied_in_table": copied})
    return copied


def _write_batch(dst: Any, table: str, items: list[dict]) -> None:
    pending = {table: [{"PutRequest": {"Item": item}} for item in items]}
    while pending:
        pending = dst.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def _version_condition(hash_key: str, image: dict[str, Any], at_ms: int, delete: bool) -> tuple[str, dict, dict]:
    """ConditionExpression under which `image` (or the delete of it) beats the stored item."""
    names = {"#pk": hash_key, "#v": V, "#ts": TS}
    lt = "<=" if delete else "<"  # a delete also removes the very version it deleted
    if V in image:
        values: dict[str, Any] = {":v": image[V]}
        terms = ["attribute_not_exists(#pk)", "attribute_not_exists(#v)", "#v < :v"]
        if TS in image:
            values[":ts"] = image[TS]
            terms.append(f"(#v = :v AND (attribute_not_exists(#ts) OR #ts {lt} :ts))")
            if R in image and not delete:
                names["#r"], values[":r"] = R, image[R]
                terms.append("(#v = :v AND #ts = :ts AND #r < :r)")
        elif delete:
            terms.append("#v = :v")
        return " OR ".join(terms), names, values
    ts = {"N": str(at_ms)} if delete or TS not in image else image[TS]
    cond = f"attribute_not_exists(#pk) OR (attribute_not_exists(#v) AND (attribute_not_exists(#ts) OR #ts {lt} :ts))"
    return cond, names, {":ts": ts}


def _apply(dst: Any, table: str, hash_key: str, record: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """One stream record into the target: 'applied', 'already' (the target holds exactly it) or 'conflict', with
    the target's item that won a conflict (None otherwise), so that the conflict is logged with both versions."""
    d = record["dynamodb"]
    at_ms = record_ms(record)
    failed = dst.exceptions.ConditionalCheckFailedException
    if record["eventName"] == "REMOVE":
        cond, names, values = _version_condition(hash_key, d.get("OldImage") or d["Keys"], at_ms, delete=True)
        try:
            old = dst.delete_item(
                TableName=table, Key=d["Keys"], ConditionExpression=cond, ExpressionAttributeNames=names,
                ExpressionAttributeValues=values, ReturnValues="ALL_OLD",
            )  # fmt: skip
        except failed:
            return "conflict", dst.get_item(TableName=table, Key=d["Keys"], ConsistentRead=True).get("Item")
        return ("applied" if old.get("Attributes") else "already"), None
    item = dict(d["NewImage"])
    if V not in item:
        item.setdefault(TS, {"N": str(at_ms)})
    cond, names, values = _version_condition(hash_key, item, at_ms, delete=False)
    try:
        dst.put_item(
            TableName=table, Item=item, ConditionExpression=cond, ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )  # fmt: skip
        return "applied", None
    except failed:
        current = dst.get_item(TableName=table, Key=d["Keys"], ConsistentRead=True).get("Item")
        if current == item:
            return "already", None
        if current and V not in item and V not in current and current.get(TS) == item[TS]:
            # an unversioned tie: the later record of the stream wins (its own order is the truth)
            dst.put_item(TableName=table, Item=item)
            return "applied", None
        return "conflict", current


def _loser_version(record: dict[str, Any]) -> str:
    """The replayed write's version label: a delete names the version it deleted; an unversioned write its time."""
    d = record["dynamodb"]
    if record["eventName"] == "REMOVE":
        return "delete of " + version_label(d.get("OldImage"))
    image = d["NewImage"]
    return version_label(image if V in image or TS in image else image | {TS: {"N": str(record_ms(record))}})


def _written_in(record: dict[str, Any], region: str | None) -> bool:
    """An echo: a put whose image a writer (or the other pass) stamped with `_r` = `region`. A REMOVE is never one:
    its old image's `_r` names who wrote the item, not who deleted it, so every delete is replayed."""
    if region is None or record["eventName"] == "REMOVE":
        return False
    return bool(record["dynamodb"].get("NewImage", {}).get(R) == {"S": region})


class _TablePass:
    """One catch-up pass over one table's stream, from its checkpoint, applying at most `budget` records; records
    written in `skip_region` (echoes of the opposite pass) are passed over."""

    def __init__(
        self, src: Any, dst: Any, streams: Any, table: str, cp: TableCheckpoint | None, budget: int,
        skip_region: str | None = None,
    ) -> None:  # fmt: skip
        self.dst, self.streams, self.table, self.budget, self.skip_region = dst, streams, table, budget, skip_region
        self.arn = _ensure_stream(src, table)
        if cp is not None and cp.stream_arn != self.arn:
            raise ApplicationError(
                f"table {table}: its stream changed since the checkpoint ({cp.stream_arn}); run replicate_tables again",
                type="StreamChanged",
                non_retryable=True,
            )
        self.positions = {p.shard_id: p.sequence_number for p in (cp.shards if cp else ())}
        self.hash_key = next(
            k["AttributeName"]
            for k in src.describe_table(TableName=table)["Table"]["KeySchema"]
            if k["KeyType"] == "HASH"
        )
        self.applied = self.pending = self.skipped = 0
        self.oldest_pending_ms: int | None = None
        self.last_outcome: dict[str, str] = {}
        self.versions: dict[str, tuple[str, str]] = {}  # key -> (winner, loser) of its latest conflict

    def run(self) -> None:
        for shard in shards(self.streams, self.arn):
            sid = shard["ShardId"]
            for record in records(self.streams, self.arn, sid, self.positions.get(sid)):
                if _written_in(record, self.skip_region):
                    self.skipped += 1
                elif self.budget <= 0:
                    self.pending += 1
                    ms = record_ms(record)
                    self.oldest_pending_ms = ms if self.oldest_pending_ms is None else min(self.oldest_pending_ms, ms)
                    continue
                else:
                    self._apply(record)
                self.positions[sid] = record["dynamodb"]["SequenceNumber"]
            self.positions.setdefault(sid, None)

    def _apply(self, record: dict[str, Any]) -> None:
        outcome, winner = _apply(self.dst, self.table, self.hash_key, record)
        self.budget -= 1
        self.applied += outcome == "applied"
        key = key_json(record["dynamodb"]["Keys"])
        self.last_outcome[key] = outcome
        if outcome == "conflict":
            self.versions[key] = version_label(winner), _loser_version(record)

    def conflicts(self) -> list[ReplicationConflict]:
        """The keys whose newest record lost, as digests with both versions, each one logged: the report that
        reaches the workflow is capped, the log is not."""
        found = []
        for key, outcome in self.last_outcome.items():
            if outcome != "conflict":
                continue
            winner, loser = self.versions[key]
            found.append(
                ReplicationConflict(table=self.table, key=short_digest(key), winner_version=winner, loser_version=loser)
            )
            activity.logger.warning(
                "replication conflict in table %s, key %s: the target kept %s over %s",
                self.table, found[-1].key, winner, loser,
            )  # fmt: skip
        return found

    def checkpoint(self) -> TableCheckpoint:
        shards = tuple(ShardPosition(shard_id=s, sequence_number=n) for s, n in self.positions.items())
        return TableCheckpoint(table=self.table, stream_arn=self.arn, shards=shards)


#: What a key found by a full scan has in place of its image at the fence: only equal sides pass.
_UNKNOWN = "unknown"


class _SyncCheck:
    """One `check_sync`'s comparison: the fence (taken when it is made), what each table compares and what still
    differs. A key to compare maps to the digest of its newest image at the fence (None: deleted by then)."""

    def __init__(self, src: Any, dst: Any, streams: Any, req: ReplicationInput) -> None:
        self.src, self.dst, self.streams, self.req = src, dst, streams, req
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.changed = self.checked = 0
        self.scanned = False
        self.present = [t for t in req.tables if _describe_table(dst, t) is not None]
        self.problems += [f"table {t}: missing in {req.target_region}" for t in req.tables if t not in self.present]
        known, verified = {c.table: c for c in req.checkpoint}, {c.table: c for c in req.verified}
        self.verified = verified
        self.fence: tuple[TableCheckpoint, ...] = ()
        if req.mode == "copy":
            self.fence = tuple(
                _stream_position(src, streams, t, _later_checkpoint(known.get(t), verified.get(t))) for t in req.tables
            )

    @property
    def mode(self) -> str:
        return "full-scan" if self.scanned or not self.present else "changed"

    def first_pass(self) -> dict[str, dict[str, str | None]]:
        """Per table the keys that differ now: of those changed since the verified fence, or of a full scan."""
        fence = {c.table: c for c in self.fence}
        out = {}
        for table in self.present:
            since = self.verified.get(table)
            why = self._why_scan(since, fence.get(table))
            if why is None and since is not None:
                out[table] = self._changed(table, since, fence[table])
                continue
            if why:
                self.notes.append(f"table {table}: full scan ({why})")
            out[table] = self._scan(table)
        return out

    def _why_scan(self, since: TableCheckpoint | None, fence: TableCheckpoint | None) -> str | None:
        """Why a table is scanned whole ("" when asked to), or None when its changes can be compared alone."""
        if self.req.mode == "global-table" or self.req.verify == "full-scan" or fence is None:
            return ""
        if since is None:
            return "no verified fence yet"
        return "its stream changed since the verified fence" if since.stream_arn != fence.stream_arn else None

    def _changed(self, table: str, since: TableCheckpoint, fence: TableCheckpoint) -> dict[str, str | None]:
        images = changed_images(self.streams, fence.stream_arn, _positions(since), _positions(fence))
        self.changed += len(images)
        self.checked += len(images)
        return self.compare(table, {key: item_digest(image) for key, image in images.items()})

    def _scan(self, table: str) -> dict[str, str | None]:
        self.scanned = True
        a, b = _item_digests(self.src, table), _item_digests(self.dst, table)
        self.checked += len(a.keys() | b.keys())
        return {key: _UNKNOWN for key in a.keys() | b.keys() if a.get(key) != b.get(key)}

    def compare(self, table: str, keys: dict[str, str | None]) -> dict[str, str | None]:
        """The keys whose sides differ, read now (target first): a target equal to the source now, or holding the
        key's image at the fence while the source moved on after it, passes."""
        if not keys:
            return {}
        wanted = [json.loads(key) for key in keys]
        target, source = _batch_items(self.dst, table, wanted), _batch_items(self.src, table, wanted)
        still = {}
        for key, at_fence in keys.items():
            digest = item_digest(target.get(key))
            if digest not in (item_digest(source.get(key)), at_fence):
                still[key] = at_fence
        return still


def _later_checkpoint(a: TableCheckpoint | None, b: TableCheckpoint | None) -> TableCheckpoint | None:
    """Per shard the later of two positions of one stream (`a` alone when they are of different streams)."""
    if a is None or b is None or a.stream_arn != b.stream_arn:
        return a or b
    pa, pb = _positions(a), _positions(b)
    merged = tuple(ShardPosition(shard_id=s, sequence_number=later(pa.get(s), pb.get(s))) for s in pa.keys() | pb)
    return a.model_copy(update={"shards": merged})


def _batch_items(ddb: Any, table: str, keys: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """key_json -> item for the keys present, read strongly consistent with BatchGetItem (100 keys a call)."""
    names, out = list(keys[0]), {}
    for i in range(0, len(keys), 100):
        request: dict[str, Any] = {table: {"Keys": keys[i : i + 100], "ConsistentRead": True}}
        while request:
            page = ddb.batch_get_item(RequestItems=request)
            for item in page["Responses"].get(table, []):
                out[key_json({k: item[k] for k in names})] = item
            request = page.get("UnprocessedKeys") or {}
    return out


def _item_digests(ddb: Any, table: str) -> dict[str, str | None]:
    """key_json -> `item_digest` of every item: the full scan."""
    names = [k["AttributeName"] for k in ddb.describe_table(TableName=table)["Table"]["KeySchema"]]
    out = {}
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            out[key_json({k: item[k] for k in names})] = item_digest(item)
    return out


def _merge(first: ReplicationStatus, then: ReplicationStatus) -> ReplicationStatus:
    """Two catch-up passes as one: the counts add up; position, lag and pending are the later pass's."""
    return then.model_copy(
        update={
            "applied": first.applied + then.applied, "items": first.items + then.items,
            "conflicts": first.conflicts + then.conflicts,
            "conflict_report": (first.conflict_report + then.conflict_report)[:CONFLICT_REPORT_CAP],
            "skipped_echoes": first.skipped_echoes + then.skipped_echoes,
        }
    )  # fmt: skip


def _replica_status(src: Any, table: str, region: str) -> str | None:
    for replica in src.describe_table(TableName=table)["Table"].get("Replicas", []):
        if replica.get("RegionName") == region:
            return str(replica.get("ReplicaStatus", "CREATING"))
    return None


def _drop_global_replica(src: Any, dst: Any, table: str, req: ReplicationInput) -> int:
    """Removes the target region's replica only when `_global_tables` tagged it as ours (role=replica)."""
    replica = _describe_table(dst, table)
    if replica is None or not _our_replica(_table_tags(dst, replica["TableArn"]), req.entity_id):
        return 0
    try:
        if _replica_status(src, table, req.target_region) in (None, "DELETING"):
            return 0
    except src.exceptions.ResourceNotFoundException:
        return 0
    src.update_table(TableName=table, ReplicaUpdates=[{"Delete": {"RegionName": req.target_region}}])
    return 1


# ---- RDS helpers --------------------------------------------------------------------------------------


def _db_name(ref: str) -> str:
    return ref.split(":")[-1] if ref.startswith("arn:") else ref


def _describe_db(rds: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0])
    except rds.exceptions.DBInstanceNotFoundFault:
        return None


def _db_tags(rds: Any, db: dict[str, Any]) -> dict[str, str]:
    if "TagList" in db:  # DescribeDBInstances carries them
        return tag_map(db["TagList"])
    return tag_map(rds.list_tags_for_resource(ResourceName=db["DBInstanceArn"]).get("TagList", []))


def _source_db(rds: Any, req: ReplicationInput) -> dict[str, Any]:
    ref = req.rds_instance or ""
    if ref.startswith("arn:") and ref.split(":")[3] != req.source_region:
        raise _invalid(f"rds_instance: {ref} is not in the source region {req.source_region}")
    db = _describe_db(rds, _db_name(ref))
    if db is None:
        raise _invalid(f"rds_instance: DB instance {ref!r} does not exist in {req.source_region}")
    what = f"DB instance {db['DBInstanceIdentifier']!r} in {req.source_region}"
    require_owned("rds_instance", what, _db_tags(rds, db), req.entity_id)
    return db


def _still_replica(db: dict[str, Any]) -> bool:
    """RDS's own word that the instance is (still) a read replica: promotion clears the field."""
    return bool(db.get("ReadReplicaSourceDBInstanceIdentifier"))


def _require_replica_of(rds: Any, db: dict[str, Any], source: dict[str, Any], req: ReplicationInput) -> None:
    """A same-named instance in the target region may be reused only when it is our replica of this source."""
    name, tags = db["DBInstanceIdentifier"], _db_tags(rds, db)
    what = f"DB instance {name!r} in {req.target_region}"
    if not owned_by(tags, req.entity_id):
        raise not_owned("rds_instance", what, req.entity_id, "it exists already; the product never replaces it")
    ours = _our_replica(tags, req.entity_id) and TAG_PROMOTED not in tags
    of_source = db.get("ReadReplicaSourceDBInstanceIdentifier") in (source["DBInstanceArn"], name)
    if not (ours and of_source):
        raise _invalid(
            f"rds_instance: {what} exists already and is not a read replica of {source['DBInstanceArn']} that "
            "the product made; it is never replaced (rename or retire it to replicate into this region)"
        )


def _keep_reason(tags: dict[str, str], db: dict[str, Any], entity_id: str) -> str:
    """Why a compensation must not delete `db` ("" when it may: our unpromoted replica, still a replica)."""
    if not owned_by(tags, entity_id):
        return "not the entity's"
    if not _our_replica(tags, entity_id):
        return "not a replica the product made"
    if TAG_PROMOTED in tags:
        return "promoted (now a primary, or becoming one)"
    if not _still_replica(db):
        return "not a read replica (a primary is never deleted)"
    return ""


def final_snapshot_id(db: dict[str, Any]) -> str:
    """The final snapshot's id: one per instance (its DbiResourceId), so a retry finds the one it started."""
    resource = str(db.get("DbiResourceId") or "").lower().removeprefix("db-")
    return "-".join(filter(None, ("shadowing-final", db["DBInstanceIdentifier"], resource)))


def _require_final_snapshot(rds: Any, db: dict[str, Any], entity_id: str) -> None:
    """Starts the final snapshot (once) and returns when it is available; raises a retryable error until then."""
    snapshot = final_snapshot_id(db)
    try:
        status = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]["Status"]
    except rds.exceptions.DBSnapshotNotFoundFault:
        tags = [*ownership_tags(entity_id), {"Key": TAG_ROLE, "Value": "final-snapshot"}]
        try:
            status = rds.create_db_snapshot(
                DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=db["DBInstanceIdentifier"], Tags=tags
            )["DBSnapshot"]["Status"]
        except rds.exceptions.DBSnapshotAlreadyExistsFault:  # a concurrent attempt started it
            status = "creating"
    if status != "available":
        activity.heartbeat(f"{snapshot}: {status}")
        raise ApplicationError(
            f"rds_instance: final snapshot {snapshot} is {status}; the replica is deleted once it is available",
            type="FinalSnapshotPending",
        )


def _wait_db_available(rds: Any, name: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (db := _describe_db(rds, name)) is None or db["DBInstanceStatus"] != "available":
        status = db["DBInstanceStatus"] if db else "absent"
        activity.heartbeat(f"{name}: {status}")
        if time.monotonic() > deadline:
            raise ApplicationError(f"DB instance {name} not available after {timeout_s}s ({status})", type="DbNotReady")
        time.sleep(10)
    return db


def _replica_result(db: dict[str, Any], region: str, **fields: Any) -> ReadReplicaResult:
    fields.setdefault("status", db.get("DBInstanceStatus", ""))
    return ReadReplicaResult(
        db_instance_identifier=db["DBInstanceIdentifier"], db_instance_arn=db["DBInstanceArn"], region=region, **fields
    )


# ---- SQS helpers --------------------------------------------------------------------------------------


def _find_queue(sqs: Any, name: str) -> str | None:
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        return None


def _queue_tags(sqs: Any, url: str) -> dict[str, str]:
    return dict(sqs.list_queue_tags(QueueUrl=url).get("Tags", {}))


def _require_queues(src: Any, dst: Any, req: ReplicationInput) -> dict[str, tuple[str, str | None]]:
    """name -> (source url, target url or None), once every source and existing target is the entity's."""
    urls = {}
    for name in req.queues:
        url = _find_queue(src, name)
        if url is None:
            raise _invalid(f"sqs_queues: SQS queue {name!r} does not exist in {req.source_region}")
        require_owned("sqs_queues", f"queue {name!r} in {req.source_region}", _queue_tags(src, url), req.entity_id)
        target = _find_queue(dst, name)
        if target is not None and not owned_by(_queue_tags(dst, target), req.entity_id):
            why = "it exists already; the product never sends to it"
            raise not_owned("sqs_queues", f"queue {name!r} in {req.target_region}", req.entity_id, why)
        urls[name] = url, target
    return urls


def _create_queue(sqs: Any, name: str, source_attrs: dict[str, str], entity_id: str) -> str:
    copy = ("FifoQueue", "ContentBasedDeduplication", "VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds")
    attrs = {k: source_attrs[k] for k in copy if k in source_attrs}
    tags = tag_map(_replica_tags(entity_id))
    return str(sqs.create_queue(QueueName=name, Attributes=attrs, tags=tags)["QueueUrl"])


def _delete_queue_if_ours_and_empty(sqs: Any, name: str, entity_id: str) -> int:
    url = _find_queue(sqs, name)
    if url is None or not _our_replica(_queue_tags(sqs, url), entity_id):
        return 0
    counts = (
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    )
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(counts))["Attributes"]
    if any(int(attrs.get(c, 0)) for c in counts):
        return 0  # messages would be lost: forward them back first
    sqs.delete_queue(QueueUrl=url)
    return 1


def _resume_ids() -> list[str]:
    details = activity.info().heartbeat_details
    if details and isinstance(details[-1], dict):
        return list(details[-1].get("sent", []))
    return []


def _message_attributes(message: dict[str, Any]) -> dict[str, Any]:
    attrs = {
        k: {f: v for f, v in a.items() if v not in ([], None)} for k, a in message.get("MessageAttributes", {}).items()
    }
    attrs.setdefault(SOURCE_ID_ATTR, {"DataType": "String", "StringValue": message["MessageId"]})
    return attrs


class _QueueMover:
    """Receive -> send (batch) -> heartbeat the sent ids -> delete the sent ones from the source."""

    def __init__(self, src: Any, dst: Any, url: str, target: str, fifo: bool, sent: list[str]) -> None:
        self.src, self.dst, self.url, self.target, self.fifo, self.sent = src, dst, url, target, fifo, sent

    def run(self, visibility_timeout_s: int) -> tuple[int, int]:
        moved = skipped = 0
        seen: set[str] = set()
        while True:
            messages = self.src.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=visibility_timeout_s,
                WaitTimeSeconds=0, AttributeNames=["All"], MessageAttributeNames=["All"],
            ).get("Messages", [])  # fmt: skip
            fresh = [m for m in messages if m["MessageId"] not in seen]
            if not fresh:
                return moved, skipped
            seen.update(m["MessageId"] for m in fresh)
            done = [m for m in fresh if m["MessageId"] in self.sent]
            skipped += len(done)
            sent_now = self._send([m for m in fresh if m["MessageId"] not in self.sent])
            moved += len(sent_now)
            self.sent[:] = (self.sent + [m["MessageId"] for m in sent_now])[-SENT_IDS_CAP:]
            activity.heartbeat({"sent": self.sent})
            self._delete(done + sent_now)

    def _send(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not messages:
            return []
        entries = []
        for i, m in enumerate(messages):
            entry = {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": _message_attributes(m)}
            if self.fifo:
                entry["MessageDeduplicationId"] = m["MessageId"]
                entry["MessageGroupId"] = m["Attributes"]["MessageGroupId"]
            entries.append(entry)
        result = self.dst.send_message_batch(QueueUrl=self.target, Entries=entries)
        ok = {int(e["Id"]) for e in result.get("Successful", [])}
        return [m for i, m in enumerate(messages) if i in ok]

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            self.src.delete_message_batch(QueueUrl=self.url, Entries=entries)
