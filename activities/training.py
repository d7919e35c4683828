"""TrainFleetModel's heavy step: every entity's hourly history from CloudWatch, a fleet model fitted and validated
on it (forecasting/fleet.py), the incumbent scored on the same held-out days, the candidate written to S3.

The history of a fleet is megabytes (500 entities x 35 days x 24 h x 2 metrics), so it never leaves this activity:
the workflow gets the candidate's version, key, digest and scores, and decides.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ClientFactory
from activities.forecast import DIMENSION, FORECAST_METRICS
from activities.model_store import ModelStore, require_store
from activities.registry import EntitySource
from forecasting.data import METRICS, points_to_series
from forecasting.fleet import FleetModelError, Validation, data_hash, fleet_config, train_fleet, validate
from forecasting.global_model import GlobalConfig
from shadowing.models import Frozen, ModelScores, UtcDatetime

#: GetMetricData's limit of queries per call.
MAX_QUERIES = 500
#: Heartbeats while a step runs (the fit is minutes of CPU with nothing to report in between).
HEARTBEAT_EVERY_S = 20.0


class TrainCandidateInput(Frozen):
    sources: tuple[EntitySource, ...]
    end: UtcDatetime
    history_days: int = 35
    validation_days: int = 3
    metrics: tuple[str, ...] = FORECAST_METRICS


class CandidateModel(Frozen):
    """A trained, stored, not yet published model: what the workflow judges."""

    version: str
    key: str
    sha256: str
    data_hash: str
    entities: int
    series: int
    skipped: int = 0  # series without one observed hour in the window
    training_start: UtcDatetime | None = None
    training_end: UtcDatetime | None = None
    scores: ModelScores
    incumbent_version: str | None = None
    incumbent_scores: ModelScores | None = None
    incumbent_problem: str = ""  # why the incumbent could not be scored (it is then not a bar to clear)


class TrainingActivities:
    def __init__(self, clients: ClientFactory, store: ModelStore | None, config: GlobalConfig | None = None) -> None:
        """`config`: the fleet model's training settings (default `fleet_config()`; tests pass a small one)."""
        self._clients, self._store, self._config = clients, store, config

    @activity.defn(name="train_fleet_candidate")
    def train_fleet_candidate(self, req: TrainCandidateInput) -> CandidateModel:
        """Reads, fits, validates, scores the incumbent on the same days, stores the candidate (not published)."""
        store = require_store(self._store)
        values, index, names = read_panel(
            self._clients, req.sources, req.metrics, req.end, req.history_days, activity.heartbeat
        )
        seen = ~np.isnan(values).all(axis=1)
        values, names = values[seen], [n for n, s in zip(names, seen, strict=True) if s]
        if not names:
            raise ApplicationError(f"no usage history in the {req.history_days} days before {req.end.isoformat()} "
                                   f"for any of {len(req.sources)} entities", type="InvalidRequest",
                                   non_retryable=True)  # fmt: skip
        digest = data_hash(values, names, index)
        version = f"v{pd.Timestamp(req.end):%Y%m%dT%H%MZ}-{digest[:8]}"
        with heartbeating(f"fitting {version} on {len(names)} series"):
            try:
                trained = train_fleet(values, index, names, config=self._config or fleet_config(),
                                      validation_days=req.validation_days, version=version)  # fmt: skip
            except ValueError as exc:  # too little history for the window
                raise ApplicationError(f"history_days: {exc}", type="InvalidRequest", non_retryable=True) from exc
            held_out = [index.get_loc(pd.Timestamp(t)) for t in trained.model.metadata["validation"]["origin_times"]]
            incumbent, incumbent_scores, problem = self._incumbent(store, values, index, held_out)
        meta = {**trained.model.metadata, "entities": sorted({n.split("/")[0] for n in names}), "series": len(names)}
        stored = store.put_candidate(version, trained.artifact, meta)
        return CandidateModel(
            version=version, key=stored["key"], sha256=stored["sha256"], data_hash=digest,
            entities=len(meta["entities"]), series=len(names), skipped=int((~seen).sum()),
            training_start=meta.get("training_start"), training_end=meta.get("training_end"),
            scores=scores(trained.validation), incumbent_version=incumbent, incumbent_scores=incumbent_scores,
            incumbent_problem=problem,
        )  # fmt: skip

    def _incumbent(self, store: ModelStore, values: np.ndarray, index: pd.DatetimeIndex,
                   origins: list[int]) -> tuple[str | None, ModelScores | None, str]:  # fmt: skip
        """The published model's scores on the candidate's held-out origins (None, and why, when it has none)."""
        pointer = store.pointer()
        if pointer is None:
            return None, None, "no model is published"
        version = str(pointer.get("version"))
        try:
            model = store.load(version, str(pointer.get("sha256")))
        except FleetModelError as exc:
            return version, None, f"the published model cannot be loaded: {exc}"
        horizon = model.config.horizon
        return version, scores(validate(model, values, index, origins, horizon)), ""


