"""The layers hold: import-linter's contracts (pyproject.toml, [tool.importlinter]) and what the client SDK loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

#: What a service that only calls the endpoints must never load by importing the SDK.
NOT_IN_CLIENT = [
    *("workers", "activities", "workflows", "forecasting", "devstack", "shadowctl", "benchmarks", "tools"),
    *("moto", "matplotlib", "darts", "boto3", "botocore", "pandas", "numpy", "typer", "rich", "yaml"),
]

_CLIENT_IMPORT = """
import json, sys
import shadowing
from shadowing import ShadowingClient, TimeSlice, connect, InvalidRequest
import shadowing.models, shadowing.settings, shadowing.codec, shadowing.errors, shadowing.ids
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.slow
def test_import_linter_contracts_hold(tmp_path: Path) -> None:
    """Layers (benchmarks > shadowctl > devstack > workers > workflows > activities > shadowing), the contract's and
    the workflows' forbidden imports, forecasting importing nothing of the product."""
    done = subprocess.run([str(LINT_IMPORTS), "--cache-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "5 kept" in done.stdout, done.stdout[-2000:]


def test_the_client_sdk_loads_no_implementation_and_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", _CLIENT_IMPORT], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout))
    assert not loaded & set(NOT_IN_CLIENT), f"importing the client SDK loaded {sorted(loaded & set(NOT_IN_CLIENT))}"


def test_a_public_name_that_does_not_exist_is_an_attribute_error() -> None:
    import shadowing

    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = shadowing.NoSuchThing  # type: ignore[attr-defined]
    assert shadowing.ShadowingClient.__module__ == "shadowing.client"


@pytest.mark.slow
def test_the_worker_entry_point_names_a_bad_setting(tmp_path: Path) -> None:
    """`shadowing-worker` (python -m workers), the base install's entry point: exit 2 and the variable's name."""
    env = {"PATH": "/usr/bin:/bin", "SHADOWING_MAX_CONCURRENT_ACTIVITIES": "many", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "workers"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "SHADOWING_MAX_CONCURRENT_ACTIVITIES" in done.stderr


#: What a shadowctl command that only talks to the server must never load (the worker, the forecasting stack).
NOT_IN_CLI_CLIENT = [
    *("workers", "activities", "workflows", "forecasting", "devstack", "benchmarks", "tools"),
    *("moto", "matplotlib", "darts", "pandas", "numpy", "boto3", "botocore", "statsmodels"),
]

#: Runs a shadowctl command in-process against a stand-in client (no server), rendering its answer as for a person,
#: then prints the top-level modules loaded.
_CLI_COMMAND = """
import json, sys
from shadowing.client import ShadowingClient
from shadowing.models import EntityStatus

class Fake:
    async def status(self, entity_id):
        return EntityStatus(entity_id=entity_id, phase="idle", active_fleet=None, slices=(), events=())

async def connect(*args, **kwargs):
    if sys.argv[1] != "status":
        from shadowing.errors import ServiceUnavailable
        raise ServiceUnavailable("no server in this test")
    return Fake()

ShadowingClient.connect = connect
from shadowctl import cli
try:
    cli.main()
except SystemExit:
    pass
print("MODULES", json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""

_SLICE = ["--start", "2026-01-01T00:00:00Z", "--end", "2026-01-01T01:00:00Z"]


@pytest.mark.parametrize(
    "args",
    [["status", "shop"], ["predict", "shop", *_SLICE], ["plan", "shop"],
     ["provision", "shop", *_SLICE, "--instance-type", "m5.large", "--quantity", "1"]],
    ids=lambda a: a[0],
)  # fmt: skip
def test_shadowctl_commands_that_talk_to_the_server_load_no_worker_and_no_forecasting(
    args: list[str], tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHADOWING_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", _CLI_COMMAND, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
    assert "MODULES" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.split("MODULES", 1)[1]))
    assert not loaded & set(NOT_IN_CLI_CLIENT), f"shadowctl {args[0]} loaded {sorted(loaded & set(NOT_IN_CLI_CLIENT))}"
    if args[0] == "status":
        assert "shop" in done.stdout and "idle" in done.stdout  # it did render the answer
    else:
        assert "no server in this test" in done.stdout + done.stderr
    assert "darts" not in done.stderr and "Warning" not in done.stderr, done.stderr[-2000:]
