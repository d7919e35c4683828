"""`shadowctl backtest`: the product's serving path (daily fleet training, per-entity choice and calibration, the
per-entity engine where the path sends an entity) from each origin, on data before the origin only; bad input exits
2 naming the option."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from forecasting.fleet import fleet_config
from shadowctl.cli import main
from tests.unit.test_engine import synthetic

ORIGINS = "2026-01-12T00:00:00Z,2026-01-13T00:00:00Z"


def backtest(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["shadowctl", "backtest", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def usage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("usage") / "usage.csv.gz"
    synthetic(n=6, days=15).to_csv(path, index=False)
    return path


def test_each_origin_is_served_from_its_own_past_only(
    usage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per entity, origin and hour; what follows an origin does not change what that origin forecast."""
    small = fleet_config(max_iter=80)  # the default's 800 rounds cost minutes on six series and two CPUs
    monkeypatch.setattr("forecasting.backtest.fleet_config", lambda: small)
    out, cache = tmp_path / "fc.csv", tmp_path / "models"
    common = ["--target", "cpu", "--horizon", "24", "--origins", ORIGINS, "--quantiles", "0.1,0.5,0.9"]
    assert backtest(monkeypatch, "--input", str(usage), "--output", str(out), "--model-cache", str(cache),
                    *common) == 0  # fmt: skip
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["entity_id", "origin", "timestamp", "q0.1", "q0.5", "q0.9"]
    assert len(frame) == 6 * 2 * 24
    assert (frame["q0.1"] <= frame["q0.5"]).all() and (frame["q0.5"] <= frame["q0.9"]).all()
    assert "answered by" in capsys.readouterr().err
    # the first origin's future scaled tenfold: trained and served again (no model cache), it forecasts the same
    data = pd.read_csv(usage)
    later = pd.to_datetime(data["timestamp"]) >= pd.Timestamp("2026-01-12T00:00:00Z")
    data.loc[later, "cpu"] *= 10
    changed, out2 = tmp_path / "changed.csv.gz", tmp_path / "fc2.csv"
    data.to_csv(changed, index=False)
    common[5] = ORIGINS.split(",")[0]
    assert backtest(monkeypatch, "--input", str(changed), "--output", str(out2), *common) == 0
    first = frame[frame["origin"] == frame["origin"].iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, pd.read_csv(out2))


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--origins", "2026-01-12T00:00:00", "origins"),  # no time zone
        ("--origins", "yesterday", "origins"),
        ("--origins", "2027-01-01T00:00:00Z", "origins"),  # after the data
        ("--quantiles", "0.1,1.5", "quantiles"),
        ("--horizon", "0", "horizon"),
        ("--horizon", "169", "horizon"),
        ("--target", "memory", "input"),
        ("--entities", "nobody", "input"),
    ],
)
def test_bad_input_exits_2_and_names_the_option(
    usage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    option: str, value: str, named: str,
) -> None:  # fmt: skip
    args = {"--target": "cpu", "--origins": ORIGINS.split(",")[0], "--horizon": "24", "--quantiles": "0.5"}
    args[option] = value
    out = tmp_path / "never.csv"
    code = backtest(monkeypatch, "--input", str(usage), "--output", str(out), *(x for kv in args.items() for x in kv))
    said = capsys.readouterr()
    assert code == 2, said
    assert named in said.out + said.err
    assert not out.exists()
