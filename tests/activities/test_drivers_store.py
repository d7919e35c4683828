"""Where drivers' values come from (activities/drivers.py): a CSV beside the registry or an S3 object; a wrong name
or a bad file is refused naming the driver, a transient S3 error is left to Temporal's retry."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from activities.drivers import DriverStore
from forecasting.drivers import DriverError
from workers.aws import AwsClients

CSV = "timestamp,value\n" + "".join(f"2024-05-{d:02d},{100 + d}\n" for d in range(1, 21))
FIRST, LAST = pd.Timestamp("2024-05-04", tz="UTC"), pd.Timestamp("2024-05-20", tz="UTC")


def _registry(tmp_path: Path, source: str) -> str:
    spec = {"name": "retail", "frequency": "daily", "unit": "index", "publication_lag_hours": 36, "source": source}
    (tmp_path / "drivers.json").write_text(json.dumps({"drivers": [spec]}))
    return str(tmp_path / "drivers.json")


def test_a_relative_csv_path_is_read_beside_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "retail.csv").write_text(CSV)
    monkeypatch.chdir("/")
    store = DriverStore.from_file(_registry(tmp_path, "retail.csv"))
    frame = store.frame(["retail"], FIRST, LAST, LAST + pd.Timedelta(hours=5))
    assert list(frame.columns) == ["retail"] and frame["retail"].notna().all()
    assert frame.loc[pd.Timestamp("2024-05-04T11:00Z"), "retail"] == 101.0  # the 1st's value, known 05-03 12:00
    (tmp_path / "retail.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DriverError, match=r"driver retail: .* is not UTF-8 text"):
        store.frame(["retail"], FIRST, LAST, LAST)


def test_an_s3_source_is_read_and_a_missing_object_is_refused_by_name(aws: AwsClients, tmp_path: Path) -> None:
    s3 = aws("s3", "us-east-1")
    s3.create_bucket(Bucket="drivers")
    s3.put_object(Bucket="drivers", Key="retail.csv", Body=CSV.encode())
    store = DriverStore.from_file(_registry(tmp_path, "s3://drivers/retail.csv"), aws, "us-east-1")
    assert store.frame(["retail"], FIRST, LAST, LAST)["retail"].notna().all()
    gone = DriverStore.from_file(_registry(tmp_path, "s3://drivers/nothing.csv"), aws, "us-east-1")
    with pytest.raises(DriverError, match=r"driver retail: cannot read s3://drivers/nothing\.csv: NoSuchKey"):
        gone.frame(["retail"], FIRST, LAST, LAST)


def test_a_throttled_s3_read_is_raised_as_is_so_the_activity_retries(tmp_path: Path) -> None:
    throttled = ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "GetObject")
    client = mock.Mock(**{"get_object.side_effect": throttled})
    store = DriverStore.from_file(_registry(tmp_path, "s3://drivers/retail.csv"), lambda *_: client, "us-east-1")
    with pytest.raises(ClientError, match="SlowDown"):
        store.frame(["retail"], FIRST, LAST, LAST)


def test_a_bad_registry_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "drivers.json").write_text(json.dumps({"drivers": [{"name": "retail"}]}))
    with pytest.raises(DriverError, match=r"SHADOWING_DRIVERS_FILE .*drivers\.json: drivers\[0\]\.frequency"):
        DriverStore.from_file(str(tmp_path / "drivers.json"))
    with pytest.raises(DriverError, match="SHADOWING_DRIVERS_FILE: cannot read"):
        DriverStore.from_file(str(tmp_path / "missing.json"))
