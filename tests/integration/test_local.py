"""Embedded defaults start only what the settings leave unset, and stop only what they started."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import HOST, embedded_services, free_port
from shadowing.errors import ServiceUnavailable
from shadowing.settings import Settings

pytestmark = pytest.mark.slow


def test_named_services_start_nothing(tmp_path: Path) -> None:
    """With both variables set, nothing is started and the given addresses are used as they are."""
    settings = Settings(temporal_address="10.9.9.9:7233", aws_endpoint_url="http://10.9.9.9:4566", state_dir=tmp_path)
    with embedded_services(settings) as services:
        assert services.started == []
        assert services.temporal_address == "10.9.9.9:7233" and services.aws_endpoint_url == "http://10.9.9.9:4566"
    assert not any(tmp_path.iterdir())


def test_unset_aws_starts_moto_and_stops_it(tmp_path: Path) -> None:
    """AWS_ENDPOINT_URL unset: a moto server starts on 127.0.0.1, is healthy, and is stopped on exit."""
    port = free_port()
    settings = Settings(temporal_address="127.0.0.1:1", aws_endpoint_url=None, state_dir=tmp_path, moto_port=port)
    with embedded_services(settings) as services:
        (moto,) = services.started
        assert services.aws_endpoint_url == f"http://{HOST}:{settings.moto_port}"
        assert moto.process.poll() is None
    assert moto.process.poll() is not None


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    """A port already taken names the port and the variable that would avoid starting there."""
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = Settings(temporal_address=None, aws_endpoint_url="http://x", state_dir=tmp_path, temporal_port=port)
        with pytest.raises(ServiceUnavailable, match=f"{port}.*TEMPORAL_ADDRESS"), embedded_services(settings):
            pass


def test_blank_variables_count_as_unset() -> None:
    """An empty TEMPORAL_ADDRESS or AWS_ENDPOINT_URL (as docker compose passes them) means 'not set'."""
    settings = Settings(temporal_address="", aws_endpoint_url="  ")
    assert settings.embedded_temporal and settings.embedded_aws


def test_what_is_started_is_findable_by_other_commands_while_it_runs(tmp_path: Path) -> None:
    """services.json names the running moto (and the given Temporal) while the block runs, and is gone after it."""
    import os

    from shadowing.settings import running_services, with_running_services

    port = free_port()
    settings = Settings(temporal_address="127.0.0.1:1", aws_endpoint_url=None, state_dir=tmp_path, moto_port=port)
    with embedded_services(settings) as services:
        found = running_services(tmp_path)
        assert found is not None and found["pid"] == os.getpid()
        assert found["aws_endpoint_url"] == services.aws_endpoint_url == f"http://{HOST}:{port}"
        assert found["started"]["moto"] == services.started[0].process.pid
        other = with_running_services(Settings(state_dir=tmp_path, temporal_config_file=None))
        assert other.aws_endpoint_url == services.aws_endpoint_url
    assert running_services(tmp_path) is None and not (tmp_path / "services.json").exists()
