"""`shadowctl apply -f fleet.yaml`: a fleet of entities described in one YAML or JSON file, applied idempotently.

    defaults:                 # optional: spec fields merged into every entity's spec (the entity's own win)
      policy: {mode: forecast-only, lead_time_s: 1800}
    entities:                 # each one what `shadowctl register` takes
      - spec: {entity_id: checkout-api, home_region: us-east-1, ...}
        schedule: {slices: [{start: "2027-01-04T00:00:00Z", end: "2027-01-04T08:00:00Z", region: eu-west-1}]}

The whole file is validated before anything is sent (`load_fleet`); then each entity is compared with its running
`EntitySchedule` (`diff_entity`, pure) and only what differs is sent: `register` when it is not running, `update_spec`
when the spec differs, `update_schedule` when the slices that have not started differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from shadowing.client import parse
from shadowing.errors import InvalidRequest
from shadowing.models import AllocationSchedule, EntitySpec, ScheduledSlice, SliceStatus

if TYPE_CHECKING:
    from shadowing.client import ShadowingClient

ENTITY_KEYS = {"spec", "schedule"}
TOP_KEYS = {"entities", "defaults"}


class FleetFileError(InvalidRequest):
    """Every problem found in a fleet file (CLI exit code 2); `problems` lists them one per line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n > 1 else ''}, nothing applied:"
        super().__init__("\n  ".join([head, *self.problems]), source)


@dataclass(frozen=True)
class FleetEntry:
    """One validated entity of the file: its position, spec (defaults merged) and schedule."""

    index: int
    spec: EntitySpec
    schedule: AllocationSchedule

    @property
    def entity_id(self) -> str:
        return self.spec.entity_id


@dataclass(frozen=True)
class Change:
    """What applying one entity does (or did): create it, or update its spec and/or schedule, or nothing."""

    entity_id: str
    create: bool = False
    spec_fields: tuple[str, ...] = ()
    schedule: bool = False
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def result(self) -> str:
        if self.create:
            return "created"
        parts = [p for p, on in (("spec", bool(self.spec_fields)), ("schedule", self.schedule)) if on]
        return f"updated {' and '.join(parts)}" if parts else "unchanged"

    def line(self, dry_run: bool = False) -> str:
        detail = f" ({', '.join(self.spec_fields)})" if self.spec_fields and not self.create else ""
        return f"{self.entity_id}: {'would be ' if dry_run and self.result != 'unchanged' else ''}{self.result}{detail}"

    def as_json(self, dry_run: bool = False) -> dict[str, Any]:
        return {"entity_id": self.entity_id, "result": self.result, "spec_fields": list(self.spec_fields),
                "schedule": self.schedule or self.create, "dry_run": dry_run}  # fmt: skip


# ---- loading and validation (pure) ----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false (so `holiday_country: NO` stays the string "NO")."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _ch in "tTfF":
    _Loader.yaml_implicit_resolvers.setdefault(_ch, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


def parse_text(text: str, source: str = "fleet file") -> Any:
    """The document in `text`: JSON when `source` ends in .json, YAML otherwise; syntax errors name the line."""
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FleetFileError(source, [f"line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"]) from exc
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, opened = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and opened is not None and mark is not None and opened.line != mark.line:
            context = f"{context} (line {opened.line + 1})"
        raise FleetFileError(source, [f"{where}not valid YAML: {f'{context}, ' if context else ''}{problem}"]) from exc


def merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """`own` over `defaults`; nested objects (policy, policy.degradation) are merged key by key, lists replaced."""
    out = dict(defaults)
    for key, value in own.items():
        base = out.get(key)
        out[key] = merge(base, value) if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    return out


def validate_fleet(doc: Any, source: str = "fleet file") -> list[FleetEntry]:
    """Every entity of the document, validated; `FleetFileError` listing every problem (by entity and field)."""
    if not isinstance(doc, Mapping):
        raise FleetFileError(source, ["must be an object with 'entities' (a list) and optionally 'defaults'"])
    problems = [f"{k}: unknown key (expected 'entities' and optionally 'defaults')" for k in doc if k not in TOP_KEYS]
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        problems.append("defaults: must be an object of spec fields, e.g. {policy: {mode: forecast-only}}")
        defaults = {}
    entities = doc.get("entities")
    if not isinstance(entities, list) or not entities:
        raise FleetFileError(source, [*problems, "entities: must be a non-empty list of {spec, schedule}"])
    entries: list[FleetEntry] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(entities):
        if not isinstance(raw, Mapping) or ENTITY_KEYS - raw.keys():
            problems.append(f"entities[{i}]: must be an object with 'spec' and 'schedule'")
            continue
        eid = raw["spec"].get("entity_id") if isinstance(raw["spec"], Mapping) else None
        where = f"entities[{i}]" + (f" ({eid})" if isinstance(eid, str) else "")
        problems += [f"{where}: {k}: unknown key (expected 'spec' and 'schedule')" for k in raw if k not in ENTITY_KEYS]
        if isinstance(eid, str):
            if eid in seen:
                problems.append(f"{where}: spec.entity_id: duplicate entity id, also entities[{seen[eid]}]")
            seen.setdefault(eid, i)
        spec_raw = merge(defaults, raw["spec"]) if isinstance(raw["spec"], Mapping) else raw["spec"]
        spec = _collect(EntitySpec, spec_raw, "spec", where, problems)
        schedule = _collect(AllocationSchedule, raw["schedule"], "schedule", where, problems)
        if spec is not None and schedule is not None:
            entries.append(FleetEntry(i, spec, schedule))
    if problems:
        raise FleetFileError(source, problems)
    return entries


def _collect(model: type[BaseModel], data: Any, what: str, where: str, problems: list[str]) -> Any:
    """`parse`, but every validation error (not only the first) is appended to `problems`, prefixed by `where`."""
    try:
        return parse(model, data, what)
    except InvalidRequest as first:
        cause = first.__cause__
        if not isinstance(cause, ValidationError):
            problems.append(f"{where}: {first}")
            return None
        for err in cause.errors():
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"{where}: {what}{'.' + loc if loc else ''}: {err['msg'].removeprefix('Value error, ')}")
        return None


