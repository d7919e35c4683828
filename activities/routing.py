"""Cutover routing: Route53 weighted records (one per fleet, SetIdentifier = fleet id) and ELBv2 weighted forwarding.

Every weight change is one atomic request, verified by reading back what AWS reports; a read-back that differs
from what was asked is a `RoutingNotApplied`, retried up to `MAX_ATTEMPTS` attempts and then non-retryable, so a
record that cannot be applied ends the step and the saga compensates instead of retrying forever. A zone or
listener that does not exist is a non-retryable `InvalidRequest`, raised before anything changes.

Ownership (activities/ownership.py): a hosted zone is used only when it carries `shadowing:managed-by=shadowing`
(an operator hands a zone to the product by tagging it); at the entity's name every record must be one of the
entity's own weighted A records (SetIdentifier `<entity id>:...`), so another team's record there (a CNAME, a simple
A record, another entity's weighted record) refuses the step before anything changes. A listener must carry the
entity's ownership tags. Names are compared in lower case, as Route53 stores them.

The steps between weights are the workflow's (it sleeps between them, see `workflows.verdict.cutover_steps`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED, ClientFactory
from activities.ec2 import DEFAULT_INSTALLATION, Owner, fleet_addresses
from activities.ownership import MANAGED, not_owned, owned_by, tag_map
from shadowing.models import DnsName, EntityId, FleetRef, Frozen, HostedZoneId, Region, arn_region


class RoutingInput(Frozen):
    hosted_zone_id: HostedZoneId
    dns_name: DnsName
    to_fleet: FleetRef
    from_fleet: FleetRef | None = None
    ttl_s: int | None = Field(default=None, ge=1, le=86400, description="TTL of the records written; default 30 s")


class RoutingState(Frozen):
    """Weights of the entity's weighted records, by fleet id (with the records' TTL and the last change id)."""

    weights: dict[str, int]
    ttl_s: int | None = None
    change_id: str | None = None


class WeightsInput(Frozen):
    """Route53: give each named fleet's weighted record its weight, in one change batch.

    `fleets` supplies the addresses of every fleet named in `weights`; records of fleets not named are left alone.
    """

    hosted_zone_id: HostedZoneId
    dns_name: DnsName
    fleets: tuple[FleetRef, ...]
    weights: dict[str, int]
    ttl_s: int = Field(30, ge=1, le=86400)
    settle_timeout_s: float = Field(120.0, gt=0, le=3600, description="how long to wait for Route53 to report INSYNC")

    @model_validator(mode="after")
    def _one_entity(self) -> WeightsInput:
        if len({f.entity_id for f in self.fleets}) != 1:
            raise ValueError("fleets: must name at least one fleet, all of one entity")
        return self

    @property
    def entity_id(self) -> str:
        return self.fleets[0].entity_id


class RestoreWeightsInput(Frozen):
    """Route53 rollback: make the weighted records exactly `previous` again (records it lacks are deleted).

    `fleets` is needed only for a fleet whose record has disappeared since `previous` was captured.
    """

    entity_id: EntityId = Field(description="whose records these are: no other entity's record is touched")
    hosted_zone_id: HostedZoneId
    dns_name: DnsName
    previous: RoutingState
    fleets: tuple[FleetRef, ...] = ()
    settle_timeout_s: float = Field(120.0, gt=0, le=3600)


class TargetsInput(Frozen):
    """ELBv2: the fleet's target group (found by a name derived from the fleet id, and its tag)."""

    fleet: FleetRef
    port: int = Field(80, ge=1, le=65535)
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"
    health_check_path: str = "/health"
    vpc_id: str | None = Field(None, description="default: the VPC of the fleet's first instance")


class TargetGroupRef(Frozen):
    fleet_id: str
    region: Region
    target_group_arn: str
    instance_ids: tuple[str, ...] = ()


class TargetsResult(Frozen):
    deregistered: int = 0
    deleted: bool = False
    detail: str = ""


class ListenerRef(Frozen):
    """The entity's ELBv2 listener; it must carry the entity's ownership tags."""

    entity_id: EntityId
    listener_arn: str


class ListenerWeightsInput(Frozen):
    """ELBv2: forward the listener's default action to these target groups (ARN -> weight 0..999)."""

    entity_id: EntityId
    listener_arn: str
    weights: dict[str, int]


class ListenerState(Frozen):
    """The listener's default forward weights by target group ARN."""

    listener_arn: str
    weights: dict[str, int]


