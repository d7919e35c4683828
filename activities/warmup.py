"""Readiness of a fleet: wait until EC2 reports every instance running with passing status checks.

The foundation's warm-up is EC2's own health view; synthetic traffic against the instances comes with the
data-plane issue. Long waits heartbeat, and a retried attempt resumes its deadline from the heartbeat details.
"""

from __future__ import annotations

import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ClientFactory
from shadowing.models import FleetInput, HealthReport

POLL_S = 1.0


class WarmupActivities:
    def __init__(self, clients: ClientFactory, poll_s: float = POLL_S) -> None:
        self._clients = clients
        self._poll_s = poll_s

    @activity.defn(name="warm_fleet")
    def warm_fleet(self, req: FleetInput) -> HealthReport:
        """Blocks until the fleet is healthy; non-retryable `InstanceNeverHealthy` past the deadline."""
        details = activity.info().heartbeat_details
        deadline = float(details[0]) if details else time.time() + req.timeout_s
        while True:
            report = self._probe(req)
            activity.heartbeat(deadline, report.healthy_count)
            if report.healthy:
                return report
            if time.time() >= deadline:
                raise ApplicationError(
                    f"fleet {req.fleet.fleet_id} in {req.fleet.region} not healthy after {req.timeout_s:.0f}s: "
                    f"{report.detail}",
                    type="InstanceNeverHealthy",
                    non_retryable=True,
                )
            time.sleep(self._poll_s)

    @activity.defn(name="check_fleet_health")
    def check_fleet_health(self, req: FleetInput) -> HealthReport:
        """One probe of the fleet's health (used by the post-cutover watch)."""
        return self._probe(req)

    def _probe(self, req: FleetInput) -> HealthReport:
        ids = list(req.fleet.instance_ids)
        if not ids:
            return HealthReport(healthy=False, healthy_count=0, total=0, detail="fleet has no instances")
        ec2 = self._clients("ec2", req.fleet.region)
        statuses = ec2.describe_instance_status(InstanceIds=ids, IncludeAllInstances=True)["InstanceStatuses"]
        good = [
            s["InstanceId"]
            for s in statuses
            if s["InstanceState"]["Name"] == "running"
            and s.get("InstanceStatus", {}).get("Status", "ok") in ("ok", "not-applicable")
            and s.get("SystemStatus", {}).get("Status", "ok") in ("ok", "not-applicable")
        ]
        bad = sorted(set(ids) - set(good))
        return HealthReport(
            healthy=not bad,
            healthy_count=len(good),
            total=len(ids),
            detail=f"unhealthy: {', '.join(bad)}" if bad else "all instances running, status checks ok",
        )
