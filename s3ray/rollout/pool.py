"""The rollout pool: one named async actor that owns ``rollout.num_actors`` rollout actors.

``run`` splits the (question, sample) items of a batch into one near-equal chunk per live actor
(contiguous: a question's samples mostly share an actor, and so its turn-0 retrieval) and gathers the
episodes in input order. An actor that dies mid-batch loses only its chunk's unfinished work: Ray
restarts it (``max_restarts``; ``max_task_retries=0``, so Ray itself never re-runs a chunk behind our
back), the pool brings it to the latest weights, and the chunk runs again, on the restarted actor or,
once its restarts are spent, on another live one. An actor whose engine died (vLLM's engine-core
process) ends its own process (:mod:`s3ray.rollout.actor`), so that is the same case. Results are taken
only from completed chunks, so no episode is lost or duplicated.

Weights arrive by one of the two strategies of :mod:`s3ray.rollout.weight_sync`. Object store:
``update_weights([ref], version)`` gets the state's ref inside a list, so the pool never deserialises
it; it hands the ref to every actor (each reads it from the object store) and remembers it, and a
restarted actor gets the ref again before it takes work. NCCL (vLLM): ``weight_transfer(step,
payload)`` fans vLLM's weight-transfer calls out to the actors, and ``transfer_members()`` tells the
trainer which actors form the group. Only the trainer can send those weights again, so a restarted
actor takes no work until it has them: when one is waiting at the start of a batch, or when a death
leaves no live actor holding the latest weights mid-batch, ``run`` raises :class:`WeightsNeeded` and
keeps the batch's finished episodes; the trainer publishes again (which re-forms the group with the
restarted actor) and calls ``resume()`` for the rest (``s3ray.train.trainer.collect``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3ray.agent.episode import Episode
from s3ray.config import S3Config
from s3ray.progress import ProgressLog, show_info_logs
from s3ray.types import Question

log = logging.getLogger(__name__)

POOL_NAME = "rollout_pool"
# A just-killed actor refuses calls until Ray marks it restarting (then calls wait for the restart): on a
# loaded 2-core machine that took over the 5 s of the first rule here (5 pings a second apart), and the
# pool dropped an actor that came back. An actor whose restarts are spent is dropped after this wait.
RESTART_WAIT_S = 60.0
PING_BACKOFF_S = 1.0
PROGRESS_POLL_MIN_S = 1.0  # with tracking.progress_every_s=0, the actors are asked at most once a second


def actor_lost_errors() -> tuple[type[BaseException], ...]:
    """What a call raises when its actor's process died: ``RayActorError``, or ``OutOfMemoryError`` when
    Ray's memory monitor killed it (not a ``RayActorError`` in Ray 2.60). The actor restarts either way."""
    from ray.exceptions import OutOfMemoryError, RayActorError

    return RayActorError, OutOfMemoryError


class WeightsNeeded(RuntimeError):
    """A live rollout actor lacks the latest weights and only the trainer can send them (they came over
    NCCL and the actor restarted since). The pool keeps the batch: publish again, then ``resume()``."""


@dataclass
class Batch:
    """A batch in progress: its (question, sample) items, the options of each actor call, and the
    episodes of the chunks that finished (None where none has yet)."""

    items: list[tuple[Question, int]]
    options: dict[str, Any]
    episodes: list[Episode | None]
    started: float
    reruns: int = 0

    def unfinished(self) -> list[int]:
        return [i for i, episode in enumerate(self.episodes) if episode is None]