TTL_S = 30
GLOBAL_REGION = "us-east-1"  # Route53 is global; its API lives in us-east-1
POLL_S = 1.0
MAX_R53_WEIGHT = 255
MAX_ELB_WEIGHT = 999
#: Attempts after which a routing change that AWS does not report as asked stops being retried.
MAX_ATTEMPTS = 8


def zone_problems(r53: Any, zone_id: str, dns_name: str, suffixes: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """What stops routing `dns_name` in `zone_id`, as (field, error type, problem), in the order found: the zone
    missing, the name outside it or under no suffix this worker may route (`suffixes`, fully qualified), the zone not
    handed to the product. Routing raises the first; pre-flight reports them all."""
    try:
        zone_name = str(r53.get_hosted_zone(Id=zone_id)["HostedZone"]["Name"]).lower()
    except r53.exceptions.NoSuchHostedZone:
        return [("hosted_zone_id", "InvalidRequest", f"hosted zone {zone_id} does not exist")]
    found = []
    name = _fqdn(dns_name)
    if name != zone_name and not name.endswith("." + zone_name):
        found.append(("dns_name", "InvalidRequest", f"{dns_name} is not inside hosted zone {zone_id} ({zone_name})"))
    elif suffixes and not any(name.endswith("." + s) for s in suffixes):
        allowed = ", ".join(s.rstrip(".") for s in suffixes)
        found.append(("dns_name", "NotOwned", f"{name.rstrip('.')} is not under a suffix this worker may route "
                      f"({allowed}; SHADOWING_DNS_SUFFIXES)"))  # fmt: skip
    tags = r53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=_zone_key(zone_id))
    if tag_map(tags.get("ResourceTagSet", {}).get("Tags")).get(TAG_MANAGED) != MANAGED:
        problem = f"hosted zone {zone_id} ({zone_name}) is not handed to the product: tag it {TAG_MANAGED}={MANAGED}"
        found.append(("hosted_zone_id", "NotOwned", problem))
    return found


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


def _not_applied(what: str, asked: dict[str, int], got: dict[str, int]) -> ApplicationError:
    diff = {k: (asked.get(k), got.get(k)) for k in sorted(set(asked) | set(got)) if asked.get(k) != got.get(k)}
    detail = ", ".join(f"{k}: asked {a}, reported {g}" for k, (a, g) in diff.items())
    return _routing_error(f"{what} not applied: {detail}")


def _routing_error(message: str) -> ApplicationError:
    """Retryable while AWS may still converge; the last of `MAX_ATTEMPTS` attempts gives up for good."""
    attempt = activity.info().attempt if activity.in_activity() else 1
    final = attempt >= MAX_ATTEMPTS
    suffix = f" (attempt {attempt} of {MAX_ATTEMPTS}: giving up)" if final else ""
    return ApplicationError(message + suffix, type="RoutingNotApplied", non_retryable=final)


