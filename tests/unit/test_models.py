"""Bad input at the contract: every case a validation error naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shadowing.client import parse
from shadowing.errors import InvalidRequest
from shadowing.models import AllocationSchedule, DemandClock, ProvisionRequest, ScheduledSlice, TimeSlice

OK = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"time_slice": {**OK, "start": "2026-01-01T00:00:00"}, "instance_type": "m5.large", "quantity": 1},
         "time_slice.start", "timezone"),
        ({"time_slice": {**OK, "end": "2025-12-31T00:00:00Z"}, "instance_type": "m5.large", "quantity": 1},
         "time_slice", "must be after"),
        ({"time_slice": OK, "instance_type": "m9.huge", "quantity": 1}, "instance_type", "unknown instance type"),
        ({"time_slice": OK, "instance_type": "m5.large", "quantity": 0}, "quantity", "greater than 0"),
        ({"time_slice": OK, "instance_type": "m5.large", "quantity": -3}, "quantity", "greater than 0"),
        ({"time_slice": OK, "instance_type": "m5.large", "quantity": 1, "colour": "red"}, "colour", "not permitted"),
    ],
)  # fmt: skip
def test_provision_request_errors_name_the_field(data: dict, field: str, words: str) -> None:
    """The client's parse turns validation failures into InvalidRequest naming the field."""
    with pytest.raises(InvalidRequest) as err:
        parse(ProvisionRequest, data)
    assert err.value.field == field and words in str(err.value)


def test_unknown_region_is_rejected() -> None:
    """A region outside the catalogue is named in the error."""
    with pytest.raises(ValidationError, match="unknown AWS region 'mars-north-1'"):
        ScheduledSlice(**OK, region="mars-north-1")


def test_overlapping_schedule_is_rejected() -> None:
    """Slices must be ordered and must not overlap."""
    a = ScheduledSlice(**OK, region="us-east-1")
    b = ScheduledSlice(start="2026-01-01T00:30:00Z", end="2026-01-01T02:00:00Z", region="eu-west-1")
    with pytest.raises(ValidationError, match="overlap"):
        AllocationSchedule(slices=(a, b))


def test_time_slices_are_normalised_to_utc() -> None:
    """Offsets are accepted and converted, so the same instant always has the same key."""
    ts = TimeSlice(start="2026-01-01T01:00:00+01:00", end="2026-01-01T02:00:00+01:00")
    assert ts.key == "20260101T000000Z"


def test_demand_clock_compresses_time() -> None:
    """With 30 s per hour, 90 s of wall clock are 3 hours of history."""
    clock = DemandClock(origin="2026-01-01T00:00:00Z", history_origin="2013-08-20T13:00:00Z", seconds_per_hour=30)
    later = TimeSlice(start="2026-01-01T00:01:30Z", end="2026-01-01T00:02:00Z").start
    assert clock.to_history(later).isoformat() == "2013-08-20T16:00:00+00:00"
