"""A rollout actor that Ray's memory monitor killed is waited for like any other lost actor.

Ray 2.60 raises ``OutOfMemoryError``, not a ``RayActorError``, for a call on an actor it killed for memory:
before, that escaped the pool's restart wait, and a weight update failed the whole training run.
"""

from __future__ import annotations

import asyncio

from ray.exceptions import OutOfMemoryError

from s3ray.rollout import pool as pool_module
from s3ray.rollout.pool import RolloutPool


class Call:
    def __init__(self, method):
        self.method = method

    def remote(self, *args):
        return asyncio.ensure_future(self.method(*args))


class RestartingActor:
    """Killed for memory on its first ``lost_pings`` pings, then back (restarted), with no weights yet."""

    def __init__(self, lost_pings: int):
        self.lost_pings, self.version = lost_pings, None
        self.ping, self.update_weights = Call(self._ping), Call(self._update)

    async def _ping(self):
        if self.lost_pings:
            self.lost_pings -= 1
            raise OutOfMemoryError("1 worker(s) were killed due to the node running low on memory")
        return {"index": 0, "pid": 1, "pushed_version": self.version}

    async def _update(self, ref, version):
        self.version = version


def test_weights_reach_an_actor_that_was_killed_for_memory_once_it_is_back(monkeypatch):
    monkeypatch.setattr(pool_module, "PING_BACKOFF_S", 0.01)
    pool = RolloutPool.__new__(RolloutPool)  # the pool's logic, no Ray
    actor = RestartingActor(lost_pings=3)
    pool.actors, pool.weights = [actor], None
    assert asyncio.run(pool.update_weights(["weights ref"], 7)) == 7
    assert actor.version == 7 and pool.actors == [actor]
