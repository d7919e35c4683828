"""The fleet model's S3 store against moto: versioned keys, the pointer, digest checks, the serving cache."""

from __future__ import annotations

import json

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.model_store import FleetModelCache, ModelStore, ModelStoreActivities, PublishInput
from forecasting.fleet import FleetModelError
from tests.fleet_data import tiny_model
from workers.aws import AwsClients

BUCKET = "models-test"


@pytest.fixture
def store(aws: AwsClients) -> ModelStore:
    aws("s3", "us-east-1").create_bucket(Bucket=BUCKET)
    return ModelStore(aws, BUCKET, "fleet-model", "us-east-1")


def _keys(aws: AwsClients) -> list[str]:
    return sorted(o["Key"] for o in aws("s3", "us-east-1").list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _candidate(store: ModelStore, version: str) -> dict:
    trained = tiny_model()
    return store.put_candidate(version, trained.artifact, dict(trained.model.metadata))


def test_a_candidate_is_stored_under_its_version_and_publishing_moves_only_the_pointer(
    store: ModelStore, aws: AwsClients
) -> None:
    """put_candidate writes model.bin and metadata.json (with the digest) under the version; nothing is served until
    publish_fleet_model points current.json at it, and a second publication keeps the first's objects."""
    first = _candidate(store, "v20261201T0000Z-aaaa1111")
    assert _keys(aws) == ["fleet-model/v20261201T0000Z-aaaa1111/metadata.json",
                          "fleet-model/v20261201T0000Z-aaaa1111/model.bin"]  # fmt: skip
    assert store.pointer() is None
    meta = store.metadata("v20261201T0000Z-aaaa1111")
    assert meta is not None and meta["sha256"] == first["sha256"] and "validation" in meta and "data_hash" in meta
    act, env = ModelStoreActivities(store), ActivityEnvironment()
    done = env.run(act.publish_fleet_model, PublishInput(version="v20261201T0000Z-aaaa1111", sha256=first["sha256"]))
    assert done.published and store.pointer()["version"] == "v20261201T0000Z-aaaa1111"  # type: ignore[index]
    second = _candidate(store, "v20261202T0000Z-bbbb2222")
    req = PublishInput(version="v20261202T0000Z-bbbb2222", sha256=second["sha256"], replaces="v20261201T0000Z-aaaa1111")
    assert env.run(act.publish_fleet_model, req).published
    pointer = store.pointer()
    assert pointer is not None and pointer["version"] == "v20261202T0000Z-bbbb2222"
    assert pointer["previous"] == "v20261201T0000Z-aaaa1111"
    assert "fleet-model/v20261201T0000Z-aaaa1111/model.bin" in _keys(aws), "old versions are kept"
    assert env.run(act.publish_fleet_model, req).reason == "already published", "a retried publish is a no-op"


def test_a_corrupt_artifact_is_never_published_and_the_pointer_stays(store: ModelStore, aws: AwsClients) -> None:
    """An artifact that no longer matches its recorded digest fails publishing (not retried); load refuses it."""
    good = _candidate(store, "v1")
    env, act = ActivityEnvironment(), ModelStoreActivities(store)
    env.run(act.publish_fleet_model, PublishInput(version="v1", sha256=good["sha256"]))
    bad = _candidate(store, "v2")
    aws("s3", "us-east-1").put_object(Bucket=BUCKET, Key=store.key("v2"), Body=b"SHADOWING-FLEET-MODEL\n1\nnot gzip")
    with pytest.raises(ApplicationError, match="not the one scored") as err:
        env.run(act.publish_fleet_model, PublishInput(version="v2", sha256=bad["sha256"], replaces="v1"))
    assert err.value.non_retryable
    assert store.pointer()["version"] == "v1"  # type: ignore[index]
    with pytest.raises(FleetModelError, match="SHA-256"):
        store.load("v2", bad["sha256"])
    assert store.load("v1", good["sha256"]).metadata["version"] == tiny_model().model.metadata["version"]


def test_publishing_is_refused_when_another_model_was_published_meanwhile(store: ModelStore) -> None:
    """The candidate was judged against v1; v3 is current now: the pointer is left to v3."""
    env, act = ActivityEnvironment(), ModelStoreActivities(store)
    for version in ("v1", "v3"):
        meta = _candidate(store, version)
        env.run(act.publish_fleet_model, PublishInput(version=version, sha256=meta["sha256"],
                                                      replaces=None if version == "v1" else "v1"))  # fmt: skip
    meta = _candidate(store, "v2")
    done = env.run(act.publish_fleet_model, PublishInput(version="v2", sha256=meta["sha256"], replaces="v1"))
    assert not done.published and done.current == "v3" and "v3 was published" in done.reason
    assert store.pointer()["version"] == "v3"  # type: ignore[index]


def test_publishing_without_a_bucket_names_the_setting() -> None:
    with pytest.raises(ApplicationError, match="SHADOWING_MODEL_BUCKET"):
        ActivityEnvironment().run(ModelStoreActivities(None).publish_fleet_model, PublishInput(version="v", sha256="x"))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_cache_loads_each_version_once_and_keeps_the_last_good_model(store: ModelStore, aws: AwsClients) -> None:
    """Nothing published: no model and why. Published: loaded, and not re-read before the refresh interval. A
    corrupt new version is refused and the loaded model keeps serving; a good one replaces it."""
    clock = Clock()
    cache = FleetModelCache(store, refresh_s=60, clock=clock)
    assert cache.current() == (None, "no fleet model is published")
    meta = _candidate(store, "v1")
    store.publish("v1", meta["sha256"], None)
    assert cache.current()[0] is None, "the pointer is not re-read before the refresh interval"
    clock.t = 61
    model, why = cache.current()
    assert model is not None and why == ""
    body = json.loads(aws("s3", "us-east-1").get_object(Bucket=BUCKET, Key="fleet-model/current.json")["Body"].read())
    body.update(version="v2", sha256="0" * 64)  # a pointer to an artifact that is not there / not that digest
    aws("s3", "us-east-1").put_object(Bucket=BUCKET, Key="fleet-model/current.json", Body=json.dumps(body).encode())
    clock.t = 122
    assert cache.current()[0] is model, "a version that cannot be loaded leaves the previous model serving"
    meta2 = _candidate(store, "v3")
    store.publish("v3", meta2["sha256"], "v2")
    clock.t = 183
    newer, _ = cache.current()
    assert newer is not None and newer is not model


def test_the_cache_without_a_store_or_with_an_unreadable_one_says_why(aws: AwsClients) -> None:
    assert FleetModelCache(None).current() == (None, "no model bucket is configured (SHADOWING_MODEL_BUCKET)")
    missing = FleetModelCache(ModelStore(aws, "no-such-bucket", "fleet-model", "us-east-1"))
    model, why = missing.current()
    assert model is None and "s3://no-such-bucket cannot be read" in why
