"""A rollout batch reports its finished episodes while it runs, not only when it is done.

The real pool and the real rollout actor's counting, without Ray: each actor method's ``.remote`` runs it
as a task on the test's event loop, and episodes are slow stand-ins.
"""

from __future__ import annotations

import asyncio
import logging
import re

from s3ray.config import load_config
from s3ray.rollout import actor as actor_module
from s3ray.rollout.actor import RolloutActor
from s3ray.rollout.pool import RolloutPool
from s3ray.types import Question

EPISODE_S = 0.05


class Remote:
    """``actor.method.remote(...)`` as Ray's async actor call: an awaitable that runs concurrently."""

    def __init__(self, method):
        self.method = method

    def remote(self, *args, **kwargs):
        return asyncio.ensure_future(self.method(*args, **kwargs))


class LocalHandle:
    def __init__(self, actor: RolloutActor):
        self.run, self.ping, self.progress = Remote(actor.run), Remote(actor.ping), Remote(actor.progress)


class NoRetrieval:
    async def asearch(self, queries, k):
        return [[] for _ in queries]


async def slow_episode(env, question, initial_docs, policy, tokenizer, sampling, sample_index):
    await asyncio.sleep(EPISODE_S)
    return (question.id, sample_index)


def local_actor(cfg, index: int) -> RolloutActor:
    actor = RolloutActor.__new__(RolloutActor)  # no engine, tokenizer or services: slow_episode needs none
    actor.cfg, actor.index, actor.pushed_version = cfg, index, None
    actor.engine = actor.teacher = actor.tokenizer = None
    actor.retriever = NoRetrieval()
    actor._in_flight = asyncio.Semaphore(1)  # one episode at a time: 8 per actor take 0.4 s
    actor.episodes_done = {}
    return actor


def test_a_running_batch_logs_episodes_done_with_eta(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(actor_module, "run_episode", slow_episode)
    monkeypatch.setattr("s3ray.rollout.pool.PROGRESS_POLL_MIN_S", 0.1)
    cfg = load_config("test", [f"paths.work_dir={tmp_path}", "tracking.progress_every_s=0.1"])
    questions = [Question(f"q{i}", f"question {i}?", ("a",), "hotpotqa") for i in range(4)]

    async def batch():
        pool = RolloutPool.__new__(RolloutPool)
        pool.cfg, pool.weights, pool.last_stats = cfg, None, {}
        actors = [local_actor(cfg, i) for i in range(2)]
        pool.actors = [LocalHandle(a) for a in actors]
        episodes = await pool.run(questions, samples_per_question=4, with_reward=False)
        return episodes, actors

    with caplog.at_level(logging.INFO, logger="s3ray.rollout.pool"):
        episodes, actors = asyncio.run(batch())
    assert episodes == [(f"q{i}", s) for i in range(4) for s in range(4)]
    assert all(a.episodes_done == {} for a in actors)  # each call's count is gone once it returned
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rollout batch:")]
    done = [int(re.match(r"rollout batch: (\d+)/16 episodes \| .* \| ETA ", line).group(1)) for line in lines]
    assert any(0 < n < 16 for n in done), lines  # counted while the chunks still ran
    assert done == sorted(done) and done[-1] == 16 and lines[-1].endswith("| 0 chunks re-run")
