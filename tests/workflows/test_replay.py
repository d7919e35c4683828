"""Every committed history under tests/histories replays against today's workflow code (determinism check), and
every patch id in workflows/ is replayed in both of its branches by some committed history.

Record them with `SHADOWING_RECORD_HISTORIES=1` (docs/versioning.md has the command) after an intended workflow change.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from shadowing.codec import CONVERTER
from workers.main import WORKFLOWS

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = sorted((ROOT / "tests" / "histories").glob("*.json"))
#: One history per scenario, recorded from the code as it is (one generation: no `_v1`, `_v2` ...).
SCENARIOS = {
    "entity_schedule_success", "entity_schedule_aborted", "entity_schedule_forecast_only",
    "entity_schedule_continued", "entity_schedule_bootstrap_cold", "entity_schedule_scale_out",
    "shadow_migration_success", "shadow_migration_sync_failed", "shadow_migration_rolled_back",
    "shadow_migration_late", "train_fleet_model_published", "train_fleet_model_rejected",
}  # fmt: skip
PATCH_CALLS = {"patched", "deprecate_patch"}
PATCH_MARKER = "core_patch"  # the SDK's marker name for both


def test_histories_are_committed() -> None:
    """Success and failure paths of both long workflows are committed, one history per scenario; the only others
    are `<scenario>.before.<patch id>`, recorded before a `workflow.patched(id)` still in workflows/ (they go when
    the patch is deprecated: no `_v1`, `_v2` generations)."""
    stems = {p.stem for p in HISTORIES}
    assert SCENARIOS - stems == set(), "a scenario has no committed history"
    patches = {c.patch_id for c in patch_calls(sorted((ROOT / "workflows").glob("*.py"))) if c.call == "patched"}
    allowed = {f"{s}.before.{p}" for s in SCENARIOS for p in patches}
    assert stems - SCENARIOS <= allowed, "a history that is no scenario, or recorded before a patch no longer in use"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    """Replaying the history raises no non-determinism error."""
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


# ---- patches ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchCall:
    """A `workflow.patched(id)` or `workflow.deprecate_patch(id)` call; `workflow_type` is the `@workflow.defn`
    class it sits in (None in a helper outside a workflow class: then a history of any type counts)."""

    patch_id: str
    call: str
    where: str
    workflow_type: str | None


def patch_calls(paths: list[Path]) -> list[PatchCall]:
    """Every patch call in `paths`, its id resolved from a string literal or a module-level string constant (of the
    same module or imported from another of `paths`). An id it cannot resolve is an error, not a silent skip."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in paths}
    constants = {p.stem: _constants(tree) for p, tree in trees.items()}
    found = []
    for path, tree in trees.items():
        names = dict(constants[path.stem])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] in constants:
                theirs = constants[node.module.split(".")[-1]]
                names.update({a.asname or a.name: theirs[a.name] for a in node.names if a.name in theirs})
        for cls, call in _calls(tree):
            arg = call.args[0] if call.args else None
            patch_id = arg.value if isinstance(arg, ast.Constant) else names.get(getattr(arg, "id", ""))
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{call.lineno}"
            assert isinstance(patch_id, str), f"{where}: cannot resolve the patch id of {ast.unparse(call)}"
            found.append(PatchCall(patch_id, call.func.attr, where, cls))  # type: ignore[attr-defined]
    return found


def _constants(tree: ast.Module) -> dict[str, str]:
    return {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for t in node.targets
        if isinstance(t, ast.Name)
    }


def _calls(tree: ast.Module) -> list[tuple[str | None, ast.Call]]:
    """(workflow type of the enclosing `@workflow.defn` class or None, call) for each patch call."""
    out: list[tuple[str | None, ast.Call]] = []

    def visit(node: ast.AST, cls: str | None) -> None:
        if isinstance(node, ast.ClassDef):
            cls = _workflow_type(node) or cls
        if isinstance(node, ast.Call) and ast.unparse(node.func) in {f"workflow.{c}" for c in PATCH_CALLS}:
            out.append((cls, node))
        for child in ast.iter_child_nodes(node):
            visit(child, cls)

    visit(tree, None)
    return out


def _workflow_type(cls: ast.ClassDef) -> str | None:
    for dec in cls.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr == "defn":
            named = [k.value for k in getattr(dec, "keywords", []) if k.arg == "name"]
            return named[0].value if named and isinstance(named[0], ast.Constant) else cls.name
    return None


