"""Fault injection for AWS calls: make chosen boto3 operations fail, throttle, time out, run out of capacity, leave
spot requests unfulfilled, or succeed on AWS and lose the reply.

Chosen by settings (`SHADOWING_AWS_FAULTS`, a JSON list of `shadowing.faults.FaultRule`) or passed to
`workers.aws.AwsClients`; off by default. Each rule names what it hits: a service and operation
(`ec2:RunInstances`, `route53:*`, `*`), optionally
the activity type the call is made from and a substring of the workflow id (so that one worker can carry faults
for many migrations at once), and how many matching calls it hits (`after` skipped first, then `times`; 0 = all).

Injection uses botocore's own event hooks on every client the factory builds:
- `before-call` answers in place of AWS with an error response (or raises a timeout), so botocore's retries are
  bypassed and every injected fault reaches the product's code: the harsher case;
- `after-call` raises a read timeout after AWS did the work (`lost-reply`);
- `spot-unfulfilled` on a spot RunInstances (InstanceMarketOptions spot; on-demand launches pass) answers
  InsufficientInstanceCapacity, like a market with no spot capacity; on RequestSpotInstances (older workers) it
  answers with requests that stay `open`, shown by DescribeSpotInstanceRequests and closed by
  CancelSpotInstanceRequests. `open_spot_requests()` lists those left open (a leak the fault matrix checks).
"""

from __future__ import annotations

import copy
import fnmatch
import threading
import time
import uuid
from collections import Counter
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from shadowing.faults import FaultRule

#: Throttling codes as each service spells them (RequestLimitExceeded: EC2; ThrottlingException: JSON services).
THROTTLE_CODES = {"ec2": "RequestLimitExceeded", "dynamodb": "ThrottlingException", "dynamodbstreams":
                  "ThrottlingException", "sqs": "ThrottlingException", "cloudwatch": "Throttling"}  # fmt: skip
ERROR_CODES = {"ec2": "InternalError", "dynamodb": "InternalServerError", "dynamodbstreams": "InternalServerError"}


