"""The local "hypervisor": one stand-in process per running instance the product manages in the emulated EC2.

    python -m devstack.dataplane.agent --endpoint http://127.0.0.1:5055 --regions us-east-1,eu-west-1 \
        --registry .shadowing/dataplane.json

Every `poll_s` it lists instances tagged `shadowing:managed-by=shadowing` in state pending/running, starts a
stand-in on a free 127.0.0.1 port for each new one, lists it in the registry once it answered /health, and stops
it (SIGTERM, then kill) when the instance is stopped, terminated or gone. SIGTERM stops every child. The
registry format is documented in `shadowing/endpoints.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TAG_MANAGED, MANAGED_BY = "shadowing:managed-by", "shadowing"  # = activities.TAG_MANAGED (no product import)
LIVE_STATES = ("pending", "running")
IDLE_EVERY = 4  # a region with no managed instance is listed every 4th pass only: 21 regions x 2/s is a lot

log = logging.getLogger("shadowing.agent")
ClientFactory = Callable[[str, str], Any]


@dataclass
class Child:
    instance_id: str
    region: str
    address: str
    port: int
    process: subprocess.Popen
    booted: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


class Agent:
    """Reconciles stand-in processes with the EC2 view; `sync()` is one pass, `run()` loops until stopped."""

    def __init__(self, clients: ClientFactory, regions: Iterable[str], registry: Path, *,
                 standin_args: Iterable[str] = (), log_dir: Path | None = None, boot_timeout_s: float = 10.0,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self._clients = clients
        self._regions = list(regions)
        self._registry = Path(registry)
        self._standin_args = list(standin_args)
        self._log_dir = log_dir
        self._boot_timeout_s = boot_timeout_s
        self._env = env
        self.children: dict[str, Child] = {}
        self._passes = 0
        self._busy: set[str] = set()
        self._written: dict[str, Any] | None = None

    def sync(self) -> None:
        """One pass: list instances, start and stop stand-ins, wait briefly for new ones to boot, write registry."""
        self._passes += 1
        for region in self._regions:
            if region in self._busy or self._passes % IDLE_EVERY == 1:
                self._sync_region(region)
        self._await_boot()
        self._write()

    def run(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        self._write()
        while not stop.is_set():
            try:
                self.sync()
            except Exception:  # one bad pass (moto restarting, a region error) must not end the data plane
                log.exception("agent pass failed")
            stop.wait(poll_s)

    def stop_all(self) -> None:
        self._stop(list(self.children.values()))
        self._write()

    def _sync_region(self, region: str) -> None:
        try:
            live = dict(_managed_instances(self._clients("ec2", region)))
        except Exception as exc:  # keep this region's children: an unanswered call says nothing about them
            log.warning("listing instances in %s failed: %s", region, exc)
            return
        (self._busy.add if live else self._busy.discard)(region)
        self._stop([c for iid, c in self.children.items()
                    if c.region == region and (iid not in live or c.process.poll() is not None)])  # fmt: skip
        for iid, ip in live.items():
            if iid not in self.children:
                self._start(iid, region, ip)

    def _start(self, instance_id: str, region: str, address: str) -> None:
        port = _free_port()
        cmd = [sys.executable, "-m", "devstack.dataplane.standin", "--port", str(port), "--instance-id",
               instance_id, "--region", region, "--parent-pid", str(os.getpid()), *self._standin_args]  # fmt: skip
        out: Any = subprocess.DEVNULL
        if self._log_dir:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            out = (self._log_dir / f"{instance_id}.log").open("ab")
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self._env)  # fmt: skip
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.children[instance_id] = Child(instance_id, region, address, port, proc)
        log.info("started stand-in for %s (%s) on port %d, pid %d", instance_id, region, port, proc.pid)

    def _stop(self, children: list[Child]) -> None:
        for child in children:  # signal all first: each takes a few hundred ms to exit
            self.children.pop(child.instance_id, None)
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            stop_process(child.process)
            log.info("stopped stand-in for %s (pid %d)", child.instance_id, child.process.pid)

    def _await_boot(self) -> None:
        deadline = time.monotonic() + self._boot_timeout_s
        pending = [c for c in self.children.values() if not c.booted]
        while pending and time.monotonic() < deadline:
            for child in pending:
                child.booted = child.process.poll() is None and _healthy(child.url)
            pending = [c for c in pending if not c.booted and c.process.poll() is None]
            if pending:
                time.sleep(0.05)

    def _write(self) -> None:
        booted = {c.instance_id: c for c in self.children.values() if c.booted}
        instances = {
            iid: {"url": c.url, "address": c.address, "region": c.region, "pid": c.process.pid}
            for iid, c in sorted(booted.items())
        }
        body = {"instances": instances, "by_ip": {c.address: c.url for c in booted.values() if c.address}}
        if body == self._written and self._registry.exists():
            return
        write_atomically(self._registry, {**body, "updated_at": time.time()})
        self._written = body


def _managed_instances(ec2: Any) -> Iterable[tuple[str, str]]:
    filters = [{"Name": f"tag:{TAG_MANAGED}", "Values": [MANAGED_BY]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]  # fmt: skip
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                yield inst["InstanceId"], advertised_address(inst)


def advertised_address(inst: dict[str, Any]) -> str:
    """Mirrors activities.ec2.advertised_address (the agent imports nothing of the product): the public IP when it
    has one, else the private one. Private IPs repeat across regions (every default VPC is 172.31.0.0/16), so
    they cannot tell a cross-region fleet apart."""
    return str(inst.get("PublicIpAddress") or inst.get("PrivateIpAddress") or "")


def write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after the timeout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout_s)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=0.5) as resp:
            return int(resp.status) == 200
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def boto3_clients(endpoint: str) -> ClientFactory:
    """EC2 clients against `endpoint`; an emulator accepts any credentials."""
    import boto3

    session = boto3.session.Session()
    if session.get_credentials() is None:
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    cache: dict[tuple[str, str], Any] = {}

    def clients(service: str, region: str) -> Any:
        if (service, region) not in cache:
            cache[service, region] = session.client(service, region_name=region, endpoint_url=endpoint)
        return cache[service, region]

    return clients


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m devstack.dataplane.agent", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True, help="the emulated AWS endpoint (moto server)")
    p.add_argument("--regions", required=True, help="comma-separated regions to watch")
    p.add_argument("--registry", required=True, type=Path)
    p.add_argument("--poll-s", type=float, default=0.5)
    p.add_argument("--log-dir", type=Path, default=None, help="one log per stand-in; default: discard")
    p.add_argument("--standin-arg", action="append", default=[], help="extra stand-in argument (repeatable)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    env = {**os.environ, "AWS_ENDPOINT_URL": args.endpoint, "PYTHONUNBUFFERED": "1"}
    agent = Agent(boto3_clients(args.endpoint), regions, args.registry, standin_args=args.standin_arg,
                  log_dir=args.log_dir, env=env)  # fmt: skip
    log.info("watching %s at %s; registry %s", ", ".join(regions), args.endpoint, args.registry)
    try:
        agent.run(stop, args.poll_s)
    finally:
        agent.stop_all()


if __name__ == "__main__":
    main()
