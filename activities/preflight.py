"""Pre-flight: before an entity launches anything, what its spec names is checked against AWS (reads only).

`check_entity` checks the hosted zone (exists, holds `dns_name`, carries `shadowing:managed-by`, and the name is
under a suffix this worker may route), the DynamoDB tables, SQS queues, RDS instance and ELB listener (exist in
`home_region` and carry the entity's ownership tags, as the replication and routing activities require), the AMI
(exists and is available), the instances `adopt` names (exist, running, one allowed type, no other owner's tags:
`activities.ec2.adoption_problems`, what `adopt_fleet` refuses) and the usage history the forecast reads
(CloudWatch, `metrics_namespace`, dimension `EntityId`, each forecast metric, over the 14 days before now). A
forecast-only entity launches nothing: only its usage history is checked.

Every problem found is reported in one non-retryable `InvalidRequest` whose message starts with the spec field path
of the first (`spec.hosted_zone_id: hosted zone Z1 does not exist`) and lists the others after it; `details[0]`
holds them all as `{"field": ..., "problem": ...}`. Errors that are not about the spec (throttling, access) are
raised as they are, so that the activity's retry policy decides.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import TAG_ENTITY, TAG_MANAGED, ClientFactory
from activities.ec2 import DEFAULT_INSTALLATION, Owner, adoption_problems, check_installation
from activities.forecast import DIMENSION, HISTORY, missing_history
from activities.ownership import MANAGED, owned_by, tag_map
from activities.replication import (
    _db_name,
    _db_tags,
    _describe_db,
    _describe_table,
    _find_queue,
    _queue_tags,
    _table_tags,
)
from activities.routing import GLOBAL_REGION, _fqdn, zone_problems
from shadowing.models import EntitySpec, Frozen, arn_region


class PreflightInput(Frozen):
    spec: EntitySpec


class PreflightReport(Frozen):
    """What was checked and found in order (one line each)."""

    checked: tuple[str, ...] = ()


class Problem(Frozen):
    field: str
    problem: str


class PreflightActivities:
    def __init__(
        self, clients: ClientFactory, *, dns_suffixes: tuple[str, ...] = (),
        now: Callable[[], datetime] = lambda: datetime.now(UTC), installation: str = DEFAULT_INSTALLATION,
    ) -> None:  # fmt: skip
        self._clients = clients
        self._installation = check_installation(installation)
        self._suffixes = tuple(_fqdn(s) for s in dns_suffixes)
        self._now = now

    @activity.defn(name="check_entity")
    def check_entity(self, req: PreflightInput) -> PreflightReport:
        """Reads only. Raises one `InvalidRequest` naming every spec field whose resource is missing or not the
        entity's; returns what was checked otherwise."""
        spec = req.spec
        problems: list[Problem] = []
        checked: list[str] = []
        checks: list[Callable[[EntitySpec], list[Problem]]] = [self._usage_history]
        if spec.policy.mode == "active":
            checks = [self._zone, self._tables, self._queues, self._database, self._listener, self._image, *checks]
            if spec.adopt is not None:
                checks.insert(-1, self._adopt)
        for check in checks:
            found = check(spec)
            problems += found
            checked.append(f"{check.__name__.strip('_')}: {'ok' if not found else f'{len(found)} problem(s)'}")
        if problems:
            first, rest = problems[0], problems[1:]
            more = "".join(f"; also {p.field}: {p.problem}" for p in rest)
            raise ApplicationError(
                f"{first.field}: {first.problem}{more}", [p.model_dump() for p in problems],
                type="InvalidRequest", non_retryable=True,
            )  # fmt: skip
        return PreflightReport(checked=tuple(checked))

    # ---- one check per outside system ----------------------------------------------------------------------

    def _zone(self, spec: EntitySpec) -> list[Problem]:
        r53 = self._clients("route53", GLOBAL_REGION)
        found = zone_problems(r53, spec.hosted_zone_id, spec.dns_name, self._suffixes)
        return [Problem(field=f"spec.{field}", problem=problem) for field, _, problem in found]

    def _tables(self, spec: EntitySpec) -> list[Problem]:
        ddb = self._clients("dynamodb", spec.home_region)
        found = []
        for i, table in enumerate(spec.dynamodb_tables):
            field = f"spec.dynamodb_tables.{i}"
            desc = _describe_table(ddb, table)
            if desc is None:
                found.append(Problem(field=field, problem=f"table {table!r} does not exist in {spec.home_region}"))
            elif not owned_by(_table_tags(ddb, desc["TableArn"]), spec.entity_id):
                found.append(_not_owned(field, f"table {table!r} in {spec.home_region}", spec.entity_id))
        return found

    def _queues(self, spec: EntitySpec) -> list[Problem]:
        sqs = self._clients("sqs", spec.home_region) if spec.sqs_queues else None
        found = []
        for i, name in enumerate(spec.sqs_queues):
            field = f"spec.sqs_queues.{i}"
            url = _find_queue(sqs, name)
            if url is None:
                found.append(Problem(field=field, problem=f"SQS queue {name!r} does not exist in {spec.home_region}"))
            elif not owned_by(_queue_tags(sqs, url), spec.entity_id):
                found.append(_not_owned(field, f"queue {name!r} in {spec.home_region}", spec.entity_id))
        return found

    def _database(self, spec: EntitySpec) -> list[Problem]:
        ref = spec.rds_instance
        if not ref:
            return []
        field = "spec.rds_instance"
        if ref.startswith("arn:") and arn_region(ref) != spec.home_region:
            return [Problem(field=field, problem=f"{ref} is not in home_region {spec.home_region}")]
        rds = self._clients("rds", spec.home_region)
        db = _describe_db(rds, _db_name(ref))
        if db is None:
            return [Problem(field=field, problem=f"DB instance {ref!r} does not exist in {spec.home_region}")]
        if not owned_by(_db_tags(rds, db), spec.entity_id):
            return [_not_owned(field, f"DB instance {db['DBInstanceIdentifier']!r}", spec.entity_id)]
        return []

    def _listener(self, spec: EntitySpec) -> list[Problem]:
        arn = spec.listener_arn
        if not arn:
            return []
        field = "spec.listener_arn"
        region = arn_region(arn)
        if region is None:
            return [Problem(field=field, problem=f"{arn!r} is not an ELBv2 listener ARN")]
        elb = self._clients("elbv2", region)
        try:
            elb.describe_listeners(ListenerArns=[arn])
        except (elb.exceptions.ListenerNotFoundException, elb.exceptions.LoadBalancerNotFoundException):
            return [Problem(field=field, problem=f"listener {arn} does not exist")]
        except elb.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ValidationError":
                raise
            return [Problem(field=field, problem=f"{arn!r} is not a valid listener ARN")]
        tags = elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
        if not owned_by(tag_map(tags[0]["Tags"] if tags else ()), spec.entity_id):
            return [_not_owned(field, f"listener {arn}", spec.entity_id)]
        return []

    def _image(self, spec: EntitySpec) -> list[Problem]:
        if not spec.image_id:
            return []
        ec2 = self._clients("ec2", spec.home_region)
        try:
            images = ec2.describe_images(ImageIds=[spec.image_id])["Images"]
        except ec2.exceptions.ClientError as exc:
            if not str(exc.response.get("Error", {}).get("Code", "")).startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            return [Problem(field="spec.image_id", problem=f"AMI {spec.image_id} does not exist in {spec.home_region}")]
        state = images[0].get("State", "available")
        if state != "available":
            return [Problem(field="spec.image_id", problem=f"AMI {spec.image_id} is {state}, not available")]
        return []

    def _adopt(self, spec: EntitySpec) -> list[Problem]:
        """The instances to adopt: the same refusals as `adopt_fleet` (any fleet of this entity's counts as ours)."""
        assert spec.adopt is not None
        ec2 = self._clients("ec2", spec.home_region)
        owner = Owner(self._installation, spec.entity_id)
        _, found = adoption_problems(ec2, owner, spec.adopt, spec.instance_types, spec.policy.max_instances)
        return [Problem(field=field, problem=problem) for field, problem in found]

    def _usage_history(self, spec: EntitySpec) -> list[Problem]:
        """The history the forecast reads: each forecast metric has at least one hourly point in the window."""
        clock = spec.demand_clock
        now = self._now()
        end = (clock.to_history(now) if clock else now).replace(minute=0, second=0, microsecond=0)
        missing = missing_history(self._clients, spec, end)
        if not missing:
            return []
        return [Problem(field="spec.metrics_namespace", problem=(
            f"no usage history for entity {spec.entity_id!r} in CloudWatch namespace {spec.metrics_namespace!r} "
            f"({spec.home_region}; metric {', '.join(missing)}, dimension {DIMENSION}={spec.entity_id}) over the "
            f"{HISTORY.days} days before {end.isoformat()}: the forecast has nothing to learn from"
        ))]  # fmt: skip


def _not_owned(field: str, what: str, entity_id: str) -> Problem:
    return Problem(field=field, problem=f"{what} is not owned by entity {entity_id!r}: tag it "
                   f"{TAG_MANAGED}={MANAGED} and {TAG_ENTITY}={entity_id} to hand it to the product")  # fmt: skip
