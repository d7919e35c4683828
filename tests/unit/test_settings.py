"""Settings from Temporal's environment configuration (the `temporal` CLI's profiles) and clear errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowing.errors import InvalidRequest
from shadowing.settings import load_settings

PROFILES = """
[profile.default]
address = "127.0.0.1:7233"

[profile.cloud]
address = "payments.a1b2c.tmprl.cloud:7233"
namespace = "payments.a1b2c"
api_key = "not-a-real-key"

[profile.cloud.grpc_meta]
x-team = "platform"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE", "TEMPORAL_TLS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "temporal.toml"
    path.write_text(PROFILES)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    return path


def test_a_named_profile_fills_address_namespace_api_key_tls_and_metadata(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    settings = load_settings()
    assert settings.temporal_address == "payments.a1b2c.tmprl.cloud:7233"
    assert settings.temporal_namespace == "payments.a1b2c" and not settings.embedded_temporal
    options = settings.temporal_connect_options()
    assert options["api_key"] == "not-a-real-key" and options["tls"]  # an API key implies TLS, as on Cloud
    assert options["rpc_metadata"] == {"x-team": "platform"}


def test_variables_win_over_the_profile(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "10.0.0.5:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "staging")
    settings = load_settings()
    assert (settings.temporal_address, settings.temporal_namespace) == ("10.0.0.5:7233", "staging")


def test_the_default_profile_applies_without_a_name(config: Path) -> None:
    settings = load_settings()
    assert settings.temporal_address == "127.0.0.1:7233" and settings.temporal_namespace == "default"
    assert "tls" not in settings.temporal_connect_options()


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("TEMPORAL_PROFILE", "nope", "Profile 'nope' not found"),
        ("SHADOWING_MAX_CONCURRENT_MIGRATIONS", "0", "SHADOWING_MAX_CONCURRENT_MIGRATIONS"),
        ("SHADOWING_TRACING", "zipkin", "SHADOWING_TRACING"),
    ],
)
def test_bad_values_name_their_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidRequest, match=named):
        load_settings()


def test_a_broken_or_missing_config_file_is_named(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text("[profile.default\naddress = 1\n")
    with pytest.raises(InvalidRequest, match="line 1"):
        load_settings()
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config.parent / "missing.toml"))
    with pytest.raises(InvalidRequest, match=r"TEMPORAL_CONFIG_FILE.*no such file"):
        load_settings()


def test_secrets_stay_out_of_dumps_and_reprs_and_still_reach_their_readers(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codec key and the Temporal API key (from the variable or the profile) are SecretStr: neither `repr`,
    `model_dump()` nor its JSON carry them, while the codec and the connection options still get the values."""
    from shadowing.codec import new_key

    codec_key = new_key()
    monkeypatch.setenv("SHADOWING_CODEC_KEY", codec_key)
    for profile in ("cloud", None):  # the profile's api_key, then TEMPORAL_API_KEY
        if profile is None:
            monkeypatch.delenv("TEMPORAL_PROFILE")
            monkeypatch.setenv("TEMPORAL_API_KEY", "not-a-real-key")
        else:
            monkeypatch.setenv("TEMPORAL_PROFILE", profile)
        settings = load_settings()
        for shown in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
            assert "not-a-real-key" not in shown and codec_key not in shown
        assert settings.temporal_connect_options()["api_key"] == "not-a-real-key"
        assert settings.codec() is not None and settings.pseudonyms()("shop") != "shop"


def test_the_installation_defaults_to_the_namespace_and_must_fit_a_tag(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installation tag is SHADOWING_INSTALLATION, else the Temporal namespace; a value that cannot be a tag
    value and part of a launch template name is refused naming the variable."""
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    assert load_settings().installation_id == "payments.a1b2c"
    monkeypatch.setenv("SHADOWING_INSTALLATION", "platform-eu")
    assert load_settings().installation_id == "platform-eu"
    monkeypatch.setenv("SHADOWING_INSTALLATION", "team a/prod")
    with pytest.raises(InvalidRequest, match="SHADOWING_INSTALLATION"):
        load_settings()
    monkeypatch.delenv("SHADOWING_INSTALLATION")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "a namespace")
    with pytest.raises(InvalidRequest, match="SHADOWING_INSTALLATION"):
        load_settings().installation_id  # noqa: B018


# ---- a running `shadowctl up`'s services file ------------------------------------------------------------------


def _services_file(state: Path, pid: int) -> None:
    import json

    state.mkdir(parents=True, exist_ok=True)
    (state / "services.json").write_text(json.dumps({
        "pid": pid, "temporal_address": "127.0.0.1:17999", "temporal_namespace": "default",
        "aws_endpoint_url": "http://127.0.0.1:17998", "ui_url": "http://127.0.0.1:17997",
    }))  # fmt: skip


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TEMPORAL_ADDRESS", "AWS_ENDPOINT_URL", "TEMPORAL_PROFILE", "TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("SHADOWING_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_running_up_is_found_through_its_services_file(state: Path) -> None:
    import os

    _services_file(state, os.getpid())
    found = load_settings(discover=True)
    assert (found.temporal_address, found.aws_endpoint_url) == ("127.0.0.1:17999", "http://127.0.0.1:17998")
    plain = load_settings()
    assert (plain.temporal_address, plain.aws_endpoint_url) == (None, None)  # only when asked (up, demo do not)


def test_explicit_environment_wins_over_the_services_file(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    _services_file(state, os.getpid())
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example.com:7233")
    found = load_settings(discover=True)
    assert found.temporal_address == "temporal.example.com:7233"
    assert found.aws_endpoint_url == "http://127.0.0.1:17998"  # still unset in the environment: from the file
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert load_settings(discover=True).aws_endpoint_url == "http://127.0.0.1:4566"


def test_a_services_file_left_by_an_exited_up_is_ignored(state: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _services_file(state, gone.pid)
    found = load_settings(discover=True)
    assert (found.temporal_address, found.aws_endpoint_url) == (None, None)
    (state / "services.json").write_text("{not json")
    assert load_settings(discover=True).temporal_address is None
