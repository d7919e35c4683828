"""One settings model; only `workers/`, the CLI and the client read it.

The ecosystem's own variables come first: `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `AWS_ENDPOINT_URL`,
`AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_PROFILE`. Product settings are prefixed `SHADOWING_`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shadowing import TASK_QUEUE
from shadowing.errors import InvalidRequest
from shadowing.faults import FaultRule
from shadowing.ids import PLAIN, Pseudonyms
from shadowing.models import CoordinatorLimits

if TYPE_CHECKING:
    from shadowing.codec import EncryptionCodec


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHADOWING_", extra="ignore", frozen=True)

    temporal_address: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE"))
    task_queue: str = TASK_QUEUE
    # A remote cluster (Temporal Cloud, self-hosted with mTLS): Temporal's own environment variables.
    temporal_api_key: str | None = Field(None, validation_alias=AliasChoices("TEMPORAL_API_KEY"), repr=False)
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
    aws_endpoint_url: str | None = Field(None, validation_alias=AliasChoices("AWS_ENDPOINT_URL"))
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_profile: str | None = Field(None, validation_alias=AliasChoices("AWS_PROFILE"))

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
    # How the product reaches an instance's HTTP endpoint (see shadowing/endpoints.py). None: "local" when AWS is
    # embedded or AWS_ENDPOINT_URL is on loopback (instances are stand-ins run by the data-plane agent),
    # "direct" (http://<private ip>:<data_plane_port>) otherwise.
    data_plane: Literal["local", "direct"] | None = None
    data_plane_port: int = 80
    data_plane_scheme: Literal["http", "https"] = "http"
    data_plane_registry: Path | None = Field(None, description="default: <state_dir>/dataplane.json")
    data_plane_regions: tuple[str, ...] | None = Field(None, description="regions the agent watches; default: all")
    data_plane_poll_s: float = 0.5
    # Payload encryption (shadowing/codec.py): off unless a key or a key file is given.
    codec_key: str | None = Field(None, description="base64 of a 32-byte AES key", repr=False)
    codec_key_id: str = "k1"
    codec_key_file: Path | None = Field(None, description='JSON {"current": id, "keys": {id: base64}}')
    # Fleet coordination (workflows/coordinator.py): account-wide limits every entity's migrations share.
    max_concurrent_migrations: int = Field(10, ge=1)
    region_shadow_quota: int = Field(200, ge=1, description="shadow instances in flight per region")
    region_quotas: dict[str, int] = Field(default_factory=dict, description='JSON, e.g. {"eu-west-1": 50}')
    # Fault injection for AWS calls (shadowing/faults.py), for drills and the fault matrix: off unless given.
    aws_faults: tuple[FaultRule, ...] = Field(
        (), description='JSON list, e.g. [{"operation": "ec2:RunInstances", "fault": "throttle", "times": 2}]'
    )

    @field_validator(
        "temporal_address", "aws_endpoint_url", "aws_profile", "codec_key", "temporal_api_key", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

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
        if self.temporal_tls or cert or ca or self.temporal_api_key:
            options["tls"] = TLSConfig(
                server_root_ca_cert=ca, client_cert=cert, client_private_key=key, domain=self.temporal_tls_server_name
            )
        if self.temporal_api_key:
            options["api_key"] = self.temporal_api_key
        return options

    def codec(self) -> EncryptionCodec | None:
        """The payload codec, or None when encryption is off (`InvalidRequest` for a bad key or key file)."""
        from shadowing.codec import codec_from

        return codec_from(self.codec_key, self.codec_key_id, self.codec_key_file)

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
        return not self.aws_endpoint_url
