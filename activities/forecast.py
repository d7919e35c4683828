"""PredictDemand's side effects: usage history from CloudWatch, forecast by the one serving path
(`forecasting.fleet.Forecaster`: the published fleet model where it serves the entity well, else the per-entity
engine, and the forecast says which and why)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ClientFactory
from activities.drivers import DriverStore
from activities.model_store import FleetModelCache
from forecasting.calendar import event_days
from forecasting.data import METRICS, UsageDataError, points_to_series
from forecasting.drivers import DriverError
from forecasting.engine import ForecastError, SeriesForecast
from forecasting.fleet import Forecaster
from forecasting.readiness import readiness
from forecasting.refine import error_posterior, refine
from shadowing import metrics
from shadowing.models import DemandForecast, EntitySpec, Frozen, HourQuantiles, MetricForecast, TimeSlice


class ForecastInput(Frozen):
    spec: EntitySpec
    time_slice: TimeSlice


class RefineInput(Frozen):
    """`refine_forecast`: the slice forecast made earlier, to sharpen with what was observed since."""

    spec: EntitySpec
    forecast: DemandForecast


HISTORY = timedelta(days=16)  # the fleet serving path reads 16 days (fleet.ServeConfig.history_days)
MAX_AHEAD = timedelta(days=14)  # beyond this a seasonal forecast from 14 days of history says nothing
FORECAST_METRICS = ("cpu_mhz", "memory_kb")
#: Forecast and sized for when the entity publishes them (an entity without network metrics is sized on CPU and
#: memory alone, as before): network in and out (CloudWatch NetworkInKBps, NetworkOutKBps), each against the type's
#: baseline bandwidth (EC2's bandwidth applies to each direction at once).
OPTIONAL_METRICS = ("network_kbps", "network_out_kbps")
DIMENSION = "EntityId"


class ForecastActivities:
    def __init__(self, clients: ClientFactory, now: type[datetime] = datetime,
                 models: FleetModelCache | None = None, drivers: DriverStore | None = None) -> None:  # fmt: skip
        """`models`: the worker's published fleet model (none: every forecast comes from the per-entity engine);
        `drivers`: the external drivers' registry (none: an entity naming drivers is refused)."""
        self._clients = clients
        self._now = now
        self._models = models or FleetModelCache(None)
        self._drivers = drivers

    def _forecast(self, history: pd.Series, start: pd.Timestamp, hours: int, quantiles: tuple[float, ...],
                  event_days: Any = (), drivers: pd.DataFrame | None = None) -> SeriesForecast:  # fmt: skip
        """The one serving path, with the published model (loaded once per version; see FleetModelCache)."""
        model, why = self._models.current()
        fc = Forecaster(model).forecast(history, start, hours, quantiles, event_days, drivers=drivers)
        return replace(fc, reason=f"per-entity engine: {why}") if model is None else fc

    @activity.defn(name="forecast_demand")
    def forecast_demand(self, req: ForecastInput) -> DemandForecast:
        """Forecasts each metric over the slice's hours from the history visible now (or at slice start)."""
        spec, ts = req.spec, req.time_slice
        clock = spec.demand_clock
        to_history = clock.to_history if clock else (lambda d: d)
        as_of = to_history(min(self._now.now(UTC), ts.start))
        first = pd.Timestamp(to_history(ts.start)).floor("h")
        last = pd.Timestamp(to_history(ts.end) - timedelta(microseconds=1)).floor("h")
        hours = int((last - first) / pd.Timedelta(hours=1)) + 1
        end = pd.Timestamp(as_of).floor("h")
        if last - end > MAX_AHEAD:
            raise ApplicationError(
                f"time_slice: ends {last - end} after the newest usage data ({end.isoformat()}); "
                f"forecasts reach at most {MAX_AHEAD.days} days ahead",
                type="InvalidRequest", non_retryable=True,
            )  # fmt: skip
        q = spec.policy.sizing_quantile
        levels = tuple(sorted({0.1, 0.5, 0.9, q}))
        try:
            days = event_days(pd.date_range(end - HISTORY, last, freq="h"), spec.holiday_country) | set(spec.events)
        except UsageDataError as exc:
            raise ApplicationError(f"holiday_country: {exc}", type="InvalidRequest", non_retryable=True) from exc
        drivers = self._driver_frame(spec, end - HISTORY, end - pd.Timedelta(hours=1), last)
        fitted: dict[str, SeriesForecast] = {}
        for name in FORECAST_METRICS + OPTIONAL_METRICS:
            history = self._history(spec.home_region, spec.metrics_namespace, spec.entity_id, name, end)
            activity.heartbeat(name)
            if name in OPTIONAL_METRICS and not history.notna().any():
                continue  # the entity does not publish it
            try:
                fitted[name] = self._forecast(history, first, hours, levels, days, drivers)
            except ForecastError as exc:
                if name in OPTIONAL_METRICS:
                    activity.logger.warning(f"{spec.entity_id}: {name} not forecast ({exc}); sized without it")
                    continue
                raise ApplicationError(
                    f"cannot forecast {name} for {spec.entity_id}: {exc}", type="InvalidRequest", non_retryable=True
                ) from exc
        score, reasons = readiness([fitted["cpu_mhz"]])
        entity = metrics.entity_label(activity.info().workflow_id or spec.entity_id)
        made = {name: _metric(name, fc) for name, fc in fitted.items()}
        for name, mf in made.items():
            metrics.record_forecast(
                activity.metric_meter(), entity, name, mf.model, mf.backtest_mape, mf.interval_coverage
            )
        return DemandForecast(
            entity_id=spec.entity_id,
            time_slice=ts,
            history_end=end.to_pydatetime(),
            history_hours=fitted["cpu_mhz"].history_hours,
            sizing_quantile=q,
            metrics=made,
            readiness=score,
            readiness_reasons=tuple(reasons),
        )

    def _driver_frame(self, spec: EntitySpec, first: pd.Timestamp, last: pd.Timestamp,
                      until: pd.Timestamp) -> pd.DataFrame | None:  # fmt: skip
        """The entity's drivers as known at each hour of its history and slice; an unknown driver, one the worker has
        no registry for, or one that does not cover the history is a non-retryable error naming it."""
        if not spec.drivers:
            return None
        if self._drivers is None:
            raise ApplicationError(
                f"spec.drivers: {', '.join(spec.drivers)} named, but this worker has no driver registry "
                "(SHADOWING_DRIVERS_FILE)", type="InvalidRequest", non_retryable=True,
            )  # fmt: skip
        try:
            return self._drivers.frame(spec.drivers, first, last, until)
        except DriverError as exc:
            raise ApplicationError(f"spec.drivers: {exc}", type="InvalidRequest", non_retryable=True) from exc

    @activity.defn(name="refine_forecast")
    def refine_forecast(self, req: RefineInput) -> DemandForecast:
        """The slice forecast sharpened by the hours observed since it was made (forecasting.refine).

        The forecast is re-derived from the history it saw, extended over the hours observed since; their errors
        update a conjugate posterior of the error's bias and scale, which shifts and rescales the slice's
        quantiles. No new hour observed: the forecast comes back unchanged.
        """
        fc, spec = req.forecast, req.spec
        clock = spec.demand_clock
        to_history = clock.to_history if clock else (lambda d: d)
        then = pd.Timestamp(fc.history_end)
        now = pd.Timestamp(to_history(min(self._now.now(UTC), fc.time_slice.start))).floor("h")
        if now <= then:
            return fc
        first = pd.Timestamp(fc.metrics["cpu_mhz"].hours[0].hour)
        gap = int((first - then) / pd.Timedelta(hours=1)) - 1
        metrics, notes = dict(fc.metrics), []
        try:  # the same drivers as the forecast being refined saw (as known at its origin)
            last = pd.Timestamp(fc.metrics["cpu_mhz"].hours[-1].hour)
            drivers = self._driver_frame(spec, then - HISTORY, then, last)
        except ApplicationError as exc:  # re-deriving without them would refine a different model: left as it is
            return fc.model_copy(update={"readiness_reasons": (*fc.readiness_reasons, f"not refined: {exc}")})
        for name, metric in fc.metrics.items():
            history = self._history(spec.home_region, spec.metrics_namespace, spec.entity_id, name, now)
            activity.heartbeat(name)
            levels = tuple(float(q) for q in metric.hours[0].quantiles)
            try:
                past, start = history[history.index <= then], then + pd.Timedelta(hours=1)
                again = self._forecast(past, start, gap + len(metric.hours), tuple(sorted({*levels, 0.1, 0.5, 0.9})),
                                       drivers=drivers)  # fmt: skip
            except ForecastError:
                continue
            seen = history.reindex(again.index[:gap]).to_numpy(dtype=float)
            post = error_posterior(again.quantiles[0.5][:gap], again.quantiles[0.1][:gap],
                                   again.quantiles[0.9][:gap], seen)  # fmt: skip
            if post.observations == 0:
                continue
            current = {q: np.array([h.quantiles[f"{q:g}"] for h in metric.hours]) for q in levels}
            sharpened = refine(current, post)
            hours = tuple(
                HourQuantiles(hour=h.hour, quantiles={f"{q:g}": round(float(sharpened[q][i]), 3) for q in levels})
                for i, h in enumerate(metric.hours)
            )
            metrics[name] = metric.model_copy(update={"hours": hours, "model": f"{metric.model}+bayes"})
            notes.append(f"{name}: {post.observations}h observed, bias {post.mu:+.0f}, scale x"
                         f"{post.sigma / post.prior_sigma:.2f}")  # fmt: skip
        return fc.model_copy(
            update={
                "metrics": metrics,
                "history_end": now.to_pydatetime(),
                "readiness_reasons": (*fc.readiness_reasons, *notes),
            }
        )

    def _history(self, region: str, namespace: str, entity_id: str, metric: str, end: pd.Timestamp) -> pd.Series:
        return usage_history(self._clients("cloudwatch", region), namespace, entity_id, metric, end)


