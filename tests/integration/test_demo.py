"""`shadowctl demo` against a Temporal server and a moto server started outside it (TEMPORAL_ADDRESS and
AWS_ENDPOINT_URL set): it starts nothing, and afterwards the server and EC2 hold what the issue promises. Then
the README's `temporal workflow execute --type PredictDemand` prints a forecast."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities import TAG_ENTITY, TAG_FLEET, TAG_MANAGED
from devstack.stack import HOST, free_port
from shadowing.settings import Settings
from tests.conftest import BIN
from workers.aws import AwsClients
from workers.main import build_worker

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
SERIES = re.compile(r"\b(?:shadowing|temporal)_[a-z_]+\b")
# As Debian's Chromium runs here: headless, as root, on a closed network (no background connections).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass
class DemoRun:
    summary: dict
    output: str
    scrapes: list[str]  # the worker's /metrics, read while the demo ran


@pytest.fixture(scope="module")
async def demo_run(dev_env: WorkflowEnvironment, moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`shadowctl demo` once for the module, its metrics endpoint scraped every second while it runs."""
    tmp_path = tmp_path_factory.mktemp("demo")
    address = dev_env.client.service_client.config.target_host
    metrics_bind = f"{HOST}:{free_port()}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "AWS_ENDPOINT_URL": moto_url,
        "SHADOWING_STATE_DIR": str(tmp_path),
        "SHADOWING_METRICS_BIND": metrics_bind,
    }
    summary_path = tmp_path / "summary.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shadowctl.cli", "demo", "--slice-seconds", "20", "--json", str(summary_path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    scrapes: list[str] = []

    async def scrape() -> None:
        while proc.returncode is None:
            with contextlib.suppress(OSError):
                scrapes.append(await asyncio.to_thread(_get, f"http://{metrics_bind}/metrics"))
            await asyncio.sleep(1)

    scraper = asyncio.ensure_future(scrape())
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    scraper.cancel()
    await asyncio.gather(scraper, return_exceptions=True)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert not (tmp_path / "temporal.db").exists(), "an external server was named: nothing may be started"
    return DemoRun(json.loads(summary_path.read_text()), out.decode(), scrapes)


async def test_demo_on_external_services(dev_env: WorkflowEnvironment, moto_url: str, demo_run: DemoRun) -> None:
    """The demo exits 0, every ShadowMigration is Completed, target regions hold the active fleets, retired fleets
    are terminated and no instance lacks the product's tags."""
    address = dev_env.client.service_client.config.target_host
    summary, out = demo_run.summary, demo_run.output
    assert summary["migrations"] >= 2, out[-3000:]
    pictures = [Path(p) for p in summary["plots"]]  # forecast per entity, one migration's timeline
    assert len(pictures) == 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures), pictures
    # The dev server is shared with other integration tests: only the demo's entities' migrations count.
    demo = tuple(f"migration/{entity}/" for entity in summary["active_fleets"])
    runs = [w async for w in dev_env.client.list_workflows('WorkflowType = "ShadowMigration"') if w.id.startswith(demo)]
    assert runs and all(r.status == WorkflowExecutionStatus.COMPLETED for r in runs), [(r.id, r.status) for r in runs]
    aws = AwsClients(Settings(aws_endpoint_url=moto_url))
    for entity, fleet in summary["active_fleets"].items():
        live = _instances(aws, fleet["region"], ["running"])
        mine = [i for i in live if _tags(i).get(TAG_FLEET) == fleet["fleet_id"]]
        assert len(mine) == len(fleet["instance_ids"]), entity
    for region in summary["aws"]:
        for inst in _instances(aws, region, ["pending", "running", "terminated"]):
            assert {TAG_ENTITY, TAG_MANAGED} <= set(_tags(inst)), inst["InstanceId"]
            if _tags(inst)[TAG_FLEET] not in {f["fleet_id"] for f in summary["active_fleets"].values()}:
                assert inst["State"]["Name"] == "terminated", "a retired fleet is still running"
    await _predict_with_temporal_cli(dev_env, moto_url, address)


