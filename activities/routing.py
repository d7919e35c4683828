"""Route53 weighted records: one record per fleet (SetIdentifier = fleet id); the cutover moves the weight."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ClientFactory
from shadowing.models import FleetRef, RoutingInput, RoutingState

TTL_S = 30
GLOBAL_REGION = "us-east-1"  # Route53 is global; its API lives in us-east-1


class RoutingActivities:
    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    @activity.defn(name="switch_traffic")
    def switch_traffic(self, req: RoutingInput) -> RoutingState:
        """Atomically gives `to_fleet` all the weight and `from_fleet` none (one change batch)."""
        changes = [_upsert(req.dns_name, req.to_fleet, 100)]
        if req.from_fleet is not None and req.from_fleet.fleet_id != req.to_fleet.fleet_id:
            changes.append(_upsert(req.dns_name, req.from_fleet, 0))
        self._change(req, changes, f"switch {req.dns_name} to {req.to_fleet.fleet_id}")
        return self.routing_state(req)

    @activity.defn(name="restore_traffic")
    def restore_traffic(self, req: RoutingInput) -> RoutingState:
        """Compensation of `switch_traffic`: weight back on `from_fleet`, `to_fleet`'s record removed."""
        changes = []
        if req.from_fleet is not None:
            changes.append(_upsert(req.dns_name, req.from_fleet, 100))
        current = self._records(req)
        if req.to_fleet.fleet_id in current:
            changes.append({"Action": "DELETE", "ResourceRecordSet": current[req.to_fleet.fleet_id]})
        if changes:
            self._change(req, changes, f"restore {req.dns_name}")
        return self.routing_state(req)

    @activity.defn(name="remove_fleet_record")
    def remove_fleet_record(self, req: RoutingInput) -> RoutingState:
        """Deletes `to_fleet`'s record if it is still there (retirement and compensation); safe to repeat."""
        current = self._records(req)
        record = current.get(req.to_fleet.fleet_id)
        if record is not None:
            self._change(req, [{"Action": "DELETE", "ResourceRecordSet": record}], f"remove {req.to_fleet.fleet_id}")
        return self.routing_state(req)

    @activity.defn(name="routing_state")
    def routing_state(self, req: RoutingInput) -> RoutingState:
        return RoutingState(weights={k: int(v.get("Weight", 0)) for k, v in self._records(req).items()})

    def _records(self, req: RoutingInput) -> dict[str, dict]:
        r53 = self._clients("route53", GLOBAL_REGION)
        name = req.dns_name.rstrip(".") + "."
        pages = r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=req.hosted_zone_id)
        return {
            rr["SetIdentifier"]: rr
            for page in pages
            for rr in page["ResourceRecordSets"]
            if rr["Name"] == name and rr["Type"] == "A" and "SetIdentifier" in rr
        }

    def _change(self, req: RoutingInput, changes: list[dict], comment: str) -> None:
        r53 = self._clients("route53", GLOBAL_REGION)
        try:
            r53.change_resource_record_sets(
                HostedZoneId=req.hosted_zone_id, ChangeBatch={"Comment": comment, "Changes": changes}
            )
        except r53.exceptions.NoSuchHostedZone as exc:
            raise ApplicationError(
                f"hosted zone {req.hosted_zone_id} does not exist", type="InvalidRequest", non_retryable=True
            ) from exc


def _upsert(dns_name: str, fleet: FleetRef, weight: int) -> dict:
    if not fleet.addresses:
        raise ApplicationError(f"fleet {fleet.fleet_id} has no addresses to route to", non_retryable=True)
    return {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": dns_name.rstrip(".") + ".",
            "Type": "A",
            "SetIdentifier": fleet.fleet_id,
            "Weight": weight,
            "TTL": TTL_S,
            "ResourceRecords": [{"Value": a} for a in fleet.addresses],
        },
    }
