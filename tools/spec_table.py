"""The field tables of docs/your-application.md, generated from the contract's models (the JSON Schema that
`shadowctl schema` prints), so that the page cannot drift from the code.

    python -m tools.spec_table            # prints the generated tables
    python -m tools.spec_table --write    # rewrites them in docs/your-application.md

`tests/unit/test_your_application.py` fails when the page's tables differ from what this generates.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shadowing.models import EntityPolicy, EntitySpec, ScheduledSlice

DOC = Path(__file__).resolve().parents[1] / "docs" / "your-application.md"
MODELS: dict[str, type[BaseModel]] = {"spec": EntitySpec, "schedule-slice": ScheduledSlice, "policy": EntityPolicy}
BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        kinds = [_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds) + (" or null" if len(kinds) < len(prop["anyOf"]) else "")
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if prop.get("format") in ("date", "date-time"):
        return {"date": "date", "date-time": "datetime"}[prop["format"]]
    return {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean"}.get(kind, kind)


def _limits(prop: dict[str, Any]) -> str:
    inner = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    p = inner[0] if inner else prop
    bounds = [
        f"{sym} {p[key]:g}" for key, sym in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"),
                                             ("maximum", "<=")) if key in p
    ]  # fmt: skip
    bounds += [f"{k} {p[key]}" for key, k in (("minItems", "items >="), ("maxItems", "items <="),
                                              ("maxLength", "length <=")) if key in p]  # fmt: skip
    if "pattern" in p:
        bounds.append(f"`{p['pattern']}`")
    return ", ".join(bounds)


def _default(name: str, prop: dict[str, Any], required: set[str]) -> str:
    if name in required:
        return "**required**"
    value = prop.get("default")
    if isinstance(value, dict):
        return "(defaults below)"
    return f"`{json.dumps(value)}`"


def table(model: type[BaseModel]) -> str:
    """One row per field of `model`, in declaration order: name, type, default, limits, description."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    rows = ["| field | type | default | limits | description |", "| --- | --- | --- | --- | --- |"]
    for name, prop in schema["properties"].items():
        text = (prop.get("description") or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {_type(prop)} | {_default(name, prop, required)} | {_limits(prop)} | {text} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """`text` with every generated block replaced by the table of its model."""
    return BLOCK.sub(lambda m: m.group(1) + table(MODELS[m.group("name")]) + m.group(4), text)


def main(argv: list[str]) -> int:
    if "--write" in argv:
        DOC.write_text(render(DOC.read_text()))
        return 0
    for name, model in MODELS.items():
        print(f"<!-- generated: {name} -->\n{table(model)}<!-- end generated -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