async def test_metrics_endpoint_serves_product_and_sdk_metrics_during_the_demo(demo_run: DemoRun) -> None:
    """The worker's Prometheus endpoint, scraped while the demo ran: the SDK's metrics and the product's."""
    assert demo_run.scrapes, "the metrics endpoint never answered during the demo"
    last = demo_run.scrapes[-1]
    assert "temporal_workflow_completed" in last or "temporal_activity_execution_latency" in last, last[:2000]
    migrated = _samples(last, "shadowing_migrations_total", outcome="migrated")
    assert migrated and sum(migrated) >= demo_run.summary["migrations"], last[:4000]
    assert _samples(last, "shadowing_forecasts_total"), "no forecast counted"
    mape = _samples(last, "shadowing_forecast_backtest_mape", metric="cpu_mhz")
    assert mape and all(0 <= v < 10 for v in mape), mape
    assert _samples(last, "shadowing_cutover_seconds_count"), "no cutover duration recorded"
    assert any(_samples(s, "shadowing_shadow_instances") for s in demo_run.scrapes), "shadows never counted"
    cost = _samples(last, "shadowing_migration_cost_usd_sum", outcome="migrated")
    assert cost and sum(cost) > 0
    # the Grafana dashboard queries only series the worker really serves
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "shadowing-dashboard.json").read_text())
    queried = {m for p in dashboard["panels"] for t in p["targets"] for m in SERIES.findall(t["expr"])}
    served = {m for text in demo_run.scrapes for m in SERIES.findall(text)}
    # a counter appears once it first counts, and the demo fails no activity
    only_on_failure = {"temporal_activity_execution_failed_total"}
    assert queried and queried - only_on_failure <= served, sorted(queried - served)


async def test_web_ui_finds_the_demo_migration_by_search_attribute(
    dev_env: WorkflowEnvironment, ui_port: int, demo_run: DemoRun
) -> None:
    """Headless Chromium (Debian's) opens the dev server's Web UI after the demo, lists workflows by the product's
    search attributes, opens the migration it finds and saves a screenshot (tests/artifacts/web-ui-migration.png)."""
    chromium = Path(os.environ.get("SHADOWING_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"no browser at {chromium}: `apt-get install chromium` (.ci/run installs it)")
    entity = "rnd-024"
    assert entity in demo_run.summary["active_fleets"]
    query = f'WorkflowType="ShadowMigration" AND ShadowingEntity="{entity}" AND ShadowingPhase="done"'
    expected = [w.id async for w in dev_env.client.list_workflows(query)]
    assert expected, "the server itself finds no migration by those search attributes"
    shots = ARTIFACTS / "web-ui-migrations.png", ARTIFACTS / "web-ui-migration.png"
    ARTIFACTS.mkdir(exist_ok=True)
    url = f"http://{HOST}:{ui_port}/namespaces/default/workflows?query={quote(query)}"
    found, title = await asyncio.to_thread(_browse, chromium, url, expected, shots)
    assert found in expected
    assert "ShadowMigration" in title and "completed" in title.lower(), title[:1000]
    assert "ShadowingPhase" in title and "done" in title, title[:3000]
    assert all(p.stat().st_size > 10_000 for p in shots)


def _browse(chromium: Path, url: str, expected: list[str], shots: tuple[Path, Path]) -> tuple[str, str]:
    """The workflow list filtered by the query in the URL; the first expected id found is opened."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            link = page.get_by_text(expected[0], exact=True).first
            link.wait_for(timeout=60_000)
            page.screenshot(path=str(shots[0]), full_page=True)
            link.click()
            page.get_by_text("ShadowMigration").first.wait_for(timeout=60_000)
            page.get_by_role("link", name="Search Attributes").or_(page.get_by_text("Search Attributes")).first.click()
            page.get_by_text("ShadowingEntity").first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots[1]), full_page=True)
            return expected[0], page.inner_text("body")
        finally:
            browser.close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of metric `name` whose labels include `labels` (Prometheus text format)."""
    values = []
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            values.append(float(value))
    return values


async def _predict_with_temporal_cli(dev_env: WorkflowEnvironment, moto_url: str, address: str) -> None:
    settings = Settings(temporal_address=address, aws_endpoint_url=moto_url)
    async with build_worker(dev_env.client, settings, AwsClients(settings)):
        # the demo compresses time (20 s per trace hour): a slice a minute from now is a few trace hours ahead
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
        window = {"start": start.isoformat(), "end": (start + timedelta(seconds=30)).isoformat()}
        body = json.dumps({"entity_id": "rnd-392", "time_slice": window})
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "temporal"), "workflow", "execute", "--address", address, "--type", "PredictDemand",
            "--task-queue", "shadowing", "--workflow-id", "predict-readme", "--input", body, "--output", "json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text[-2000:]
    assert "cpu_mhz" in text and "readiness" in text


def _instances(aws: AwsClients, region: str, states: list[str]) -> list[dict]:
    pages = (
        aws("ec2", region)
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": states}])
    )
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]


def _tags(inst: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
