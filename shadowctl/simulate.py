"""`shadowctl simulate`: replay a usage trace hour by hour through the product's policy and four other policies.

Every policy sizes the same entities from the same trace, with the same instance catalog and price table, and is
scored on the same hours: an hour is under-provisioned when its 5-minute peak (CPU or memory, the `_max` columns)
exceeds the capacity serving it. Policies:

- predictive: the product. Each slice is forecast as the product forecasts it, `warmup_h` before it starts from
  the hours complete by then (the product's serving path with the fleet model its daily training would have
  published, forecasting/fleet.py), decided by
  `workflows.policy.decide` (shadow a bigger fleet, shrink, stay or skip, with the readiness gate), shadows
  launched `warmup_h` before the slice (their pre-warm is paid), and a replaced fleet kept through the watch
  window and the record TTL (the overlap is paid).
- reactive: target tracking on average utilisation (as AWS target tracking on CPUUtilization): each hour starts
  with the capacity the previous hour's *average* load needed at the target; a 5-minute peak above that hour's
  capacity is under-provisioned, and the extra instances it triggers serve (and are paid) after
  `reactive_delay_h`.
- point_forecast: in the style of AWS predictive scaling: a point forecast of each hour's average load from the
  daily and weekly pattern (the same hour's mean over the last 7 days, blended half and half with the same hour a
  week ago), no interval, plus a fixed `point_buffer`; capacity is launched ahead.
- static: a fleet sized once for the peak of the history before the simulated window.
- oracle: knows each hour's peak and sizes for it exactly, launched ahead: the lower bound of a policy that keeps
  the same utilisation target.

All policies size at the entity policy's `target_utilisation`. Cost is instance-hours x the on-demand price of the
region (shadow pre-warm, overlap and late instances included); the per-entity instance type is the one the
product would choose for the history's demand (predictive may change it when it shadows).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

from forecasting.backtest import fleet_trainer
from forecasting.engine import ForecastError, SeriesForecast, forecast_series
from forecasting.fleet import ServedPanel, fleet_config, serve_panel
from forecasting.global_model import GlobalConfig
from forecasting.panel import Panel, load_panel
from forecasting.readiness import FULL_HISTORY_HOURS, series_score
from shadowing.catalog import INSTANCE_TYPES, InstanceType
from shadowing.models import (
    DemandForecast,
    EntityPolicy,
    EntitySpec,
    FleetRef,
    HourQuantiles,
    MetricForecast,
    ScheduledSlice,
)

POLICIES = ("predictive", "reactive", "point_forecast", "static", "oracle")
POINT_SWEEP = "point_forecast+"  # simulate_entity's keys for the buffer sweep: point_forecast+0.35, ...
SIZING_GRID = (0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)  # sizing quantiles forecast in one pass (forecast_levels)
CPU, MEM = "cpu_usage_mhz_max", "mem_usage_kb_max"  # the 5-minute peaks capacity must cover
CPU_MEAN, MEM_MEAN = "cpu_usage_mhz_mean", "mem_usage_kb_mean"  # the averages AWS's policies track
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SimConfig:
    start: pd.Timestamp
    end: pd.Timestamp
    region: str = "us-east-1"
    instance_types: tuple[str, ...] = ("m5.large", "c5.xlarge", "r5.large")
    policy: EntityPolicy = field(default_factory=EntityPolicy)
    slice_hours: int = 1
    warmup_h: float = 0.25  # provisioning + warm-up before a new instance serves (and is paid)
    reactive_delay_h: float = 0.25  # alarm + launch + warm-up after the load is seen
    point_buffer: float = 0.10
    history_days: int = 14  # the static fleet's peak and the point forecast's pattern look this far back
    workers: int = 2
    # The fleet model's training settings: the product's (TrainFleetModel's) defaults.
    engine: GlobalConfig = field(default_factory=fleet_config)

    @property
    def overlap_h(self) -> float:
        """How long a replaced fleet keeps running after cutover: the watch window and the record's TTL."""
        return (self.policy.watch_s + self.policy.record_ttl_s) / 3600