@cache
def history_markers(path: Path) -> tuple[str, frozenset[str]]:
    """(workflow type, ids of its patch markers: `MarkerRecorded` events named `core_patch`) of a committed history."""
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    started = history.events[0].workflow_execution_started_event_attributes
    ids = set()
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and marker.marker_name == PATCH_MARKER:
            ids.update(json.loads(p.data)["id"] for p in marker.details["patch-data"].payloads)
    return started.workflow_type.name, frozenset(ids)


def uncovered(calls: list[PatchCall], seen: list[tuple[str, frozenset[str]]]) -> list[str]:
    """What is missing for each patch call, given each history's (workflow type, patch ids): `patched(id)` needs a
    history with its marker (the new branch) and one of the same workflow type without it (the old branch);
    `deprecate_patch(id)` one with the marker (runs started under `patched(id)` must still replay)."""
    problems = []
    for c in calls:
        same_type = [ids for kind, ids in seen if c.workflow_type in (None, kind)]
        if not any(c.patch_id in ids for ids in same_type):
            problems.append(f"{c.where}: no committed history records the patch marker {c.patch_id!r}")
        if c.call == "patched" and all(c.patch_id in ids for ids in same_type):
            problems.append(f"{c.where}: no committed history replays the branch before {c.patch_id!r}")
    return problems


def test_every_patch_id_is_replayed_in_both_branches() -> None:
    """Each `workflow.patched(id)` in workflows/ has a committed history with its marker and one without (recorded
    before the patch); each `workflow.deprecate_patch(id)` one with its marker. See docs/versioning.md."""
    calls = patch_calls(sorted((ROOT / "workflows").glob("*.py")))
    assert uncovered(calls, [history_markers(p) for p in HISTORIES]) == []


def test_patch_ids_are_found_in_literals_and_constants(tmp_path: Path) -> None:
    """The guard is not vacuous while workflows/ has no patch: ids are found as literals, module constants and
    constants imported from another workflow module, with the workflow type of the class they are in."""
    (tmp_path / "ids.py").write_text('SHARED = "shared-id"\n')
    (tmp_path / "flow.py").write_text(
        "from temporalio import workflow\nfrom workflows.ids import SHARED\nLOCAL = 'local-id'\n\n"
        "@workflow.defn(name='ShadowMigration')\nclass Flow:\n    @workflow.run\n    async def run(self) -> None:\n"
        "        if workflow.patched(LOCAL) or workflow.patched(SHARED):\n"
        "            workflow.deprecate_patch('retired-id')\n"
    )
    calls = patch_calls([tmp_path / "flow.py", tmp_path / "ids.py"])
    assert [(c.patch_id, c.call, c.workflow_type, c.where) for c in calls] == [
        ("local-id", "patched", "ShadowMigration", f"{tmp_path / 'flow.py'}:9"),
        ("shared-id", "patched", "ShadowMigration", f"{tmp_path / 'flow.py'}:9"),
        ("retired-id", "deprecate_patch", "ShadowMigration", f"{tmp_path / 'flow.py'}:10"),
    ]  # fmt: skip
    (tmp_path / "bad.py").write_text("from temporalio import workflow\nworkflow.patched(make_id())\n")
    with pytest.raises(AssertionError, match="cannot resolve the patch id"):
        patch_calls([tmp_path / "bad.py"])


@pytest.mark.parametrize(
    ("call", "seen", "missing"),
    [
        ("patched", [("ShadowMigration", frozenset({"p"})), ("ShadowMigration", frozenset())], []),
        ("patched", [], ["records the patch marker", "replays the branch before"]),  # no history at all
        ("patched", [("ShadowMigration", frozenset({"p"}))], ["replays the branch before"]),  # only the new branch
        ("patched", [("ShadowMigration", frozenset())], ["records the patch marker"]),  # only the old branch
        ("patched", [("EntitySchedule", frozenset({"p"})), ("ShadowMigration", frozenset())],
         ["records the patch marker"]),  # the marker is in another workflow type's history
        ("deprecate_patch", [("ShadowMigration", frozenset({"p"}))], []),
        ("deprecate_patch", [("ShadowMigration", frozenset())], ["records the patch marker"]),
    ],
)  # fmt: skip
def test_a_patch_a_branch_of_which_no_history_replays_fails_loudly(
    call: str, seen: list[tuple[str, frozenset[str]]], missing: list[str]
) -> None:
    """Each branch a committed history lacks is reported, naming where the patch is."""
    problems = uncovered([PatchCall("p", call, "workflows/migrate.py:7", "ShadowMigration")], seen)
    assert len(problems) == len(missing)
    for problem, what in zip(problems, missing, strict=True):
        assert problem.startswith("workflows/migrate.py:7: no committed history ") and what in problem
