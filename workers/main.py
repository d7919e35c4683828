"""Builds and runs the worker that hosts every workflow and activity on the `shadowing` task queue."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities import ClientFactory
from activities.application import ApplicationActivities
from activities.coordination import CoordinationActivities
from activities.drivers import DriverStore
from activities.ec2 import DEFAULT_INSTALLATION, Ec2Activities
from activities.forecast import ForecastActivities
from activities.model_store import FleetModelCache, ModelStore, ModelStoreActivities
from activities.monitoring import MonitoringActivities
from activities.preflight import PreflightActivities
from activities.registry import RegistryActivities
from activities.replication import ReplicationActivities
from activities.routing import RoutingActivities
from activities.training import TrainingActivities
from activities.warmup import WarmupActivities
from shadowing.connect import connect
from shadowing.endpoints import Endpoints, data_plane_mode, endpoints_for
from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import CoordinatorLimits
from shadowing.settings import Settings
from workflows.coordinator import FleetCoordinatorWorkflow
from workflows.entity import EntityScheduleWorkflow
from workflows.migrate import ShadowMigrationWorkflow
from workflows.predict import PredictDemandWorkflow
from workflows.preflight import PreflightEntityWorkflow
from workflows.train import TrainFleetModelWorkflow

WORKFLOWS = [
    EntityScheduleWorkflow, ShadowMigrationWorkflow, PredictDemandWorkflow, FleetCoordinatorWorkflow,
    PreflightEntityWorkflow, TrainFleetModelWorkflow,
]  # fmt: skip


def activities(
    client: Client, clients: ClientFactory, endpoints: Endpoints, limits: CoordinatorLimits | None = None,
    ids: Pseudonyms = PLAIN, *, installation: str = DEFAULT_INSTALLATION, loopback: bool = False,
    dns_suffixes: tuple[str, ...] = (), model_store: ModelStore | None = None, drivers: DriverStore | None = None,
) -> list:  # fmt: skip
    """Every activity the workflows call; `endpoints` is how instances are reached (local stand-ins or direct),
    `installation` the tag that keeps this installation's fleets apart from another's in a shared account,
    `loopback` whether instance addresses may be loopback (only for the local data plane), and `model_store` where
    the fleet model is trained to and served from (None: no fleet model)."""
    ec2 = Ec2Activities(clients, installation=installation)
    warm = WarmupActivities(clients, endpoints, installation=installation, loopback=loopback)
    app = ApplicationActivities(clients, endpoints, installation=installation, loopback=loopback)
    repl, route = (
        ReplicationActivities(clients),
        RoutingActivities(clients, installation=installation, dns_suffixes=dns_suffixes),
    )
    watch = MonitoringActivities(endpoints, loopback=loopback)
    forecast = ForecastActivities(clients, models=FleetModelCache(model_store), drivers=drivers)
    registry = RegistryActivities(client, ids)
    return [
        forecast.forecast_demand, forecast.refine_forecast,
        registry.lookup_entity, registry.list_entity_sources,
        TrainingActivities(clients, model_store).train_fleet_candidate,
        ModelStoreActivities(model_store).publish_fleet_model,
        CoordinationActivities(client, limits or CoordinatorLimits()).request_lease,
        ec2.provision_fleet, ec2.shrink_fleet, ec2.terminate_fleet, ec2.mark_fleet_role, ec2.adopt_fleet,
        ec2.release_adopted,
        warm.warm_fleet, warm.check_fleet_health,
        app.check_write_fence, app.set_write_fence,
        repl.replicate_tables, repl.catch_up, repl.check_sync, repl.drop_replicas, repl.create_read_replica,
        repl.promote_read_replica, repl.delete_read_replica, repl.forward_queue, repl.replicate_both_ways,
        route.switch_traffic, route.remove_fleet_record, route.routing_state,
        route.set_weights, route.restore_weights, route.register_fleet_targets, route.deregister_fleet_targets,
        route.listener_state, route.set_listener_weights,
        watch.probe_fleet,
        PreflightActivities(clients, dns_suffixes=dns_suffixes, installation=installation).check_entity,
    ]  # fmt: skip


def build_worker(client: Client, settings: Settings, clients: ClientFactory, **options: object) -> Worker:
    """The one worker: sandboxed workflows, synchronous activities in a bounded thread pool."""
    pool = ThreadPoolExecutor(max_workers=settings.max_concurrent_activities, thread_name_prefix="activity")
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=activities(
            client,
            clients,
            endpoints_for(settings),
            settings.coordinator_limits(),
            settings.pseudonyms(),
            installation=settings.installation_id,
            loopback=data_plane_mode(settings) == "local",
            dns_suffixes=settings.dns_suffixes,
            model_store=model_store(settings, clients),
            drivers=driver_store(settings, clients),
        ),
        activity_executor=pool,
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=5),
        **options,  # type: ignore[arg-type]
    )


def model_store(settings: Settings, clients: ClientFactory) -> ModelStore | None:
    """The fleet model's S3 store in the worker's region, when a bucket is configured."""
    if not settings.model_bucket:
        return None
    return ModelStore(clients, settings.model_bucket, settings.model_prefix, settings.aws_region)


def driver_store(settings: Settings, clients: ClientFactory) -> DriverStore | None:
    """The external drivers' registry, when SHADOWING_DRIVERS_FILE names one (a bad file stops the worker, naming
    the file and the field)."""
    if not settings.drivers_file:
        return None
    return DriverStore.from_file(settings.drivers_file, clients, settings.aws_region)


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """Creates or updates the training schedule (workers/schedules.py); says how when this worker may not."""
    import structlog

    from workers.schedules import TRAINING_SCHEDULE_ID, ensure_training_schedule

    log = structlog.get_logger("worker")
    try:
        done = await ensure_training_schedule(client, settings)
    except RPCError as exc:
        log.warning("cannot create the training schedule; `shadowctl train` still trains", error=str(exc))
        return
    log.info("training schedule", schedule_id=TRAINING_SCHEDULE_ID, cron=settings.training_cron, result=done)


async def register_search_attributes(client: Client) -> None:
    """Adds the product's search attributes if the namespace lacks them; says how when this worker may not."""
    import structlog

    from shadowing.search import ensure_search_attributes

    log = structlog.get_logger("worker")
    try:
        added = await ensure_search_attributes(client)
    except RPCError as exc:  # e.g. Temporal Cloud: add them with `tcld` or the Cloud UI
        log.warning("cannot register search attributes; add them by hand (see README)", error=str(exc))
        return
    if added:
        log.info("registered search attributes", names=added)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so that workers shut down gracefully instead of being interrupted."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs the worker until `stop` is set (by default: until SIGINT or SIGTERM)."""
    import structlog

    from workers.aws import AwsClients
    from workers.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    stop = stop or stop_on_signals()
    address = settings.temporal_address or "127.0.0.1:7233"
    client = await connect(address, settings.temporal_namespace, settings=settings, serve_metrics=True)
    await register_search_attributes(client)
    await ensure_schedules(client, settings)
    if settings.metrics_bind:
        structlog.get_logger("worker").info("metrics", url=f"http://{settings.metrics_bind}/metrics")
    async with build_worker(client, settings, AwsClients(settings)):
        await stop.wait()
