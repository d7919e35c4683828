"""forecast_demand and refine_forecast serve through the one serving path: the published fleet model when there is
one (engine "fleet"), the per-entity engine with the reason when there is none."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.drivers import DriverStore
from activities.forecast import ForecastActivities, ForecastInput, RefineInput
from activities.model_store import FleetModelCache, ModelStore
from shadowing.models import EntitySpec, TimeSlice
from tests.fleet_data import panel, tiny_model
from workers.aws import AwsClients

ENTITY = "e003"


def _spec() -> EntitySpec:
    return EntitySpec(entity_id=ENTITY, home_region="us-east-1", instance_types=("m5.large",),
                      dns_name="a.example", hosted_zone_id="Z")  # fmt: skip


def _clock(at: datetime) -> type[datetime]:
    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return at

    return Clock


@pytest.fixture
def store(aws: AwsClients) -> ModelStore:
    """The synthetic fleet's entity e003 in CloudWatch (its 14 newest days, both metrics) and an empty bucket."""
    values, index, names = panel()
    row = values[names.index(ENTITY)]
    cw = aws("cloudwatch", "us-east-1")
    for metric, scale in (("CpuUsageMHz", 1.0), ("MemoryUsageKB", 300.0)):
        data = [{"MetricName": metric, "Dimensions": [{"Name": "EntityId", "Value": ENTITY}],
                 "Timestamp": t.to_pydatetime(), "Value": float(v * scale)}
                for t, v in zip(index[-14 * 24 :], row[-14 * 24 :], strict=True)]  # fmt: skip
        for i in range(0, len(data), 500):
            cw.put_metric_data(Namespace="Shadowing/Usage", MetricData=data[i : i + 500])
    aws("s3", "us-east-1").create_bucket(Bucket="models-test")
    return ModelStore(aws, "models-test", "fleet-model", "us-east-1")


SLICE_START = (panel()[1][-1] + pd.Timedelta(hours=2)).to_pydatetime()  # one hour after the newest point


def test_with_a_published_model_the_fleet_engine_answers_and_refine_uses_it(aws: AwsClients, store: ModelStore) -> None:
    trained = tiny_model()
    meta = store.put_candidate("v-test", trained.artifact, dict(trained.model.metadata))
    store.publish("v-test", meta["sha256"], None)
    models = FleetModelCache(store)
    act = ForecastActivities(aws, now=_clock(SLICE_START - timedelta(minutes=5)), models=models)
    ts = TimeSlice(start=SLICE_START, end=SLICE_START + timedelta(hours=2))
    fc = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    cpu = fc.metrics["cpu_mhz"]
    assert cpu.engine == "fleet" and cpu.model.startswith("fleet:"), cpu.engine_reason
    assert "v-test" in cpu.engine_reason
    for hour in cpu.hours:
        assert 0 <= hour.quantiles["0.1"] <= hour.quantiles["0.5"] <= hour.quantiles["0.9"]
    # refine re-derives the forecast through the same object: from 4 hours ahead, then with 3 hours observed
    early = ForecastActivities(aws, now=_clock(SLICE_START - timedelta(hours=4)), models=models)
    before = ActivityEnvironment().run(early.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    assert before.metrics["cpu_mhz"].engine == "fleet"
    after = ActivityEnvironment().run(act.refine_forecast, RefineInput(spec=_spec(), forecast=before))
    refined = after.metrics["cpu_mhz"]
    assert refined.model.endswith("+bayes") and refined.engine == "fleet" and refined.hours != before.metrics[
        "cpu_mhz"].hours  # fmt: skip


def test_without_a_published_model_the_entity_engine_answers_and_says_why(aws: AwsClients, store: ModelStore) -> None:
    act = ForecastActivities(aws, now=_clock(SLICE_START - timedelta(minutes=5)), models=FleetModelCache(store))
    ts = TimeSlice(start=SLICE_START, end=SLICE_START + timedelta(hours=1))
    fc = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    for metric in fc.metrics.values():
        assert metric.engine == "entity" and metric.engine_reason == "per-entity engine: no fleet model is published"
        assert not metric.model.startswith("fleet:")


def _driver_files(tmp_path, last_day: str) -> DriverStore:  # type: ignore[no-untyped-def]
    first = panel()[1][0].normalize() - pd.Timedelta(days=3)
    days = pd.date_range(first, pd.Timestamp(last_day, tz=first.tz), freq="D")
    (tmp_path / "retail.csv").write_text("timestamp,value\n" + "".join(
        f"{d.date().isoformat()},{100 + i % 7}\n" for i, d in enumerate(days)))  # fmt: skip
    registry = {"drivers": [{"name": "retail", "frequency": "daily", "unit": "index", "publication_lag_hours": 36,
                             "source": str(tmp_path / "retail.csv")}]}  # fmt: skip
    (tmp_path / "drivers.json").write_text(json.dumps(registry))
    return DriverStore.from_file(str(tmp_path / "drivers.json"))


def test_an_entity_naming_a_driver_is_forecast_with_it_and_the_reason_says_how(aws: AwsClients, store: ModelStore,
                                                                               tmp_path) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    drivers = _driver_files(tmp_path, str(SLICE_START.date()))
    trained = tiny_model()
    meta = store.put_candidate("v-test", trained.artifact, dict(trained.model.metadata))
    store.publish("v-test", meta["sha256"], None)
    act = ForecastActivities(aws, now=_clock(SLICE_START - timedelta(minutes=5)), models=FleetModelCache(store),
                             drivers=drivers)  # fmt: skip
    ts = TimeSlice(start=SLICE_START, end=SLICE_START + timedelta(hours=2))
    spec = _spec().model_copy(update={"drivers": ("retail",)})
    fc = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=spec, time_slice=ts))
    for metric in fc.metrics.values():  # the fleet model reads no drivers: both were run, the lower recent error won
        assert "with drivers retail" in metric.engine_reason, metric.engine_reason
        assert "could not fit" not in metric.engine_reason, metric.engine_reason  # the engine read the drivers
    plain = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    assert all("drivers" not in m.engine_reason for m in plain.metrics.values())


