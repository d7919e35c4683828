"""docker-compose.temporal.yml and the worker's Dockerfile, checked without Docker.

The compose file must be valid under the Compose Specification's JSON schema, vendored in deploy/compose-spec.json
(from the `check-jsonschema` 0.39.0 wheel on PyPI, which vendors compose-spec/compose-spec's schema/compose-spec.json;
Apache-2.0, see deploy/compose-spec.LICENSE). The rest checks what the schema cannot: ports only on loopback, images
pinned to exact tags, no default password, a read-only Web UI, the worker built from this repository's Dockerfile
(without the emulator or the test server), the search attributes the product uses, and the settings the worker is
given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import AliasChoices

from shadowing.search import ALL
from shadowing.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.temporal.yml"
SCHEMA = ROOT / "deploy" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


#: How many numbers an exact version has: X.Y.Z, except images whose releases are numbered X.Y (PostgreSQL 10+).
VERSION_PARTS = {"postgres": 2}


def pinned(image: str) -> bool:
    """An exact tag: not `latest`, a full version (`postgres:16.13`, `python:3.11.14-slim`; not `16`, `3.11-slim`)."""
    name = image.split("@", 1)[0]
    repo, _, last = name.rpartition("/")  # a registry host may carry a port: registry:5000/team/app:1.2.3
    if ":" not in last:
        return False
    base, tag = last.split(":", 1)
    version = re.match(r"v?(\d+(?:\.\d+)*)", tag)
    parts = VERSION_PARTS.get(f"{repo}/{base}".lstrip("/"), 3)
    return tag != "latest" and version is not None and len(version.group(1).split(".")) >= parts


def test_compose_file_is_valid_under_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    errors = sorted(Draft202012Validator(schema).iter_errors(compose), key=lambda e: [str(p) for p in e.absolute_path])
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_every_published_port_is_bound_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    bad = []
    for name, service in services.items():
        for port in service.get("ports", []):
            ok = port.get("host_ip") == "127.0.0.1" if isinstance(port, dict) else str(port).startswith("127.0.0.1:")
            if not ok:
                bad.append(f"{name}: {port}")
    assert not bad, f"ports published beyond 127.0.0.1: {bad}"


def test_every_image_is_pinned_to_an_exact_tag(services: dict[str, dict[str, Any]]) -> None:
    unpinned = [f"{name}: {s['image']}" for name, s in services.items() if "image" in s and not pinned(s["image"])]
    assert not unpinned, f"images without an exact tag: {unpinned}"
    assert all("image" in s or "build" in s for s in services.values()), "every service needs an image or a build"


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("postgres:16.13", True),
        ("temporalio/admin-tools:1.29.7-tctl-1.18.4-cli-1.7.2", True),
        ("registry:5000/team/app:1.2.3", True),
        ("postgres:16.13@sha256:" + "0" * 64, True),
        ("postgres", False),
        ("postgres:16", False),
        ("postgres:latest", False),
        ("registry:5000/team/app", False),
        ("app:${TAG}", False),
        ("python:3.11.14-slim", True),
        ("python:3.11-slim", False),
        ("python:3-slim", False),
        ("temporalio/auto-setup:1.29", False),
        ("temporalio/ui:v2.53.3", True),
    ],
)
def test_pinned(image: str, ok: bool) -> None:
    assert pinned(image) is ok


def test_the_worker_is_built_from_the_repository_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    build = services["worker"]["build"]
    if isinstance(build, str):
        build = {"context": build}
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()


def test_the_dockerfile_pins_its_base_runs_as_non_root_and_starts_the_worker() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages: set[str] = set()
    bases = []
    for line in lines:
        words = line.split()
        if words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if args[0] not in stages:
            bases.append(args[0])
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2])
    assert bases, "no FROM"
    assert all(pinned(b) for b in bases), f"base images without an exact tag: {bases}"
    users = [ln.split()[1] for ln in lines if ln.split()[0].upper() == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    entrypoints = [ln for ln in lines if ln.split()[0].upper() == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1].split(None, 1)[1]) == ["shadowctl", "worker"]


def test_depends_on_waits_only_for_what_can_report(services: dict[str, dict[str, Any]]) -> None:
    """`service_healthy` needs a healthcheck on the dependency (compose refuses to start otherwise)."""
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
    assert services["temporal"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_a_one_shot_service_creates_the_products_search_attributes(services: dict[str, dict[str, Any]]) -> None:
    setup = [(name, s) for name, s in services.items() if "search-attribute create" in json.dumps(s.get("command", ""))]
    assert len(setup) == 1, "one service runs `temporal operator search-attribute create`"
    name, service = setup[0]
    assert service["image"].startswith("temporalio/admin-tools:")
    command = service["command"]
    script = "\n".join(command) if isinstance(command, list) else command
    for key in ALL:  # the CLI's type names: Keyword, Datetime
        assert f"{key.name}:{key.indexed_value_type.name.title()}" in script, f"{key.name} is not created"
    assert services["worker"]["depends_on"][name]["condition"] == "service_completed_successfully"


def _known_env_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            names |= {c for c in info.validation_alias.choices if isinstance(c, str)}
        else:
            names.add(f"SHADOWING_{field.upper()}")
    return names


def test_the_worker_gets_settings_the_product_reads(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["worker"])
    unknown = {k for k in env if k.startswith(("SHADOWING_", "TEMPORAL_")) and k not in _known_env_names()}
    assert not unknown, f"Settings ignores these (a typo?): {sorted(unknown)}"
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["SHADOWING_METRICS_BIND"] == "0.0.0.0:9464"
    assert "127.0.0.1:9464:9464" in services["worker"]["ports"]
    for name in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        assert env.get(name, "").startswith("${" + name), f"{name} is not passed through from the environment"


#: `${VAR:?message}` or `${VAR?message}`: compose refuses to start while VAR is unset (no default value).
REQUIRED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")


def test_database_passwords_are_required_and_have_no_default(services: dict[str, dict[str, Any]]) -> None:
    """Every password is `${VAR:?...}` (compose refuses to start without it), the same VAR on both ends."""
    passwords = {f"{name}.{key}": value for name, service in services.items()
                 for key, value in _env(service).items() if "PASSWORD" in key or key.endswith("PWD")}  # fmt: skip
    assert {"postgresql.POSTGRES_PASSWORD", "temporal.POSTGRES_PWD"} <= set(passwords)
    names = set()
    for where, value in passwords.items():
        match = REQUIRED_VARIABLE.fullmatch(value)
        assert match, f"{where} = {value!r}: a password must be required (${{VAR:?message}}), never a default"
        names.add(match["name"])
    assert len(names) == 1, f"the database and Temporal must read the same variable: {names}"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("${TEMPORAL_DB_PASSWORD:?set it}", True), ("${P?set it}", True), ("${TEMPORAL_DB_PASSWORD:-temporal}", False),
     ("${TEMPORAL_DB_PASSWORD}", False), ("temporal", False), ("${P:?x}suffix", False)],
)  # fmt: skip
def test_required_variable(value: str, ok: bool) -> None:
    assert (REQUIRED_VARIABLE.fullmatch(value) is not None) is ok


def test_the_web_ui_cannot_write(services: dict[str, dict[str, Any]]) -> None:
    """Terminate/cancel/signal/reset from the UI would skip a migration's compensations: write actions are off."""
    ui = [s for s in services.values() if str(s.get("image", "")).startswith("temporalio/ui:")]
    assert len(ui) == 1
    assert _env(ui[0]).get("TEMPORAL_DISABLE_WRITE_ACTIONS", "").lower() == "true"