class RoutingActivities:
    def __init__(
        self, clients: ClientFactory, poll_s: float = POLL_S, *, installation: str = DEFAULT_INSTALLATION,
        dns_suffixes: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self._clients = clients
        self._poll_s = poll_s
        self._installation = installation
        self._suffixes = tuple(_fqdn(s) for s in dns_suffixes)

    def _verified(self, fleet: FleetRef) -> FleetRef:
        """`fleet`, once EC2 confirms each address it would put in DNS is one of its own tagged instances': a
        fleet reference is a request (a hand-started migration can name any), never proof."""
        owner = Owner(self._installation, fleet.entity_id, fleet.fleet_id)
        known = fleet_addresses(self._clients("ec2", fleet.region), owner, fleet.instance_ids)
        if stray := sorted(set(fleet.addresses) - known):
            raise not_owned("fleet.addresses", f"addresses {stray} of fleet {fleet.fleet_id}", fleet.entity_id,
                            "not addresses of its own tagged instances")  # fmt: skip
        return fleet

    # ---- Route53: the original all-at-once cutover (the workflow uses these today) ---------------------------

    @activity.defn(name="switch_traffic")
    def switch_traffic(self, req: RoutingInput) -> RoutingState:
        """Atomically gives `to_fleet` all the weight and `from_fleet` none (one change batch)."""
        ttl = req.ttl_s or TTL_S
        self._check_zone(req.hosted_zone_id, req.dns_name)
        self._records(req.hosted_zone_id, req.dns_name, req.to_fleet.entity_id)
        changes = [_upsert(req.dns_name, self._verified(req.to_fleet), 100, ttl)]
        if req.from_fleet is not None and req.from_fleet.fleet_id != req.to_fleet.fleet_id:
            changes.append(_upsert(req.dns_name, self._verified(req.from_fleet), 0, ttl))
        self._change(req.hosted_zone_id, changes, f"switch {req.dns_name} to {req.to_fleet.fleet_id}")
        return self.routing_state(req)

    @activity.defn(name="remove_fleet_record")
    def remove_fleet_record(self, req: RoutingInput) -> RoutingState:
        """Deletes `to_fleet`'s record if it is still there (retirement and compensation); safe to repeat."""
        self._check_zone(req.hosted_zone_id, req.dns_name)
        record = self._records(req.hosted_zone_id, req.dns_name, req.to_fleet.entity_id).get(req.to_fleet.fleet_id)
        if record is not None:
            change = [{"Action": "DELETE", "ResourceRecordSet": record}]
            self._change(req.hosted_zone_id, change, f"remove {req.to_fleet.fleet_id}")
        return self.routing_state(req)

    @activity.defn(name="routing_state")
    def routing_state(self, req: RoutingInput) -> RoutingState:
        """Weights (and the longest TTL) of the name's weighted records; capture it before a stepped cutover.

        A missing zone (or a name outside it) is a non-retryable `InvalidRequest`, not an error retried forever.
        """
        self._check_zone(req.hosted_zone_id, req.dns_name)
        return _state(self._records(req.hosted_zone_id, req.dns_name, req.to_fleet.entity_id))

    # ---- Route53: stepped cutover ----------------------------------------------------------------------------

    @activity.defn(name="set_weights")
    def set_weights(self, req: WeightsInput) -> RoutingState:
        """Upserts the named fleets' records with `weights` and `ttl_s` in one batch, waits INSYNC, verifies.

        A weight of 0 keeps the record (clients holding its answer still reach a live fleet). Records already as
        asked are not rewritten, so a retried attempt changes nothing and waits for the change it made before.
        """
        self._check_zone(req.hosted_zone_id, req.dns_name)
        fleets = {f.fleet_id: f for f in req.fleets}
        _check_r53_weights(req.weights, fleets)
        current = self._records(req.hosted_zone_id, req.dns_name, req.entity_id)
        changes = [
            _upsert(req.dns_name, self._verified(fleets[fid]), weight, req.ttl_s)
            for fid, weight in sorted(req.weights.items())
            if not _same(current.get(fid), fleets[fid], weight, req.ttl_s)
        ]
        change_id = self._apply(req.hosted_zone_id, changes, f"weights {req.dns_name}", req.settle_timeout_s)
        after = self._records(req.hosted_zone_id, req.dns_name, req.entity_id)
        got = {fid: int(after[fid]["Weight"]) for fid in req.weights if fid in after}
        if got != req.weights:
            raise _not_applied(f"weights of {req.dns_name}", req.weights, got)
        stale = {fid: int(after[fid]["TTL"]) for fid in got if int(after[fid]["TTL"]) != req.ttl_s}
        if stale:
            raise _routing_error(f"TTL of {req.dns_name} not {req.ttl_s}s: {stale}")
        return _state(after).model_copy(update={"ttl_s": req.ttl_s, "change_id": change_id})

    @activity.defn(name="restore_weights")
    def restore_weights(self, req: RestoreWeightsInput) -> RoutingState:
        """Rollback: the name's weighted records become exactly `previous` (extra records deleted). Idempotent."""
        self._check_zone(req.hosted_zone_id, req.dns_name)
        current = self._records(req.hosted_zone_id, req.dns_name, req.entity_id)
        fleets = {f.fleet_id: f for f in req.fleets}
        changes = [
            {"Action": "DELETE", "ResourceRecordSet": rr}
            for fid, rr in current.items()
            if fid not in req.previous.weights
        ]
        for fid, weight in sorted(req.previous.weights.items()):
            change = _restore_change(req, current.get(fid), fleets.get(fid), fid, weight, self._verified)
            changes += [change] if change else []
        change_id = self._apply(req.hosted_zone_id, changes, f"restore {req.dns_name}", req.settle_timeout_s)
        after = _state(self._records(req.hosted_zone_id, req.dns_name, req.entity_id))
        if after.weights != req.previous.weights:
            raise _not_applied(f"restore of {req.dns_name}", req.previous.weights, after.weights)
        return after.model_copy(update={"change_id": change_id})

    # ---- Route53 plumbing ------------------------------------------------------------------------------------

    def _check_zone(self, zone_id: str, dns_name: str) -> None:
        """The zone exists, holds the name, and was handed to the product (tag `shadowing:managed-by`)."""
        problems = zone_problems(self._clients("route53", GLOBAL_REGION), zone_id, dns_name, self._suffixes)
        if problems:
            field, kind, problem = problems[0]
            raise ApplicationError(problem if kind == "InvalidRequest" else f"{field}: {problem}", type=kind,
                                   non_retryable=True)  # fmt: skip

    def _records(self, zone_id: str, dns_name: str, entity_id: str) -> dict[str, dict]:
        """The entity's weighted A records at the name, by SetIdentifier; any other record there refuses the step."""
        r53 = self._clients("route53", GLOBAL_REGION)
        name = _fqdn(dns_name)
        try:
            pages = list(r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id))
        except r53.exceptions.NoSuchHostedZone as exc:
            raise _invalid(f"hosted zone {zone_id} does not exist") from exc
        at_name = [rr for page in pages for rr in page["ResourceRecordSets"] if _fqdn(rr["Name"]) == name]
        foreign = [rr for rr in at_name if not _entity_record(rr, entity_id)]
        if foreign:
            what = ", ".join(f"{rr['Type']} {rr.get('SetIdentifier', '(simple)')}" for rr in foreign)
            raise not_owned("dns_name", f"name {name} (holds {what})", entity_id, "records of someone else")
        return {rr["SetIdentifier"]: rr for rr in at_name}

    def _change(self, zone_id: str, changes: list[dict], comment: str) -> str:
        r53 = self._clients("route53", GLOBAL_REGION)
        try:
            info = r53.change_resource_record_sets(
                HostedZoneId=zone_id, ChangeBatch={"Comment": comment, "Changes": changes}
            )
        except r53.exceptions.NoSuchHostedZone as exc:
            raise _invalid(f"hosted zone {zone_id} does not exist") from exc
        return str(info["ChangeInfo"]["Id"])

    def _apply(self, zone_id: str, changes: list[dict], comment: str, timeout_s: float) -> str | None:
        """Submits `changes` (if any) and waits INSYNC; with none, waits for the change an earlier attempt made."""
        details = activity.info().heartbeat_details
        change_id = self._change(zone_id, changes, comment) if changes else (str(details[0]) if details else None)
        if change_id is not None:
            self._wait_insync(change_id, timeout_s)
        return change_id

    def _wait_insync(self, change_id: str, timeout_s: float) -> None:
        r53 = self._clients("route53", GLOBAL_REGION)
        deadline = time.monotonic() + timeout_s
        while True:
            status = r53.get_change(Id=change_id)["ChangeInfo"]["Status"]
            activity.heartbeat(change_id, status)
            if status == "INSYNC":
                return
            if time.monotonic() >= deadline:
                raise _routing_error(f"Route53 change {change_id} still {status} after {timeout_s:.0f}s")
            time.sleep(self._poll_s)

    # ---- ELBv2 weighted forwarding (fleets in the listener's region) ----------------------------------------

    @activity.defn(name="register_fleet_targets")
    def register_fleet_targets(self, req: TargetsInput) -> TargetGroupRef:
        """Finds or creates the fleet's target group (tagged with the fleet id) and registers its instances."""
        fleet = req.fleet
        if not fleet.instance_ids:
            raise _invalid(f"fleet {fleet.fleet_id} has no instances to register")
        elb = self._clients("elbv2", fleet.region)
        group = self._find_group(elb, fleet.fleet_id)
        if group is None:
            group = elb.create_target_group(
                Name=target_group_name(fleet.fleet_id), Protocol=req.protocol, Port=req.port,
                VpcId=req.vpc_id or self._vpc_of(fleet), TargetType="instance", HealthCheckPath=req.health_check_path,
                Tags=[{"Key": TAG_FLEET, "Value": fleet.fleet_id}, {"Key": TAG_ENTITY, "Value": fleet.entity_id},
                      {"Key": TAG_MANAGED, "Value": "shadowing"}],
            )["TargetGroups"][0]  # fmt: skip
        arn = group["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": req.port} for i in fleet.instance_ids])
        return TargetGroupRef(
            fleet_id=fleet.fleet_id, region=fleet.region, target_group_arn=arn, instance_ids=fleet.instance_ids
        )

    @activity.defn(name="deregister_fleet_targets")
    def deregister_fleet_targets(self, req: TargetsInput) -> TargetsResult:
        """Compensation of `register_fleet_targets`: deregisters every target, deletes the group when unused."""
        elb = self._clients("elbv2", req.fleet.region)
        group = self._find_group(elb, req.fleet.fleet_id)
        if group is None:
            return TargetsResult(detail=f"no target group for {req.fleet.fleet_id}")
        arn = group["TargetGroupArn"]
        targets = [d["Target"] for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]]
        if targets:
            elb.deregister_targets(TargetGroupArn=arn, Targets=targets)
        try:
            elb.delete_target_group(TargetGroupArn=arn)
        except elb.exceptions.ResourceInUseException as exc:
            # Still forwarded to (weight 0 kept, or the listener restore has not run): leave it for retirement.
            return TargetsResult(deregistered=len(targets), detail=f"{arn} left in place: {exc}")
        return TargetsResult(deregistered=len(targets), deleted=True, detail=f"deleted {arn}")

    @activity.defn(name="listener_state")
    def listener_state(self, req: ListenerRef) -> ListenerState:
        """The listener's default forward weights by target group ARN; capture it before a stepped cutover."""
        elb = self._clients("elbv2", _arn_region(req.listener_arn))
        listener = self._listener(elb, req.listener_arn, req.entity_id)
        return ListenerState(listener_arn=req.listener_arn, weights=_forward_weights(listener))

    @activity.defn(name="set_listener_weights")
    def set_listener_weights(self, req: ListenerWeightsInput) -> ListenerState:
        """Makes the listener's default action forward to `weights` (also the rollback, with captured weights)."""
        region = _arn_region(req.listener_arn)
        elb = self._clients("elbv2", region)
        listener = self._listener(elb, req.listener_arn, req.entity_id)
        self._check_groups(elb, region, req.weights)
        if _forward_weights(listener) != req.weights:
            forward: dict[str, Any] = {
                "TargetGroups": [{"TargetGroupArn": a, "Weight": w} for a, w in sorted(req.weights.items())]
            }
            sticky = _forward_action(listener).get("ForwardConfig", {}).get("TargetGroupStickinessConfig")
            if sticky:
                forward["TargetGroupStickinessConfig"] = sticky
            elb.modify_listener(
                ListenerArn=req.listener_arn, DefaultActions=[{"Type": "forward", "ForwardConfig": forward}]
            )
        got = _forward_weights(self._listener(elb, req.listener_arn, req.entity_id))
        if got != req.weights:
            raise _not_applied(f"forward weights of {req.listener_arn}", req.weights, got)
        return ListenerState(listener_arn=req.listener_arn, weights=got)

    # ---- ELBv2 plumbing --------------------------------------------------------------------------------------

    def _find_group(self, elb: Any, fleet_id: str) -> dict | None:
        try:
            group = elb.describe_target_groups(Names=[target_group_name(fleet_id)])["TargetGroups"][0]
        except elb.exceptions.TargetGroupNotFoundException:
            return None
        tags = elb.describe_tags(ResourceArns=[group["TargetGroupArn"]])["TagDescriptions"][0]["Tags"]
        if {t["Key"]: t["Value"] for t in tags}.get(TAG_FLEET) != fleet_id:
            raise _invalid(f"target group {group['TargetGroupName']} exists but is not tagged for fleet {fleet_id}")
        return dict(group)

    def _vpc_of(self, fleet: FleetRef) -> str:
        ec2 = self._clients("ec2", fleet.region)
        reservations = ec2.describe_instances(InstanceIds=[fleet.instance_ids[0]])["Reservations"]
        vpc = reservations[0]["Instances"][0].get("VpcId") if reservations else None
        if not vpc:
            raise _invalid(f"instance {fleet.instance_ids[0]} of fleet {fleet.fleet_id} is in no VPC; pass vpc_id")
        return str(vpc)

    def _listener(self, elb: Any, arn: str, entity_id: str) -> dict:
        """The listener, after proving it is the entity's (its tags), before anything reads its weights."""
        try:
            listener = dict(elb.describe_listeners(ListenerArns=[arn])["Listeners"][0])
        except elb.exceptions.ListenerNotFoundException as exc:
            raise _invalid(f"listener {arn} does not exist") from exc
        tags = elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
        if not owned_by(tag_map(tags[0]["Tags"] if tags else ()), entity_id):
            raise not_owned("listener_arn", f"listener {arn}", entity_id)
        return listener

    def _check_groups(self, elb: Any, region: str, weights: dict[str, int]) -> None:
        if not weights or sum(weights.values()) == 0 or not all(0 <= w <= MAX_ELB_WEIGHT for w in weights.values()):
            raise _invalid(f"listener weights must be 0..{MAX_ELB_WEIGHT} with a positive total, got {weights}")
        foreign = [a for a in weights if _arn_region(a) != region]
        if foreign:
            raise _invalid(f"target groups {foreign} are not in the listener's region {region}")
        try:
            elb.describe_target_groups(TargetGroupArns=sorted(weights))
        except elb.exceptions.TargetGroupNotFoundException as exc:
            raise _invalid(f"a target group of {sorted(weights)} does not exist: {exc}") from exc


