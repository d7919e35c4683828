"""Activities against moto's in-process mock, with clients built the way the worker builds them."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from activities import TAG_MANAGED
from activities.ownership import MANAGED, ownership_tags
from shadowing.settings import Settings
from workers.aws import AwsClients


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsClients]:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield AwsClients(Settings(aws_endpoint_url=None, aws_profile=None))


@pytest.fixture
def zone(aws: AwsClients) -> str:
    """A hosted zone handed to the product (tagged `shadowing:managed-by`)."""
    r53 = aws("route53", "us-east-1")
    zone_id = str(r53.create_hosted_zone(Name="example.internal.", CallerReference="t")["HostedZone"]["Id"])
    zone_id = zone_id.split("/")[-1]
    r53.change_tags_for_resource(
        ResourceType="hostedzone", ResourceId=zone_id, AddTags=[{"Key": TAG_MANAGED, "Value": MANAGED}]
    )
    return zone_id


def make_table(
    aws: AwsClients, region: str, name: str, items: int, tags: list | None = None, owner: str | None = "shop"
) -> None:
    """A table with `items` items, handed to entity `owner` (its ownership tags; `None`: not the product's)."""
    ddb = aws("dynamodb", region)
    tags = [*(ownership_tags(owner) if owner else []), *(tags or [])]
    ddb.create_table(
        TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        **({"Tags": tags} if tags else {}),
    )  # fmt: skip
    for i in range(items):
        ddb.put_item(TableName=name, Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})


__all__ = ["boto3", "make_table"]
