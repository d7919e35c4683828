"""ShadowingClient: the Python SDK other services use to reach the four endpoints.

    client = await ShadowingClient.connect("127.0.0.1:7233")
    forecast = await client.predict_demand("checkout-api", {"start": "...Z", "end": "...Z"})

Every method validates its input before anything is sent (a typed `InvalidRequest` naming the field), and turns
Temporal failures into the hierarchy of `shadowing.errors`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from shadowing import TASK_QUEUE, search
from shadowing.errors import (
    BY_TYPE,
    InvalidRequest,
    MigrationFailed,
    ServiceUnavailable,
    ShadowingError,
    TimeSliceNotActive,
    UnknownEntity,
)
from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import (
    AllocationSchedule,
    CostLedger,
    DemandForecast,
    EntityId,
    EntityPlan,
    EntitySpec,
    EntityStatus,
    MigrationProgress,
    MigrationResult,
    PauseRequest,
    PredictDemandInput,
    ProvisionRequest,
    RegisterEntityInput,
    SliceAction,
    SliceRequest,
    SliceStatus,
    TimeSlice,
    TrainFleetModelInput,
    TrainFleetModelResult,
)
from shadowing.settings import Settings

M = TypeVar("M", bound=BaseModel)
#: How long `register_entity` waits for the pre-flight checks (a worker must pick them up and run a few reads).
PREFLIGHT_TIMEOUT = timedelta(minutes=3)
#: On-demand trainings (`train_fleet_model`) share one id: a second request while one runs waits for that one.
TRAIN_WORKFLOW_ID = "fleet-model/train-now"
SliceLike = TimeSlice | Mapping[str, Any]


def parse(model: type[M], data: Any, what: str = "") -> M:
    """Validates `data` as `model`; `InvalidRequest` naming the first bad field otherwise."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or what or model.__name__
        prefix = f"{what}." if what and field != what else ""
        raise InvalidRequest(err["msg"].removeprefix("Value error, "), f"{prefix}{field}") from exc


