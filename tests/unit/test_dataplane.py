"""The local data plane: stand-in app (as a real subprocess), agent (against moto's mock), endpoint lookup and the
load generator's read/write mix and its figures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.dataplane.agent import Agent, stop_process, write_atomically
from devstack.dataplane.loadgen import LoadGenerator, Sample, lost_writes, summarise, summarise_writes
from devstack.dataplane.standin import App, Publisher, Server
from devstack.stack import dataplane_agent, free_port, start_moto, wait_http
from shadowing.endpoints import (
    DirectEndpoints,
    LocalEndpoints,
    check_address,
    data_plane_mode,
    endpoints_for,
    registry_path,
)
from shadowing.errors import InvalidRequest
from shadowing.settings import Settings

HOST = "127.0.0.1"


def call(url: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict[str, Any], float]:
    """(status, JSON body, elapsed ms) of a GET, or a POST when `body` is given."""
    data = json.dumps(body).encode() if body is not None else None
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as resp:
            status, payload = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    return status, json.loads(payload), (time.perf_counter() - started) * 1000


def wait_until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return call(f"{url}/health", timeout=0.5)[0] == 200
    except OSError:
        return False


@pytest.fixture
def standin() -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    cmd = [sys.executable, "-m", "devstack.dataplane.standin", "--port", str(port), "--instance-id", "i-abc",
           "--region", "eu-west-1", "--cold-ms", "60", "--warm-ms", "1", "--keys", "3"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: answers(url) or proc.poll() is not None)
        assert proc.poll() is None, "stand-in exited at start-up"
        yield url, proc
    finally:
        stop_process(proc)


def test_standin_is_slow_until_a_key_is_cached_and_evicts_the_least_recent(standin: tuple) -> None:
    """A key's first request takes the cold latency, the next ones the warm one; the cache holds `keys` keys."""
    url, _ = standin
    cold = call(f"{url}/work?key=a")[2]
    warm = min(call(f"{url}/work?key=a")[2] for _ in range(3))
    assert cold >= 55 and warm < 30, (cold, warm)
    for key in ("b", "c", "d"):  # capacity 3: "a" is evicted
        call(f"{url}/work?key={key}")
    status, health, _ = call(f"{url}/health")
    assert status == 200 and health == {"instance_id": "i-abc", "region": "eu-west-1", "cached_keys": 3, "served": 7}
    assert call(f"{url}/work?key=a")[2] >= 55


def test_standin_fault_injection_and_stats(standin: tuple) -> None:
    """`errors` makes /work answer 500, `slow` adds 200 ms, `none` heals; /stats counts it all."""
    url, _ = standin
    call(f"{url}/work?key=k")
    assert call(f"{url}/fault", {"mode": "errors"})[:2] == (200, {"fault": "errors"})
    assert call(f"{url}/work?key=k")[0] == 500
    call(f"{url}/fault", {"mode": "slow"})
    status, _, slow_ms = call(f"{url}/work?key=k")
    assert status == 200 and slow_ms >= 200
    call(f"{url}/fault", {"mode": "none"})
    assert call(f"{url}/work?key=k")[2] < 100
    assert call(f"{url}/fault", {"mode": "melt"})[0] == 400
    stats = call(f"{url}/stats")[1]
    assert (stats["requests"], stats["errors"], stats["window"]) == (4, 1, 4)
    assert stats["p50_ms"] < stats["p99_ms"] and stats["p99_ms"] >= 200


def test_standin_stops_on_sigterm(standin: tuple) -> None:
    """SIGTERM ends the stand-in with exit code 0 and frees its port."""
    url, proc = standin
    proc.terminate()
    assert proc.wait(5) == 0
    assert not answers(url)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield lambda service, region: boto3.client(service, region_name=region)


