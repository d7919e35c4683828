"""`shadowctl status <entity>` wall time against a running server, beside `python -c pass` in the same run.

    python -m benchmarks.cli_latency [--entity sample-api] [--runs 7] [--json .shadowing/bench-cli-latency.json]

Uses the `shadowctl up` of the state dir (its services.json) or TEMPORAL_ADDRESS when one runs; otherwise starts
`shadowctl up` itself (a temporary state dir, free ports), waits until the sample entity answers, measures, and
stops it by its PID. Each round runs, interleaved: `python -c pass` (the interpreter's floor on this machine),
`shadowctl status <entity>` (connect, query, render) and `shadowctl status Not_An_Id` (refused before connecting).
Prints JSON: per command the median and min seconds, the ratio of medians to `python -c pass`, and whatever the
status command wrote on stderr (expected: nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.stack import free_port
from shadowing.settings import load_settings

CLI = [sys.executable, "-m", "shadowctl.cli"]


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - began, done


def _start_up(state: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    env = {**os.environ, "SHADOWING_STATE_DIR": str(state), "SHADOWING_TEMPORAL_PORT": str(free_port()),
           "SHADOWING_TEMPORAL_UI_PORT": str(free_port()), "SHADOWING_MOTO_PORT": str(free_port()),
           "SHADOWING_METRICS_BIND": "", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    for name in ("TEMPORAL_ADDRESS", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    log = (state / "up.log").open("wb")
    proc = subprocess.Popen([*CLI, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, env


def _wait_answering(entity: str, env: dict[str, str], proc: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"shadowctl up exited with code {proc.returncode}")
        if _run([*CLI, "status", entity, "--json"], env)[1].returncode == 0:
            return
        time.sleep(1.0)
    raise SystemExit(f"`shadowctl status {entity}` did not answer within {timeout_s:.0f}s")


def measure(entity: str, runs: int, env: dict[str, str]) -> dict:
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        f"shadowctl status {entity}": [*CLI, "status", entity],
        "shadowctl status Not_An_Id (refused locally)": [*CLI, "status", "Not_An_Id"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    stderr: set[str] = set()
    for _ in range(runs):
        for name, cmd in commands.items():
            seconds, done = _run(cmd, env)
            times[name].append(seconds)
            if name.startswith("shadowctl status") and "Not_An_Id" not in name:
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed: {done.stdout[-500:]}{done.stderr[-500:]}")
                stderr.update(line for line in done.stderr.splitlines() if line.strip())
    floor = statistics.median(times["python -c pass"])

    def figures(t: list[float]) -> dict[str, float]:
        median = statistics.median(t)
        ratio = round(median / floor, 1)
        return {"median_s": round(median, 3), "min_s": round(min(t), 3), "ratio_to_python_c_pass": ratio}

    return {"runs": runs, "commands": {name: figures(t) for name, t in times.items()}, "status_stderr": sorted(stderr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity", default="sample-api")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    settings = load_settings(discover=True)
    proc, tmp = None, None
    env = dict(os.environ)
    if settings.temporal_address is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-cli-")
        proc, env = _start_up(Path(tmp.name))
    try:
        _wait_answering(args.entity, env, proc, timeout_s=180)
        server = "started by this run" if proc else "already running"
        result = {"server": server, **measure(args.entity, args.runs, env)}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if tmp is not None:
            tmp.cleanup()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