class ShadowingClient:
    def __init__(self, client: Client, task_queue: str = TASK_QUEUE, ids: Pseudonyms = PLAIN) -> None:
        """`ids`: how entity ids appear in Temporal (`Settings.pseudonyms()`; pseudonyms when payloads are
        encrypted). `connect(settings=...)` sets it from the settings."""
        self.client = client
        self.task_queue = task_queue
        self.ids = ids

    def workflow_id(self, entity_id: str) -> str:
        """The entity's `EntitySchedule` workflow id (`entity/<id>`, or its pseudonym with encryption on)."""
        return self.ids.entity_workflow_id(entity_id)

    @classmethod
    async def connect(
        cls, address: str, namespace: str = "default", task_queue: str = TASK_QUEUE, settings: Settings | None = None
    ) -> ShadowingClient:
        """`settings` (e.g. `Settings()`): the payload codec the workers use and the TLS / API key of a remote
        cluster (Temporal's own TEMPORAL_* variables)."""
        from shadowing.connect import connect

        ids = settings.pseudonyms() if settings is not None else PLAIN
        return cls(await connect(address, namespace, settings=settings), task_queue, ids)

    async def register_entity(
        self, spec: EntitySpec | Mapping[str, Any], schedule: AllocationSchedule | Mapping[str, Any]
    ) -> str:
        """Starts the entity's `EntitySchedule` (id `entity/<entity_id>`, see `workflow_id`); returns the id.

        First the worker checks what the spec names against AWS (the `PreflightEntity` workflow: hosted zone,
        tables, queues, database, listener, AMI, usage history): a problem raises `InvalidRequest` naming the spec
        field (`spec.hosted_zone_id`) and nothing is started; checks that cannot run raise `ServiceUnavailable`."""
        req = RegisterEntityInput(
            spec=parse(EntitySpec, spec, "spec"), schedule=parse(AllocationSchedule, schedule, "schedule")
        )
        if self.ids.hidden:
            req = req.model_copy(update={"name": self.ids(req.spec.entity_id)})
        wid = self.workflow_id(req.spec.entity_id)
        await self._preflight(req)
        try:
            await self.client.start_workflow(
                "EntitySchedule", req, id=wid, task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(search.ENTITY, self.ids(req.spec.entity_id))]
                ),
            )  # fmt: skip
        except WorkflowAlreadyStartedError as exc:
            raise InvalidRequest(
                f"entity {req.spec.entity_id!r} is already registered and running", "spec.entity_id"
            ) from exc
        return wid

    async def _preflight(self, req: RegisterEntityInput) -> None:
        """Runs `PreflightEntity` for the spec and waits for it (its own id: one per registration attempt)."""
        name = req.name or req.spec.entity_id
        try:
            await self.client.execute_workflow(
                "PreflightEntity", req.spec, id=f"preflight/{name}/{uuid.uuid4().hex[:12]}",
                task_queue=self.task_queue, execution_timeout=PREFLIGHT_TIMEOUT,
            )  # fmt: skip
        except WorkflowFailureError as exc:
            raise _preflight_error(exc) from exc

    async def predict_demand(self, entity_id: str, time_slice: SliceLike) -> DemandForecast:
        """PredictDemand(entityId, timeSlice): hourly quantiles and readiness for the slice."""
        req = parse(PredictDemandInput, {"entity_id": entity_id, "time_slice": _dump(time_slice)})
        await self._entity(req.entity_id)
        try:
            return await self.client.execute_workflow(
                "PredictDemand", req, id=f"predict/{self.ids(req.entity_id)}/{req.time_slice.key}",
                task_queue=self.task_queue, result_type=DemandForecast,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )  # fmt: skip
        except WorkflowFailureError as exc:
            raise _translate(exc) from exc

    async def train_fleet_model(
        self, req: TrainFleetModelInput | Mapping[str, Any] | None = None, wait: bool = True
    ) -> TrainFleetModelResult | str:
        """Runs `TrainFleetModel` now (as the daily schedule does): the result (`published` or `rejected`, with the
        scores), or with `wait=False` the workflow id. A training already running is joined, not repeated."""
        req = parse(TrainFleetModelInput, req or {})
        try:
            handle = await self.client.start_workflow(
                "TrainFleetModel", req, id=TRAIN_WORKFLOW_ID, task_queue=self.task_queue,
                result_type=TrainFleetModelResult, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )  # fmt: skip
            if not wait:
                return handle.id
            return await handle.result()
        except WorkflowFailureError as exc:
            failure = _translate(exc)
            if isinstance(failure, InvalidRequest):
                raise failure from exc
            raise ShadowingError(f"training failed, the published model keeps serving: {failure}") from exc

    async def provision_shadow_instances(
        self, entity_id: str, time_slice: SliceLike, instance_type: str, quantity: int
    ) -> MigrationProgress:
        """ProvisionShadowInstances: shadows for the slice, warmed; they wait for migrate or release."""
        req = parse(
            ProvisionRequest, {"time_slice": _dump(time_slice), "instance_type": instance_type, "quantity": quantity}
        )
        return await self._update(entity_id, "ProvisionShadowInstances", req, MigrationProgress)

    async def migrate_instances(self, entity_id: str, time_slice: SliceLike) -> MigrationResult:
        """MigrateInstances: cut over to the slice's shadows now."""
        req = parse(SliceRequest, {"time_slice": _dump(time_slice)})
        return await self._update(entity_id, "MigrateInstances", req, MigrationResult)

    async def release_shadow_instances(self, entity_id: str, time_slice: SliceLike) -> MigrationResult:
        """ReleaseShadowInstances: undo the slice's shadows."""
        req = parse(SliceRequest, {"time_slice": _dump(time_slice)})
        return await self._update(entity_id, "ReleaseShadowInstances", req, MigrationResult)

    async def status(self, entity_id: str) -> EntityStatus:
        """The entity's phase, fleets, slices, recent events and cost ledger."""
        handle = await self._entity(entity_id)
        return await handle.query("status", result_type=EntityStatus)

    async def plan(self, entity_id: str) -> EntityPlan:
        """Every slice with when it is forecast, what was decided and whether it needs approval."""
        handle = await self._entity(entity_id)
        return await handle.query("plan", result_type=EntityPlan)

    async def ledger(self, entity_id: str) -> CostLedger:
        """Shadow hours, cost, spot savings and wasted pre-warm so far."""
        handle = await self._entity(entity_id)
        return await handle.query("ledger", result_type=CostLedger)

    async def approve(self, entity_id: str, time_slice: SliceLike, reason: str = "") -> SliceStatus:
        """Lets the slice's shadows be provisioned (entities with `policy.approval_required`)."""
        req = parse(SliceAction, {"time_slice": _dump(time_slice), "reason": reason})
        return await self._update(entity_id, "approve", req, SliceStatus)

    async def abort(self, entity_id: str, time_slice: SliceLike, reason: str = "") -> SliceStatus:
        """Stops the slice: a running migration is rolled back (routing restored, old fleet serving)."""
        req = parse(SliceAction, {"time_slice": _dump(time_slice), "reason": reason})
        return await self._update(entity_id, "abort", req, SliceStatus)

    async def pause(self, entity_id: str, reason: str = "") -> EntityStatus:
        """No new slice is forecast or prepared until `resume`; running migrations finish."""
        return await self._update(entity_id, "pause", parse(PauseRequest, {"reason": reason}), EntityStatus)

    async def resume(self, entity_id: str) -> EntityStatus:
        return await self._update(entity_id, "resume", None, EntityStatus)

    async def update_schedule(self, entity_id: str, schedule: AllocationSchedule | Mapping[str, Any]) -> EntityPlan:
        """Replaces the slices that have not started."""
        req = parse(AllocationSchedule, schedule, "schedule")
        return await self._update(entity_id, "update_schedule", req, EntityPlan)

    async def update_spec(self, entity_id: str, spec: EntitySpec | Mapping[str, Any]) -> EntitySpec:
        """New spec and policy (e.g. `policy.mode`) for the slices not started yet."""
        return await self._update(entity_id, "update_spec", parse(EntitySpec, spec, "spec"), EntitySpec)

    async def _entity(self, entity_id: str) -> WorkflowHandle:
        try:
            entity_id = _ENTITY_ID.validate_python(entity_id)
        except ValidationError as exc:
            raise InvalidRequest(exc.errors()[0]["msg"].removeprefix("Value error, "), "entity_id") from exc
        handle = self.client.get_workflow_handle(self.workflow_id(entity_id))
        try:
            await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UnknownEntity(entity_id) from exc
            raise
        return handle

    async def _update(self, entity_id: str, name: str, req: BaseModel | None, result_type: type[M]) -> M:
        handle = await self._entity(entity_id)
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            raise InvalidRequest(
                f"entity {entity_id!r} is not running (its schedule is {desc.status.name})", "entity_id"
            )
        try:
            if req is None:
                return await handle.execute_update(name, result_type=result_type)
            return await handle.execute_update(name, req, result_type=result_type)
        except WorkflowUpdateFailedError as exc:
            raise _translate(exc) from exc


