"""The fleet model's store in S3: versioned artifacts, the pointer that names the published one, and the cache a
worker serves from.

    s3://<bucket>/<prefix>/v20261207T0000Z-1a2b3c4d/model.bin       the artifact (forecasting/fleet.py)
    s3://<bucket>/<prefix>/v20261207T0000Z-1a2b3c4d/metadata.json   window, entities, scores, data hash, sha256
    s3://<bucket>/<prefix>/current.json                              {"version", "key", "sha256", ...}

A version's objects are written once and never changed; publishing only rewrites the pointer, after checking the
artifact against the digest its metadata recorded. So a training that fails or is rejected leaves the pointer, and
the model it names, as they were.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ClientFactory
from forecasting.fleet import FleetModel, FleetModelError, digest
from shadowing.models import Frozen

POINTER = "current.json"
ARTIFACT = "model.bin"
METADATA = "metadata.json"
#: How often a worker re-reads the pointer: a new model serves everywhere within this long of its publication.
REFRESH_S = 300.0


class PublishInput(Frozen):
    """Move the pointer to `version`, if it still names `replaces` (the incumbent the candidate was judged against)."""

    version: str
    sha256: str
    replaces: str | None = None


class PublishResult(Frozen):
    published: bool
    current: str | None = None
    reason: str = ""


class ModelStore:
    """Reads and writes one bucket's fleet models; boto3 errors propagate (the activity decides what they mean)."""

    def __init__(
        self, clients: ClientFactory, bucket: str, prefix: str = "fleet-model", region: str = "us-east-1"
    ) -> None:
        self._clients, self.bucket, self.prefix, self.region = clients, bucket, prefix.strip("/"), region

    def key(self, version: str, name: str = ARTIFACT) -> str:
        return f"{self.prefix}/{version}/{name}"

    def put_candidate(self, version: str, artifact: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
        """Writes the artifact, then its metadata (with the artifact's key and SHA-256); returns the metadata."""
        meta = {**metadata, "version": version, "key": self.key(version), "sha256": digest(artifact)}
        self._put(self.key(version), artifact, "application/octet-stream")
        self._put(self.key(version, METADATA), json.dumps(meta, indent=2).encode(), "application/json")
        return meta

    def pointer(self) -> dict[str, Any] | None:
        """The published model's pointer, or None when nothing is published."""
        data = self._get(f"{self.prefix}/{POINTER}")
        return None if data is None else dict(json.loads(data))

    def metadata(self, version: str) -> dict[str, Any] | None:
        data = self._get(self.key(version, METADATA))
        return None if data is None else dict(json.loads(data))

    def load(self, version: str, sha256: str) -> FleetModel:
        """The version's model; `FleetModelError` when it is missing, corrupt or not what `sha256` names."""
        data = self._get(self.key(version))
        if data is None:
            raise FleetModelError(f"artifact: s3://{self.bucket}/{self.key(version)} does not exist")
        return FleetModel.from_bytes(data, sha256)

    def publish(self, version: str, sha256: str, previous: str | None) -> dict[str, Any]:
        """Points `current.json` at `version` after checking its artifact against `sha256` (`FleetModelError`)."""
        data = self._get(self.key(version))
        if data is None or digest(data) != sha256:
            raise FleetModelError(f"artifact: s3://{self.bucket}/{self.key(version)} is missing or not the one scored")
        body = {"version": version, "key": self.key(version), "sha256": sha256,
                "metadata": self.key(version, METADATA), "previous": previous,
                "published_at": datetime.now(UTC).isoformat()}  # fmt: skip
        self._put(f"{self.prefix}/{POINTER}", json.dumps(body, indent=2).encode(), "application/json")
        return body

    def _s3(self) -> Any:
        return self._clients("s3", self.region)

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self._s3().put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def _get(self, key: str) -> bytes | None:
        try:
            return bytes(self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise


class ModelStoreActivities:
    def __init__(self, store: ModelStore | None) -> None:
        self._store = store

    @activity.defn(name="publish_fleet_model")
    def publish_fleet_model(self, req: PublishInput) -> PublishResult:
        """Moves the pointer to the candidate, unless another model was published since it was judged."""
        store = require_store(self._store)
        current = store.pointer()
        now = current.get("version") if current else None
        if now == req.version:
            return PublishResult(published=True, current=now, reason="already published")  # a retried attempt
        if now != req.replaces:
            why = f"{now} was published while this candidate was judged against {req.replaces or 'none'}"
            return PublishResult(published=False, current=now, reason=why)
        try:
            store.publish(req.version, req.sha256, now)
        except FleetModelError as exc:
            raise ApplicationError(str(exc), type="InvalidRequest", non_retryable=True) from exc
        return PublishResult(published=True, current=req.version, reason=f"replaces {now or 'nothing'}")


def require_store(store: ModelStore | None) -> ModelStore:
    if store is None:
        raise ApplicationError(
            "no model bucket: set SHADOWING_MODEL_BUCKET on the worker", type="InvalidRequest", non_retryable=True
        )
    return store


class FleetModelCache:
    """The model a worker serves: the pointer re-read at most every `refresh_s`, each version loaded once.

    No store, nothing published, or the store unreachable before any model was loaded: no model (the per-entity
    engine answers, with the reason). A version that cannot be loaded (corrupt, digest mismatch) or a store that
    stops answering keeps the model already loaded serving: a bad publication must not stop good forecasts.
    """

    def __init__(self, store: ModelStore | None, refresh_s: float = REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._store, self._refresh_s, self._clock = store, refresh_s, clock
        self._lock = threading.Lock()
        self._model: FleetModel | None = None
        self._version: str | None = None
        self._why = "no model bucket is configured (SHADOWING_MODEL_BUCKET)"
        self._next = float("-inf")

    def current(self) -> tuple[FleetModel | None, str]:
        """The model to serve (or None) and, when None, why."""
        with self._lock:  # one thread loads a new version; the others wait for it rather than load it again
            if self._store is not None and self._clock() >= self._next:
                self._next = self._clock() + self._refresh_s
                self._refresh(self._store)
            return self._model, self._why

    def _refresh(self, store: ModelStore) -> None:
        try:
            pointer = store.pointer()
        except (BotoCoreError, ClientError) as exc:
            if self._model is None:
                self._why = f"the model store s3://{store.bucket} cannot be read: {exc}"
            activity.logger.warning("fleet model pointer unreadable, serving %s: %s", self._version or "none", exc)
            return
        if pointer is None:
            self._model, self._version, self._why = None, None, "no fleet model is published"
            return
        version = str(pointer.get("version"))
        if version == self._version:
            return
        try:
            model = store.load(version, str(pointer.get("sha256")))
        except (FleetModelError, BotoCoreError, ClientError) as exc:
            if self._model is None:
                self._why = f"the published fleet model {version} cannot be loaded: {exc}"
            activity.logger.error("fleet model %s not loaded, serving %s: %s", version, self._version or "none", exc)
            return
        self._model, self._version, self._why = model, version, ""
