"""TrainFleetModel on the time-skipping server with stand-in activities: it publishes only a candidate that beats
seasonal naive and the published model, and a failed or rejected training leaves the published model serving."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.model_store import PublishInput, PublishResult
from activities.registry import EntitySource, ListEntitiesResult
from activities.training import CandidateModel, TrainCandidateInput
from shadowing.client import TRAIN_WORKFLOW_ID, ShadowingClient
from shadowing.errors import InvalidRequest, ShadowingError
from shadowing.models import ModelScores, TrainFleetModelInput
from tests.workflows.test_orchestration import record
from workflows.train import TrainFleetModelWorkflow


def _scores(rel: float | None) -> ModelScores:
    return ModelScores(origins=2, entities=20, mae=10.0, relative_mae={"seasonal_naive": rel, "naive": 0.5})


@dataclass
class FakeTraining:
    """The three activities, over an in-memory pointer; `candidate` and `incumbent` are the relative MAEs."""

    candidate: float | None
    incumbent: float | None
    entities: int = 3
    fail: str | None = None
    pointer: str | None = None
    calls: list[str] = field(default_factory=list)
    seen: list[TrainCandidateInput] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pointer = "v-old" if self.incumbent is not None else None

    @activity.defn(name="list_entity_sources")
    async def list_entity_sources(self) -> ListEntitiesResult:
        self.calls.append("list")
        sources = tuple(
            EntitySource(entity_id=f"e{i}", region="us-east-1", namespace="N") for i in range(self.entities)
        )
        return ListEntitiesResult(sources=sources)

    @activity.defn(name="train_fleet_candidate")
    def train_fleet_candidate(self, req: TrainCandidateInput) -> CandidateModel:
        self.calls.append("train")
        self.seen.append(req)
        if self.fail:
            raise ApplicationError(self.fail, type="InvalidRequest", non_retryable=True)
        return CandidateModel(
            version="v-new", key="fleet-model/v-new/model.bin", sha256="ab" * 32, data_hash="cd" * 32,
            entities=len(req.sources), series=2 * len(req.sources), scores=_scores(self.candidate),
            incumbent_version=self.pointer,
            incumbent_scores=_scores(self.incumbent) if self.incumbent is not None else None,
        )  # fmt: skip

    @activity.defn(name="publish_fleet_model")
    def publish_fleet_model(self, req: PublishInput) -> PublishResult:
        self.calls.append(f"publish replacing {req.replaces}")
        self.pointer = req.version
        return PublishResult(published=True, current=req.version)

    def worker(self, env: WorkflowEnvironment) -> tuple[Worker, str]:
        queue = f"train-{uuid.uuid4()}"
        acts = [self.list_entity_sources, self.train_fleet_candidate, self.publish_fleet_model]
        return Worker(env.client, task_queue=queue, workflows=[TrainFleetModelWorkflow], activities=acts,
                      activity_executor=ThreadPoolExecutor(2)), queue  # fmt: skip


@pytest.mark.parametrize(
    ("candidate", "incumbent", "outcome", "why"),
    [
        (0.80, None, "published", "0.800x seasonal naive"),
        (0.80, 0.85, "published", "published model 0.850x"),
        (0.80, 0.80, "published", "published model 0.800x"),
        (0.90, 0.85, "rejected", "does worse than the published model"),
        (1.02, None, "rejected", "does not beat seasonal naive"),
        (None, 0.85, "rejected", "served no entity"),
    ],
    ids=["first-model", "better", "as-good", "worse-than-incumbent", "worse-than-naive", "served-none"],
)
async def test_a_candidate_is_published_only_when_it_beats_naive_and_the_incumbent(
    time_env: WorkflowEnvironment, candidate: float | None, incumbent: float | None, outcome: str, why: str
) -> None:
    fake = FakeTraining(candidate, incumbent)
    before = fake.pointer
    w, queue = fake.worker(time_env)
    async with w:
        result = await ShadowingClient(time_env.client, queue).train_fleet_model({"history_days": 21})
    assert not isinstance(result, str)
    scenario = {(0.80, 0.85): "train_fleet_model_published", (0.90, 0.85): "train_fleet_model_rejected"}
    if (candidate, incumbent) in scenario:
        await record(time_env.client.get_workflow_handle(TRAIN_WORKFLOW_ID), scenario[candidate, incumbent])
    assert result.outcome == outcome and why in result.reason
    assert result.scores.relative_mae["seasonal_naive"] == candidate
    assert fake.seen[0].history_days == 21 and len(fake.seen[0].sources) == 3
    if outcome == "published":
        assert fake.calls == ["list", "train", f"publish replacing {before}"] and fake.pointer == "v-new"
    else:
        assert fake.calls == ["list", "train"] and fake.pointer == before, "a rejected model is never published"


async def test_a_failed_training_fails_the_workflow_and_leaves_the_pointer(time_env: WorkflowEnvironment) -> None:
    """Bad data is not retried; the caller sees the activity's message; the published model keeps serving."""
    fake = FakeTraining(0.5, 0.9, fail="history_days: 100 h of data: training needs at least 312 h")
    w, queue = fake.worker(time_env)
    async with w:
        with pytest.raises(InvalidRequest, match="training needs at least"):
            await ShadowingClient(time_env.client, queue).train_fleet_model()
    assert fake.calls == ["list", "train"] and fake.pointer == "v-old"


async def test_with_no_registered_entity_the_workflow_fails_without_training(time_env: WorkflowEnvironment) -> None:
    fake = FakeTraining(0.5, None, entities=0)
    w, queue = fake.worker(time_env)
    async with w:
        with pytest.raises(ShadowingError, match="no registered entity") as err:
            await ShadowingClient(time_env.client, queue).train_fleet_model()
    assert not isinstance(err.value, InvalidRequest), "nothing to train on is not bad input"
    assert fake.calls == ["list"] and fake.pointer is None


async def test_no_wait_returns_the_workflow_id_and_bad_input_is_refused_before_sending(
    time_env: WorkflowEnvironment,
) -> None:
    fake = FakeTraining(0.5, None)
    w, queue = fake.worker(time_env)
    client = ShadowingClient(time_env.client, queue)
    with pytest.raises(InvalidRequest, match="history_days"):
        await client.train_fleet_model({"history_days": 2})
    async with w:
        wid = await client.train_fleet_model(TrainFleetModelInput(), wait=False)
        assert wid == "fleet-model/train-now"
        await time_env.client.get_workflow_handle(wid).result()
    assert fake.pointer == "v-new"
