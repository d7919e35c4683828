"""shadowctl's door: bad input exits 2 with a one-line message naming the field, never a traceback, and
without contacting any server (nothing listens on the address used here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

OK = ["--start", "2026-01-01T00:00:00Z", "--end", "2026-01-01T01:00:00Z"]
CASES = [
    (["provision", "shop", "--start", "2026-01-01T00:00:00", "--end", "2026-01-01T01:00:00Z",
      "--instance-type", "m5.large", "--quantity", "1"], "time_slice.start"),
    (["provision", "shop", "--start", "2026-01-01T02:00:00Z", "--end", "2026-01-01T01:00:00Z",
      "--instance-type", "m5.large", "--quantity", "1"], "must be after"),
    (["provision", "shop", *OK, "--instance-type", "m5.gigantic", "--quantity", "1"], "instance_type"),
    (["provision", "shop", *OK, "--instance-type", "m5.large", "--quantity", "0"], "quantity"),
    (["provision", "shop", *OK, "--instance-type", "m5.large", "--quantity", "many"], "--quantity"),
    (["migrate", "Not_An_Id", *OK], "entity_id"),
    (["predict", "shop", "--start", "yesterday", "--end", "2026-01-01T01:00:00Z"], "time_slice.start"),
    (["status"], "entity_id"),
    (["train", "--history-days", "3"], "--history-days"),
    (["train", "--validation-days", "30"], "--validation-days"),
    (["train", "--end", "soon"], "--end"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "named"), CASES, ids=lambda a: " ".join(a)[:50] if isinstance(a, list) else a)
def test_bad_input_exits_2_naming_the_field(args: list[str], named: str) -> None:
    """Each malformed call exits with code 2 and names what is wrong."""
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "shadowctl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert named in out
    assert "Traceback" not in out


def test_unreachable_server_is_a_clear_error_not_a_traceback() -> None:
    """A valid call with no Temporal listening exits 1 and says which address it tried."""
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "shadowctl.cli", "status", "shop"], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 1 and "127.0.0.1:9" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("args", "model"), [([], "RegisterEntityInput"), (["--spec"], "EntitySpec")])
def test_schema_prints_the_registration_json_schema_without_a_server(args: list[str], model: str) -> None:
    """`shadowctl schema` is the models' JSON Schema; it accepts examples/entity.json and refuses a broken copy."""
    import json
    from pathlib import Path

    import jsonschema

    from shadowing.models import EntitySpec, RegisterEntityInput

    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "shadowctl.cli", "schema", *args], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    expected = {"RegisterEntityInput": RegisterEntityInput, "EntitySpec": EntitySpec}[model].model_json_schema()
    assert printed == expected and printed["title"] == model
    example = json.loads((Path(__file__).resolve().parents[2] / "examples" / "entity.json").read_text())
    instance = example if model == "RegisterEntityInput" else example["spec"]
    jsonschema.validate(instance, printed)
    broken = {**example["spec"], "initial_instances": 0}
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        jsonschema.validate({**example, "spec": broken} if model == "RegisterEntityInput" else broken, printed)


def test_a_long_refusal_from_the_worker_prints_on_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal that travelled through Temporal (the SDK's `_translate` of an InvalidRequest ApplicationError) is
    printed whole on one line, brackets included, wider than the console, and exits 2."""
    from temporalio.exceptions import ApplicationError

    from shadowctl import cli
    from shadowing.client import _translate

    slices = ", ".join(f"2026120{d}T000000Z ([eu-west-1] 2026-12-0{d}T00:00:00+00:00)" for d in range(1, 5))
    message = f"time_slice: 2026-12-07T00:30:00+00:00 is not a slice of this entity's schedule (its slices: {slices})"
    error = _translate(ApplicationError(message, type="InvalidRequest", non_retryable=True))

    def refuse(**_: object) -> None:
        raise error

    monkeypatch.setattr(cli, "app", refuse)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out = capsys.readouterr().out
    assert exit_.value.code == 2
    assert out.count("\n") == 1 and len(out) > 150, out
    assert out.strip() == f"error: {message}"
