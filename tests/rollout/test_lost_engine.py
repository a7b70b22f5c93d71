"""Losing the only rollout engine mid-batch, on a local Ray cluster: one real pool and one real rollout
actor over fakes (a word tokenizer, a scripted retriever, and an engine whose generate raises
``EngineDied`` once, as ``VLLMEngine`` does when vLLM's engine core dies). The actor ends, Ray restarts
it, the restarted actor gets the current weights before it takes work (the object store's ref again, or
a re-publish over the fake NCCL transfer), and the batch completes with every (question, sample)
exactly once, all from the current weights."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import torch

from s3ray.rollout.actor import RolloutActor
from s3ray.rollout.engine import EngineDied, Generation
from s3ray.rollout.pool import RolloutPool
from s3ray.rollout.weight_sync import NcclSync
from s3ray.train.trainer import collect
from s3ray.types import Question

from .fake_vllm import fake_trainer_side
from .fakes import COMPLETE, ChatWordTokenizer, DictWeights, FakeRetriever

pytestmark = pytest.mark.ray

QUESTIONS = [Question(f"q{i}", f"which film number {i}", ("x",), "hotpotqa") for i in range(4)]
SAMPLES = 2
DIE_AT = 5  # the first engine's 5th generate call raises, with every episode of the batch in flight
VERSION = 3


class DyingEngine:
    """Every episode is one turn that completes; the first process's ``DIE_AT``-th call raises
    ``EngineDied`` (``marker`` records it, so the restarted actor's engine lives)."""

    def __init__(self, tokenizer, marker: Path):
        self.tokenizer, self.marker = tokenizer, marker
        self.calls, self.version = 0, 0

    async def generate(self, prompt_ids, sampling):
        self.calls += 1
        call = self.calls
        await asyncio.sleep(0.05)  # the episodes of the batch interleave, as on a real engine
        if call == DIE_AT and not self.marker.exists():
            self.marker.touch()
            raise EngineDied("the engine core died (scripted)")
        ids = self.tokenizer.encode(f"<important_info>[1]</important_info> {COMPLETE}")
        return Generation(ids, [-0.5] * len(ids), "eos")

    async def load_state_dict(self, state, version):
        self.version = version

    async def weight_transfer(self, step, payload=None):
        if step == "finish":
            self.version = payload


class FakeEngineActor(RolloutActor):
    """The real actor over the fakes (its seams swapped, its own state untouched); ``model_dir`` holds the
    marker."""

    def load_tokenizer(self, model_dir: str):
        return ChatWordTokenizer()

    def build_engine(self, model_dir: str):
        return DyingEngine(self.tokenizer, Path(model_dir) / "engine-died")

    def connect_retriever(self):
        return FakeRetriever()


def test_the_fake_actor_is_the_real_one_with_its_seams_swapped(session_cfg, tmp_path):
    """In process (no Ray starts): the real constructor builds the fake's state, so a batch runs."""
    actor = FakeEngineActor(session_cfg, str(tmp_path))
    assert isinstance(actor.engine, DyingEngine) and isinstance(actor.retriever, FakeRetriever)
    episodes = asyncio.run(actor.run([(QUESTIONS[0], 0), (QUESTIONS[0], 1)], with_reward=False))
    assert [ep.key for ep in episodes] == [("q0", 0), ("q0", 1)] and {ep.finish for ep in episodes} == {"complete"}


def one_actor_pool(ray, session_cfg, marker_dir: Path):
    # Ray's workers cannot import the test modules by name (pytest puts tests/ on the path, not the
    # repository): the fake actor and what it uses travel by value.
    for cls in (FakeEngineActor, ChatWordTokenizer, ChatWordTokenizer.__mro__[1]):
        ray.cloudpickle.register_pickle_by_value(sys.modules[cls.__module__])
    cfg = session_cfg.model_copy(update={"rollout": session_cfg.rollout.model_copy(update={"num_actors": 1})})
    return ray.remote(RolloutPool).options(num_cpus=0).remote(cfg, str(marker_dir),
                                                                actor_class=FakeEngineActor)


def check_batch(episodes, marker_dir: Path):
    assert (marker_dir / "engine-died").exists()  # the engine did die mid-batch
    assert [(ep.question_id, ep.sample_index) for ep in episodes] == [
        (q.id, s) for q in QUESTIONS for s in range(SAMPLES)]  # each exactly once, in order
    assert {ep.policy_version for ep in episodes} == {VERSION}  # none from the restarted engine's own weights


def test_a_dead_engine_over_the_object_store_gets_the_ref_again(ray_cluster, session_cfg, tmp_path):
    ray = ray_cluster
    pool = one_actor_pool(ray, session_cfg, tmp_path)
    state = {"w": torch.ones(2)}
    assert ray.get(pool.update_weights.remote([ray.put(state)], VERSION)) == VERSION
    episodes = ray.get(pool.run.remote(QUESTIONS, samples_per_question=SAMPLES, with_reward=False), timeout=120)
    check_batch(episodes, tmp_path)
    stats = ray.get(pool.stats.remote())
    assert stats["reruns"] == 1 and stats["actors"] == 1
    ray.kill(pool)


def test_a_dead_engine_over_nccl_is_published_to_again(ray_cluster, session_cfg, tmp_path, monkeypatch):
    ray = ray_cluster
    trainer_engine = fake_trainer_side(monkeypatch)
    pool = one_actor_pool(ray, session_cfg, tmp_path)
    sync = NcclSync(pool, device="cpu", timeout_s=60)
    state = DictWeights({"w": torch.ones(2)})
    publishes = []

    def republish():
        publishes.append(VERSION)
        sync.publish(state, VERSION)

    sync.publish(state, VERSION)
    episodes = collect(pool, {"questions": QUESTIONS, "samples_per_question": SAMPLES, "with_reward": False},
                       republish)
    check_batch(episodes, tmp_path)
    assert publishes == [VERSION]  # once: after the restart
    assert len(trainer_engine.made) == 2  # the group re-formed with the restarted actor
    assert ray.get(pool.stats.remote())["reruns"] == 1
    ray.kill(pool)