@dataclass
class Totals:
    underprovisioned_entity_hours: float = 0.0
    shortfall_capacity_hours: float = 0.0  # instance-hours of capacity missing (fractional, of the fleet's type)
    cost_usd: float = 0.0
    migrations: int = 0
    instance_hours: float = 0.0
    entity_hours: int = 0  # scored hours (observed peaks)
    decisions: dict[str, int] = field(default_factory=dict)  # predictive: slices by action (shadow, shrink, ...)

    def add(self, other: Totals) -> None:
        for name, value in asdict(other).items():
            if name == "decisions":
                for action, count in value.items():
                    self.decisions[action] = self.decisions.get(action, 0) + count
            else:
                setattr(self, name, getattr(self, name) + value)

    def report(self) -> dict[str, float | int]:
        out = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k != "decisions" or v}
        out["cost_per_entity_hour"] = round(self.cost_usd / self.entity_hours, 5) if self.entity_hours else 0.0
        return out


@dataclass(frozen=True)
class Entity:
    """One entity's hourly peaks over [history start, end) and its forecasts for the simulated hours."""

    entity_id: str
    cpu: np.ndarray  # hourly 5-minute peaks, NaN where unobserved
    mem: np.ndarray
    cpu_mean: np.ndarray  # hourly averages (what target tracking and predictive scaling track)
    mem_mean: np.ndarray
    first: int  # position of the first simulated hour in cpu/mem
    fc_cpu: dict[float, np.ndarray]  # quantile -> simulated hours (NaN where no forecast)
    fc_mem: dict[float, np.ndarray]
    readiness: np.ndarray  # per simulated hour: the readiness of the forecast that covers it


# ---- sizing and accounting (pure) --------------------------------------------------------------------------


def needed(cpu: float, mem: float, itype: InstanceType, utilisation: float, max_instances: int) -> int:
    """Instances of `itype` that keep both peaks under `utilisation` of capacity (as `policy.instances_needed`)."""
    counts = [math.ceil(v / (cap * utilisation)) for v, cap in ((cpu, itype.cpu_mhz), (mem, itype.memory_kb))
              if v == v]  # fmt: skip  # NaN != NaN: an unobserved metric asks for nothing
    return max(1, min(max_instances, max(counts, default=1)))


def needed_counts(cpu: np.ndarray, mem: np.ndarray, itype: InstanceType, utilisation: float,
                  max_instances: int) -> np.ndarray:  # fmt: skip
    """`needed` for every hour at once."""
    with np.errstate(invalid="ignore"):
        k = np.fmax(np.ceil(cpu / (itype.cpu_mhz * utilisation)), np.ceil(mem / (itype.memory_kb * utilisation)))
    return np.clip(np.where(np.isnan(k), 1, k), 1, max_instances).astype(int)


def shortfall(cpu: np.ndarray, mem: np.ndarray, count: np.ndarray, types: list[InstanceType]) -> np.ndarray:
    """Per hour: instances (fractional, of that hour's type) missing to cover the peaks; NaN where unobserved."""
    cpu_cap = np.array([t.cpu_mhz for t in types])
    mem_cap = np.array([t.memory_kb for t in types])
    with np.errstate(invalid="ignore"):
        short = np.fmax((cpu - count * cpu_cap) / cpu_cap, (mem - count * mem_cap) / mem_cap)
    seen = ~(np.isnan(cpu) & np.isnan(mem))
    return np.where(seen, np.maximum(short, 0.0), np.nan)


def score(short: np.ndarray, serving_cost: float, extra_cost: float, instance_hours: float, migrations: int) -> Totals:
    seen = ~np.isnan(short)
    return Totals(
        underprovisioned_entity_hours=float(np.sum(short[seen] > 1e-9)),
        shortfall_capacity_hours=float(np.sum(short[seen])),
        cost_usd=serving_cost + extra_cost,
        migrations=migrations,
        instance_hours=instance_hours,
        entity_hours=int(seen.sum()),
    )


def fixed_type(counts: np.ndarray, itype: InstanceType, cfg: SimConfig, cpu: np.ndarray, mem: np.ndarray,
               launches_ahead: bool) -> Totals:  # fmt: skip
    """A fleet of one type whose size per hour is `counts`; increases are launched `warmup_h` ahead (paid)."""
    price = itype.price(cfg.region)
    grown = np.maximum(np.diff(counts, prepend=counts[:1]), 0).sum() if launches_ahead else 0
    extra_hours = grown * cfg.warmup_h
    hours = float(counts.sum()) + extra_hours
    short = shortfall(cpu, mem, counts.astype(float), [itype] * len(counts))
    return score(short, float(counts.sum()) * price, extra_hours * price, hours, 0)


def simulate_static(e: Entity, itype: InstanceType, cfg: SimConfig) -> Totals:
    past = slice(max(0, e.first - 24 * cfg.history_days), e.first)
    n = needed(np.nanmax(e.cpu[past]), np.nanmax(e.mem[past]), itype, cfg.policy.target_utilisation,
               cfg.policy.max_instances)  # fmt: skip
    hours = len(e.cpu) - e.first
    return fixed_type(np.full(hours, n), itype, cfg, e.cpu[e.first :], e.mem[e.first :], launches_ahead=False)


def simulate_oracle(e: Entity, itype: InstanceType, cfg: SimConfig) -> Totals:
    p = cfg.policy
    cpu, mem = e.cpu[e.first :], e.mem[e.first :]
    counts = needed_counts(cpu, mem, itype, p.target_utilisation, p.max_instances)
    return fixed_type(counts, itype, cfg, cpu, mem, launches_ahead=True)


def point_forecasts(mean: np.ndarray, first: int) -> np.ndarray:
    """AWS-style point forecast of every hour from `first` on: the same hour's mean over the last 7 days, blended
    half and half with the same hour a week ago (NaN-aware: either part alone when the other is missing)."""
    hours = np.arange(first, len(mean))

    def back(k: int) -> np.ndarray:  # the series k hours before each hour (NaN before the trace starts)
        at = hours - k
        return np.where(at >= 0, mean[np.maximum(at, 0)], np.nan)

    days = np.stack([back(24 * k) for k in range(1, 8)])
    seen = ~np.isnan(days)
    daily = np.where(seen.any(axis=0), np.nansum(days, axis=0) / np.maximum(seen.sum(axis=0), 1), np.nan)
    weekly = back(168)
    return np.where(np.isnan(weekly), daily, np.where(np.isnan(daily), weekly, 0.5 * daily + 0.5 * weekly))


# AWS predictive scaling's own knob, swept to find the point forecast that costs what the product costs
POINT_BUFFERS = tuple(round(0.05 * k, 2) for k in range(61))  # +0 % .. +300 %


def simulate_point(e: Entity, itype: InstanceType, cfg: SimConfig, buffer: float | None = None,
                   forecast: tuple[np.ndarray, np.ndarray] | None = None) -> Totals:  # fmt: skip
    """The point forecast + `buffer` (default: `cfg.point_buffer`), launched ahead; `forecast`: the entity's
    (CPU, memory) `point_forecasts` when already made (the buffer sweep makes them once)."""
    p, b = cfg.policy, 1 + (cfg.point_buffer if buffer is None else buffer)
    cpu, mem = forecast or (point_forecasts(e.cpu_mean, e.first), point_forecasts(e.mem_mean, e.first))
    counts = needed_counts(cpu * b, mem * b, itype, p.target_utilisation, p.max_instances)
    return fixed_type(counts, itype, cfg, e.cpu[e.first :], e.mem[e.first :], launches_ahead=True)


def point_at_cost(curve: dict[float, Totals], budget: float) -> tuple[float, Totals] | None:
    """The point forecast with the largest buffer whose total cost stays within `budget` (None: none does)."""
    within = [(b, t) for b, t in sorted(curve.items()) if t.cost_usd <= budget]
    return within[-1] if within else None


def simulate_reactive(e: Entity, itype: InstanceType, cfg: SimConfig) -> Totals:
    """Target tracking at hourly resolution: an hour starts with what the previous hour's average needed; when its
    own peak needs more, the extra instances serve (and are paid) after `reactive_delay_h`, and scale-in brings
    the next hour back to what this hour's average needs."""
    p, price = cfg.policy, itype.price(cfg.region)
    start, late_hours = [], 0.0
    last = (e.cpu_mean[e.first - 1], e.mem_mean[e.first - 1]) if e.first else (np.nan, np.nan)
    have = needed(*last, itype, p.target_utilisation, p.max_instances)
    for h in range(e.first, len(e.cpu)):
        start.append(have)
        peak = needed(e.cpu[h], e.mem[h], itype, p.target_utilisation, p.max_instances)
        if peak > have:  # the peak set the alarm off: scaled out during the hour, after the delay
            late_hours += (peak - have) * (1 - cfg.reactive_delay_h)
        if not (np.isnan(e.cpu_mean[h]) and np.isnan(e.mem_mean[h])):  # back to what the average needs
            have = needed(e.cpu_mean[h], e.mem_mean[h], itype, p.target_utilisation, p.max_instances)
    counts = np.array(start)
    short = shortfall(e.cpu[e.first :], e.mem[e.first :], counts.astype(float), [itype] * len(counts))
    cost = (float(counts.sum()) + late_hours) * price
    return score(short, cost, 0.0, float(counts.sum()) + late_hours, 0)


def slice_forecast(e: Entity, spec: EntitySpec, slot: ScheduledSlice, offset: int, hours: int) -> DemandForecast | None:
    """The product's forecast object for a slice: the engine's quantiles for its hours (None without forecast)."""
    window = range(offset, offset + hours)
    if any(np.isnan(e.fc_cpu[0.5][h]) for h in window):
        return None

    def metric(name: str, unit: str, fc: dict[float, np.ndarray]) -> MetricForecast:
        rows = tuple(
            HourQuantiles(hour=slot.start + timedelta(hours=i), quantiles={f"{q:g}": float(fc[q][h]) for q in fc})
            for i, h in enumerate(window)
        )
        return MetricForecast(metric=name, unit=unit, model="global_gbm", hours=rows)

    return DemandForecast(
        entity_id=spec.entity_id, time_slice=slot.as_time_slice(), history_end=slot.start - timedelta(hours=1),
        history_hours=FULL_HISTORY_HOURS, sizing_quantile=spec.policy.sizing_quantile,
        metrics={"cpu_mhz": metric("cpu_mhz", "MHz", e.fc_cpu), "memory_kb": metric("memory_kb", "KB", e.fc_mem)},
        readiness=float(np.nanmin(e.readiness[offset : offset + hours])),
    )  # fmt: skip


def simulate_predictive(e: Entity, itype: InstanceType, cfg: SimConfig, index: pd.DatetimeIndex) -> Totals:
    """The product's policy code slice by slice (`workflows.policy.decide`, scale-in on)."""
    from workflows.policy import decide

    spec = entity_spec(e.entity_id, cfg)
    p = cfg.policy
    hours = len(e.cpu) - e.first
    last = (e.cpu[e.first - 1], e.mem[e.first - 1]) if e.first else (np.nan, np.nan)
    size = needed(*last, itype, p.target_utilisation, p.max_instances)
    active = _fleet(e.entity_id, cfg.region, itype.name, size)
    counts, types = np.zeros(hours), [itype] * hours
    serving = extra = instance_hours = 0.0
    migrations = 0
    actions: dict[str, int] = {}
    for offset in range(0, hours, cfg.slice_hours):
        n_h = min(cfg.slice_hours, hours - offset)
        start = index[e.first + offset].to_pydatetime()
        slot = ScheduledSlice(start=start, end=start + timedelta(hours=n_h), region=cfg.region)
        fc = slice_forecast(e, spec, slot, offset, n_h)
        if fc is None:
            actions["no-forecast"] = actions.get("no-forecast", 0) + 1
        else:
            lead = slot.start - timedelta(seconds=p.lead_time_s)
            decision = decide(spec, slot, active, fc, (), lead, prepare_s=p.prepare_s)
            actions[decision.action] = actions.get(decision.action, 0) + 1
            old = INSTANCE_TYPES[active.instance_type]
            if decision.action == "shadow":  # a new fleet warmed ahead; the old one runs on through the overlap
                new = INSTANCE_TYPES[decision.instance_type]
                extra += decision.quantity * cfg.warmup_h * new.price(cfg.region)
                extra += active.size * cfg.overlap_h * old.price(cfg.region)
                instance_hours += decision.quantity * cfg.warmup_h + active.size * cfg.overlap_h
                active = _fleet(e.entity_id, cfg.region, decision.instance_type, decision.quantity)
                migrations += 1
            elif decision.action == "grow":  # the added instances warm ahead of the slice, nothing overlaps
                added = decision.quantity - active.size
                extra += added * cfg.warmup_h * old.price(cfg.region)
                instance_hours += added * cfg.warmup_h
                active = _fleet(e.entity_id, cfg.region, active.instance_type, decision.quantity)
            elif decision.action == "shrink":  # the surplus runs until cached answers expire
                surplus = active.size - decision.quantity
                extra += surplus * (p.record_ttl_s / 3600) * old.price(cfg.region)
                instance_hours += surplus * p.record_ttl_s / 3600
                active = _fleet(e.entity_id, cfg.region, active.instance_type, decision.quantity)
        now = INSTANCE_TYPES[active.instance_type]
        counts[offset : offset + n_h] = active.size
        types[offset : offset + n_h] = [now] * n_h
        serving += active.size * n_h * now.price(cfg.region)
        instance_hours += active.size * n_h
    short = shortfall(e.cpu[e.first :], e.mem[e.first :], counts, types)
    totals = score(short, serving, extra, instance_hours, migrations)
    totals.decisions = actions
    return totals


def _fleet(entity_id: str, region: str, itype: str, size: int) -> FleetRef:
    return FleetRef(fleet_id=f"{entity_id}:sim", entity_id=entity_id, region=region, instance_type=itype,
                    instance_ids=tuple(f"i-{k}" for k in range(size)), role="active")  # fmt: skip


def entity_spec(entity_id: str, cfg: SimConfig) -> EntitySpec:
    return EntitySpec(
        entity_id=entity_id, home_region=cfg.region, instance_types=cfg.instance_types, dns_name=f"{entity_id}.sim",
        hosted_zone_id="SIM", policy=cfg.policy,
    )  # fmt: skip


def entity_type(e: Entity, cfg: SimConfig) -> InstanceType:
    """The cheapest allowed type for the history's 95th-percentile peaks (the baselines keep it throughout)."""
    past = slice(max(0, e.first - 24 * cfg.history_days), e.first)
    cpu, mem = np.nanpercentile(e.cpu[past], 95), np.nanpercentile(e.mem[past], 95)
    p = cfg.policy
    options = [(needed(cpu, mem, INSTANCE_TYPES[n], p.target_utilisation, p.max_instances)
                * INSTANCE_TYPES[n].price(cfg.region), n) for n in cfg.instance_types]  # fmt: skip
    return INSTANCE_TYPES[min(options)[1]]


def simulate_entity(e: Entity, cfg: SimConfig, index: pd.DatetimeIndex) -> dict[str, Totals]:
    itype = entity_type(e, cfg)
    point = (point_forecasts(e.cpu_mean, e.first), point_forecasts(e.mem_mean, e.first))
    return {
        "predictive": simulate_predictive(e, itype, cfg, index),
        "reactive": simulate_reactive(e, itype, cfg),
        "point_forecast": simulate_point(e, itype, cfg, forecast=point),
        "static": simulate_static(e, itype, cfg),
        "oracle": simulate_oracle(e, itype, cfg),
        **{f"{POINT_SWEEP}{b:g}": simulate_point(e, itype, cfg, b, point) for b in POINT_BUFFERS},
    }


def _chunk(args: tuple[list[Entity], SimConfig, pd.DatetimeIndex]) -> dict[str, Totals]:
    entities, cfg, index = args
    totals: dict[str, Totals] = {}
    # an entity unobserved before the window has an all-NaN history: expected, the baselines then size 1 instance
    warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
    for e in entities:
        for name, t in simulate_entity(e, cfg, index).items():
            totals.setdefault(name, Totals()).add(t)
    return totals


# ---- forecasts ------------------------------------------------------------------------------------------------


def forecasts(panel: Panel, first: int, last: int, cfg: SimConfig, progress: Progress,
              model_dir: str | None = None, checkpoint: str | None = None,
              digest: str = "") -> tuple[dict, np.ndarray]:  # fmt: skip
    """Quantiles for positions [first, last) of every series, and readiness, as the product gets them: each slice
    is forecast `warmup_h` before it starts, from the hours complete by then (all but the hour in progress),
    through the product's serving path (`forecasting.fleet.serve_panel`) with the fleet model that the daily
    training would have published at that day's midnight (`forecasting.backtest.fleet_trainer`: the same fit,
    validation and publish rule). A series the serving path sends to the per-entity engine is forecast by it once
    a day for the whole day (the product would call it per slice: 1-2 CPU-s each).

    With `checkpoint` (.npz), each finished day is saved there under `digest`, and a run that finds one of the same
    digest goes on from the day after it (the days before still run their training, from `model_dir`'s cache, so
    that the model serving is the one the publish rule kept)."""
    levels = forecast_levels(cfg)
    steps = cfg.slice_hours + 1  # the hour in progress (unknown yet), then the slice's hours
    train = fleet_trainer(panel, cfg.engine, cache_dir=model_dir, progress=progress)
    n, hours = len(panel.entities), last - first
    out = {level: np.full((n, hours), np.nan) for level in levels}
    ready = np.full((n, hours), np.nan)
    starts = list(range(first, last, cfg.slice_hours))
    days = [[h for h in starts if day <= h < day + 24] for day in range(first, last, 24)]
    engines: dict[str, int] = {}
    done = 0
    if checkpoint and os.path.exists(checkpoint):
        with np.load(checkpoint) as saved:
            if str(saved["digest"]) == digest:
                done = int(saved["days_done"])
                out = {level: saved[f"q{level:g}"] for level in levels}
                ready = saved["ready"]
                progress(f"{done} day(s) of forecasts from {checkpoint}")
    for k, day in enumerate([d for d in days if d], 1):
        model = train(day[0] - int(panel.index[day[0]].hour))
        if k <= done:
            continue
        made: dict[int, int] = {}  # a row the serving path sends to the per-entity engine: the origin it is first sent
        to_entity: list[tuple[int, np.ndarray, slice]] = []
        for h in day:
            origin = h - 1  # a slice at h is forecast from the hours before h - 1
            served = serve_panel(model, panel.values, panel.index, origin, steps, levels)
            span = min(cfg.slice_hours, last - h)
            cols = slice(h - first, h - first + span)
            fleet_rows = served.engine == "fleet"
            for level in levels:
                out[level][fleet_rows, cols] = served.quantiles[level][fleet_rows, 1 : 1 + span]
            for r in np.flatnonzero(~fleet_rows):
                made.setdefault(int(r), origin)
                to_entity.append((int(r), np.arange(h, h + span), cols))
            ready[:, cols] = _readiness(panel, origin, served)[:, None]
            for name in served.engine:
                engines[str(name)] = engines.get(str(name), 0) + 1
        # the per-entity engine once a day per row (its hour j is hour made + j), the rows spread over `workers`
        tasks = [_entity_task(panel, r, at, 24 + steps, levels) for r, at in made.items()]
        daily: dict[int, SeriesForecast | None] = {}
        if tasks:
            with ProcessPoolExecutor(max_workers=min(cfg.workers, len(tasks))) as pool:
                daily = dict(zip(made, pool.map(_entity_day, tasks), strict=True))
        for r, hours_at, cols in to_entity:
            fc = daily[r]
            if fc is not None:
                for level in levels:
                    out[level][r, cols] = fc.quantiles[level][hours_at - made[r]]
        if checkpoint:
            _save(checkpoint, digest=digest, days_done=k, ready=ready, **{f"q{q:g}": v for q, v in out.items()})
        progress(f"forecast {k}/{len(days)} ({panel.index[day[0]]:%Y-%m-%d}): {len(day)} slices, answered by "
                 + ", ".join(f"{name} {count}" for name, count in sorted(engines.items())))  # fmt: skip
    return out, ready


def forecast_levels(cfg: SimConfig) -> tuple[float, ...]:
    """The levels forecast in one pass: the product's own (0.1, 0.5, 0.9 and the sizing quantile) and the sizing grid,
    so that runs at other sizing quantiles of the grid reuse one cache. Each level's calibration is its own; only the
    final sort that keeps levels in order sees the grid's neighbours (docs/limitations.md)."""
    return tuple(sorted({0.1, 0.5, 0.9, cfg.policy.sizing_quantile, *SIZING_GRID}))


def product_levels(cfg: SimConfig) -> tuple[float, ...]:
    """The levels PredictDemand asks for (activities/forecast.py): what a simulated entity's policy sees."""
    return tuple(sorted({0.1, 0.5, 0.9, cfg.policy.sizing_quantile}))


def _entity_task(panel: Panel, row: int, origin: int, hours: int, levels: tuple[float, ...]) -> tuple:
    """What `_entity_day` needs of a series (its last 16 days before `origin`), small enough to send to a worker."""
    lo = max(0, origin - 24 * 16)
    start = panel.index[0] + pd.Timedelta(hours=origin)
    return panel.values[row, lo:origin], panel.index[lo:origin], start, hours, levels


def _entity_day(task: tuple) -> SeriesForecast | None:
    """The per-entity engine's forecast of a series from its origin over `hours` (None: no history to forecast)."""
    values, index, start, hours, levels = task
    try:
        return forecast_series(pd.Series(values, index=index), start, hours, levels)
    except ForecastError:
        return None


def cached_forecasts(panel: Panel, first: int, last: int, cfg: SimConfig, progress: Progress,
                     cache: str | None) -> tuple[dict, np.ndarray]:  # fmt: skip
    """`forecasts`, kept in `cache` (.npz) for the same series, window and engine: policy runs then skip fitting.
    The fleet models the daily trainings fit are kept beside it (`<cache>.models/`), and the days done so far in
    `<cache>.partial.npz`: a run stopped part way goes on where it stopped."""
    key = (f"fleet-serving|{panel.entities}|{panel.index[first]}|{panel.index[last - 1]}|{cfg.engine}|"
           f"{forecast_levels(cfg)}|{cfg.slice_hours}")  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    if cache and os.path.exists(cache):
        with np.load(cache) as saved:
            if str(saved["digest"]) == digest:
                progress(f"forecasts from {cache}")
                levels = [float(q) for q in saved["levels"]]
                return {q: saved[f"q{q:g}"] for q in levels}, saved["ready"]
    fc, ready = forecasts(panel, first, last, cfg, progress, f"{cache}.models" if cache else None,
                          f"{cache}.partial.npz" if cache else None, digest)  # fmt: skip
    if cache:
        arrays = {f"q{q:g}": v for q, v in fc.items()}
        _save(cache, digest=digest, levels=np.array(list(fc)), ready=ready, **arrays)
        if os.path.exists(f"{cache}.partial.npz"):
            os.remove(f"{cache}.partial.npz")
    return fc, ready


def _save(path: str, **arrays: object) -> None:
    """np.savez_compressed to `path` whole or not at all (a run stopped mid-write leaves the previous file)."""
    tmp = f"{path}.tmp.npz"
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _readiness(panel: Panel, origin: int, served: ServedPanel) -> np.ndarray:
    """The product's readiness formula per series: history length, gaps, and the recent backtest WAPE of the
    candidate the serving path chose."""
    past = panel.values[:, max(0, origin - FULL_HISTORY_HOURS) : origin]
    observed = np.sum(~np.isnan(panel.values[:, :origin]), axis=1)
    missing = 1 - np.sum(~np.isnan(past), axis=1) / max(past.shape[1], 1)
    scores = np.zeros(len(panel.values))
    for i in range(len(scores)):
        wape = float(served.wape[i]) if np.isfinite(served.wape[i]) else None
        scores[i] = series_score(int(observed[i]), float(missing[i]), wape, str(served.model[i]) or "entity")[0]
    return scores


# ---- the run ------------------------------------------------------------------------------------------------


