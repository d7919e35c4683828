"""Bad input at the contract: every case a validation error naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shadowing.client import parse
from shadowing.errors import InvalidRequest
from shadowing.models import (
    AllocationSchedule,
    CostEntry,
    DemandClock,
    EntityPolicy,
    EntitySpec,
    FleetRef,
    MigrationInput,
    MigrationProgress,
    ProvisionRequest,
    ScheduledSlice,
    TimeSlice,
)

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


# ---- untrusted input: numbers, names, addresses, fleets (issue "safe on a shared account") ----------------------


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300])
def test_time_fields_refuse_inf_nan_and_huge(value: float) -> None:
    """`timedelta(seconds=inf)` or `1e300` raises inside a workflow task forever: the policy refuses them."""
    with pytest.raises(ValidationError, match="lead_time_s"):
        EntityPolicy(lead_time_s=value)


def test_json_1e999_is_refused() -> None:
    """JSON's 1e999 parses as inf; the model refuses it, naming the field."""
    with pytest.raises(ValidationError, match="watch_s"):
        EntityPolicy.model_validate_json('{"watch_s": 1e999}')


def test_dns_names_are_normalised_and_checked() -> None:
    """Mixed case and a trailing dot become Route53's lower-case name; bad labels and lengths name the field."""
    base = {"entity_id": "shop", "home_region": "us-east-1", "instance_types": ["m5.large"], "hosted_zone_id": "Z1"}
    assert EntitySpec(**base, dns_name="Shop.Example.INTERNAL.").dns_name == "shop.example.internal"
    for bad in ["shop", "-shop.example.internal", "shop..example.internal", "a" * 64 + ".example", "x." * 127 + "io",
                "shop.example.internal\n", "shop example.internal"]:  # fmt: skip
        with pytest.raises(ValidationError, match="dns_name"):
            EntitySpec(**base, dns_name=bad)
    with pytest.raises(ValidationError, match="hosted_zone_id"):
        EntitySpec(**{**base, "hosted_zone_id": "Z1; DROP"}, dns_name="shop.example.internal")


def test_entity_ids_are_full_matches() -> None:
    """`re.match` with `$` accepted "api\\n"; the id must match whole."""
    with pytest.raises(ValidationError, match="entity id"):
        EntitySpec(entity_id="api\n", home_region="us-east-1", instance_types=["m5.large"],
                   dns_name="api.example.internal", hosted_zone_id="Z1")  # fmt: skip


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "example.com", "10.0.0.1/8"])
def test_fleet_addresses_must_be_plain_routable_ips(address: str) -> None:
    """The metadata service, link-local, multicast, unspecified and non-IP addresses never become probe URLs."""
    with pytest.raises(ValidationError, match="address"):
        FleetRef(fleet_id="shop:x", entity_id="shop", region="us-east-1", instance_type="m5.large",
                 addresses=(address,))  # fmt: skip


def test_a_migration_source_must_be_the_entitys_own_fleet() -> None:
    """A ShadowMigration started by hand with another entity's fleet as its source is refused (it would retire it)."""
    spec = EntitySpec(entity_id="shop", home_region="us-east-1", instance_types=["m5.large"],
                      dns_name="shop.example.internal", hosted_zone_id="Z1")  # fmt: skip
    slot = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z", "region": "eu-west-1"}
    for fleet_id, entity in [("billing:initial", "billing"), ("billing:initial", "shop"), ("shopx:1", "shop")]:
        foreign = FleetRef(fleet_id=fleet_id, entity_id=entity, region="us-east-1", instance_type="m5.large")
        with pytest.raises(ValidationError, match="source"):
            MigrationInput(spec=spec, time_slice=slot, instance_type="m5.large", quantity=1, source=foreign)
    own = FleetRef(fleet_id="shop:initial", entity_id="shop", region="us-east-1", instance_type="m5.large")
    assert MigrationInput(spec=spec, time_slice=slot, instance_type="m5.large", quantity=1, source=own).source == own


def test_progress_numbers_are_bounded() -> None:
    """A forged progress report cannot carry an unbounded preparation time or cost."""
    with pytest.raises(ValidationError, match="prepare_s"):
        MigrationProgress(phase="ready", prepare_s=1e300)
    with pytest.raises(ValidationError, match="cost_usd"):
        CostEntry(
            slice_key="k", outcome="migrated", region="us-east-1", instance_type="m5.large", cost_usd=float("inf")
        )


ADOPT_BASE = {"entity_id": "shop", "home_region": "us-east-1", "instance_types": ["m5.large"],
              "dns_name": "shop.example.internal", "hosted_zone_id": "Z1"}  # fmt: skip


@pytest.mark.parametrize(
    ("adopt", "policy", "says"),
    [
        ({}, {}, "spec.adopt: give exactly one of instance_ids or tags"),
        ({"instance_ids": ["i-0123456789abcdef0"], "tags": {"app": "x"}}, {}, "exactly one"),
        ({"instance_ids": ["i-xyz"]}, {}, "adopt.instance_ids.0"),
        ({"instance_ids": ["i-01234567", "i-01234567"]}, {}, "listed twice"),
        ({"tags": {"shadowing:entity": "shop"}}, {}, "spec.adopt.tags: 'shadowing:entity' is reserved"),
        ({"tags": {"app": "x"}, "extra": 1}, {}, "extra"),
        ({"instance_ids": ["i-01234567", "i-01234568"]}, {"max_instances": 1}, "more than policy.max_instances (1)"),
    ],
)  # fmt: skip
def test_adopt_is_validated_naming_the_field(adopt: dict, policy: dict, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        EntitySpec.model_validate({**ADOPT_BASE, "adopt": adopt, "policy": policy})
    assert says in str(err.value)


def test_adopt_by_ids_or_tags_is_accepted_and_defaults_to_none() -> None:
    assert EntitySpec.model_validate(ADOPT_BASE).adopt is None
    by_ids = EntitySpec.model_validate({**ADOPT_BASE, "adopt": {"instance_ids": ["i-0123456789abcdef0"]}})
    assert by_ids.adopt is not None and by_ids.adopt.instance_ids == ("i-0123456789abcdef0",)
    by_tags = EntitySpec.model_validate({**ADOPT_BASE, "adopt": {"tags": {"app": "shop"}}})
    assert by_tags.adopt is not None and by_tags.adopt.tags == {"app": "shop"}
