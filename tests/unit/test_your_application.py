"""docs/your-application.md cannot drift from the models: its field tables are what tools/spec_table.py generates,
every field of the spec, a schedule slice and the policy is listed, and every repository path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from shadowing.models import EntityPolicy, EntitySpec, ScheduledSlice
from tools import spec_table

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "your-application.md"


def test_the_generated_tables_are_current() -> None:
    text = DOC.read_text()
    assert text == spec_table.render(text), "run: python -m tools.spec_table --write"


@pytest.mark.parametrize(("name", "model"), [("spec", EntitySpec), ("schedule-slice", ScheduledSlice),
                                             ("policy", EntityPolicy)])  # fmt: skip
def test_every_model_field_is_in_the_doc_and_only_those(name: str, model: type[BaseModel]) -> None:
    block = {m.group("name"): m.group("body") for m in spec_table.BLOCK.finditer(DOC.read_text())}[name]
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", block, re.M)
    assert listed == list(model.model_fields), (listed, list(model.model_fields))


def test_a_changed_model_shows_as_a_stale_table() -> None:
    """The check can fail: a table with a field's default edited is not what the generator writes."""
    text = DOC.read_text()
    edited = text.replace("| `initial_instances` | integer | `1` |", "| `initial_instances` | integer | `2` |", 1)
    assert edited != text and spec_table.render(edited) != edited


def test_every_path_the_doc_names_exists() -> None:
    named = set(re.findall(r"`((?:[a-z_]+/)+[a-z_.-]+\.(?:py|json|md|yaml))`", DOC.read_text()))
    assert named, "the doc names files"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing
