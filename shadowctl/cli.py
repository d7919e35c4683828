"""shadowctl: run the product (up, worker, demo) and call its endpoints (predict, provision, migrate, release,
status, register, apply). Bad input exits with code 2 and a one-line message naming the field; never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from shadowing.client import parse
from shadowing.errors import InvalidRequest, MigrationError, ServiceUnavailable, ShadowingError
from shadowing.models import PredictDemandInput, ProvisionRequest, TimeSlice
from shadowing.settings import Settings, load_settings, running_services

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predictive instance shadowing on Temporal and AWS.")  # fmt: skip
console = Console(width=None if sys.stdout.isatty() else 150)
T = TypeVar("T")

Start = Annotated[str, typer.Option("--start", help="slice start, ISO 8601 with time zone")]
End = Annotated[str, typer.Option("--end", help="slice end, ISO 8601 with time zone")]
Entity = Annotated[str, typer.Argument(help="entity id, e.g. rnd-024")]
JsonOut = Annotated[bool, typer.Option("--json", help="print the result as JSON (the contract's model), for scripts")]


def _settings(discover: bool = True) -> Settings:
    """The environment's settings; what it leaves unset (TEMPORAL_ADDRESS, AWS_ENDPOINT_URL) comes from a running
    `shadowctl up` in the same state dir (its services.json), unless `discover` is off (the commands that start
    services themselves)."""
    return load_settings(discover=discover)


def _refuse_second_stack(settings: Settings, command: str) -> None:
    """One embedded stack per state dir: a second would find its ports taken and share its Temporal database."""
    found = running_services(settings.state_dir)
    if found is not None and settings.embedded_temporal:
        raise ServiceUnavailable(
            f"`shadowctl up` (pid {found['pid']}) already runs the services of {settings.state_dir}/ "
            f"(Temporal at {found.get('temporal_address')}): other commands use it as they are; stop it before "
            f"`shadowctl {command}`, or give this one another SHADOWING_STATE_DIR"
        )


def _slice(start: str, end: str) -> TimeSlice:
    """Validated before anything connects, so bad input never waits on a server."""
    return parse(TimeSlice, {"start": start, "end": end}, "time_slice")


def _entity(entity_id: str) -> str:
    return parse(PredictDemandInput, {"entity_id": entity_id, "time_slice": _ANY_SLICE}).entity_id


_ANY_SLICE = {"start": "2000-01-01T00:00:00Z", "end": "2000-01-01T01:00:00Z"}


def _call(fn: Callable[[Any], Awaitable[T]]) -> T:
    """Connects a ShadowingClient to the configured Temporal (default: the one `shadowctl up` runs)."""
    from shadowing.client import ShadowingClient

    settings = _settings()

    async def go() -> T:
        client = await ShadowingClient.connect(
            settings.temporal_address or f"127.0.0.1:{settings.temporal_port}", settings.temporal_namespace,
            settings.task_queue, settings,
        )  # fmt: skip
        return await fn(client)

    return asyncio.run(go())


def _print(result: BaseModel | dict, as_json: bool = False) -> None:
    """Tables for people; `--json`: the contract's model as JSON, for scripts (`| jq`)."""
    if not as_json:
        from shadowctl.views import render

        console.print(render(result))
        return
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    console.print_json(json.dumps(data, default=str))


@app.command()
def up() -> None:
    """Temporal dev server, AWS emulator and worker in the foreground until Ctrl-C."""
    import structlog

    from devstack.stack import SERVICES_FILE, embedded_services
    from workers.logs import configure_logging

    settings = _settings(discover=False)
    _refuse_second_stack(settings, "up")
    # one log for the whole run: the worker's (console on a terminal, JSON lines otherwise), `up`'s own lines included
    configure_logging(settings.log_level, settings.log_format)
    log = structlog.get_logger("shadowctl.up")
    with embedded_services(settings) as services:
        log.info("services", temporal=services.temporal_address, aws=services.aws_endpoint_url or "AWS",
                 web_ui=services.ui_url, found_by_other_terminals=str(settings.state_dir / SERVICES_FILE))  # fmt: skip
        if services.aws_state_lost:
            log.warning("aws state lost", detail="the AWS emulator starts empty: fleets, DNS records and CloudWatch "
                        "usage made before this start are gone, Temporal's histories are kept")  # fmt: skip
        log.info("worker running", task_queue=settings.task_queue, stop="Ctrl-C")
        with contextlib.suppress(KeyboardInterrupt):  # the worker stops on SIGINT/SIGTERM itself; this is the rest
            asyncio.run(_up(services.settings(settings), sample=settings.embedded_aws))
        log.info("stopping")
    log.info("stopped")


async def _up(settings: Settings, sample: bool) -> None:
    """Serves; on the embedded emulator, first seeds and registers the sample entity (if it is not running)."""
    from datetime import UTC, datetime

    import structlog

    from shadowctl.demo import seed_sample
    from shadowing.client import ShadowingClient
    from workers.aws import AwsClients
    from workers.main import serve

    log = structlog.get_logger("shadowctl.up")
    # The worker first: registering runs the pre-flight checks (PreflightEntity), which need a worker to answer.
    worker = asyncio.create_task(serve(settings))
    if sample:
        try:
            reg = await asyncio.to_thread(seed_sample, AwsClients(settings), datetime.now(UTC))
            client = await ShadowingClient.connect(
                settings.temporal_address or "",
                settings.temporal_namespace,
                settings.task_queue,
                settings,
            )
            try:
                await client.register_entity(reg["spec"], reg["schedule"])
                log.info("sample entity registered", entity=reg["spec"].entity_id, slices="start tomorrow 00:00 UTC")
            except InvalidRequest as exc:
                if "already" not in str(exc):
                    raise
                log.info("sample entity already running", entity=reg["spec"].entity_id)
        except BaseException:
            worker.cancel()
            with contextlib.suppress(BaseException):
                await worker
            raise
    await worker


@app.command()
def worker() -> None:
    """Only the worker, against TEMPORAL_ADDRESS (default 127.0.0.1:7233) and AWS_ENDPOINT_URL / real AWS."""
    from workers.main import serve

    asyncio.run(serve(_settings()))


@app.command()
def demo(
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the summary here")] = None,
    slice_seconds: Annotated[float, typer.Option(min=10, help="length of a slice on the demo's clock")] = 30.0,
) -> None:
    """Runs the main job on embedded defaults: 2 entities x 3 slices, forecasts from the real trace."""
    from devstack.stack import embedded_services
    from shadowctl.demo import run_demo
    from shadowing.client import ShadowingClient
    from shadowing.connect import connect
    from workers.aws import AwsClients
    from workers.logs import configure_logging
    from workers.main import build_worker, register_search_attributes, stop_on_signals

    base = _settings(discover=False)
    _refuse_second_stack(base, "demo")
    configure_logging("WARNING", base.log_format)

    async def go(settings: Settings, ui_url: str | None) -> None:
        client = await connect(
            settings.temporal_address or "", settings.temporal_namespace, settings=settings, serve_metrics=True
        )
        await register_search_attributes(client)
        clients = AwsClients(settings)
        stop = stop_on_signals()
        async with build_worker(client, settings, clients):
            job = asyncio.ensure_future(
                run_demo(
                    ShadowingClient(client, settings.task_queue, settings.pseudonyms()),
                    clients,
                    console,
                    slice_seconds,
                    json_path,
                    ui_url,
                )
            )
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not job.done():
                job.cancel()
                raise KeyboardInterrupt
            job.result()

    with embedded_services(base) as services:
        asyncio.run(go(services.settings(base), services.ui_url))
    console.print("history kept in .shadowing/ (Temporal SQLite): `shadowctl up` shows it in the Web UI")


@app.command()
def register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON with spec and schedule")],
) -> None:
    """Starts an entity's EntitySchedule from a JSON file {"spec": {...}, "schedule": {"slices": [...]}}."""
    try:
        body = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"not valid JSON: {exc}", str(file)) from exc
    if not isinstance(body, dict) or {"spec", "schedule"} - body.keys():
        raise InvalidRequest("must be an object with 'spec' and 'schedule'", str(file))
    wid = _call(lambda c: c.register_entity(body["spec"], body["schedule"]))
    console.print(f"started {wid}")


@app.command()
def schema(
    spec_only: Annotated[bool, typer.Option("--spec", help="only the entity spec (EntitySpec)")] = False,
) -> None:
    """JSON Schema of what `register` sends (RegisterEntityInput: spec, schedule, ...), from the contract's models,
    for editors and validators (docs/your-application.md). Needs no server."""
    from shadowing.models import EntitySpec, RegisterEntityInput

    model = EntitySpec if spec_only else RegisterEntityInput
    typer.echo(json.dumps(model.model_json_schema(), indent=2, sort_keys=True))


@app.command()
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, dir_okay=False,
                                       help="YAML or JSON: {defaults: {policy: ...}, entities: [{spec, schedule}]}")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate, show what would change, send nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of one line per entity")] = False,
) -> None:  # fmt: skip
    """Registers or updates every entity of a fleet file, sending only what differs from what runs. The whole file
    is validated first: any problem exits 2 and nothing is applied."""
    from rich.progress import Progress

    from shadowctl import fleetfile

    entries = fleetfile.load_fleet(file)
    # a bar on a terminal (a fleet file may hold hundreds of entities); plain lines when piped
    with Progress(console=console, transient=True, disable=as_json or not console.is_terminal) as progress:
        bar = progress.add_task("applying", total=len(entries))

        def report(change: fleetfile.Change) -> None:
            progress.advance(bar)
            if not as_json:
                progress.console.print(change.line(dry_run), highlight=False)

        changes = _call(lambda c: fleetfile.apply_fleet(c, entries, dry_run, report, str(file)))
    if as_json:
        console.print_json(json.dumps([c.as_json(dry_run) for c in changes]))


@app.command()
def predict(entity_id: Entity, start: Start, end: End, as_json: JsonOut = False) -> None:
    """PredictDemand(entityId, timeSlice): the slice's hourly demand quantiles and readiness."""
    entity_id, time_slice = _entity(entity_id), _slice(start, end)
    _print(_call(lambda c: c.predict_demand(entity_id, time_slice)), as_json)


@app.command()
def train(
    history_days: Annotated[int | None, typer.Option("--history-days", help="days of history per entity "
                                                     "(default SHADOWING_TRAINING_DAYS, 35)")] = None,
    validation_days: Annotated[int, typer.Option("--validation-days", help="newest days held out to judge on")] = 3,
    end: Annotated[str | None, typer.Option("--end", help="end of the window, ISO 8601 (default: now)")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="start it and print its workflow id")] = False,
    as_json: JsonOut = False,
) -> None:  # fmt: skip
    """TrainFleetModel now (the schedule runs it daily): fits the fleet model on every registered entity's history,
    publishes it only if it beats seasonal naive and the published model; prints the outcome and the scores."""
    from shadowing.models import TrainFleetModelInput

    settings = _settings()
    body: dict[str, Any] = {"history_days": history_days or settings.training_days, "validation_days": validation_days}
    if end is not None:
        body["end"] = end
    options = {"history_days": "--history-days", "validation_days": "--validation-days", "end": "--end"}
    try:
        req = parse(TrainFleetModelInput, body)
    except InvalidRequest as exc:
        field = exc.field or ""
        raise InvalidRequest(str(exc).removeprefix(f"{field}: "), options.get(field, field)) from exc
    result = _call(lambda c: c.train_fleet_model(req, wait=not no_wait))
    if isinstance(result, str):
        console.print(f"started {result}: `temporal workflow describe --workflow-id {result}` shows it")
        return
    _print(result, as_json)