def load_fleet(path: Path) -> list[FleetEntry]:
    """Reads and validates the whole file; `FleetFileError` (an `InvalidRequest`) on any problem."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read: {exc}", str(path)) from exc
    return validate_fleet(parse_text(text, str(path)), str(path))


# ---- comparing with what runs (pure) ---------------------------------------------------------------------------


def spec_differences(current: EntitySpec, desired: EntitySpec) -> tuple[str, ...]:
    """Dotted names of the fields that differ, e.g. ("policy.lead_time_s",); () when the specs are equal."""

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, sub in value.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    if current == desired:
        return ()
    a, b = flat(current.model_dump(mode="json"), ""), flat(desired.model_dump(mode="json"), "")
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def diff_entity(
    entry: FleetEntry, current_spec: EntitySpec | None, current_slices: Sequence[SliceStatus] | None
) -> Change:
    """What applying `entry` must send, given the running entity's spec and slices (None: not running).

    Slices that have started or settled (state other than "pending") are kept by `update_schedule`, so only the
    desired slices that are not one of them are compared with the pending ones. Changes the running workflow would
    reject (entity id or home region, a slice overlapping a started one) are returned as `problems`."""
    if current_spec is None or current_slices is None:
        return Change(entry.entity_id, create=True)
    where = f"entities[{entry.index}] ({entry.entity_id})"
    problems = []
    if current_spec.home_region != entry.spec.home_region:
        problems.append(
            f"{where}: spec.home_region: cannot change while the entity runs "
            f"({current_spec.home_region} -> {entry.spec.home_region}); register it again"
        )
    started = [s for s in current_slices if s.state != "pending"]
    for s in entry.schedule.slices:
        for e in started:
            if s.start < e.time_slice.end and e.time_slice.start < s.end and s != e.time_slice:
                problems.append(
                    f"{where}: schedule.slices: {s.key} overlaps slice {e.time_slice.key}, which is {e.state}"
                )
    kept = {e.time_slice for e in started}
    pending: tuple[ScheduledSlice, ...] = tuple(s.time_slice for s in current_slices if s.state == "pending")
    wanted = tuple(s for s in entry.schedule.slices if s not in kept)
    return Change(
        entry.entity_id,
        spec_fields=spec_differences(current_spec, entry.spec),
        schedule=sorted(pending, key=lambda s: s.start) != sorted(wanted, key=lambda s: s.start),
        problems=tuple(problems),
    )


# ---- against the server --------------------------------------------------------------------------------------


async def current_state(client: ShadowingClient, entity_id: str) -> tuple[EntitySpec, tuple[SliceStatus, ...]] | None:
    """The running entity's spec and slices; None when its EntitySchedule is not running (never started or closed)."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from shadowing.models import EntityStatus

    handle = client.client.get_workflow_handle(client.workflow_id(entity_id))
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return None
    spec = await handle.query("spec", result_type=EntitySpec)
    status = await handle.query("status", result_type=EntityStatus)
    return spec, status.slices


async def plan_fleet(client: ShadowingClient, entries: Sequence[FleetEntry], source: str = "fleet") -> list[Change]:
    """Every entity's change; only queries are sent. `FleetFileError` when a change could not be applied."""
    changes = []
    for entry in entries:
        state = await current_state(client, entry.entity_id)
        changes.append(diff_entity(entry, *(state or (None, None))))
    problems = [p for c in changes for p in c.problems]
    if problems:
        raise FleetFileError(source, problems)
    return changes


async def apply_fleet(
    client: ShadowingClient,
    entries: Sequence[FleetEntry],
    dry_run: bool = False,
    on_change: Callable[[Change], None] | None = None,
    source: str = "fleet",
) -> list[Change]:
    """Plans every entity first (nothing is sent when any change is impossible), then sends only what differs;
    `on_change` is called after each entity is applied."""
    changes = await plan_fleet(client, entries, source)
    for entry, change in zip(entries, changes, strict=True):
        if not dry_run:
            if change.create:
                await client.register_entity(entry.spec, entry.schedule)
            if change.spec_fields:
                await client.update_spec(entry.entity_id, entry.spec)
            if change.schedule and not change.create:
                await client.update_schedule(entry.entity_id, entry.schedule)
        if on_change is not None:
            on_change(change)
    return changes