def run(path: str, cfg: SimConfig, entities: list[str] | None = None, progress: Progress = lambda _m: None,
        cache: str | None = None) -> dict:  # fmt: skip
    began = time.perf_counter()
    panels = {column: load_panel(path, column, entities) for column in (CPU, MEM, CPU_MEAN, MEM_MEAN)}
    names = sorted(set.intersection(*(set(p.entities) for p in panels.values())))
    if not names:
        raise ValueError(f"{path}: no entity has all of {', '.join(panels)}")
    index = panels[CPU].index
    values = {}
    for column, panel in panels.items():
        if not panel.index.equals(index):
            raise ValueError(f"{path}: {column} covers other hours than {CPU}")
        values[column] = panel.values[[panel.entities.index(n) for n in names]]
    first, last = panels[CPU].position(cfg.start), panels[CPU].position(cfg.end)
    if first < 24 * 8 or last <= first:
        raise ValueError(
            f"the window {cfg.start} .. {cfg.end} needs at least 8 days of data before it inside "
            f"{index[0]} .. {index[-1]}"
        )
    progress(f"{len(names)} entities, {last - first} hours ({index[first]} .. {index[last - 1]})")
    # One panel of both peaks (2N series): the engine's features are scale-free, one fit a day serves both.
    both = Panel([*(f"{n}/cpu" for n in names), *(f"{n}/mem" for n in names)], index,
                 np.concatenate([values[CPU], values[MEM]]))  # fmt: skip
    fc, ready = cached_forecasts(both, first, last, cfg, progress, cache)
    forecast_s = time.perf_counter() - began
    n = len(names)
    ready = np.fmin(ready[:n], ready[n:])
    levels = product_levels(cfg)
    ents = [
        Entity(name, values[CPU][i, :last], values[MEM][i, :last], values[CPU_MEAN][i, :last],
               values[MEM_MEAN][i, :last], first, {q: fc[q][i] for q in levels},
               {q: fc[q][n + i] for q in levels}, ready[i])
        for i, name in enumerate(names)
    ]  # fmt: skip
    chunks = [ents[k :: cfg.workers] for k in range(cfg.workers)]
    totals: dict[str, Totals] = {}
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        for done, part in enumerate(pool.map(_chunk, [(c, cfg, index) for c in chunks]), 1):
            for name, t in part.items():
                totals.setdefault(name, Totals()).add(t)
            progress(f"policies: {done}/{len(chunks)} worker chunks done")
    return {
        "window": {"start": str(index[first]), "end": str(index[last - 1] + pd.Timedelta(hours=1))},
        "entities": len(names),
        "seconds": {"forecast": round(forecast_s, 1), "total": round(time.perf_counter() - began, 1)},
        "settings": {
            "region": cfg.region, "instance_types": list(cfg.instance_types), "slice_hours": cfg.slice_hours,
            "sizing_quantile": cfg.policy.sizing_quantile, "target_utilisation": cfg.policy.target_utilisation,
            "warmup_h": cfg.warmup_h, "reactive_delay_h": cfg.reactive_delay_h, "point_buffer": cfg.point_buffer,
            "overlap_h": round(cfg.overlap_h, 4), "workers": cfg.workers,
            "engine": {k: v for k, v in asdict(cfg.engine).items() if k != "quantiles"},
            "policy": cfg.policy.model_dump(mode="json", exclude={"degradation"}),
        },
        "policies": {name: totals[name].report() for name in POLICIES},
        **point_comparison(totals),
    }  # fmt: skip


def point_comparison(totals: dict[str, Totals]) -> dict:
    """The point forecast's buffer sweep (cost against under-provisioned hours) and its point at the predictive
    policy's cost: the buffer AWS predictive scaling would need to spend what the product spends."""
    curve = {float(name[len(POINT_SWEEP) :]): t for name, t in totals.items() if name.startswith(POINT_SWEEP)}
    matched = point_at_cost(curve, totals["predictive"].cost_usd)
    return {
        "point_forecast_curve": [
            {"point_buffer": b, "underprovisioned_entity_hours": t.underprovisioned_entity_hours,
             "shortfall_capacity_hours": round(t.shortfall_capacity_hours, 4), "cost_usd": round(t.cost_usd, 4)}
            for b, t in sorted(curve.items())
        ],
        "point_forecast_at_predictive_cost": None if matched is None else {"point_buffer": matched[0],
                                                                           **matched[1].report()},
    }  # fmt: skip


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


__all__ = ["POLICIES", "SimConfig", "Totals", "run"]
