"""Property tests (hypothesis) of every door bad input can come through: the contract models and the client SDK's
parsing, the usage data the forecaster reads, and the entity workflow's update payloads.

Each property is "a clear error that names what is wrong, or a value that survives a round trip": never another
exception type, never a silent fix-up."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from forecasting.data import UsageDataError, hourly_series, load_usage
from forecasting.panel import panel_from_frame
from shadowing.client import parse
from shadowing.errors import InvalidRequest
from shadowing.models import (
    AllocationSchedule,
    EntityPolicy,
    EntitySpec,
    PauseRequest,
    ProvisionRequest,
    SliceAction,
    SliceRequest,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
SLICE = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}
VALID: dict[type[BaseModel], dict[str, Any]] = {
    EntitySpec: {
        "entity_id": "shop", "home_region": "us-east-1", "instance_types": ["m5.large"],
        "dns_name": "shop.example.internal", "hosted_zone_id": "Z1", "dynamodb_tables": ["orders"],
    },
    EntityPolicy: {"sizing_quantile": 0.9, "watch_s": 60, "cutover_strategy": "canary", "spot": True},
    AllocationSchedule: {"slices": [{**SLICE, "region": "eu-west-1"}]},
    ProvisionRequest: {"time_slice": SLICE, "instance_type": "m5.large", "quantity": 2},
    SliceRequest: {"time_slice": SLICE},
    SliceAction: {"time_slice": SLICE, "reason": "drill"},
    PauseRequest: {"reason": "maintenance"},
}  # fmt: skip
# Derandomized: CI runs the same examples every time (a failure is reproducible, never a flake).
PROFILE = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> tuple[type[BaseModel], str, dict[str, Any]]:
    """A valid payload of some model with one field replaced by arbitrary JSON (or an unknown field added)."""
    model = draw(st.sampled_from(sorted(VALID, key=lambda m: m.__name__)))
    data = dict(VALID[model])
    name = draw(st.sampled_from([*model.model_fields, "no_such_field"]))
    data[name] = draw(JSON)
    return model, name, data


@PROFILE
@given(mutated())
def test_models_reject_with_the_field_named_or_accept_and_round_trip(case: tuple) -> None:
    model, name, data = case
    try:
        value = model.model_validate(data)
    except ValidationError as exc:  # where: the field's location, or (a check across fields) its name in the text
        assert any((err["loc"] and str(err["loc"][0]) == name) or name in err["msg"] for err in exc.errors()), exc
        return
    assert model.model_validate_json(value.model_dump_json()) == value


@PROFILE
@given(mutated())
def test_the_client_sdk_turns_any_bad_payload_into_invalid_request_naming_the_field(case: tuple) -> None:
    model, name, data = case
    try:
        parse(model, data, "req")
    except InvalidRequest as exc:
        assert exc.field is not None and (exc.field.split(".")[1:2] == [name] or name in str(exc)), (exc.field, name)


@PROFILE
@given(st.sampled_from(["cutover_strategy", "mode"]), st.text(min_size=1, max_size=12))
def test_unknown_enum_values_name_the_allowed_ones(field: str, value: str) -> None:
    allowed = {"cutover_strategy": ("all-at-once", "canary", "linear"), "mode": ("active", "forecast-only")}[field]
    if value in allowed:
        return
    with pytest.raises(InvalidRequest) as exc:
        parse(EntityPolicy, {field: value}, "policy")
    assert exc.value.field == f"policy.{field}" and allowed[0] in str(exc.value)


# ---- usage data into the forecaster -------------------------------------------------------------------------

CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-5, 10**6),
    st.sampled_from(["", "n/a", "12,5", "-0", "1e309"]),
)  # fmt: skip
STAMP = st.one_of(
    st.integers(0, 96).map(lambda h: (pd.Timestamp("2026-01-01T00:00Z") + pd.Timedelta(hours=h)).isoformat()),
    st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", "", "2026-01-01 05:30"]),
)  # fmt: skip
ROWS = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), STAMP, CELL, st.integers(-1, 12)), max_size=40)


@PROFILE
@given(ROWS)
def test_malformed_usage_never_crashes_a_batch_and_never_forecasts_from_bad_rows(rows: list[tuple]) -> None:
    frame = pd.DataFrame(rows, columns=["entity_id", "timestamp", "cpu_usage_mhz_mean", "n_samples"])
    panel = panel_from_frame(frame, "cpu_usage_mhz_mean")
    assert set(panel.entities).isdisjoint(panel.problems), "an entity is either usable or has a stated problem"
    assert set(panel.entities) | set(panel.problems) == set(frame["entity_id"].astype(str))
    assert all(panel.problems.values()), "every problem is worded"
    seen = panel.values[~np.isnan(panel.values)]
    assert np.all(np.isfinite(seen)) and np.all(seen >= 0), "no negative or infinite usage reaches a forecast"


@PROFILE
@given(ROWS)
def test_the_product_usage_loader_names_the_problem(rows: list[tuple]) -> None:
    columns = ["entity_id", "timestamp", "cpu_usage_mhz_max", "n_samples"]
    text = pd.DataFrame(rows, columns=columns).assign(mem_usage_kb_max=1.0, net_rx_kbps_max=1.0).to_csv(index=False)
    try:
        frame = load_usage(io.StringIO(text))
        series = hourly_series(frame, "a", "cpu_mhz")
    except UsageDataError as exc:
        assert str(exc)
        return
    observed = series.dropna()
    assert all(math.isfinite(v) and v >= 0 for v in observed), "no negative or infinite usage is accepted"