def test_standin_metrics_reach_cloudwatch(aws: Any) -> None:
    """Requests, Errors and LatencyMs land in Shadowing/DataPlane (InstanceId, Region), published once each."""
    app = App("i-123", "eu-west-1", cold_ms=0, warm_ms=0, keys=10)
    app.work("a")
    app.set_fault("errors")
    app.work("a")
    publisher = Publisher(app, "http://unused", 5, stop=None)  # type: ignore[arg-type]
    publisher._client = aws("cloudwatch", "eu-west-1")
    publisher.publish()
    cw = aws("cloudwatch", "eu-west-1")
    now = datetime.now(UTC)

    def total(metric: str, dims: list[dict]) -> float:
        points = cw.get_metric_statistics(Namespace="Shadowing/DataPlane", MetricName=metric, Dimensions=dims,
                                          StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1),
                                          Period=60, Statistics=["Sum", "SampleCount"])["Datapoints"]  # fmt: skip
        return sum(p["Sum"] for p in points)

    inst = [{"Name": "InstanceId", "Value": "i-123"}]
    assert total("Requests", inst) == 2 and total("Errors", inst) == 1
    assert total("Requests", [*inst, {"Name": "Region", "Value": "eu-west-1"}]) == 2
    assert total("LatencyMs", inst) > 0
    assert app.drain() == ([], 0), "published datapoints are not published again"


def test_standin_publishing_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable CloudWatch endpoint costs a warning, never the stand-in."""
    app = App("i-123", "eu-west-1", cold_ms=0, warm_ms=0, keys=10)
    app.work("a")
    with caplog.at_level(logging.WARNING):
        Publisher(app, f"http://{HOST}:{free_port()}", 5, stop=None).publish()  # type: ignore[arg-type]
    assert "publishing 1 datapoints" in caplog.text


def launch(aws: Any, region: str, managed: bool = True) -> str:
    tags = [{"Key": "shadowing:managed-by", "Value": "shadowing" if managed else "someone-else"}]
    return str(
        aws("ec2", region).run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    )  # fmt: skip


@pytest.fixture
def agent(aws: Any, tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(aws, ["us-east-1", "eu-west-1"], tmp_path / "dataplane.json", log_dir=tmp_path / "logs")
    try:
        yield agent
    finally:
        agent.stop_all()


def test_agent_runs_one_standin_per_managed_instance_and_stops_it_on_terminate(aws: Any, agent: Agent,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    """Launching a managed instance boots a stand-in listed in the registry; terminating it stops the process."""
    eu, us = launch(aws, "eu-west-1"), launch(aws, "us-east-1")
    launch(aws, "eu-west-1", managed=False)
    agent.sync()
    endpoints = LocalEndpoints(tmp_path / "dataplane.json")
    assert set(endpoints.instances()) == {eu, us}
    url = endpoints.url(eu, None)
    assert url and call(f"{url}/health")[1]["instance_id"] == eu
    entry = endpoints.instances()[eu]
    # moto may give both regions the same private IP: by_ip then names one of them.
    assert entry["region"] == "eu-west-1"
    assert endpoints.resolve_ip(entry["address"]) in (url, endpoints.url(us, None))
    proc = agent.children[eu].process
    aws("ec2", "eu-west-1").terminate_instances(InstanceIds=[eu])
    agent.sync()
    assert proc.poll() is not None, "the terminated instance's stand-in still runs"
    assert endpoints.url(eu, None) is None and endpoints.url(us, None) is not None
    survivor = agent.children[us].process
    agent.stop_all()
    assert survivor.poll() is not None and LocalEndpoints(tmp_path / "dataplane.json").instances() == {}


def test_agent_restarts_a_standin_that_died(aws: Any, agent: Agent) -> None:
    """A stand-in that crashed is replaced on the next pass while its instance still runs."""
    iid = launch(aws, "us-east-1")
    agent.sync()
    first = agent.children[iid].process
    first.kill()
    first.wait(5)
    agent.sync()
    assert agent.children[iid].process.pid != first.pid and answers(agent.children[iid].url)


def test_local_endpoints_follow_the_registry_file(tmp_path: Path) -> None:
    """Lookups re-read the registry when it changes; a missing file or instance means "not booted"."""
    path = tmp_path / "dataplane.json"
    endpoints = LocalEndpoints(path)
    assert endpoints.url("i-1", "10.0.0.1") is None
    write_atomically(path, {"instances": {"i-1": {"url": "http://127.0.0.1:9001"}},
                            "by_ip": {"10.0.0.1": "http://127.0.0.1:9001"}})  # fmt: skip
    assert endpoints.url("i-1", None) == "http://127.0.0.1:9001"
    assert endpoints.resolve_ip("10.0.0.1") == "http://127.0.0.1:9001" and endpoints.url("i-2", None) is None
    write_atomically(path, {"instances": {"i-2": {"url": "http://127.0.0.1:9002"}}, "by_ip": {}})
    assert endpoints.url("i-1", None) is None and endpoints.url("i-2", None) == "http://127.0.0.1:9002"


def test_direct_endpoints_use_the_private_ip() -> None:
    """Direct mode is scheme://private-ip:port; no IP, no endpoint."""
    direct = DirectEndpoints(8080, "https")
    assert direct.url("i-1", "10.1.2.3") == "https://10.1.2.3:8080"
    assert direct.url("i-1", None) is None and direct.resolve_ip("fd00::1") == "https://[fd00::1]:8080"


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "fd00:ec2::254",
        "fe80::1",
        "224.0.0.251",
        "0.0.0.0",
        "::",
        "240.0.0.1",
        "127.0.0.1",
        "::1",
        "metadata.google.internal",
        "10.0.0.1/latest",
        "",
    ],
)
def test_addresses_that_are_not_an_instances_are_refused_naming_the_field(address: str) -> None:
    """Only an IP address may become a URL, and never the metadata service (IPv4, mapped or IPv6), link-local,
    multicast, unspecified, reserved or (off the local data plane) loopback; the error names the field."""
    with pytest.raises(InvalidRequest, match=r"^fleet\.addresses\[0\]: "):
        check_address(address, "fleet.addresses[0]")
    with pytest.raises(InvalidRequest):
        DirectEndpoints().url("i-1", address or "0.0.0.0")


