"""A rollout worker: one engine, many concurrent episodes, rewards scored in one concurrent batch.

A plain class: :mod:`s3ray.rollout.pool` makes it a Ray actor (its async methods share the actor's
event loop, so episodes of one call interleave their engine turns and retrieval calls).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, Literal

from s3ray.agent.environment import S3Environment
from s3ray.agent.episode import Episode
from s3ray.config import S3Config
from s3ray.heap import fix_mmap_threshold, release_free_heap
from s3ray.rollout.engine import EngineDied, SamplingParams
from s3ray.rollout.policy import EnginePolicy, TeacherPolicy
from s3ray.rollout.runner import run_episode
from s3ray.types import Question

log = logging.getLogger(__name__)

PolicyName = Literal["model", "heuristic"]
WorkItem = tuple[Question, int]  # (question, sample index)


def build_engine(cfg: S3Config, model_dir: str | Path, seed: int):
    """The policy's engine for ``cfg.rollout.backend`` (GPU when the actor was given one)."""
    rc = cfg.rollout
    if rc.backend == "vllm":
        from s3ray.rollout.engine import VLLMEngine

        return VLLMEngine(model_dir, seed=seed, gpu_memory_utilization=rc.gpu_memory_utilization)
    import torch

    from s3ray.rollout.engine import HFEngine

    device = "cuda" if rc.num_gpus_per_actor > 0 and torch.cuda.is_available() else "cpu"
    return HFEngine(model_dir, max_batch=rc.engine_max_batch, seed=seed, device=device, dtype=cfg.policy.dtype,
                    prefix_cache_tokens=rc.prefix_cache_tokens)


def sampling_for(cfg: S3Config, greedy: bool) -> SamplingParams:
    rc = cfg.rollout
    if greedy:
        return SamplingParams(greedy=True, max_tokens=cfg.agent.max_turn_tokens)
    return SamplingParams(temperature=rc.temperature, top_p=rc.top_p, max_tokens=cfg.agent.max_turn_tokens)


def turn0_request(cfg: S3Config, questions: list[Question], with_reward: bool) -> tuple[list[str], int]:
    """(queries, k) of the turn-0 retrieval: naive RAG's top-k for each question (answer options left out,
    as naive RAG's queries leave them); training rollouts (scored for reward) use ``agent.train_initial_k``
    when set (s3's training prompts hold 12 docs, its test prompts 3)."""
    agent = cfg.agent
    k = agent.train_initial_k if with_reward and agent.train_initial_k else agent.initial_k
    return [q.retrieval_query(cfg.inference.query_without_options) for q in questions], k


