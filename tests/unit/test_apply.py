"""`shadowctl apply`: the fleet file's validation (whole file, every problem named by entity and field) and the
comparison with a running entity that decides what is sent. No server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shadowctl.fleetfile import FleetFileError, diff_entity, load_fleet, merge, parse_text, validate_fleet
from shadowing.errors import InvalidRequest
from shadowing.models import ScheduledSlice, SliceStatus

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def spec(entity_id: str = "shop", **extra: object) -> dict:
    return {"entity_id": entity_id, "home_region": "us-east-1", "instance_types": ["m5.large"],
            "dns_name": f"{entity_id}.example.internal", "hosted_zone_id": "Z1", **extra}  # fmt: skip


def slices(*regions: str) -> dict:
    return {"slices": [{"start": f"2027-01-04T{2 * i:02d}:00:00Z", "end": f"2027-01-04T{2 * i + 2:02d}:00:00Z",
                        "region": r} for i, r in enumerate(regions)]}  # fmt: skip


def problems(doc: object) -> list[str]:
    with pytest.raises(FleetFileError) as info:
        validate_fleet(doc, "f.yaml")
    assert isinstance(info.value, InvalidRequest), "exit code 2 in the CLI"
    return info.value.problems


def test_example_file_is_valid_and_defaults_are_merged() -> None:
    entries = load_fleet(EXAMPLE)
    assert [e.entity_id for e in entries] == ["checkout-api", "search-api"]
    checkout, search = entries
    assert checkout.spec.policy.mode == "forecast-only" and checkout.spec.policy.sizing_quantile == 0.95
    assert search.spec.policy.mode == "active" and search.spec.policy.lead_time_s == 900
    assert checkout.spec.home_region == search.spec.home_region == "us-east-1"
    assert len(checkout.schedule.slices) == 3


def test_json_file_in_register_format(tmp_path: Path) -> None:
    body = {
        "entities": [
            {"spec": spec("a"), "schedule": slices("eu-west-1")},
            {"spec": spec("b"), "schedule": slices("us-east-1")},
        ]
    }
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(body, indent=2))
    assert [e.entity_id for e in load_fleet(path)] == ["a", "b"]


def test_defaults_merge_key_by_key_and_entity_wins() -> None:
    merged = merge({"policy": {"mode": "forecast-only", "lead_time_s": 60, "degradation": {"min_samples": 5}}},
                   {"policy": {"lead_time_s": 30, "degradation": {"error_factor": 3}}, "entity_id": "x"})  # fmt: skip
    assert merged == {"entity_id": "x", "policy": {"mode": "forecast-only", "lead_time_s": 30,
                                                   "degradation": {"min_samples": 5, "error_factor": 3}}}  # fmt: skip
    doc = {"defaults": {"policy": {"mode": "forecast-only", "watch_s": 7}},
           "entities": [{"spec": spec(policy={"watch_s": 9}), "schedule": slices("eu-west-1")}]}  # fmt: skip
    [entry] = validate_fleet(doc)
    assert entry.spec.policy.mode == "forecast-only" and entry.spec.policy.watch_s == 9


def test_yaml_syntax_error_names_the_line() -> None:
    text = "entities:\n  - spec: {entity_id: a\n    schedule: [\n"
    with pytest.raises(FleetFileError) as info:
        parse_text(text, "fleet.yaml")
    assert "line 2" in str(info.value) and "not valid YAML" in str(info.value)
    with pytest.raises(FleetFileError) as info:
        parse_text('{"entities": [\n  {"spec": }\n]}', "fleet.json")
    assert "line 2" in str(info.value) and "not valid JSON" in str(info.value)


def test_yaml_no_stays_a_country_code() -> None:
    assert parse_text("holiday_country: NO\nspot: true\n") == {"holiday_country": "NO", "spot": True}


def test_duplicate_entity_ids() -> None:
    found = problems({"entities": [{"spec": spec("a"), "schedule": slices("eu-west-1")},
                                   {"spec": spec("b"), "schedule": slices("eu-west-1")},
                                   {"spec": spec("a"), "schedule": slices("eu-west-1")}]})  # fmt: skip
    assert found == ["entities[2] (a): spec.entity_id: duplicate entity id, also entities[0]"]


def test_every_bad_field_is_named_with_its_entity() -> None:
    bad_slice = {"slices": [{"start": "2027-01-04T00:00:00", "end": "2027-01-04T02:00:00Z", "region": "eu-west-1"}]}
    found = problems({"entities": [
        {"spec": spec("a"), "schedule": slices("eu-west-1")},
        {"spec": spec("b", home_region="mars-1", policy={"lead_time_s": 0}), "schedule": bad_slice},
        {"spec": spec("c"), "schedule": slices("atlantis-1")},
        "not an entity",
    ]})  # fmt: skip
    assert any(p.startswith("entities[1] (b): spec.home_region: unknown AWS region") for p in found), found
    assert any(p.startswith("entities[1] (b): spec.policy.lead_time_s:") for p in found), found
    assert any(p.startswith("entities[1] (b): schedule.slices.0.start:") for p in found), found
    assert any(p.startswith("entities[2] (c): schedule.slices.0.region:") for p in found), found
    assert "entities[3]: must be an object with 'spec' and 'schedule'" in found
    assert not any(p.startswith("entities[0]") for p in found)


def test_shape_errors() -> None:
    assert problems([1, 2]) == ["must be an object with 'entities' (a list) and optionally 'defaults'"]
    assert problems({"entities": []}) == ["entities: must be a non-empty list of {spec, schedule}"]
    assert (
        "entitys: unknown key"
        in problems({"entitys": [], "entities": [{"spec": spec(), "schedule": slices("eu-west-1")}]})[0]
    )


# ---- what is sent -------------------------------------------------------------------------------------------


def entry(**policy: object):  # type: ignore[no-untyped-def]
    [e] = validate_fleet({"entities": [{"spec": spec(policy=policy), "schedule": slices("eu-west-1", "us-east-1")}]})
    return e


def running(e, states=("pending", "pending")) -> tuple:  # type: ignore[no-untyped-def]
    return e.spec, tuple(SliceStatus(time_slice=s, state=st) for s, st in zip(e.schedule.slices, states, strict=True))


def test_not_running_is_created() -> None:
    change = diff_entity(entry(), None, None)
    assert change.create and change.result == "created"


def test_same_spec_and_schedule_is_unchanged() -> None:
    e = entry(watch_s=5)
    change = diff_entity(e, *running(entry(watch_s=5.0)))
    assert change.result == "unchanged" and not change.spec_fields and not change.schedule and not change.create


def test_policy_change_updates_only_the_spec() -> None:
    change = diff_entity(entry(watch_s=6), *running(entry(watch_s=5)))
    assert change.result == "updated spec" and change.spec_fields == ("policy.watch_s",) and not change.schedule
    assert change.line() == "shop: updated spec (policy.watch_s)"
    assert change.line(dry_run=True) == "shop: would be updated spec (policy.watch_s)"


def test_pending_slice_change_updates_only_the_schedule() -> None:
    e = entry()
    current_spec, current = running(e)
    moved = current[1].model_copy(update={"time_slice": ScheduledSlice.model_validate(
        {**current[1].time_slice.model_dump(), "region": "eu-west-1"})})  # fmt: skip
    change = diff_entity(e, current_spec, (current[0], moved))
    assert change.result == "updated schedule" and not change.spec_fields


def test_started_slices_are_kept_so_omitting_them_changes_nothing() -> None:
    e = entry()
    current_spec, current = running(e, ("done", "pending"))
    [later] = validate_fleet(
        {"entities": [{"spec": spec(), "schedule": {"slices": [slices("eu-west-1", "us-east-1")["slices"][1]]}}]}
    )
    assert diff_entity(later, current_spec, current).result == "unchanged"
    assert diff_entity(e, current_spec, current).result == "unchanged"


def test_impossible_changes_are_problems_before_anything_is_sent() -> None:
    e = entry()
    current_spec, current = running(e, ("migrating", "pending"))
    other = validate_fleet(
        {"entities": [{"spec": spec(home_region="eu-west-1"), "schedule": slices("ap-southeast-2", "us-east-1")}]}
    )[0]
    change = diff_entity(other, current_spec, current)
    assert any("spec.home_region: cannot change" in p for p in change.problems)
    assert any("overlaps slice 20270104T000000Z, which is migrating" in p for p in change.problems)


def test_cli_bad_file_exits_2_without_contacting_a_server(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("entities:\n  - spec: {entity_id: Bad_Id}\n    schedule: {slices: []}\n")
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "shadowctl.cli", "apply", "-f", str(path), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "entities[0] (Bad_Id): spec.entity_id" in out and "nothing applied" in out
    assert "127.0.0.1:9" not in out and "Traceback" not in out