def usage_history(cw: Any, namespace: str, entity_id: str, metric: str, end: pd.Timestamp) -> pd.Series:
    """The entity's hourly `Maximum` of `metric` over the HISTORY before `end`, from a CloudWatch client (NaN gaps)."""
    start = (end - HISTORY).to_pydatetime()
    query = {
        "Id": "m",
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": METRICS[metric].cloudwatch_name,
                "Dimensions": [{"Name": DIMENSION, "Value": entity_id}],
            },
            "Period": 3600,
            "Stat": "Maximum",
        },
    }
    stamps, values = [], []
    for page in cw.get_paginator("get_metric_data").paginate(
        MetricDataQueries=[query], StartTime=start, EndTime=end.to_pydatetime()
    ):
        for result in page["MetricDataResults"]:
            stamps += result["Timestamps"]
            values += result["Values"]
    return points_to_series(stamps, values, start, end.to_pydatetime())


def missing_history(clients: ClientFactory, spec: EntitySpec, at: datetime) -> list[str]:
    """CloudWatch names of the spec's forecast metrics without one hourly point in the HISTORY before `at` (the
    hour `forecast_demand` would read up to): what the pre-flight check (activities/preflight.py) reports."""
    end = pd.Timestamp(at).floor("h")
    cw, namespace, entity_id = clients("cloudwatch", spec.home_region), spec.metrics_namespace, spec.entity_id
    return [
        METRICS[m].cloudwatch_name
        for m in FORECAST_METRICS
        if not usage_history(cw, namespace, entity_id, m, end).notna().any()
    ]


def _metric(name: str, fc: SeriesForecast) -> MetricForecast:
    hours = tuple(
        HourQuantiles(
            hour=t.to_pydatetime(), quantiles={f"{q:g}": round(float(v[i]), 3) for q, v in fc.quantiles.items()}
        )
        for i, t in enumerate(fc.index)
    )
    return MetricForecast(
        metric=name,
        unit=METRICS[name].unit,
        model=fc.model,
        hours=hours,
        backtest_mape=None if fc.wape is None else round(fc.wape, 4),
        interval_coverage=fc.interval_coverage,
        engine="fleet" if fc.engine == "fleet" else "entity",
        engine_reason=fc.reason,
    )
