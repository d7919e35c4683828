"""`shadowctl up`'s services file: written with where its services listen, found by other commands while it runs,
removed when it stops (only while it is still its own), and a second `up` on the same state dir refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devstack.stack import Services, remove_services_file, write_services_file
from shadowing.settings import Settings, running_services, with_running_services

ROOT = Path(__file__).resolve().parents[2]


def _settings(state: Path) -> Settings:
    return Settings(state_dir=state, temporal_config_file=None)


def test_written_found_and_removed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    services = Services(temporal_address="127.0.0.1:17001", aws_endpoint_url="http://127.0.0.1:17002",
                        ui_url="http://127.0.0.1:17003")  # fmt: skip
    path = write_services_file(state, services, _settings(state))
    body = json.loads(path.read_text())
    assert body["pid"] == os.getpid() and body["ui_url"] == "http://127.0.0.1:17003"
    assert running_services(state) == body
    blank = Settings(state_dir=state).model_copy(update={"temporal_address": None, "aws_endpoint_url": None})
    found = with_running_services(blank)
    assert (found.temporal_address, found.aws_endpoint_url) == ("127.0.0.1:17001", "http://127.0.0.1:17002")
    remove_services_file(path)
    assert not path.exists() and running_services(state) is None


def test_a_file_another_run_has_replaced_is_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write_services_file(state, Services(temporal_address="127.0.0.1:17001", aws_endpoint_url=None),
                               _settings(state))  # fmt: skip
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": os.getppid()}))
    remove_services_file(path)
    assert path.exists()


def test_a_second_up_on_the_same_state_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_services_file(state, Services(temporal_address="127.0.0.1:17001", aws_endpoint_url=None), _settings(state))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "SHADOWING_STATE_DIR": str(state),
           "SHADOWING_TEMPORAL_PORT": "9", "SHADOWING_MOTO_PORT": "9", "SHADOWING_STARTUP_TIMEOUT_S": "1"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "shadowctl.cli", "up"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"(pid {os.getpid()}) already runs the services of" in out and "Traceback" not in out