class RolloutActor:
    """The seams a test's subclass overrides (:meth:`load_tokenizer`, :meth:`build_engine`,
    :meth:`connect_retriever`) build what talks to a model or a service; everything else is this
    class's own state, so a fake actor cannot fall out of step with it."""

    def __init__(self, cfg: S3Config, model_dir: str, index: int = 0):
        from s3ray.cluster import set_torch_threads
        from s3ray.reward.services import Services

        self.cfg = cfg
        fix_mmap_threshold(cfg.rollout.malloc_mmap_threshold)  # before the engine allocates anything
        set_torch_threads(self.cfg.rollout.torch_threads_per_actor, sharers=self.cfg.rollout.num_actors)
        self.index = index
        self.services = Services(self.cfg)  # each service is built on first use
        self.tokenizer = self.load_tokenizer(model_dir)
        self.engine = self.build_engine(model_dir)
        self.retriever = self.connect_retriever()
        self.teacher = TeacherPolicy(self.tokenizer, self.cfg.agent, self.cfg.train.warm_start.teacher)
        self._scorer = None  # built on the first rewarded batch: inference never needs it
        self._in_flight = asyncio.Semaphore(self.cfg.rollout.max_episodes_in_flight)
        self.pushed_version: int | None = None  # None: the model folder's weights (a fresh or restarted actor)
        self.episodes_done: dict[str, int] = {}  # per running chunk (its progress key): for the pool's progress

    def load_tokenizer(self, model_dir: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir)

    def build_engine(self, model_dir: str):
        return build_engine(self.cfg, model_dir, seed=self.cfg.rollout.seed + self.index)

    def connect_retriever(self):
        return self.services.retriever

    @property
    def scorer(self):
        if self._scorer is None:
            # The cache of this generator/retriever/k/judge combination; an absent cache is empty and
            # every RAG term is then recomputed (and remembered) by the scorer.
            self._scorer = self.services.reward_scorer()
        return self._scorer

    async def run(self, items: list[WorkItem], greedy: bool = False, with_reward: bool = True,
                  policy: PolicyName = "model", progress_key: str = "") -> list[Episode]:
        """Episodes of the (question, sample index) items, in item order. While it runs,
        ``progress(progress_key)`` counts its finished episodes (a distinct key per concurrent call)."""
        if policy not in ("model", "heuristic"):
            raise ValueError(f"unknown rollout policy {policy!r}; known: model, heuristic")
        if not items:
            return []
        chosen_policy = self.teacher if policy == "heuristic" else EnginePolicy(self.engine)
        sampling = sampling_for(self.cfg, greedy)
        questions = {q.id: q for q, _ in items}
        ids = list(questions)
        # Turn-0 docs: one batched call for the whole batch.
        found = await self.retriever.asearch(*turn0_request(self.cfg, [questions[i] for i in ids], with_reward))
        initial = dict(zip(ids, found, strict=True))

        async def one(question_id: str, sample_index: int):
            async with self._in_flight:
                env = S3Environment(self.cfg.agent, self.retriever, self.tokenizer)
                episode = await run_episode(env, questions[question_id], initial[question_id], chosen_policy,
                                            self.tokenizer, sampling, sample_index)
            self.episodes_done[progress_key] += 1
            return episode

        self.episodes_done[progress_key] = 0
        try:
            episodes = await asyncio.gather(*(one(q.id, s) for q, s in items))
            if with_reward:
                await self.scorer.score(episodes)
        except EngineDied:
            # This process can never generate again. Ending it makes Ray restart the actor (a fresh
            # engine), and every caller sees an actor death, which the pool already recovers from.
            log.exception("rollout actor %d: its engine died; exiting so that Ray restarts it", self.index)
            logging.shutdown()
            os._exit(1)
        finally:
            del self.episodes_done[progress_key]
            if not self.episodes_done:  # idle now, through the trainer's update: hand its memory back
                release_free_heap()
        return list(episodes)

    async def progress(self, progress_key: str) -> int:
        """Finished episodes of the running call ``progress_key`` (0 once it returned)."""
        return self.episodes_done.get(progress_key, 0)

    async def running_calls(self) -> int:
        """How many ``run`` calls are under way (for fault-injection tests and debugging)."""
        return len(self.episodes_done)

    async def update_weights(self, state: dict[str, Any], version: int) -> int:
        """The object-store strategy: ``state`` arrives resolved (a top-level ref argument)."""
        await self.engine.load_state_dict(state, version)
        self.pushed_version = version
        release_free_heap()  # the old weights and the received state's copy
        return version

    async def weight_transfer(self, step: str, payload: Any = None) -> None:
        """The NCCL strategy: one step of vLLM's weight transfer (:mod:`s3ray.rollout.weight_sync`)."""
        if not hasattr(self.engine, "weight_transfer"):
            raise TypeError(f"rollout.backend={self.cfg.rollout.backend} has no NCCL weight transfer; "
                            "its weights go through the object store")
        await self.engine.weight_transfer(step, payload)
        if step == "finish":
            self.pushed_version = payload

    async def ping(self) -> dict[str, Any]:
        """Alive, and which pushed weights it holds: a restarted actor holds none, and the pool re-sends."""
        return {"index": self.index, "pushed_version": self.pushed_version, "pid": os.getpid()}