def test_instance_addresses_pass_and_loopback_only_for_the_local_data_plane() -> None:
    """Private, public and IPv6 addresses pass, canonicalised; loopback passes only when asked for."""
    assert [check_address(a, "a") for a in ("10.1.2.3", "54.1.2.3", "2600:1F18::1")] == [
        "10.1.2.3", "54.1.2.3", "2600:1f18::1"]  # fmt: skip
    assert check_address("127.0.0.1", "a", loopback=True) == "127.0.0.1"
    with pytest.raises(InvalidRequest, match="loopback"):
        check_address("127.0.0.1", "a")


def test_a_worker_with_no_aws_endpoint_is_direct_whatever_the_registry_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No AWS_ENDPOINT_URL is real AWS (`shadowctl worker` there): direct, so a registry file left in the state
    directory (whoever wrote it) never chooses where warm-up and probes go."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("SHADOWING_DATA_PLANE", raising=False)
    write_atomically(tmp_path / "dataplane.json", {"instances": {"i-1": {"url": "http://169.254.169.254"}}})
    settings = Settings(state_dir=tmp_path)
    assert settings.aws_endpoint_url is None and data_plane_mode(settings) == "direct"
    endpoints = endpoints_for(settings)
    assert isinstance(endpoints, DirectEndpoints) and endpoints.url("i-1", "10.0.0.7") == "http://10.0.0.7:80"


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ({}, "direct"),
        ({"aws_endpoint_url": "http://127.0.0.1:5055"}, "local"),
        ({"aws_endpoint_url": "http://localhost:4566"}, "local"),
        ({"aws_endpoint_url": "https://ec2.eu-west-1.amazonaws.com"}, "direct"),
        ({"aws_endpoint_url": "http://127.0.0.1:5055", "data_plane": "direct"}, "direct"),
        ({"data_plane": "local"}, "local"),
    ],
)
def test_data_plane_mode_defaults_to_local_for_an_emulator(overrides: dict, mode: str, tmp_path: Path) -> None:
    """Loopback AWS (an emulator, the embedded one included) means the local data plane, anything else, real AWS
    included, direct, unless the setting says."""
    settings = Settings(aws_endpoint_url=None, state_dir=tmp_path).model_copy(update=overrides)
    assert data_plane_mode(settings) == mode
    expected = LocalEndpoints if mode == "local" else DirectEndpoints
    assert isinstance(endpoints_for(settings), expected)
    assert registry_path(settings) == tmp_path / "dataplane.json"


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[str]:
    started = start_moto(Settings(aws_endpoint_url=None, state_dir=tmp_path), port=free_port())
    url = f"http://{HOST}:{started.process.args[-1]}"
    try:
        wait_http(f"{url}/moto-api/", 30, started)
        yield url
    finally:
        stop_process(started.process)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow
def test_agent_process_against_a_moto_server_end_to_end(moto_server: str, tmp_path: Path) -> None:
    """The agent CLI boots a stand-in per launched instance, which publishes metrics; terminate and exit stop them."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2 = session.client("ec2", region_name="eu-west-1", endpoint_url=moto_server)
    cw = session.client("cloudwatch", region_name="eu-west-1", endpoint_url=moto_server)
    registry = tmp_path / "dataplane.json"
    endpoints = LocalEndpoints(registry)
    with dataplane_agent(moto_server, registry, ["eu-west-1"], poll_s=0.1, standin_args=["--publish-s", "0.2"]):
        iid = launch(lambda *_: ec2, "eu-west-1")
        wait_until(lambda: endpoints.url(iid, None) is not None)
        url, pid = endpoints.url(iid, None), endpoints.instances()[iid]["pid"]
        for key in ("a", "a", "b"):
            assert call(f"{url}/work?key={key}")[0] == 200
        dims = [{"Name": "InstanceId", "Value": iid}, {"Name": "Region", "Value": "eu-west-1"}]
        listed = lambda: cw.list_metrics(Namespace="Shadowing/DataPlane", Dimensions=dims[:1])["Metrics"]  # noqa: E731
        wait_until(lambda: {m["MetricName"] for m in listed()} == {"Requests", "Errors", "LatencyMs"})
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until(lambda: endpoints.url(iid, None) is None and not pid_alive(pid))
        second = launch(lambda *_: ec2, "eu-west-1")
        wait_until(lambda: endpoints.url(second, None) is not None)
        pid = endpoints.instances()[second]["pid"]
    wait_until(lambda: not pid_alive(pid), timeout_s=5)
    assert endpoints.instances() == {}, "the agent empties the registry when it stops"


def w(client: int, sent_at: float, ok: bool, latency_ms: float = 10.0, phase: str = "steady", key: str = "w-1",
      version: tuple[int, int, str] | None = None) -> Sample:  # fmt: skip
    """A hand-made write sample; an acked one gets a version unless given."""
    version = version or ((1, 1000, "eu-west-1") if ok else None)
    return Sample(phase, latency_ms, ok, "10.0.0.1", "" if ok else "HTTP 503", "write", client, key, sent_at, version)


def test_summarise_counts_only_reads_so_figures_stay_comparable() -> None:
    """Writes in the samples change none of summarise's figures; summarise_writes counts them by phase."""
    reads = [Sample("steady", 5.0, True, "a"), Sample("cutover", 7.0, False, "a", "HTTP 500")]
    writes = [w(0, 1.0, True), w(0, 2.0, False, phase="cutover"), w(1, 2.0, True, phase="cutover")]
    assert summarise(reads + writes) == summarise(reads)
    assert summarise(reads)["sent"] == 2
    out = summarise_writes(reads + writes)
    assert (out["sent"], out["acked"], out["failed"]) == (3, 2, 1)
    assert out["by_phase"] == {"steady": {"sent": 1, "acked": 1, "failed": 0},
                               "cutover": {"sent": 2, "acked": 1, "failed": 1},
                               "after": {"sent": 0, "acked": 0, "failed": 0}}  # fmt: skip


@pytest.mark.parametrize(
    ("writes", "expected_ms"),
    [
        ([], 0.0),
        ([w(0, 1.0, True, 12.0), w(0, 2.0, True, 30.0)], 30.0),  # no failure: the slowest ack
        ([w(0, 1.0, True), w(0, 2.0, False, 2000.0), w(0, 4.0, False, 0.0), w(0, 5.0, True, 20.0)], 3020.0),
        ([w(0, 10.0, True), w(0, 11.0, False, 100.0), w(0, 11.5, False, 100.0)], 600.0),  # never acked again
        ([w(1, 5.0, True, 20.0), w(0, 1.0, False), w(1, 2.0, False, 1.0), w(0, 1.5, True, 100.0)], 3020.0),
    ],
)
def test_max_unavailable_is_the_longest_run_of_one_client_without_an_ack(writes: list[Sample],
                                                                         expected_ms: float) -> None:  # fmt: skip
    """From the first failed send to the next ack of the same client, per client (order of samples irrelevant)."""
    assert summarise_writes(writes)["max_unavailable_ms"] == pytest.approx(expected_ms)


def item(v: int, ts: int, r: str) -> dict:
    return {"id": {"S": "k"}, "_v": {"N": str(v)}, "_ts": {"N": str(ts)}, "_r": {"S": r}}


