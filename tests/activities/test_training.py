"""TrainFleetModel's training activity: CloudWatch read in batches (moto), a candidate fitted and stored in S3."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.model_store import ModelStore
from activities.registry import EntitySource
from activities.training import (
    MAX_QUERIES,
    TrainCandidateInput,
    TrainingActivities,
    heartbeating,
    read_panel,
)
from forecasting.data import METRICS
from forecasting.fleet import fleet_config, validation_origins
from tests.fleet_data import panel
from workers.aws import AwsClients

NS = "Shadowing/Usage"


def _put(aws: AwsClients, region: str, entity: str, metric: str, points: dict[datetime, float]) -> list[dict]:
    return [{"MetricName": METRICS[metric].cloudwatch_name, "Dimensions": [{"Name": "EntityId", "Value": entity}],
             "Timestamp": t, "Value": v} for t, v in points.items()]  # fmt: skip


def _send(aws: AwsClients, region: str, data: list[dict]) -> None:
    for lo in range(0, len(data), 1000):
        aws("cloudwatch", region).put_metric_data(Namespace=NS, MetricData=data[lo : lo + 1000])


def _count_calls(aws: AwsClients, region: str) -> list[int]:
    """The number of queries of every GetMetricData call made with the region's client."""
    calls: list[int] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["MetricDataQueries"]))

    aws("cloudwatch", region).meta.events.register("before-parameter-build.cloudwatch.GetMetricData", seen)
    return calls


def test_read_panel_splits_queries_in_500s_and_reads_each_region_with_its_client(aws: AwsClients) -> None:
    """263 entities x 2 metrics in us-east-1 are 526 queries: two calls (500 + 26); 3 entities in eu-west-1: one
    call of 6 with eu-west-1's client. Each row holds its own entity's values at the right hours, NaN elsewhere."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [end - timedelta(hours=3), end - timedelta(hours=1)]
    east = [f"east-{i:03d}" for i in range(263)]
    west = ["west-0", "west-1", "west-2"]
    for region, names in (("us-east-1", east), ("eu-west-1", west)):
        data = []
        for i, name in enumerate(names):
            for metric in ("cpu_mhz", "memory_kb"):
                data += _put(aws, region, name, metric, {t: 100.0 + i + (k * 10) for k, t in enumerate(hours)})
        _send(aws, region, data)
    east_calls, west_calls = _count_calls(aws, "us-east-1"), _count_calls(aws, "eu-west-1")
    sources = [EntitySource(entity_id=n, region="us-east-1", namespace=NS) for n in east]
    sources += [EntitySource(entity_id=n, region="eu-west-1", namespace=NS) for n in west]
    values, index, names = read_panel(aws, sources, ("cpu_mhz", "memory_kb"), end, days=1)
    assert sorted(east_calls) == [526 - MAX_QUERIES, MAX_QUERIES] and west_calls == [6]
    assert values.shape == (532, 24) and len(names) == 532 and index[-1] == pd.Timestamp(end) - pd.Timedelta(hours=1)
    row = values[names.index("east-007/memory_kb")]
    assert row[index.get_loc(pd.Timestamp(hours[0]))] == 107.0 and row[index.get_loc(pd.Timestamp(hours[1]))] == 117.0
    assert np.isnan(row).sum() == 22
    assert values[names.index("west-2/cpu_mhz")][-1] == 112.0


class FakeCloudWatch:
    """GetMetricData over a synthetic panel (moto would take minutes to scan weeks of points for many queries)."""

    def __init__(self, values: np.ndarray, index: pd.DatetimeIndex, names: list[str]) -> None:
        self.rows = {name: values[i] for i, name in enumerate(names)}
        self.index = index
        self.calls = 0

    def get_paginator(self, op: str) -> FakeCloudWatch:
        assert op == "get_metric_data"
        return self

    def paginate(self, MetricDataQueries: list[dict], StartTime: datetime, EndTime: datetime) -> list[dict]:
        self.calls += 1
        keep = (self.index >= pd.Timestamp(StartTime)) & (self.index < pd.Timestamp(EndTime))
        results = []
        for q in MetricDataQueries:
            entity = q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
            row = self.rows.get(entity, np.full(len(self.index), np.nan))[keep]
            stamps = [t.to_pydatetime() for t, v in zip(self.index[keep], row, strict=True) if not np.isnan(v)]
            results.append({"Id": q["Id"], "Timestamps": stamps, "Values": [float(v) for v in row if not np.isnan(v)]})
        return [{"MetricDataResults": results}]


@pytest.fixture
def store(aws: AwsClients) -> ModelStore:
    aws("s3", "us-east-1").create_bucket(Bucket="models-test")
    return ModelStore(aws, "models-test", "fleet-model", "us-east-1")


def test_training_stores_a_candidate_and_scores_the_incumbent_on_the_same_days(store: ModelStore) -> None:
    """The candidate is stored (not published) under v<end>-<data hash>; with a model published, the incumbent is
    scored on the candidate's held-out origins; an entity without data is skipped, not fatal."""
    values, index, names = panel(entities=20, days=21)
    cw = FakeCloudWatch(values, index, names)
    clients = lambda service, region: cw if service == "cloudwatch" else store._clients(service, region)  # noqa: E731
    act = TrainingActivities(clients, ModelStore(clients, store.bucket), fleet_config(max_iter=40, median_bag=1))
    end = (index[-1] + pd.Timedelta(hours=1)).to_pydatetime()
    sources = tuple(EntitySource(entity_id=n, region="us-east-1", namespace=NS) for n in [*names, "silent"])
    req = TrainCandidateInput(sources=sources, end=end, history_days=21, validation_days=3, metrics=("cpu_mhz",))
    env = ActivityEnvironment()
    first = env.run(act.train_fleet_candidate, req)
    assert first.version.startswith("v20261022T0000Z-") and first.key == f"fleet-model/{first.version}/model.bin"
    assert first.entities == 20 and first.series == 20 and first.skipped == 1
    assert first.incumbent_version is None and first.incumbent_scores is None
    assert first.scores.origins == len(validation_origins(21 * 24, 3, 24)[1]) and first.scores.entities > 0
    assert store.pointer() is None, "training alone publishes nothing"
    assert store.metadata(first.version)["sha256"] == first.sha256  # type: ignore[index]
    store.publish(first.version, first.sha256, None)
    second = env.run(act.train_fleet_candidate, req)
    assert second.version == first.version, "same data, same version (a retried attempt rewrites the same key)"
    assert second.incumbent_version == first.version and second.incumbent_scores is not None
    assert second.incumbent_scores.origins == second.scores.origins


