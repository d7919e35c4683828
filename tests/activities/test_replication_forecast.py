"""DynamoDB replication and the CloudWatch-backed forecast activity against moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TAG_ENTITY, TAG_MANAGED
from activities.forecast import ForecastActivities, ForecastInput, RefineInput
from activities.replication import ReplicationActivities, ReplicationInput
from forecasting.data import hourly_series, load_usage
from shadowing.models import EntitySpec, TimeSlice
from tests.activities.conftest import make_table
from workers.aws import AwsClients


def repl(tables: tuple[str, ...] = ("sessions",)) -> ReplicationInput:
    return ReplicationInput(entity_id="shop", tables=tables, source_region="us-east-1", target_region="eu-west-1")


def test_replicate_copies_items_and_check_sync_detects_drift(aws: AwsClients) -> None:
    """The copy makes both regions equal; a later write to the source is reported as out of sync."""
    make_table(aws, "us-east-1", "sessions", 60)
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    status = env.run(act.replicate_tables, repl())
    assert status.items == 60 and status.created_tables == ("sessions",)
    assert env.run(act.check_sync, repl()).in_sync
    aws("dynamodb", "us-east-1").put_item(TableName="sessions", Item={"pk": {"S": "new"}, "v": {"N": "1"}})
    drift = env.run(act.check_sync, repl())
    assert not drift.in_sync and "sessions" in drift.detail


def test_drop_replicas_removes_only_tables_the_product_made(aws: AwsClients) -> None:
    """The compensation deletes the replica it created and keeps the entity's own table already in the target."""
    make_table(aws, "us-east-1", "sessions", 3)
    make_table(aws, "us-east-1", "orders", 3)
    make_table(aws, "eu-west-1", "orders", 1)  # handed over by an operator: managed-by + entity, no replica role
    act, env = ReplicationActivities(aws), ActivityEnvironment()
    assert env.run(act.replicate_tables, repl(("sessions", "orders"))).created_tables == ("sessions",)
    assert env.run(act.drop_replicas, repl(("sessions", "orders"))) == 1
    names = aws("dynamodb", "eu-west-1").list_tables()["TableNames"]
    assert names == ["orders"]
    assert env.run(act.drop_replicas, repl(("sessions", "orders"))) == 0
    for table in ("sessions", "orders"):
        ddb = aws("dynamodb", "us-east-1")
        tags = ddb.list_tags_of_resource(ResourceArn=ddb.describe_table(TableName=table)["Table"]["TableArn"])["Tags"]
        assert {t["Key"] for t in tags} == {TAG_MANAGED, TAG_ENTITY}, "the source is never retagged or dropped"


def _spec() -> EntitySpec:
    return EntitySpec(entity_id="rnd-392", home_region="eu-west-1", instance_types=("m5.large",),
                      dns_name="a.example", hosted_zone_id="Z")  # fmt: skip


def test_forecast_demand_reads_cloudwatch_history(aws: AwsClients, shared_trace) -> None:  # type: ignore[no-untyped-def]
    """The forecast activity reads hourly maxima from CloudWatch and returns ordered quantiles and readiness."""
    usage = load_usage(shared_trace, ["rnd-392"])
    slice_start = datetime(2026, 11, 20, 13, tzinfo=UTC)
    offset = pd.Timestamp(slice_start) - pd.Timestamp("2013-08-20T13:00Z")
    cw = aws("cloudwatch", "eu-west-1")
    for name, metric in (("cpu_mhz", "CpuUsageMHz"), ("memory_kb", "MemoryUsageKB")):
        s = hourly_series(usage, "rnd-392", name)["2013-08-07T13:00Z":"2013-08-20T12:00Z"].dropna()
        data = [{"MetricName": metric, "Dimensions": [{"Name": "EntityId", "Value": "rnd-392"}],
                 "Timestamp": (t + offset).to_pydatetime(), "Value": float(v)} for t, v in s.items()]  # fmt: skip
        for i in range(0, len(data), 500):
            cw.put_metric_data(Namespace="Shadowing/Usage", MetricData=data[i : i + 500])

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return slice_start - timedelta(minutes=5)

    act = ForecastActivities(aws, now=Clock)
    ts = TimeSlice(start=slice_start, end=slice_start + timedelta(hours=2))
    fc = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    _check_refine(aws, fc, slice_start)
    cpu = fc.metrics["cpu_mhz"]
    assert len(cpu.hours) == 2 and fc.history_hours >= 300
    for hour in cpu.hours:
        q = hour.quantiles
        assert 0 <= q["0.1"] <= q["0.5"] <= q["0.9"]
    assert 3000 < cpu.hours[0].quantiles["0.5"] < 12000, "the level of rnd-392's CPU peaks"
    assert 0 < fc.readiness <= 1


def _check_refine(aws: AwsClients, fc, slice_start: datetime) -> None:  # type: ignore[no-untyped-def]
    """refine_forecast: a forecast made 4 hours ahead is updated from the 3 hours observed since; with nothing
    new observed it comes back unchanged."""

    def clock(at: datetime) -> type[datetime]:
        class Clock(datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
                return at

        return Clock

    early = ForecastActivities(aws, now=clock(slice_start - timedelta(hours=4)))
    ts = fc.time_slice
    before = ActivityEnvironment().run(early.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    same = ActivityEnvironment().run(early.refine_forecast, RefineInput(spec=_spec(), forecast=before))
    assert same == before
    late = ForecastActivities(aws, now=clock(slice_start - timedelta(minutes=5)))
    after = ActivityEnvironment().run(late.refine_forecast, RefineInput(spec=_spec(), forecast=before))
    assert after.history_end > before.history_end
    cpu = after.metrics["cpu_mhz"]
    assert cpu.model.endswith("+bayes") and any("h observed" in r for r in after.readiness_reasons), (
        after.readiness_reasons
    )
    assert cpu.hours != before.metrics["cpu_mhz"].hours
    for hour in cpu.hours:
        assert 0 <= hour.quantiles["0.1"] <= hour.quantiles["0.5"] <= hour.quantiles["0.9"]


def test_forecast_without_history_is_a_clear_error(aws: AwsClients) -> None:
    """An entity with no usage in CloudWatch gets a non-retryable error naming the entity, not a zero forecast."""
    ts = TimeSlice(start=datetime(2026, 11, 20, 13, tzinfo=UTC), end=datetime(2026, 11, 20, 14, tzinfo=UTC))
    with pytest.raises(ApplicationError, match="rnd-392") as err:
        ActivityEnvironment().run(ForecastActivities(aws).forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    assert err.value.non_retryable
