"""How the product reaches an instance's HTTP endpoint: directly by its address, or through the local data plane.

On real AWS a worker in the VPC talks to `http://<instance address>:<port>`. An address is data from a payload
(a `FleetRef`) or from EC2, never trusted as a URL: `check_address` accepts only an IP address that is not
link-local (the instance metadata service, 169.254.169.254), multicast, unspecified or reserved, and loopback only
for the local data plane. Under an emulator (moto) instances do not
run anything, so the data-plane agent (`python -m devstack.dataplane.agent`) runs one stand-in process per
instance on 127.0.0.1 and publishes where each one listens in a registry file, written atomically:

    {"instances": {instance_id: {"url": "http://127.0.0.1:PORT", "address": ..., "region": ..., "pid": ...}},
     "by_ip": {address: url}, "updated_at": unix seconds}

Only instances whose stand-in answered `/health` are listed, so "listed" means "booted". This module only reads
that file; it never imports the agent or the stand-in.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from shadowing import models
from shadowing.errors import InvalidRequest
from shadowing.settings import Settings

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Endpoints(Protocol):
    """Where an instance serves."""

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        """Base URL (scheme://host:port) of the instance, or None when it has not booted (yet)."""
        ...

    def resolve_ip(self, ip: str) -> str | None:
        """Base URL behind a private IP (what a DNS answer gives a client), or None when unknown."""
        ...


#: AWS's link-local services over IPv6 (metadata fd00:ec2::254, DNS ::253, time ::123): unique-local, not link-local.


def check_address(address: str, field: str, *, loopback: bool = False) -> str:
    """`address` as a canonical IP address when the product may send requests to it (`models.check_address`); else
    `InvalidRequest` naming `field`. Loopback only with `loopback` (the local data plane's stand-ins)."""
    try:
        return models.check_address(address.strip(), loopback=loopback)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field) from None


class DirectEndpoints:
    """Real instances: `scheme://<address>:<port>`. Addresses that `check_address` refuses raise `InvalidRequest`."""

    def __init__(self, port: int = 80, scheme: str = "http") -> None:
        self._port, self._scheme = port, scheme

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        return self.resolve_ip(private_ip) if private_ip else None

    def resolve_ip(self, ip: str) -> str | None:
        if not ip:
            return None
        ip = check_address(ip, "address")
        host = f"[{ip}]" if ":" in ip else ip
        return f"{self._scheme}://{host}:{self._port}"


class LocalEndpoints:
    """Stand-ins run by the local data-plane agent, found in its registry file (re-read when the file changes)."""

    def __init__(self, registry_path: Path) -> None:
        self._path = Path(registry_path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] = {}

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        data = self._load()
        entry = data.get("instances", {}).get(instance_id)
        if isinstance(entry, dict) and entry.get("url"):
            return str(entry["url"])
        return None

    def resolve_ip(self, ip: str) -> str | None:
        # Private IPs may repeat across regions under an emulator; instance ids never do, so prefer `url`.
        found = self._load().get("by_ip", {}).get(ip)
        return str(found) if found else None

    def instances(self) -> dict[str, dict[str, Any]]:
        """The registry's instances (instance id -> entry) as last written by the agent."""
        return dict(self._load().get("instances", {}))

    def _load(self) -> dict[str, Any]:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._data = json.loads(self._path.read_text())
                except (OSError, ValueError):  # replaced between stat and read: keep the last good view
                    return self._data
                self._stamp = stamp
            return self._data


def data_plane_mode(settings: Settings) -> str:
    """ "local" or "direct": the setting when given, else local only for an AWS endpoint on loopback (an emulator).

    No AWS_ENDPOINT_URL is real AWS, hence direct: the embedded emulator that `shadowctl up` and `demo` start is
    handed on as a loopback URL (`devstack.stack.Services.settings`), so they stay local, while a worker alone never
    reads a registry file whoever wrote it.
    """
    if settings.data_plane:
        return settings.data_plane
    host = urlparse(settings.aws_endpoint_url or "").hostname or ""
    return "local" if host in LOOPBACK or host.startswith("127.") else "direct"


def registry_path(settings: Settings) -> Path:
    """Where the local agent writes its registry (and the product reads it)."""
    return settings.data_plane_registry or settings.state_dir / "dataplane.json"


def endpoints_for(settings: Settings) -> Endpoints:
    """The `Endpoints` the settings ask for (for `workers/` to pass to the warm-up and monitoring activities)."""
    if data_plane_mode(settings) == "local":
        return LocalEndpoints(registry_path(settings))
    return DirectEndpoints(settings.data_plane_port, settings.data_plane_scheme)