def target_group_name(fleet_id: str) -> str:
    """A valid, stable target group name for a fleet id (32 chars max, letters, digits and '-')."""
    return "shadow-" + hashlib.sha256(fleet_id.encode()).hexdigest()[:24]


def _arn_region(arn: str) -> str:
    region = arn_region(arn)
    if region is None or arn.split(":")[2] != "elasticloadbalancing":
        raise _invalid(f"{arn!r} is not an ELBv2 ARN")
    return region


def _forward_action(listener: dict) -> dict:
    return next((a for a in listener.get("DefaultActions", []) if a["Type"] == "forward"), {})


def _forward_weights(listener: dict) -> dict[str, int]:
    action = _forward_action(listener)
    groups = action.get("ForwardConfig", {}).get("TargetGroups")
    if groups:
        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
    return {action["TargetGroupArn"]: 1} if "TargetGroupArn" in action else {}


def _fqdn(name: str) -> str:
    """Route53's form of a name: lower case with one trailing dot (it reports names in lower case)."""
    return name.rstrip(".").lower() + "."


def _zone_key(zone_id: str) -> str:
    return zone_id.rsplit("/", 1)[-1]


def _entity_record(record: dict, entity_id: str) -> bool:
    """One of the entity's weighted A records (SetIdentifier is a fleet id, `<entity id>:...`)."""
    ident = record.get("SetIdentifier", "")
    return record["Type"] == "A" and "Weight" in record and ident.startswith(f"{entity_id}:")