_ENTITY_ID: TypeAdapter[str] = TypeAdapter(EntityId)


def _dump(value: SliceLike) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _preflight_error(exc: WorkflowFailureError) -> ShadowingError:
    """A failed pre-flight: the spec's problem (`InvalidRequest` naming its field), or why it could not run."""
    cause: Any = exc
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause
    message = getattr(cause, "message", None) or str(cause)
    if getattr(cause, "type", None) in ("InvalidRequest", "NotOwned"):
        field, _, problem = message.partition(": ")
        return InvalidRequest(problem, field) if problem and field.startswith("spec.") else InvalidRequest(message)
    if isinstance(cause, TimeoutError) or "timeout" in type(cause).__name__.lower():
        return ServiceUnavailable(
            f"pre-flight checks of the entity did not finish within {PREFLIGHT_TIMEOUT.total_seconds():.0f} s: "
            "is a worker polling the task queue?"
        )
    return ServiceUnavailable(f"pre-flight checks of the entity could not run: {message}")


def _translate(exc: Exception) -> ShadowingError:
    """Maps the innermost ApplicationError of a Temporal failure to the SDK's exception types."""
    cause: Any = exc
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause
    message = getattr(cause, "message", None) or str(cause)
    kind = getattr(cause, "type", None) or ""
    if TimeSliceNotActive.MESSAGE in message:
        return TimeSliceNotActive(message.split(TimeSliceNotActive.MESSAGE)[-1].strip(" :()"))
    if kind == "UnknownEntity":
        return InvalidRequest(message.removeprefix("entity_id: "), "entity_id")
    cls = BY_TYPE.get(kind) or (InvalidRequest if kind in ("", "ValueError") else MigrationFailed)
    if issubclass(cls, InvalidRequest):  # a validator's rejection or undecodable input: "field: problem"
        field, _, problem = message.partition(": ")
        if problem and _FIELD.fullmatch(field):
            return cls(problem, field)  # type: ignore[call-arg]
    return cls(message)


_FIELD = re.compile(r"[A-Za-z_][\w.\[\]-]*")
