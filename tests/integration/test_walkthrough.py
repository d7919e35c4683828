"""The README's "Running it" walkthrough, run as written: its `sh` blocks are read from README.md, `up` is started
from its own line, and every endpoint command runs in order against it, each checked for its exit code and a key
piece of its output. A command added to, removed from or reordered in the README fails here until EXPECTED
follows it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devstack.stack import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETUP = re.compile(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=")  # `export PATH=...`, `D=$(date ...)`


@dataclass(frozen=True)
class Expect:
    starts: str  # the command's first words, to pair each expectation with its README line
    code: int
    output: tuple[str, ...]  # each must appear in stdout + stderr


EXPECTED = (
    Expect("temporal workflow execute --type PredictDemand", 0, ("COMPLETED", '"readiness"')),
    Expect("temporal workflow update execute -o json --workflow-id entity/sample-api --name ProvisionShadowInstances",
           0, ('"phase": "ready"', "T000000Z")),
    Expect("temporal workflow update execute --workflow-id entity/sample-api --name MigrateInstances", 1,
           ("Time slice is not active",)),
    Expect("temporal workflow update execute -o json --workflow-id entity/sample-api --name ReleaseShadowInstances",
           0, ('"outcome": "released"',)),
    Expect("temporal workflow query --workflow-id entity/sample-api --name status", 0,
           ('"outcome":"released"', '"state":"released"')),
    Expect("shadowctl predict sample-api", 0, ("readiness", "cpu_mhz")),
    Expect("shadowctl provision sample-api", 0, ("ready", "ap-southeast-2", "T080000Z")),
    Expect("shadowctl migrate sample-api", 2, ("Time slice is not active",)),
    Expect("shadowctl release sample-api", 0, ("released", "terminate shadows")),
    Expect("shadowctl status sample-api", 0, ("sample-api", "2 released")),
)  # fmt: skip


def walkthrough(text: str) -> tuple[str, list[str], list[str]]:
    """From the README's "## Running it" up to its Python example: the `up` line, the setup lines (variables) and
    the commands, each with its backslash continuations joined."""
    section = text[text.index("## Running it") :]
    section = section[: section.index("```python")]
    lines = [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]
    up, *rest = lines
    return up, [x for x in rest if SETUP.match(x)], [x for x in rest if not SETUP.match(x)]


def test_the_walkthrough_is_what_this_test_expects() -> None:
    """Fast: the README's commands pair one to one, in order, with EXPECTED (so a divergence fails without servers)."""
    up, setup, commands = walkthrough(README.read_text())
    assert re.match(r"\.venv/bin/shadowctl up\b", up), up
    assert setup and all("=" in s for s in setup)
    assert len(commands) == len(EXPECTED), commands
    for command, expect in zip(commands, EXPECTED, strict=True):
        assert re.sub(r"\s+", " ", command).startswith(expect.starts), (command, expect.starts)


@pytest.mark.slow
def test_the_readme_walkthrough_runs(tmp_path: Path) -> None:
    up_line, setup, commands = walkthrough(README.read_text())
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)  # `.venv/bin/...` as in a checkout
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("TEMPORAL_ADDRESS", "AWS_ENDPOINT_URL")}
    base |= {
        "PATH": os.defpath,  # only what the README's `export PATH=...` adds finds `temporal` and `shadowctl`
        "PYTHONPATH": str(ROOT),  # the code under test, whichever checkout runs this
        "PYTHONUNBUFFERED": "1",
        "SHADOWING_TEMPORAL_PORT": str(port),
        "SHADOWING_TEMPORAL_UI_PORT": str(free_port()),
        "SHADOWING_MOTO_PORT": str(free_port()),
        "SHADOWING_METRICS_BIND": "",
        "SHADOWING_LOG_LEVEL": "INFO",  # `up` says when the sample entity is registered
    }
    day = datetime.now(UTC).date()
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(["bash", "-c", f"exec {up_line}"], cwd=tmp_path, env=base, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(up, log, "sample entity registered")
        env = base | {"TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}  # the other terminal, pointed at this `up`
        prelude = "\n".join(setup)
        results = []
        for command in commands:
            done = subprocess.run(["bash", "-c", f"{prelude}\n{command}"], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
            results.append((command, done.returncode, done.stdout + done.stderr))
        assert up.poll() is None, log.read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # Ctrl-C: `up` stops the services it started
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(up)
    if datetime.now(UTC).date() != day:
        pytest.skip("the run crossed midnight UTC: `up`'s 'tomorrow' and the commands' $D differ")
    for (command, code, output), expect in zip(results, EXPECTED, strict=True):
        assert code == expect.code, (command, code, output[-2000:])
        missing = [s for s in expect.output if s not in output]
        assert not missing, (command, missing, output[-2000:])


def _wait_for(proc: subprocess.Popen, log: Path, line: str, timeout_s: float = 180.0) -> None:
    """Until `line` is in the log; fails at once if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if line in log.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"`up` did not print {line!r} (exit code {proc.poll()}):\n{log.read_text()[-3000:]}")