def scores(v: Validation) -> ModelScores:
    def num(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return ModelScores(origins=v.origins, entities=v.entities, mae=num(v.mae),
                       relative_mae={k: num(x) for k, x in v.relative_mae.items()},
                       coverage_80=num(v.coverage_80), q90_coverage=num(v.q90_coverage))  # fmt: skip


# ---- CloudWatch --------------------------------------------------------------------------------------------------


def read_panel(clients: ClientFactory, sources: Sequence[EntitySource], metrics: Sequence[str], end: datetime,
               days: int, progress: Callable[[str], None] = lambda _: None,
               ) -> tuple[np.ndarray, pd.DatetimeIndex, list[str]]:  # fmt: skip
    """Every source's hourly `Maximum` of each metric over the `days` before `end` (history time: an entity on a
    demand clock is read where its clock maps `end`), one row per `<entity>/<metric>`, NaN where no point.

    Entities are grouped by region, namespace and history end; each group is read in GetMetricData calls of at most
    500 queries. Rows are aligned by position before their end; the index is the largest group's hours.
    """
    hours = days * 24
    groups: dict[tuple[str, str, pd.Timestamp], list[EntitySource]] = defaultdict(list)
    for src in sources:
        at = src.clock.to_history(end) if src.clock else end
        groups[(src.region, src.namespace, pd.Timestamp(at).floor("h"))].append(src)
    if not groups:
        return np.zeros((0, hours)), pd.date_range(end=pd.Timestamp(end).floor("h"), periods=hours, freq="h"), []
    ends = Counter({key[2]: len(members) for key, members in groups.items()})
    main_end = ends.most_common(1)[0][0]
    index = pd.date_range(end=main_end - pd.Timedelta(hours=1), periods=hours, freq="h")
    rows, names = [], []
    for (region, namespace, at), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        wanted = [(m.entity_id, metric) for m in members for metric in metrics]
        cw = clients("cloudwatch", region)
        for lo in range(0, len(wanted), MAX_QUERIES):
            chunk = wanted[lo : lo + MAX_QUERIES]
            rows += get_metric_batch(cw, namespace, chunk, at - pd.Timedelta(hours=hours), at)
            names += [f"{entity}/{metric}" for entity, metric in chunk]
            progress(f"read {len(names)} series")
    return np.vstack(rows), index, names


def get_metric_batch(cw: Any, namespace: str, series: Sequence[tuple[str, str]], start: pd.Timestamp,
                     end: pd.Timestamp) -> list[np.ndarray]:  # fmt: skip
    """One GetMetricData request (all its pages) for up to 500 (entity, metric) pairs: hourly arrays over [start,
    end). Same conventions as `activities.forecast.usage_history`."""
    if len(series) > MAX_QUERIES:
        raise ValueError(f"{len(series)} queries: GetMetricData takes at most {MAX_QUERIES}")
    queries = [
        {"Id": f"q{i}", "ReturnData": True, "MetricStat": {"Metric": {
            "Namespace": namespace, "MetricName": METRICS[metric].cloudwatch_name,
            "Dimensions": [{"Name": DIMENSION, "Value": entity}]}, "Period": 3600, "Stat": "Maximum"}}
        for i, (entity, metric) in enumerate(series)
    ]  # fmt: skip
    points: dict[str, tuple[list, list]] = {q["Id"]: ([], []) for q in queries}  # type: ignore[misc]
    try:
        pages = cw.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries, StartTime=start.to_pydatetime(), EndTime=end.to_pydatetime()
        )
        for page in pages:
            for result in page["MetricDataResults"]:
                stamps, values = points[result["Id"]]
                stamps += result["Timestamps"]
                values += result["Values"]
    except (BotoCoreError, ClientError) as exc:
        raise ApplicationError(f"cannot read usage from CloudWatch namespace {namespace}: {exc}") from exc
    span = (start.to_pydatetime(), end.to_pydatetime())
    return [points_to_series(*points[q["Id"]], *span).to_numpy(dtype=float) for q in queries]  # type: ignore[index]


@contextlib.contextmanager
def heartbeating(what: str, every_s: float = HEARTBEAT_EVERY_S) -> Iterator[None]:
    """Heartbeats `what` from a helper thread while the block runs (it holds the activity's context)."""
    done = threading.Event()
    beat: Callable[[], None] = lambda: activity.heartbeat(what)  # noqa: E731
    context = contextvars.copy_context()

    def loop() -> None:
        while not done.wait(every_s):
            with contextlib.suppress(Exception):  # a heartbeat that cannot be sent is the server's to time out
                context.run(beat)

    helper = threading.Thread(target=loop, name="heartbeat", daemon=True)
    helper.start()
    try:
        yield
    finally:
        done.set()
        helper.join()