def test_a_driver_that_is_unknown_unregistered_or_stale_is_refused_by_name(aws: AwsClients, store: ModelStore,
                                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    ts = TimeSlice(start=SLICE_START, end=SLICE_START + timedelta(hours=1))
    now = _clock(SLICE_START - timedelta(minutes=5))
    cases = [
        (None, ("retail",), "spec.drivers: retail named, but this worker has no driver registry"),
        (_driver_files(tmp_path, str(SLICE_START.date())), ("gdp",), "'gdp' is not a registered driver"),
        (_driver_files(tmp_path, str((SLICE_START - timedelta(days=6)).date())), ("retail",),
         "spec.drivers: driver retail: its values end"),
    ]  # fmt: skip
    for drivers, names, message in cases:
        act = ForecastActivities(aws, now=now, models=FleetModelCache(store), drivers=drivers)
        spec = _spec().model_copy(update={"drivers": names})
        with pytest.raises(ApplicationError, match=message) as err:
            ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=spec, time_slice=ts))
        assert err.value.non_retryable and err.value.type == "InvalidRequest"


def test_a_driver_name_is_checked_by_the_contract() -> None:
    with pytest.raises(ValidationError, match=r"drivers\.0"):
        _spec().model_validate({**_spec().model_dump(), "drivers": ["Retail Index"]})


def test_network_in_and_out_are_forecast_when_the_entity_publishes_them(aws: AwsClients, store: ModelStore) -> None:
    act = ForecastActivities(aws, now=_clock(SLICE_START - timedelta(minutes=5)), models=FleetModelCache(store))
    ts = TimeSlice(start=SLICE_START, end=SLICE_START + timedelta(hours=1))
    before = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    assert set(before.metrics) == {"cpu_mhz", "memory_kb"}  # no network points: sized on CPU and memory, as before
    values, index, names = panel()
    row = values[names.index(ENTITY)]
    data = [{"MetricName": metric, "Dimensions": [{"Name": "EntityId", "Value": ENTITY}],
             "Timestamp": t.to_pydatetime(), "Value": float(v / 10)}
            for metric in ("NetworkInKBps", "NetworkOutKBps")
            for t, v in zip(index[-14 * 24 :], row[-14 * 24 :], strict=True)]  # fmt: skip
    for i in range(0, len(data), 500):
        aws("cloudwatch", "us-east-1").put_metric_data(Namespace="Shadowing/Usage", MetricData=data[i : i + 500])
    after = ActivityEnvironment().run(act.forecast_demand, ForecastInput(spec=_spec(), time_slice=ts))
    for name in ("network_kbps", "network_out_kbps"):
        net = after.metrics[name]
        assert net.unit == "KB/s" and len(net.hours) == 1 and net.hours[0].quantiles["0.9"] > 0
