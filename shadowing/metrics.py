"""Prometheus metrics on one endpoint: the SDK's own (workers, workflows, activities) and the product's.

The endpoint is the Temporal SDK runtime's Prometheus exporter (`SHADOWING_METRICS_BIND`, default
127.0.0.1:9464, "" turns it off); product metrics go through the SDK's metric meters, so workflows record them
without breaking determinism (the SDK drops them while a workflow replays) and one scrape sees everything.

Product metrics (names as Prometheus shows them):
  shadowing_migrations_total{outcome, target_region}     counter: migrations ended (migrated, released, ...)
  shadowing_cutover_seconds{target_region}                histogram: first traffic switch to the watch
  shadowing_shadow_instances{entity, region}              gauge: shadow instances a migration holds now
  shadowing_migration_cost_usd{outcome, region}          histogram: one migration's shadow cost (_sum: total)
  shadowing_spot_savings_usd{region}                      histogram: saved by bidding spot (_sum: total)
  shadowing_forecast_backtest_mape{entity, metric, model} gauge: the chosen model's held-out error
  shadowing_forecast_interval_coverage{entity, metric}    gauge: share of held-out hours inside the band
  shadowing_forecasts_total{metric, model}                counter: forecasts made

The `entity` label is the workflow id's entity part: a keyed pseudonym when a codec key is set (shadowing/ids.py),
so no entity name reaches the metrics backend that the payloads hide.
"""

from __future__ import annotations

import threading

from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from shadowing.errors import InvalidRequest

DEFAULT_BIND = "127.0.0.1:9464"

BUCKETS = {
    "shadowing_cutover_seconds": [1, 5, 15, 30, 60, 120, 300, 600, 1800],
    "shadowing_migration_cost_usd": [0.01, 0.1, 1, 10, 100, 1000],
    "shadowing_spot_savings_usd": [0.01, 0.1, 1, 10, 100, 1000],
}
_runtimes: dict[str, Runtime] = {}
_lock = threading.Lock()


def runtime(bind: str) -> Runtime:
    """The process's Temporal runtime exporting Prometheus metrics on `bind` (one per address: a port binds once)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"SHADOWING_METRICS_BIND must be HOST:PORT, got {bind!r}", "metrics_bind")
    with _lock:
        if bind not in _runtimes:
            try:
                _runtimes[bind] = Runtime(
                    telemetry=TelemetryConfig(
                        metrics=PrometheusConfig(bind_address=bind, counters_total_suffix=True, unit_suffix=False,
                                                 durations_as_seconds=True, histogram_bucket_overrides=BUCKETS)
                    )
                )  # fmt: skip
            except Exception as exc:  # the port is taken, the host is not local, ...
                raise InvalidRequest(
                    f"cannot serve metrics on {bind} (SHADOWING_METRICS_BIND; '' turns them off): {exc}",
                    "metrics_bind",
                ) from exc
        return _runtimes[bind]


def entity_label(workflow_id: str) -> str:
    """`entity/<name>`, `migration/<name>/<slice>`, `predict/<name>/...` -> `<name>` (a pseudonym when keyed)."""
    parts = workflow_id.split("/")
    return parts[1] if len(parts) > 1 else workflow_id


def record_migration_end(meter: MetricMeter, outcome: str, region: str, cost_usd: float, savings_usd: float) -> None:
    meter.create_counter("shadowing_migrations", "migrations ended, by outcome").add(
        1, {"outcome": outcome, "target_region": region}
    )
    meter.create_histogram_float("shadowing_migration_cost_usd", "what one migration's shadows cost").record(
        cost_usd, {"outcome": outcome, "region": region}
    )
    meter.create_histogram_float("shadowing_spot_savings_usd", "what bidding spot saved on one migration").record(
        savings_usd, {"region": region}
    )


def record_cutover(meter: MetricMeter, region: str, seconds: float) -> None:
    meter.create_histogram_float("shadowing_cutover_seconds", "first traffic switch to watching", "s").record(
        seconds, {"target_region": region}
    )


def record_shadows(meter: MetricMeter, entity: str, region: str, instances: int) -> None:
    meter.create_gauge("shadowing_shadow_instances", "shadow instances a migration holds").set(
        instances, {"entity": entity, "region": region}
    )


def record_forecast(
    meter: MetricMeter, entity: str, metric: str, model: str, mape: float | None, coverage: float | None
) -> None:
    meter.create_counter("shadowing_forecasts", "forecasts made").add(1, {"metric": metric, "model": model})
    if mape is not None:
        meter.create_gauge_float("shadowing_forecast_backtest_mape", "held-out error of the chosen model").set(
            mape, {"entity": entity, "metric": metric, "model": model}
        )
    if coverage is not None:
        meter.create_gauge_float("shadowing_forecast_interval_coverage", "held-out hours inside the band").set(
            coverage, {"entity": entity, "metric": metric}
        )


__all__ = [
    "DEFAULT_BIND",
    "entity_label",
    "record_cutover",
    "record_forecast",
    "record_migration_end",
    "record_shadows",
    "runtime",
]