def _check_r53_weights(weights: dict[str, int], fleets: dict[str, FleetRef]) -> None:
    if not weights or sum(weights.values()) == 0:
        raise _invalid(f"weights must name at least one fleet with a positive weight, got {weights}")
    for fid, weight in weights.items():
        if not 0 <= weight <= MAX_R53_WEIGHT:
            raise _invalid(f"weight of {fid} must be 0..{MAX_R53_WEIGHT}, got {weight}")
        if fid not in fleets:
            raise _invalid(f"weights name fleet {fid} but fleets does not describe it")


def _same(record: dict | None, fleet: FleetRef, weight: int, ttl_s: int) -> bool:
    if record is None:
        return False
    values = sorted(r["Value"] for r in record.get("ResourceRecords", []))
    return int(record["Weight"]) == weight and int(record["TTL"]) == ttl_s and values == sorted(fleet.addresses)


def _restore_change(
    req: RestoreWeightsInput,
    record: dict | None,
    fleet: FleetRef | None,
    fid: str,
    weight: int,
    verify: Callable[[FleetRef], FleetRef],
) -> dict | None:
    ttl = req.previous.ttl_s
    if record is not None:
        if int(record["Weight"]) == weight and (ttl is None or int(record["TTL"]) == ttl):
            return None
        return {"Action": "UPSERT", "ResourceRecordSet": {**record, "Weight": weight, "TTL": ttl or record["TTL"]}}
    if fleet is None:
        raise _invalid(f"record of fleet {fid} is gone and fleets does not describe it: cannot restore it")
    return _upsert(req.dns_name, verify(fleet), weight, ttl or TTL_S)


def _state(records: dict[str, dict]) -> RoutingState:
    ttls = [int(rr["TTL"]) for rr in records.values() if "TTL" in rr]
    return RoutingState(
        weights={k: int(v.get("Weight", 0)) for k, v in records.items()}, ttl_s=max(ttls) if ttls else None
    )


def _upsert(dns_name: str, fleet: FleetRef, weight: int, ttl_s: int = TTL_S) -> dict:
    if not fleet.addresses:
        raise _invalid(f"fleet {fleet.fleet_id} has no addresses to route to")
    return {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": _fqdn(dns_name),
            "Type": "A",
            "SetIdentifier": fleet.fleet_id,
            "Weight": weight,
            "TTL": ttl_s,
            "ResourceRecords": [{"Value": a} for a in fleet.addresses],
        },
    }
