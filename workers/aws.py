"""boto3 clients for activities: one session, one client per (service, region), built lazily and shared."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from shadowing.settings import Settings
from workers.fault_injection import FaultInjector

RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


class AwsClients:
    """A `ClientFactory`: call it with (service, region). Thread-safe; activities run in a thread pool."""

    def __init__(self, settings: Settings) -> None:
        self._endpoint = settings.aws_endpoint_url
        self._session = boto3.session.Session(profile_name=settings.aws_profile, region_name=settings.aws_region)
        if self._endpoint and self._session.get_credentials() is None:
            # An emulator accepts any credentials; real AWS never gets here without its own.
            self._session = boto3.session.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing", region_name=settings.aws_region
            )
        self._clients: dict[tuple[str, str], Any] = {}
        # One client per (service, region) is shared by every activity thread: a connection each, not urllib3's 10.
        self._config = RETRIES.merge(Config(max_pool_connections=max(10, settings.max_concurrent_activities)))
        #: Injected AWS faults (settings.aws_faults), or None: what they did is in `faults.injected`.
        self.faults = FaultInjector(settings.aws_faults) if settings.aws_faults else None
        self._lock = threading.Lock()

    def __call__(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                client = self._session.client(
                    service, region_name=region, endpoint_url=self._endpoint, config=self._config
                )
                if self.faults is not None:
                    self.faults.install(client, region)
                self._clients[key] = client
            return self._clients[key]
