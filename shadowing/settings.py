"""One settings model; only `workers/`, the CLI and the client read it.

The ecosystem's own variables come first: `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `AWS_ENDPOINT_URL`,
`AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_PROFILE`. Product settings are prefixed `SHADOWING_`. Secrets (the codec key,
the Temporal API key) are `SecretStr`: `repr`, logs and `model_dump()` never carry them; readers call
`get_secret_value()`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shadowing import TASK_QUEUE
from shadowing.errors import InvalidRequest
from shadowing.faults import FaultRule
from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import CoordinatorLimits

if TYPE_CHECKING:
    from shadowing.codec import EncryptionCodec

#: An installation id: a tag value that also fits in a launch template name (activities/ec2.py checks it too).
_INSTALLATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHADOWING_", extra="ignore", frozen=True)

    temporal_address: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE"))
    task_queue: str = TASK_QUEUE
    # A remote cluster (Temporal Cloud, self-hosted with mTLS): Temporal's own environment variables.
    temporal_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("TEMPORAL_API_KEY"), repr=False)
    temporal_tls: bool = Field(False, validation_alias=AliasChoices("TEMPORAL_TLS"))
    temporal_tls_client_cert_path: Path | None = Field(
        None, validation_alias=AliasChoices("TEMPORAL_TLS_CLIENT_CERT_PATH")
    )
    temporal_tls_client_key_path: Path | None = Field(
        None, validation_alias=AliasChoices("TEMPORAL_TLS_CLIENT_KEY_PATH")
    )
    temporal_tls_server_ca_cert_path: Path | None = Field(
        None, validation_alias=AliasChoices("TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    )
    temporal_tls_server_name: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_TLS_SERVER_NAME"))
    # Temporal's environment configuration (the `temporal` CLI's profiles): a TOML file of named profiles, by default
    # ~/.config/temporalio/temporal.toml. A profile fills what the variables above leave unset.
    temporal_profile: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_PROFILE"))
    temporal_config_file: Path | None = Field(None, validation_alias=AliasChoices("TEMPORAL_CONFIG_FILE"))
    aws_endpoint_url: str | None = Field(None, validation_alias=AliasChoices("AWS_ENDPOINT_URL"))
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_profile: str | None = Field(None, validation_alias=AliasChoices("AWS_PROFILE"))
    # Which installation of the product this worker is, tagged on every instance and launch template it makes and
    # required by every fleet operation: two installations sharing an AWS account (and entity ids) never touch
    # each other's fleets. None: the Temporal namespace.
    installation: str | None = Field(None, description="default: TEMPORAL_NAMESPACE")
    # DNS names entities may route (SHADOWING_DNS_SUFFIXES='["apps.example.com"]'), as the IAM policy's suffix:
    # empty means any name inside a zone handed to the product (tagged shadowing:managed-by).
    dns_suffixes: tuple[str, ...] = ()

    state_dir: Path = Path(".shadowing")
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    moto_port: int = 5055
    startup_timeout_s: float = 30.0
    log_format: str | None = Field(None, description="'console' or 'json'; default: console on a TTY")
    log_level: str = "INFO"
    max_concurrent_activities: int = 8
    # Workers (`shadowctl worker`, `up`, `demo`) serve Prometheus metrics here; "" turns it off (shadowing/metrics.py).
    metrics_bind: str = "127.0.0.1:9464"
    # OpenTelemetry spans client -> workflow -> activities (shadowing/tracing.py): off, otlp or console.
    tracing: Literal["off", "otlp", "console"] = "off"
    # How the product reaches an instance's HTTP endpoint (see shadowing/endpoints.py). None: "local" when
    # AWS_ENDPOINT_URL is on loopback (an emulator: the embedded one, which `shadowctl up`/`demo` start and hand
    # on as a loopback URL, or one of yours; instances are stand-ins run by the data-plane agent), "direct"
    # (http://<instance address>:<data_plane_port>) otherwise, real AWS included.
    data_plane: Literal["local", "direct"] | None = None
    data_plane_port: int = 80
    data_plane_scheme: Literal["http", "https"] = "http"
    data_plane_registry: Path | None = Field(None, description="default: <state_dir>/dataplane.json")
    data_plane_regions: tuple[str, ...] | None = Field(None, description="regions the agent watches; default: all")
    data_plane_poll_s: float = 0.5
    # Payload encryption (shadowing/codec.py): off unless a key or a key file is given.
    codec_key: SecretStr | None = Field(None, description="base64 of a 32-byte AES key", repr=False)
    codec_key_id: str = "k1"
    codec_key_file: Path | None = Field(None, description='JSON {"current": id, "keys": {id: base64}}')
    # Fleet coordination (workflows/coordinator.py): account-wide limits every entity's migrations share.
    max_concurrent_migrations: int = Field(10, ge=1)
    region_shadow_quota: int = Field(200, ge=1, description="shadow instances in flight per region")
    region_quotas: dict[str, int] = Field(default_factory=dict, description='JSON, e.g. {"eu-west-1": 50}')
    # The fleet model (TrainFleetModel, forecasting/fleet.py): artifacts in s3://<bucket>/<prefix>/ in aws_region. No
    # bucket: nothing is trained and forecasts come from the per-entity engine (`shadowctl up` names one on its
    # emulator). The schedule trains daily at `training_cron` (UTC; "" creates none) on `training_days` of history.
    model_bucket: str | None = Field(None, description="S3 bucket of the fleet model; default: none (no fleet model)")
    model_prefix: str = Field("fleet-model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}[A-Za-z0-9]$")
    training_cron: str = "30 2 * * *"
    training_days: int = Field(35, ge=10, le=455)
    # External drivers (forecasting/drivers.py): a JSON registry {"drivers": [...]} of the series entities may name in
    # `spec.drivers`; each driver's values are a CSV file or an s3:// object, read at each forecast. None: no drivers.
    drivers_file: str | None = Field(None, description="JSON registry of external drivers; default: none")
    # Fault injection for AWS calls (workers/fault_injection.py), for drills and the fault matrix: off unless given.
    aws_faults: tuple[FaultRule, ...] = Field(
        (), description='JSON list, e.g. [{"operation": "ec2:RunInstances", "fault": "throttle", "times": 2}]'
    )

    _profile_tls: object = PrivateAttr(default=None)
    _grpc_meta: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator(
        "temporal_address",
        "aws_endpoint_url",
        "aws_profile",
        "codec_key",
        "temporal_api_key",
        "temporal_profile",
        "installation",
        "model_bucket",
        "drivers_file",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("installation")
    @classmethod
    def _installation_fits(cls, value: str | None) -> str | None:
        if value is not None and not _INSTALLATION.fullmatch(value):
            raise ValueError(f"{value!r} must be 1-64 letters, digits, '.', '_' or '-' (it is a tag value)")
        return value

    @field_validator("model_bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.fullmatch(value):
            raise ValueError(f"{value!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.' or '-')")
        return value

    @model_validator(mode="after")
    def _apply_temporal_profile(self) -> Settings:
        """Fills address, namespace, API key, TLS and gRPC metadata from the Temporal profile (the SDK's loader)."""
        from temporalio.envconfig import ClientConfigProfile

        if self.temporal_config_file is not None and not Path(self.temporal_config_file).is_file():
            raise InvalidRequest(f"no such file: {self.temporal_config_file}", "TEMPORAL_CONFIG_FILE")
        source = str(self.temporal_config_file) if self.temporal_config_file else None
        try:
            profile = ClientConfigProfile.load(
                self.temporal_profile, config_source=Path(source) if source else None, disable_env=True
            )
        except Exception as exc:  # the SDK's ConfigError: bad TOML (with line and column), unknown profile
            name, where = self.temporal_profile or "default", source or "the default config file"
            raise InvalidRequest(f"Temporal profile {name!r} from {where}: {exc}", "TEMPORAL_PROFILE") from None
        fill = {
            "temporal_address": profile.address if self.temporal_address is None else None,
            "temporal_namespace": profile.namespace if "temporal_namespace" not in self.model_fields_set else None,
            "temporal_api_key": SecretStr(profile.api_key)
            if profile.api_key and self.temporal_api_key is None
            else None,
        }
        for name, value in fill.items():
            if value:
                object.__setattr__(self, name, value)  # frozen model: filled once, while it is being built
        self._profile_tls = profile.tls
        self._grpc_meta = dict(profile.grpc_meta)
        return self

    def temporal_connect_options(self) -> dict[str, object]:
        """`Client.connect` keyword arguments for TLS and the API key (an API key implies TLS, as on Cloud)."""
        from temporalio.service import TLSConfig

        def read(path: Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise InvalidRequest(f"cannot read {path}: {exc.strerror}", what) from exc

        cert = read(self.temporal_tls_client_cert_path, "TEMPORAL_TLS_CLIENT_CERT_PATH")
        key = read(self.temporal_tls_client_key_path, "TEMPORAL_TLS_CLIENT_KEY_PATH")
        if (cert is None) != (key is None):
            raise InvalidRequest("give both the client certificate and its key", "TEMPORAL_TLS_CLIENT_KEY_PATH")
        ca = read(self.temporal_tls_server_ca_cert_path, "TEMPORAL_TLS_SERVER_CA_CERT_PATH")
        options: dict[str, object] = {}
        if self._grpc_meta:
            options["rpc_metadata"] = self._grpc_meta
        profile_tls = self._profile_tls
        if profile_tls is not None and not (self.temporal_tls or cert or ca):  # the profile's TLS, unless set here
            tls = profile_tls.to_connect_tls_config()  # type: ignore[attr-defined]
            if tls is not False:
                options["tls"] = tls
        if "tls" not in options and (self.temporal_tls or cert or ca or self.temporal_api_key):
            options["tls"] = TLSConfig(
                server_root_ca_cert=ca, client_cert=cert, client_private_key=key, domain=self.temporal_tls_server_name
            )
        if self.temporal_api_key:
            options["api_key"] = self.temporal_api_key.get_secret_value()
        return options

    def codec(self) -> EncryptionCodec | None:
        """The payload codec, or None when encryption is off (`InvalidRequest` for a bad key or key file)."""
        from shadowing.codec import codec_from

        key = self.codec_key.get_secret_value() if self.codec_key else None
        return codec_from(key, self.codec_key_id, self.codec_key_file)

    def pseudonyms(self) -> Pseudonyms:
        """How entity ids appear in Temporal: pseudonyms when payloads are encrypted, else the ids themselves."""
        codec = self.codec()
        return Pseudonyms(codec.id_secret) if codec is not None else PLAIN

    def coordinator_limits(self) -> CoordinatorLimits:
        return CoordinatorLimits(
            max_concurrent_migrations=self.max_concurrent_migrations, region_shadow_quota=self.region_shadow_quota,
            region_quotas=self.region_quotas,
        )  # fmt: skip

    @property
    def embedded_temporal(self) -> bool:
        return not self.temporal_address

    @property
    def embedded_aws(self) -> bool:
        """No AWS_ENDPOINT_URL: `shadowctl up`/`demo` start the emulator. Not "the data plane is local": a worker
        alone (`shadowctl worker`) then talks to real AWS (see `shadowing.endpoints.data_plane_mode`)."""
        return not self.aws_endpoint_url

    @property
    def installation_id(self) -> str:
        """The installation tag's value: `SHADOWING_INSTALLATION`, else the Temporal namespace."""
        value = self.installation or self.temporal_namespace
        if not _INSTALLATION.fullmatch(value):
            raise InvalidRequest(
                f"namespace {value!r} cannot be a tag value: set SHADOWING_INSTALLATION (1-64 letters, digits, '.', "
                "'_' or '-')",
                "SHADOWING_INSTALLATION",
            )
        return value


#: What a running `shadowctl up` (or `demo`) writes under its state dir: where its services listen and its pid.
SERVICES_FILE = "services.json"


def running_services(state_dir: Path) -> dict | None:
    """The services file of `state_dir` when the process that wrote it still runs; None otherwise (no file, an
    unreadable one, or one left by a stack that has exited)."""
    try:
        data = json.loads((Path(state_dir) / SERVICES_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and _alive(data.get("pid")) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def with_running_services(settings: Settings) -> Settings:
    """Fills what the environment (or a Temporal profile) leaves unset from a running `shadowctl up`'s services file:
    the Temporal address (and namespace), the AWS endpoint (and the model bucket made on it). An explicit setting
    always wins."""
    found = running_services(settings.state_dir)
    if found is None:
        return settings
    update: dict[str, object] = {}
    if settings.temporal_address is None and isinstance(found.get("temporal_address"), str):
        update["temporal_address"] = found["temporal_address"]
        namespace = found.get("temporal_namespace")
        if "temporal_namespace" not in settings.model_fields_set and isinstance(namespace, str):
            update["temporal_namespace"] = namespace
    if settings.aws_endpoint_url is None and isinstance(found.get("aws_endpoint_url"), str):
        update["aws_endpoint_url"] = found["aws_endpoint_url"]
        if settings.model_bucket is None and isinstance(found.get("model_bucket"), str):
            update["model_bucket"] = found["model_bucket"]  # the bucket made on that emulator
    return settings.model_copy(update=update) if update else settings


def load_settings(discover: bool = False) -> Settings:
    """`Settings()` from the environment, a bad value raising `InvalidRequest` that names its variable. `discover`
    (shadowctl's commands that talk to the services): what is left unset comes from a running `shadowctl up`
    (`with_running_services`)."""
    from pydantic import ValidationError

    try:
        settings = Settings()
        return with_running_services(settings) if discover else settings
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            info = Settings.model_fields.get(field)
            alias = info.validation_alias if info is not None else None
            name = alias.choices[0] if isinstance(alias, AliasChoices) else f"SHADOWING_{field.upper()}"
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(message if not field else f"{name}: {message}")
        raise InvalidRequest("; ".join(problems), "environment") from None