def test_lost_writes_are_acked_writes_missing_or_older_in_the_table() -> None:
    """A missing key or an older (v, ts, r) is lost; the same or a newer version (a later write won) is not; failed
    writes and reads are never counted."""
    samples = [
        w(0, 1.0, True, key="w-same", version=(2, 100, "eu-west-1")),
        w(0, 2.0, True, key="w-newer", version=(2, 100, "eu-west-1")),
        w(0, 3.0, True, key="w-older-v", version=(3, 100, "eu-west-1")),
        w(1, 3.0, True, key="w-older-r", version=(2, 100, "us-east-1")),
        w(1, 4.0, True, key="w-missing"),
        w(1, 5.0, False, key="w-failed"),
        Sample("steady", 1.0, True, "a", key="warm-1"),
    ]
    items = {"w-same": item(2, 100, "eu-west-1"), "w-newer": item(2, 101, "eu-west-1"),
             "w-older-v": item(2, 999, "us-east-1"), "w-older-r": item(2, 100, "eu-west-1")}  # fmt: skip
    assert lost_writes(samples, items) == ["w-missing", "w-older-r", "w-older-v"]
    assert lost_writes(samples[:1], {"w-same": {"id": {"S": "w-same"}}}) == ["w-same"], "unversioned is older"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"write_ratio": 0.5}, "table is required"), ({"write_ratio": 1.5, "table": "t"}, "write_ratio must be in"),
     ({"write_ratio": 0.5, "table": "t", "write_keys": 0}, "write_keys >= 1")],
)  # fmt: skip
def test_a_write_mix_needs_a_table_and_a_ratio_in_range(options: dict, message: str) -> None:
    """A write mix without a table or with an impossible ratio is refused before any client starts."""
    load = LoadGenerator(lambda: None, "Z1", "api.example.internal", DirectEndpoints(), **options)
    with pytest.raises(ValueError, match=message):
        load.start()
    assert not load._threads


class OneStandin:
    """Endpoints where every address is one in-process stand-in."""

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self, instance_id: str, private_ip: str | None) -> str | None:
        return self._url

    def resolve_ip(self, ip: str) -> str | None:
        return self._url


def test_the_load_generator_writes_through_dns_and_every_ack_is_in_the_table(aws: Any) -> None:
    """A read/write mix reaches the stand-in through DNS; each acked write's version is what the table holds or
    older, so nothing is lost, and the writes' and reads' figures are kept apart."""
    ddb = aws("dynamodb", "eu-west-1")
    ddb.create_table(TableName="orders", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")  # fmt: skip
    r53 = aws("route53", "us-east-1")
    zone = r53.create_hosted_zone(Name="example.internal.", CallerReference="t")["HostedZone"]["Id"].split("/")[-1]
    record = {"Name": "api.example.internal.", "Type": "A", "SetIdentifier": "eu", "Weight": 1, "TTL": 1,
              "ResourceRecords": [{"Value": "10.0.0.1"}]}  # fmt: skip
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": record}]})  # fmt: skip
    server = Server(0, App("i-1", "eu-west-1", cold_ms=0, warm_ms=0, keys=10, dynamodb=lambda r: aws("dynamodb", r)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    endpoints = OneStandin(f"http://{HOST}:{server.server_address[1]}")
    load = LoadGenerator(lambda: aws("route53", "us-east-1"), zone, "api.example.internal", endpoints,  # type: ignore[arg-type]
                         rate=100, clients=4, write_ratio=0.5, table="orders", write_keys=50).start()  # fmt: skip
    try:
        wait_until(lambda: sum(s.kind == "write" and s.ok for s in load.samples) >= 20)
    finally:
        samples = load.stop()
        server.shutdown()
        server.server_close()
    writes = [s for s in samples if s.kind == "write"]
    assert writes and all(s.ok and s.key.startswith("w-") and s.version for s in writes), writes[:3]
    assert {s.client for s in samples} == {0, 1, 2, 3} and summarise(samples)["sent"] == len(samples) - len(writes)
    items = {i["id"]["S"]: i for i in ddb.scan(TableName="orders")["Items"]}
    assert lost_writes(samples, items) == [] and set(items) <= {f"w-{n}" for n in range(50)}
    assert summarise_writes(samples)["acked"] == len(writes)
    newest = max(s.version for s in writes if s.key == writes[-1].key and s.version)
    assert lost_writes(samples, {**items, writes[-1].key: item(newest[0] - 1, newest[1], newest[2])}) == [
        writes[-1].key], "the check can fail: an older item in the table is a lost write"  # fmt: skip