@app.command()
def provision(
    entity_id: Entity, start: Start, end: End,
    instance_type: Annotated[str, typer.Option("--instance-type")],
    quantity: Annotated[int, typer.Option("--quantity")], as_json: JsonOut = False,
) -> None:  # fmt: skip
    """ProvisionShadowInstances(entityId, timeSlice, instanceType, quantity)."""
    entity_id = _entity(entity_id)
    req = parse(
        ProvisionRequest, {"time_slice": _slice(start, end), "instance_type": instance_type, "quantity": quantity}
    )
    result = _call(lambda c: c.provision_shadow_instances(entity_id, req.time_slice, req.instance_type, req.quantity))
    _print(result, as_json)


@app.command()
def migrate(entity_id: Entity, start: Start, end: End, as_json: JsonOut = False) -> None:
    """MigrateInstances(entityId, timeSlice): cut over to the slice's shadows now."""
    entity_id, time_slice = _entity(entity_id), _slice(start, end)
    _print(_call(lambda c: c.migrate_instances(entity_id, time_slice)), as_json)


@app.command()
def release(entity_id: Entity, start: Start, end: End, as_json: JsonOut = False) -> None:
    """ReleaseShadowInstances(entityId, timeSlice)."""
    entity_id, time_slice = _entity(entity_id), _slice(start, end)
    _print(_call(lambda c: c.release_shadow_instances(entity_id, time_slice)), as_json)


@app.command("id")
def entity_ids(entity_id: Entity, as_json: JsonOut = False) -> None:
    """How Temporal knows the entity: its workflow id and `ShadowingEntity` value (pseudonyms when payloads are
    encrypted), for the `temporal` CLI and the Web UI. Needs no server."""
    entity_id = _entity(entity_id)
    ids = _settings().pseudonyms()
    name = ids(entity_id)
    _print({"entity_id": entity_id, "workflow_id": ids.entity_workflow_id(entity_id), "search_attribute": name,
            "list_query": f'ShadowingEntity = "{name}"', "pseudonymous": ids.hidden}, as_json)  # fmt: skip


@app.command()
def status(entity_id: Entity, as_json: JsonOut = False) -> None:
    """The entity's phase, active fleet, slices, recent events and cost ledger."""
    entity_id = _entity(entity_id)
    _print(_call(lambda c: c.status(entity_id)), as_json)


@app.command()
def plan(entity_id: Entity, as_json: JsonOut = False) -> None:
    """Every slice: when it is forecast, the decision, whether it awaits approval."""
    entity_id = _entity(entity_id)
    _print(_call(lambda c: c.plan(entity_id)), as_json)


@app.command()
def ledger(entity_id: Entity, as_json: JsonOut = False) -> None:
    """The entity's cost ledger: shadow hours, cost, spot savings, wasted pre-warm."""
    entity_id = _entity(entity_id)
    _print(_call(lambda c: c.ledger(entity_id)), as_json)


Reason = Annotated[str, typer.Option("--reason", help="kept in the entity's event log")]


@app.command()
def approve(entity_id: Entity, start: Start, end: End, reason: Reason = "", as_json: JsonOut = False) -> None:
    """Approves a slice's shadows (entities with policy.approval_required)."""
    entity_id, time_slice = _entity(entity_id), _slice(start, end)
    _print(_call(lambda c: c.approve(entity_id, time_slice, reason)), as_json)


@app.command()
def abort(entity_id: Entity, start: Start, end: End, reason: Reason = "", as_json: JsonOut = False) -> None:
    """Aborts a slice: a running migration rolls back (routing restored, old fleet serving)."""
    entity_id, time_slice = _entity(entity_id), _slice(start, end)
    _print(_call(lambda c: c.abort(entity_id, time_slice, reason)), as_json)


