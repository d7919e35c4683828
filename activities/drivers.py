"""External drivers' values (forecasting/drivers.py) from where the worker's registry says they live: a local CSV
file or an S3 object (`s3://bucket/key`, read in the worker's AWS region through the client factory)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from botocore.exceptions import ClientError

from activities import ClientFactory
from forecasting.drivers import Driver, DriverError, check_coverage, covariates, parse_registry, read_values, resolve

#: S3 errors an operator must fix (refused at once, naming the driver); throttling and 5xx are retried.
PERMANENT = frozenset({"NoSuchKey", "NoSuchBucket", "AccessDenied", "404", "403", "InvalidBucketName"})


class DriverStore:
    """The worker's driver registry (SHADOWING_DRIVERS_FILE) and the values behind it, read at each forecast."""

    def __init__(self, registry: Mapping[str, Driver], clients: ClientFactory | None = None,
                 region: str = "us-east-1", base: Path | None = None) -> None:  # fmt: skip
        """`base`: where a relative CSV path is resolved (the registry file's folder)."""
        self.registry = dict(registry)
        self._clients = clients
        self._region = region
        self._base = base or Path.cwd()

    @classmethod
    def from_file(cls, path: str, clients: ClientFactory | None = None, region: str = "us-east-1") -> DriverStore:
        """Reads a JSON registry ({"drivers": [...]}); a problem raises DriverError naming the file and the field."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise DriverError(f"SHADOWING_DRIVERS_FILE: cannot read {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise DriverError(f"SHADOWING_DRIVERS_FILE: {path} is not JSON: {exc}") from exc
        try:
            return cls(parse_registry(data), clients, region, Path(path).resolve().parent)
        except DriverError as exc:
            raise DriverError(f"SHADOWING_DRIVERS_FILE {path}: {exc}") from exc

    def frame(self, names: Iterable[str], first: pd.Timestamp, last: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
        """Each named driver's value as known at every hour `first`..`until`, after checking that each covers the
        history `first`..`last`. Raises DriverError naming the driver."""
        first, last, until = (pd.Timestamp(t).tz_convert("UTC") for t in (first, last, until))
        drivers = resolve(self.registry, names)
        values = {d.name: read_values(d, self._text(d)) for d in drivers}
        for d in drivers:
            check_coverage(d, values[d.name], first, last)
        return covariates(drivers, values, pd.date_range(first, until, freq="h"))

    def _text(self, driver: Driver) -> str:
        source = driver.source
        if source.startswith("s3://"):
            bucket, _, key = source[5:].partition("/")
            if not bucket or not key:
                raise DriverError(f"driver {driver.name}: source {source!r} is not s3://bucket/key")
            if self._clients is None:
                raise DriverError(f"driver {driver.name}: no AWS client to read {source}")
            try:
                body = self._clients("s3", self._region).get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code in PERMANENT:  # a wrong name or a missing grant: the operator must act; anything else retries
                    raise DriverError(f"driver {driver.name}: cannot read {source}: {code}") from exc
                raise
            try:
                return bytes(body).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DriverError(f"driver {driver.name}: {source} is not UTF-8 text") from exc
        path = Path(source) if Path(source).is_absolute() else self._base / source
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DriverError(f"driver {driver.name}: {path} is not UTF-8 text") from exc
        except OSError as exc:
            raise DriverError(f"driver {driver.name}: cannot read {path}: {exc.strerror or exc}") from exc