class FaultInjector:
    """Holds the rules and what they did; `install(client, region)` hooks a boto3 client. Thread-safe."""

    def __init__(self, rules: tuple[FaultRule, ...] | list[FaultRule]) -> None:
        self.rules = tuple(rules)
        self._seen: Counter[int] = Counter()  # matching calls per rule
        self.injected: Counter[str] = Counter()  # "<fault> <service>:<Operation>" -> count
        self.fired: Counter[FaultRule] = Counter()  # rule -> how many calls it hit
        self._fake_spot: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def install(self, client: Any, region: str) -> None:
        events = client.meta.events
        service = client.meta.service_model.service_name
        events.register("before-parameter-build.*.*", self._remember)
        events.register("before-call.*.*", lambda **kw: self._before(service, region, **kw))
        events.register("after-call.*.*", lambda **kw: self._after(service, region, **kw))

    def open_spot_requests(self, entity_id: str | None = None) -> list[str]:
        """Spot requests this injector answered for that nobody cancelled (of one entity, by its tag)."""
        with self._lock:
            return [rid for rid, r in self._fake_spot.items() if r["State"] == "open" and (
                entity_id is None or {"Key": "shadowing:entity", "Value": entity_id} in r["Tags"])]  # fmt: skip

    # ---- hooks ---------------------------------------------------------------------------------------------

    def _remember(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        """Keeps the caller's parameters for the later hooks (before-call only sees the serialised request)."""
        context["fault_params"] = copy.deepcopy(params)
        if model.name == "CancelSpotInstanceRequests" and self._fake_spot:
            ids = list(params.get("SpotInstanceRequestIds", []))
            with self._lock:
                fakes = [i for i in ids if i in self._fake_spot]
                for rid in fakes:
                    self._fake_spot[rid]["State"] = "cancelled"
            if fakes:
                params["SpotInstanceRequestIds"] = [i for i in ids if i not in fakes]
                if not params["SpotInstanceRequestIds"]:
                    states = [{"SpotInstanceRequestId": i, "State": "cancelled"} for i in fakes]
                    context["fault_answer"] = (_response(200), {"CancelledSpotInstanceRequests": states})

    def _before(self, service: str, region: str, model: Any, context: dict[str, Any], **_: Any) -> Any:
        op = model.name
        if "fault_answer" in context:
            return context["fault_answer"]
        spot = _is_spot_launch(context.get("fault_params") or {})
        for fault in self._hits(service, op, region, before=True, spot=spot):
            if fault.fault == "latency":
                time.sleep(fault.delay_s)
            elif fault.fault == "timeout":
                time.sleep(fault.delay_s)
                raise ReadTimeoutError(endpoint_url=f"injected://{service}.{region}/{op}")
            elif fault.fault == "spot-unfulfilled" and op == "RequestSpotInstances":
                return self._fake_spot_request(context.get("fault_params") or {})
            elif fault.fault == "spot-unfulfilled":  # a spot RunInstances: no spot capacity now
                return _error(service, op, "capacity")
            else:
                return _error(service, op, fault.fault)
        return None

    def _after(self, service: str, region: str, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        op = model.name
        if service == "ec2" and op == "DescribeSpotInstanceRequests" and self._fake_spot:
            parsed.setdefault("SpotInstanceRequests", []).extend(self._matching_fakes(_["context"]))
        if any(f.fault == "lost-reply" for f in self._hits(service, op, region, before=False)):
            raise ReadTimeoutError(endpoint_url=f"injected-lost-reply://{service}.{region}/{op}")

    def _hits(self, service: str, op: str, region: str, before: bool, spot: bool = False) -> list[FaultRule]:
        where = _activity_context()
        hits = []
        with self._lock:
            for n, rule in enumerate(self.rules):
                if (rule.fault == "lost-reply") == before or not self._matches(rule, service, op, region, where, spot):
                    continue
                self._seen[n] += 1
                seen = self._seen[n]
                if seen > rule.after and (rule.times == 0 or seen <= rule.after + rule.times):
                    self.injected[f"{rule.fault} {service}:{op}"] += 1
                    self.fired[rule] += 1
                    hits.append(rule)
        return hits

    @staticmethod
    def _matches(
        rule: FaultRule, service: str, op: str, region: str, where: tuple[str, str] | None, spot: bool = False
    ) -> bool:
        if not fnmatch.fnmatchcase(f"{service}:{op}", rule.operation if ":" in rule.operation else "*"):
            return False
        spot_call = (service, op) == ("ec2", "RequestSpotInstances") or (
            (service, op) == ("ec2", "RunInstances") and spot
        )
        if rule.fault == "spot-unfulfilled" and not spot_call:
            return False
        if rule.region is not None and rule.region != region:
            return False
        if rule.activity is not None and (where is None or where[0] != rule.activity):
            return False
        return rule.workflow is None or (where is not None and rule.workflow in where[1])

    # ---- unfulfilled spot requests -------------------------------------------------------------------------

    def _fake_spot_request(self, params: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
        tags = [t for spec in params.get("TagSpecifications", []) for t in spec.get("Tags", [])]
        made = []
        with self._lock:
            for _ in range(int(params.get("InstanceCount", 1))):
                rid = f"sir-fault{uuid.uuid4().hex[:8]}"
                self._fake_spot[rid] = {
                    "SpotInstanceRequestId": rid, "State": "open", "Type": params.get("Type", "one-time"),
                    "Status": {"Code": "capacity-not-available", "Message": "injected: no spot capacity"},
                    "Tags": tags, "SpotPrice": params.get("SpotPrice", ""),
                }  # fmt: skip
                made.append(dict(self._fake_spot[rid]))
        return _response(200), {"SpotInstanceRequests": made}

    def _matching_fakes(self, context: dict[str, Any]) -> list[dict[str, Any]]:
        params = context.get("fault_params") or {}
        wanted_ids = set(params.get("SpotInstanceRequestIds", []))
        filters = {f["Name"]: set(f["Values"]) for f in params.get("Filters", [])}
        out = []
        with self._lock:
            for rid, fake in self._fake_spot.items():
                tags = {t["Key"]: t["Value"] for t in fake["Tags"]}
                if wanted_ids and rid not in wanted_ids:
                    continue
                if "state" in filters and fake["State"] not in filters["state"]:
                    continue
                if any(name.startswith("tag:") and tags.get(name[4:]) not in values
                       for name, values in filters.items()):  # fmt: skip
                    continue
                out.append(dict(fake))
        return out


def _is_spot_launch(params: dict[str, Any]) -> bool:
    return bool(params.get("InstanceMarketOptions", {}).get("MarketType") == "spot")


def _activity_context() -> tuple[str, str] | None:
    """(activity type, workflow id) when called from inside an activity, else None."""
    from temporalio import activity

    try:
        info = activity.info()
    except RuntimeError:
        return None
    return info.activity_type, info.workflow_id or ""


def _error(service: str, op: str, fault: str) -> tuple[AWSResponse, dict[str, Any]]:
    if fault == "throttle":
        code, status = THROTTLE_CODES.get(service, "Throttling"), 400
    elif fault == "capacity":
        code, status = "InsufficientInstanceCapacity", 500
    else:
        code, status = ERROR_CODES.get(service, "ServiceUnavailable"), 503
    message = f"injected fault: {fault} on {service}:{op}"
    return _response(status), {"Error": {"Code": code, "Message": message},
                               "ResponseMetadata": {"HTTPStatusCode": status}}  # fmt: skip


def _response(status: int) -> AWSResponse:
    return AWSResponse(url="injected://", status_code=status, headers={}, raw=None)