@app.command()
def pause(entity_id: Entity, reason: Reason = "", as_json: JsonOut = False) -> None:
    """Stops forecasting and preparing new slices until `resume` (running migrations finish)."""
    entity_id = _entity(entity_id)
    _print(_call(lambda c: c.pause(entity_id, reason)).model_dump(include={"entity_id", "phase", "paused"}), as_json)


@app.command()
def resume(entity_id: Entity, as_json: JsonOut = False) -> None:
    """Forecasting and preparing start again from the next slice."""
    entity_id = _entity(entity_id)
    _print(_call(lambda c: c.resume(entity_id)).model_dump(include={"entity_id", "phase", "paused"}), as_json)


@app.command("update-schedule")
def update_schedule(
    entity_id: Entity,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help='{"slices": [...]}')],
    as_json: JsonOut = False,
) -> None:
    """Replaces the slices that have not started with the file's schedule."""
    entity_id = _entity(entity_id)
    try:
        body = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"not valid JSON: {exc}", str(file)) from exc
    _print(_call(lambda c: c.update_schedule(entity_id, body)), as_json)


@app.command()
def backtest(
    input_path: Annotated[Path, typer.Option("--input", exists=True, dir_okay=False, help="hourly usage CSV (.gz)")],
    output: Annotated[Path, typer.Option("--output", dir_okay=False, help="CSV to write")],
    origins: Annotated[str, typer.Option("--origins", help="comma-separated ISO 8601 hours, e.g. 2013-08-18T00:00Z")],
    target: Annotated[str, typer.Option("--target", help="column to forecast")] = "cpu_usage_mhz_mean",
    horizon: Annotated[int, typer.Option("--horizon", help="hours ahead, 1-168 (past 24: per-entity engine)")] = 24,
    quantiles: Annotated[str, typer.Option("--quantiles", help="comma-separated levels")] = "0.1,0.5,0.9",
    entities: Annotated[str | None, typer.Option("--entities", help="comma-separated entity ids (default all)")] = None,
    country: Annotated[str | None, typer.Option("--country", help="public holidays of this ISO country")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="calendar CSV with a 'date' column")] = None,
    model_cache: Annotated[
        Path | None, typer.Option("--model-cache", file_okay=False, help="keep fitted fleet models here across runs")
    ] = None,
) -> None:
    """Backtests the product's serving path: at each origin, the fleet model the daily training would have
    published from the data before it, served per entity (or the per-entity engine where the product would use it).

    Writes entity_id,origin,timestamp,q<level>... like `python -m forecasting backtest`.
    """
    import time as clock

    from forecasting.backtest import fleet_trainer, parse_origins, parse_quantiles, serve_backtest
    from forecasting.calendar import event_days
    from forecasting.data import UsageDataError
    from forecasting.panel import load_panel

    try:
        levels = parse_quantiles(quantiles)
    except ValueError as exc:
        raise InvalidRequest(str(exc), "quantiles") from exc
    try:
        moments = parse_origins(origins)
    except ValueError as exc:
        raise InvalidRequest(str(exc), "origins") from exc
    if not 1 <= horizon <= 168:
        raise InvalidRequest(f"{horizon}: must be between 1 and 168 hours", "horizon")
    wanted = [e for e in (entities or "").split(",") if e] or None
    began = clock.perf_counter()

    def progress(message: str) -> None:
        print(f"[{clock.perf_counter() - began:7.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        panel = load_panel(input_path, target, wanted)
        days = event_days(panel.index, country, str(events) if events else None)
    except UsageDataError as exc:
        raise InvalidRequest(str(exc), "input") from exc
    for entity, problem in panel.problems.items():
        progress(f"warning: {entity} left out: {problem}")
    if not panel.entities:
        raise InvalidRequest("no entity has usable data", "input")
    engines: dict[str, int] = {}
    train = fleet_trainer(panel, events=days, cache_dir=str(model_cache) if model_cache else None, progress=progress)
    try:
        frame = serve_backtest(panel, moments, horizon, levels, train, events=days, progress=progress, engines=engines)
    except ValueError as exc:
        raise InvalidRequest(str(exc), "origins") from exc
    frame.to_csv(output, index=False)
    answered = ", ".join(f"{name} {count}" for name, count in sorted(engines.items()))
    progress(f"wrote {len(frame)} rows, {frame['entity_id'].nunique()} entities, to {output} (answered by: {answered})")


@app.command()
def simulate(
    input_path: Annotated[Path, typer.Option("--input", exists=True, dir_okay=False, help="hourly usage CSV (.gz)")],
    start: Annotated[str, typer.Option("--start", help="first simulated hour, ISO 8601 (UTC if no zone)")],
    end: Annotated[str, typer.Option("--end", help="end of the simulated window (exclusive), ISO 8601")],
    entities: Annotated[list[str] | None, typer.Option("--entities", help="only these entities (repeat)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    slice_hours: Annotated[int, typer.Option(min=1, max=24, help="slice length the product decides on")] = 1,
    workers: Annotated[int, typer.Option(min=1, max=64, help="processes for the policies")] = 2,
    cache: Annotated[Path | None, typer.Option("--forecast-cache", help=".npz: reuse forecasts across runs")] = None,
    sizing_quantile: Annotated[
        float | None,
        typer.Option(
            "--sizing-quantile",
            min=0.51,
            max=0.99,
            help="the entity policy's sizing quantile (default: the policy's own, 0.85)",
        ),
    ] = None,
    policy_json: Annotated[
        str | None,
        typer.Option(
            "--policy",
            help='entity policy fields as JSON, e.g. \'{"sizing_quantile": 0.7, "rightsize_min_saving": 0.1}\' '
            "(--sizing-quantile wins over the same field here)",
        ),
    ] = None,
) -> None:
    """Replays a usage trace through the product's policy and reactive, point-forecast, static and oracle ones."""
    import time as clock

    import pandas as pd

    from shadowctl.simulate import POLICIES, SimConfig, run

    def moment(value: str, name: str) -> pd.Timestamp:
        try:
            ts = pd.Timestamp(value)
        except ValueError as exc:
            raise InvalidRequest(f"not an ISO 8601 time: {value!r}", name) from exc
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    first, last = moment(start, "start"), moment(end, "end")
    if last <= first:
        raise InvalidRequest("must be after --start", "end")
    began = clock.perf_counter()

    def progress(message: str) -> None:
        console.print(f"[dim][{clock.perf_counter() - began:6.1f}s][/] {message}", highlight=False)

    policy = _sim_policy(policy_json, sizing_quantile)
    try:
        cfg = SimConfig(start=first, end=last, slice_hours=slice_hours, workers=workers, policy=policy)
        result = run(str(input_path), cfg, entities or None, progress, str(cache) if cache else None)
    except ValueError as exc:  # the data cannot support the window; UsageDataError names the file's problem
        raise InvalidRequest(str(exc), "input") from exc
    from rich.table import Table

    pol = result["policies"]
    table = Table("policy", "under-provisioned entity-h", "shortfall instance-h", "cost $", "migrations", "$/entity-h",
                  "under vs reactive", "cost vs reactive", "cost vs oracle",
                  title=f"{result['entities']} entities, {result['window']['start']} .. {result['window']['end']}",
                  )  # fmt: skip
    rows = [(name, pol[name]) for name in POLICIES]
    if (matched := result["point_forecast_at_predictive_cost"]) is not None:
        rows.insert(3, (f"point_forecast +{matched['point_buffer']:.0%} (predictive's cost)", matched))
    for name, r in rows:
        table.add_row(
            name, f"{r['underprovisioned_entity_hours']:.0f}", f"{r['shortfall_capacity_hours']:.1f}",
            f"{r['cost_usd']:.2f}", str(r["migrations"]), f"{r['cost_per_entity_hour']:.4f}",
            _ratio(r["underprovisioned_entity_hours"], pol["reactive"]["underprovisioned_entity_hours"]),
            _ratio(r["cost_usd"], pol["reactive"]["cost_usd"]), _ratio(r["cost_usd"], pol["oracle"]["cost_usd"]),
        )  # fmt: skip
    console.print(table)
    console.print(f"predictive decisions: {pol['predictive'].get('decisions', {})}")
    console.print(f"forecasting {result['seconds']['forecast']} s, total {result['seconds']['total']} s")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        console.print(f"written to {json_path}")


def _sim_policy(policy_json: str | None, sizing_quantile: float | None) -> Any:
    """The simulated entities' policy: the defaults, `--policy`'s fields over them, then `--sizing-quantile`."""
    from shadowing.client import parse
    from shadowing.models import EntityPolicy

    fields: Any = {}
    if policy_json:
        try:
            fields = json.loads(policy_json)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"not JSON: {exc.msg} at character {exc.pos}", "policy") from exc
        if not isinstance(fields, dict):
            raise InvalidRequest("must be a JSON object of policy fields", "policy")
    if sizing_quantile is not None:
        fields["sizing_quantile"] = sizing_quantile
    return parse(EntityPolicy, fields, "policy")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


@app.command("codec-server")
def codec_server(
    port: Annotated[int, typer.Option("--port")] = 8081,
    host: Annotated[str, typer.Option("--host", help="address to bind; off loopback, put TLS in front")] = "127.0.0.1",
    origin: Annotated[list[str], typer.Option("--origin", help="Web UI origin allowed by CORS")] = [  # noqa: B006
        "http://127.0.0.1:8233", "http://localhost:8233"],
    token: Annotated[str | None, typer.Option("--token", envvar="SHADOWING_CODEC_SERVER_TOKEN",
                                              help="require Authorization: Bearer <token>")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="no token (loopback only): any local user or process can decode")] = False,
    allowed_host: Annotated[list[str], typer.Option(
        "--allowed-host", help="a Host name clients use besides the bound address (repeatable)")] = [],  # noqa: B006
) -> None:  # fmt: skip
    """Serves the payload codec to the Temporal Web UI (`temporal server start-dev --ui-codec-endpoint URL`).

    A token is required: `temporal --codec-endpoint URL --codec-auth "Bearer <token>"`, or a UI that forwards its
    users' access tokens. A UI without one (the local dev server's) needs `--insecure-no-auth`, refused off loopback.
    """
    from shadowctl.codec_server import make_server

    codec = _settings().codec()
    if codec is None:
        raise InvalidRequest("no key: set SHADOWING_CODEC_KEY or SHADOWING_CODEC_KEY_FILE", "codec_key")
    server = make_server(codec, host=host, port=port, origins=tuple(origin), token=token,
                         allow_no_token=insecure_no_auth, allowed_hosts=allowed_host)  # fmt: skip
    if not token:
        console.print("[yellow]warning:[/] no token: every local user and process can decode payloads")
    console.print(f"codec server on http://{host}:{port} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


plot_app = typer.Typer(no_args_is_help=True, help="PNG pictures: an entity's forecast, one migration's timeline.")
app.add_typer(plot_app, name="plot")
PlotPath = Annotated[Path | None, typer.Option("-o", "--output", help="PNG to write; default <state dir>/plots/")]
SliceKey = Annotated[str | None, typer.Argument(metavar="[SLICE]", help="slice key, as status shows it")]
MaybeStart = Annotated[str | None, typer.Option("--start", help="or name the slice by start and end, as approve does")]
MaybeEnd = Annotated[str | None, typer.Option("--end", help="slice end, ISO 8601 with time zone")]


@plot_app.command("forecast")
def plot_forecast(
    entity_id: Entity, output: PlotPath = None,
    context_hours: Annotated[int, typer.Option(min=0, max=336, help="actual usage shown before the forecast")] = 24,
    actual: Annotated[bool, typer.Option("--actual/--no-actual", help="read actual usage from CloudWatch")] = True,
) -> None:  # fmt: skip
    """Per metric: each slice's forecast band and median, actual usage (CloudWatch) and the capacity its decision
    chose. Prints the PNG's path."""
    from botocore.exceptions import BotoCoreError, ClientError

    from shadowctl import plots

    entity_id, settings = _entity(entity_id), _settings()
    status, spec = _call(lambda c: plots.entity_status_and_spec(c, entity_id))
    cloudwatch = None
    if actual:
        from workers.aws import AwsClients

        cloudwatch = AwsClients(settings)("cloudwatch", spec.home_region)
    path = output or settings.state_dir / "plots" / f"forecast-{entity_id}.png"
    try:
        written = plots.entity_forecast_png(status, spec, cloudwatch, path, context_hours)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable(f"cannot read actual usage from CloudWatch in {spec.home_region}: {exc} "
                                 "(--no-actual draws the forecast alone)") from exc  # fmt: skip
    except ValueError as exc:  # nothing forecast yet
        raise ShadowingError(str(exc)) from exc
    typer.echo(str(written))


@plot_app.command("migration")
def plot_migration(
    entity_id: Entity, slice_key: SliceKey = None, start: MaybeStart = None, end: MaybeEnd = None,
    output: PlotPath = None,
) -> None:  # fmt: skip
    """The slice's ShadowMigration run from its Temporal history: a bar per activity execution, by step and
    outcome; timers, signals, slice start. Prints the PNG's path."""
    import re

    from shadowctl import plots

    entity_id, settings = _entity(entity_id), _settings()
    if slice_key is not None:
        if start is not None or end is not None:
            raise InvalidRequest("give the slice key or --start/--end, not both", "time_slice")
        if not re.fullmatch(r"\d{8}T\d{6}Z", slice_key):
            raise InvalidRequest(f"{slice_key!r} is not a slice key such as 20261129T083937Z", "time_slice")
        which: TimeSlice | str = slice_key
    elif start is None or end is None:
        raise InvalidRequest("name the slice: its key (as status and plan show it) or --start and --end", "time_slice")
    else:
        which = _slice(start, end)
    history, entry = _call(lambda c: plots.migration_history(c, entity_id, which))
    path = output or settings.state_dir / "plots" / f"migration-{entity_id}-{entry.time_slice.key}.png"
    try:
        written = plots.migration_png(history, path, entry.time_slice)
    except ValueError as exc:
        raise ShadowingError(str(exc)) from exc
    typer.echo(str(written))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _error(exc: Exception) -> None:
    """One line, however long (a worker's refusal lists slices and times), its brackets printed as they are."""
    console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: maps errors to exit codes (2 bad input, 1 failure or unavailable service, 130 Ctrl-C)."""
    signal.signal(signal.SIGTERM, _interrupt)  # stop embedded services on SIGTERM as on Ctrl-C
    try:
        app(standalone_mode=False)
    except InvalidRequest as exc:
        _error(exc)
        sys.exit(2)
    except (ServiceUnavailable, MigrationError, ShadowingError) as exc:
        _error(exc)
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except Exception as exc:  # click's usage errors (typer vendors click, so match by shape, not class)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def run() -> None:
    """The `shadowctl` program: `main`, then the process ends without interpreter teardown once output is flushed.

    The Temporal client's Rust core keeps runtime threads that can call into Python while CPython finalizes, which
    now and then aborts a finished command ("PyGILState_Release: thread state ... must be current", exit -6;
    temporalio sdk-python issue 300). Every command has closed what it opened by the time `main` returns (embedded
    services stop in their own `finally`) and nothing registers `atexit` work, so skipping teardown loses nothing.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to deliver
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