def split_evenly(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``parts`` contiguous, non-empty (when n allows) ranges of near-equal size."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (i < extra)
        if size:
            out.append(range(start, start + size))
        start += size
    return out


class RolloutPool:
    def __init__(self, cfg: S3Config, model_dir: str, actor_class: type | None = None):
        """``actor_class``: the rollout actor's class (default :class:`~s3ray.rollout.actor.RolloutActor`;
        tests give a subclass over fake engines)."""
        import ray

        from s3ray.rollout.actor import RolloutActor

        show_info_logs()
        self.cfg = cfg
        rc = cfg.rollout
        if rc.num_actors < 1:
            raise ValueError("rollout.num_actors must be >= 1")
        actor_cls = ray.remote(actor_class or RolloutActor).options(
            num_cpus=rc.num_cpus_per_actor, num_gpus=rc.num_gpus_per_actor,
            max_restarts=rc.max_actor_restarts, max_task_retries=0)
        self.actors = [actor_cls.remote(cfg, model_dir, i) for i in range(rc.num_actors)]
        # The latest weights: (object ref of the state, or None when they came over NCCL; version).
        self.weights: tuple[Any, int] | None = None
        self.last_stats: dict[str, float] = {}
        self.batch: Batch | None = None  # the batch that ``resume`` continues

    async def update_weights(self, refs: list, version: int) -> int:
        """``refs``: ``[ObjectRef of the state]``. Nested, so Ray hands the pool the ref, not the state."""
        [ref] = refs
        self.weights = (ref, version)
        await asyncio.gather(*(self._ready(a) for a in list(self.actors)))
        return version

    async def transfer_members(self) -> list[tuple[int, int]]:
        """The live actors as (index, pid), in the order :meth:`weight_transfer` numbers them: an NCCL
        group formed with these is stale once this list changes (an actor restarted or died)."""
        await self._up()
        infos = await asyncio.gather(*(a.ping.remote() for a in self.actors))
        return [(info["index"], info["pid"]) for info in infos]

    async def weight_transfer(self, step: str, payload: Any = None) -> None:
        """One vLLM weight-transfer call on every actor's engine, concurrently (they meet in NCCL).
        ``init`` gives the i-th actor's workers the ranks after the trainer's and the earlier actors'."""
        from s3ray.rollout.weight_sync import WORKERS_PER_ENGINE

        calls = []
        for i, actor in enumerate(self.actors):
            arg = payload
            if step == "init":
                arg = {**payload, "rank_offset": payload["rank_offset"] + i * WORKERS_PER_ENGINE}
            calls.append(actor.weight_transfer.remote(step, arg))
        await asyncio.gather(*calls)
        if step == "finish":
            self.weights = (None, payload)

    async def ready(self) -> int:
        """Wait until every actor is up (engines loaded) and holds the latest weights; the number of
        actors that can run a batch."""
        return len(await self._up())

    async def _up(self) -> list:
        """The live actors that hold the latest weights (live ones that cannot get them sit out)."""
        actors = list(self.actors)
        current = await asyncio.gather(*(self._ready(a) for a in actors))
        return [a for a, ok in zip(actors, current, strict=True) if ok and a in self.actors]

    async def stats(self) -> dict[str, float]:
        """The last batch: episodes, seconds, episodes_per_s, reruns (chunks re-run), live actors."""
        return dict(self.last_stats)

    async def handles(self) -> list:
        """The live rollout actors (for fault-injection tests and debugging)."""
        return list(self.actors)

    async def _ready(self, actor) -> bool:
        """Ping ``actor`` (waiting out a restart) and bring it to the latest weights; False if it is gone
        for good (restarts spent, and then it leaves the pool) or cannot get them (NCCL weights)."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                info = await actor.ping.remote()
                if self.weights is not None and info["pushed_version"] != self.weights[1]:
                    ref, version = self.weights
                    if ref is None:
                        log.warning("rollout actor %d restarted after an NCCL weight transfer: it takes no "
                                    "work until the trainer publishes again", info["index"])
                        return False
                    await actor.update_weights.remote(ref, version)  # top level: the actor resolves it
                return True
            except actor_lost_errors():
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(PING_BACKOFF_S)
        log.warning("rollout actor %s is gone (no answer for %.0f s); %d actors left", actor, RESTART_WAIT_S,
                    len(self.actors) - 1)
        if actor in self.actors:
            self.actors.remove(actor)
        return False

    async def run(self, questions: list[Question], greedy: bool = False, samples_per_question: int = 1,
                  with_reward: bool = True, policy: str = "model") -> list:
        """Episodes for every (question, sample), in question order then sample index. Raises
        :class:`WeightsNeeded` (keeping the batch for :meth:`resume`) when an actor waits for NCCL weights."""
        items = [(q, s) for q in questions for s in range(samples_per_question)]
        if not items:
            return []
        self.batch = Batch(items, {"greedy": greedy, "with_reward": with_reward, "policy": policy},
                           [None] * len(items), time.perf_counter())
        return await self._finish(self.batch)

    async def resume(self) -> list:
        """The whole batch that :meth:`run` stopped with :class:`WeightsNeeded`, after the trainer published
        again: only its unfinished items run now."""
        if self.batch is None:
            raise RuntimeError("no unfinished rollout batch to resume")
        return await self._finish(self.batch)

    def _missing(self) -> RuntimeError:
        """Why a batch cannot run on every actor: weights only the trainer can send, or no actor left."""
        if self.actors:
            return WeightsNeeded(f"{len(self.actors)} rollout actors, some restarted after an NCCL weight "
                                 "transfer: publish again, then resume the batch")
        return RuntimeError("no live rollout actor: their restarts (rollout.max_actor_restarts) are spent")

    async def _finish(self, batch: Batch) -> list:
        live = await self._up()
        if not live or len(live) < len(self.actors):  # a restarted actor waits for the trainer's weights
            raise self._missing()
        running: dict[asyncio.Future, tuple[Any, list[int]]] = {}
        batch_key = uuid.uuid4().hex  # with a chunk's first item: its progress key on the actor

        def submit(actor, chunk: list[int]) -> None:
            ref = actor.run.remote([batch.items[i] for i in chunk], **batch.options,
                                   progress_key=f"{batch_key}:{chunk[0]}")
            running[asyncio.ensure_future(ref)] = (actor, chunk)

        todo = batch.unfinished()
        for actor, part in zip(live, split_evenly(len(todo), len(live)), strict=False):
            submit(actor, [todo[i] for i in part])
        progress = ProgressLog(log, "rollout batch", len(batch.items), "episode", self.cfg.tracking.progress_every_s)
        reporter = asyncio.ensure_future(self._report_progress(progress, batch.episodes, running, batch_key))
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                actor, chunk = running.pop(task)
                try:
                    episodes = task.result()
                except actor_lost_errors() as exc:
                    batch.reruns += 1
                    log.warning("rollout actor died mid-batch (%s); re-running its %d episodes", exc, len(chunk))
                    if not await self._ready(actor):
                        live = await self._up()
                        if not live:  # every task left is on an actor that restarted or is gone: it fails
                            await asyncio.gather(*running, return_exceptions=True)
                            raise self._missing() from exc
                        busy = {a: 0 for a in live}
                        for a, c in running.values():
                            if a in busy:  # not one whose failure is still to be seen
                                busy[a] += len(c)
                        actor = min(live, key=lambda a: busy[a])
                    submit(actor, chunk)
                    continue
                if len(episodes) != len(chunk):
                    raise RuntimeError(f"a rollout actor returned {len(episodes)} episodes for {len(chunk)} items")
                for i, episode in zip(chunk, episodes, strict=True):
                    batch.episodes[i] = episode
        reporter.cancel()
        self.batch = None
        n, seconds = len(batch.items), time.perf_counter() - batch.started
        self.last_stats = {"episodes": n, "seconds": seconds, "episodes_per_s": n / seconds,
                           "reruns": batch.reruns, "actors": len(self.actors)}
        progress.update(n, f"{batch.reruns} chunks re-run")
        return batch.episodes

    @staticmethod
    async def _report_progress(progress: ProgressLog, results: list, running: dict[asyncio.Future, tuple[Any, list[int]]],
                               batch_key: str) -> None:
        """Log the batch's finished episodes while it runs: those of returned chunks, and those the
        running chunks' actors count. Ends by itself once no chunk is pending (a batch that raised too)."""
        while not all(task.done() for task in running):
            await asyncio.sleep(max(progress.every_s, PROGRESS_POLL_MIN_S))
            chunks = list(running.values())
            counts = await asyncio.gather(*(actor.progress.remote(f"{batch_key}:{chunk[0]}")
                                            for actor, chunk in chunks), return_exceptions=True)
            # A chunk that returned meanwhile is in results already; a dying actor's call fails (0 for now).
            partial = sum(c for (_, chunk), c in zip(chunks, counts, strict=True)
                          if isinstance(c, int) and results[chunk[0]] is None)
            progress.update(sum(r is not None for r in results) + partial)


def create_pool(cfg: S3Config, model_dir: str | Path, name: str = POOL_NAME):
    """Start the pool named ``name`` (an old one, from an earlier run in this namespace, is replaced).
    Pools that may run at once need their own names: the inference stage runs one per s3 row."""
    import ray

    try:
        old = ray.get_actor(name)
    except ValueError:
        old = None
    if old is not None:
        ray.kill(old)  # its rollout actors are owned by it and die with it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the name is released once the kill is processed
            try:
                ray.get_actor(name)
            except ValueError:
                break
            time.sleep(0.2)
    return ray.remote(RolloutPool).options(name=name, num_cpus=0, max_restarts=0).remote(
        cfg, str(model_dir))