def test_training_without_any_history_is_not_retried(store: ModelStore) -> None:
    values, index, names = panel(entities=2, days=3)
    cw = FakeCloudWatch(values, index, names)
    act = TrainingActivities(lambda s, r: cw if s == "cloudwatch" else store._clients(s, r), store)
    req = TrainCandidateInput(sources=(EntitySource(entity_id="nobody", region="us-east-1", namespace=NS),),
                              end=index[-1].to_pydatetime(), history_days=10)  # fmt: skip
    with pytest.raises(ApplicationError, match="no usage history") as err:
        ActivityEnvironment().run(act.train_fleet_candidate, req)
    assert err.value.non_retryable


def test_too_short_a_history_is_not_retried_and_names_the_field(store: ModelStore) -> None:
    """Five days: the fleet model needs a week (two days of features, three to train, one to validate, a horizon)."""
    values, index, names = panel(entities=3, days=5)
    cw = FakeCloudWatch(values, index, names)
    act = TrainingActivities(lambda s, r: cw if s == "cloudwatch" else store._clients(s, r), store)
    sources = tuple(EntitySource(entity_id=n, region="us-east-1", namespace=NS) for n in names)
    req = TrainCandidateInput(sources=sources, end=(index[-1] + pd.Timedelta(hours=1)).to_pydatetime(),
                              history_days=5, metrics=("cpu_mhz",))  # fmt: skip
    with pytest.raises(ApplicationError, match="history_days") as err:
        ActivityEnvironment().run(act.train_fleet_candidate, req)
    assert err.value.non_retryable


def test_a_step_with_nothing_to_report_still_heartbeats() -> None:
    """The fit reports nothing for minutes: a helper thread heartbeats in the activity's context meanwhile."""
    env, beats = ActivityEnvironment(), threading.Event()
    env.on_heartbeat = lambda *details: beats.set() if details == ("fitting",) else None

    @activity.defn
    def step() -> bool:
        with heartbeating("fitting", every_s=0.01):
            return beats.wait(timeout=30)

    assert env.run(step)
