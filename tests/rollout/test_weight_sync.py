"""The weight-sync seam without Ray or vLLM: the pool forwards object-store refs untouched and re-sends
them to a restarted actor; over NCCL it numbers the engines' ranks, records the version, leaves a
restarted actor out of batches, and the trainer side re-forms the group when the members change."""

from __future__ import annotations

import asyncio
import types

import pytest
import torch
from ray.exceptions import OutOfMemoryError, RayActorError

from s3ray.config import load_config
from s3ray.rollout import weight_sync
from s3ray.rollout.pool import RolloutPool, WeightsNeeded
from s3ray.rollout.weight_sync import NcclSync, ObjectStoreSync, strategy_for

from .fake_vllm import FakeTrainerEngine, FakeWeightSource, fake_trainer_side
from .fakes import DictWeights


class Remote:
    """``handle.method.remote(...)`` of a Ray actor, answered by a local coroutine."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class FakeActor:
    def __init__(self, index: int):
        self.index, self.pid, self.pushed_version = index, 1000 + index, None
        self.received: list = []
        self.ran: list = []
        self.ping, self.update_weights = Remote(self._ping), Remote(self._update_weights)
        self.weight_transfer, self.run = Remote(self._weight_transfer), Remote(self._run)

    async def _ping(self):
        return {"index": self.index, "pushed_version": self.pushed_version, "pid": self.pid}

    async def _update_weights(self, state, version):
        self.received.append(state)
        self.pushed_version = version
        return version

    async def _weight_transfer(self, step, payload=None):
        self.received.append((step, payload))
        if step == "finish":
            self.pushed_version = payload

    async def _run(self, items, **kwargs):
        self.ran.append(len(items))
        return [f"episode {q['id']}/{s}" for q, s in items]

    def restart(self):  # what Ray does: a new process with the model folder's weights
        self.pid += 100
        self.pushed_version = None


def fake_pool(n: int) -> RolloutPool:
    pool = RolloutPool.__new__(RolloutPool)  # the real pool's logic over local actors
    pool.actors, pool.weights, pool.last_stats, pool.batch = [FakeActor(i) for i in range(n)], None, {}, None
    pool.cfg = load_config("test")  # its progress interval
    return pool


QUESTIONS = [{"id": f"q{i}"} for i in range(4)]


def test_strategy_follows_the_backend():
    assert strategy_for("vllm") == "nccl" and strategy_for("hf") == "object_store"


def test_object_store_ref_reaches_the_actors_untouched_and_again_after_a_restart():
    pool = fake_pool(2)
    ref = object()  # stands for an ObjectRef: the pool must pass it on, never resolve it
    assert asyncio.run(pool.update_weights([ref], 3)) == 3
    assert [a.received for a in pool.actors] == [[ref], [ref]]
    pool.actors[1].restart()
    assert asyncio.run(pool.ready()) == 2
    assert pool.actors[1].received == [ref, ref] and pool.actors[1].pushed_version == 3


def test_object_store_sync_nests_the_ref_on_rank_0_only(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "put", lambda value: ("ref", tuple(value)))
    monkeypatch.setattr(ray, "get", lambda value, timeout=None: value)
    pool = types.SimpleNamespace(update_weights=Remote(lambda refs, version: calls.append((refs, version))))
    weights = DictWeights({"w": torch.ones(2)})
    ObjectStoreSync(pool).publish(weights, 5)
    assert calls == [([("ref", ("w",))], 5)]  # a list holding the ref: Ray leaves nested refs alone
    assert weights.iterations == 1


def nccl_publish(pool: RolloutPool, version: int) -> None:
    for step, payload in (("start", None), ("update", {"names": ["w"]}), ("finish", version)):
        asyncio.run(pool.weight_transfer(step, payload))


def test_nccl_transfer_numbers_the_engines_and_a_restarted_actor_waits_for_the_next_publish():
    pool = fake_pool(3)
    init = {"master_address": "10.0.0.1", "master_port": 1234, "rank_offset": 1, "world_size": 4}
    asyncio.run(pool.weight_transfer("init", init))
    assert [a.received[0][1]["rank_offset"] for a in pool.actors] == [1, 2, 3]
    nccl_publish(pool, 9)
    assert all(a.pushed_version == 9 for a in pool.actors) and pool.weights == (None, 9)
    pool.actors[0].restart()
    members = asyncio.run(pool.transfer_members())
    assert [m[0] for m in members] == [0, 1, 2] and members[0][1] == 1100  # still a member: it must rejoin
    with pytest.raises(WeightsNeeded):  # only the trainer can send its weights: nothing runs yet
        asyncio.run(pool.run(QUESTIONS, samples_per_question=2))
    assert all(a.ran == [] for a in pool.actors)
    nccl_publish(pool, 9)
    episodes = asyncio.run(pool.resume())
    assert episodes == [f"episode {q['id']}/{s}" for q in QUESTIONS for s in range(2)]
    assert [sum(a.ran) for a in pool.actors] == [3, 3, 2]  # the restarted actor took its share
    with pytest.raises(RuntimeError, match="no unfinished rollout batch"):
        asyncio.run(pool.resume())


def test_two_nccl_actors_dying_in_one_batch_leave_it_to_the_third():
    pool = fake_pool(3)
    nccl_publish(pool, 9)
    for actor in pool.actors[:2]:
        async def die(items, actor=actor, **kwargs):
            actor.restart()  # back without the NCCL weights: it takes no more work in this batch
            raise RayActorError()

        actor.run = Remote(die)
    episodes = asyncio.run(pool.run(QUESTIONS, samples_per_question=2))
    assert episodes == [f"episode {q['id']}/{s}" for q in QUESTIONS for s in range(2)]
    assert sorted(pool.actors[2].ran) == [2, 3, 3]  # its own chunk, then each dead actor's
    assert pool.last_stats["reruns"] == 2


@pytest.fixture
def fake_vllm(monkeypatch):
    import ray

    fake_trainer_side(monkeypatch)
    monkeypatch.setattr(ray, "get", lambda value, timeout=None: value)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.1")
    return FakeTrainerEngine


class LocalPoolHandle:
    """The pool actor's handle, running the real pool's coroutines."""

    def __init__(self, pool: RolloutPool):
        self.pool = pool
        for name in ("transfer_members", "weight_transfer"):
            setattr(self, name, Remote(lambda *a, _name=name: asyncio.run(getattr(pool, _name)(*a))))


def test_nccl_sync_forms_the_group_once_and_again_after_a_restart(fake_vllm):
    pool = fake_pool(2)
    sync = NcclSync(LocalPoolHandle(pool), device="cpu")
    state = DictWeights({"a.weight": torch.ones(2, 3, dtype=torch.bfloat16), "b.bias": torch.zeros(4, dtype=torch.bfloat16)})
    sync.publish(state, 1)
    sync.publish(state, 2)
    assert state.iterations == 2  # once per publish
    [engine] = fake_vllm.made
    assert engine.init_info.world_size == 3  # the trainer and one worker per engine
    assert engine.sent == [[("a.weight", torch.bfloat16, (2, 3)), ("b.bias", torch.bfloat16, (4,))]] * 2
    assert all(a.pushed_version == 2 for a in pool.actors)
    assert [s for s, _ in pool.actors[1].received] == ["init"] + ["start", "update", "finish"] * 2
    pool.actors[1].restart()
    sync.publish(state, 3)
    assert len(fake_vllm.made) == 2 and engine.closed  # a fresh group, with the restarted actor in it
    assert engine.model_update_group.destroyed  # the old communicator aborted, not only dropped
    assert not fake_vllm.made[1].model_update_group.destroyed
    assert fake_vllm.made[1].init_info.master_port != 0
    assert [a.pushed_version for a in pool.actors] == [3, 3]


def test_a_transfer_step_that_never_finishes_fails_naming_it(monkeypatch):
    import ray
    from ray.exceptions import GetTimeoutError

    cancelled = []

    def never(ref, timeout=None):
        assert timeout == 7.0
        raise GetTimeoutError("timed out")

    monkeypatch.setattr(ray, "get", never)
    monkeypatch.setattr(ray, "cancel", cancelled.append)
    client = weight_sync.PoolWeightSyncClient(LocalPoolHandle(fake_pool(1)), timeout_s=7.0)
    with pytest.raises(TimeoutError, match=r"weight-transfer step 'update' did not finish within 7.0 s"):
        client.update_weights({"names": []})
    assert len(cancelled) == 1  # nothing left waiting on the call


# A crash, or Ray's memory monitor (OutOfMemoryError, not a RayActorError in Ray 2.60)
@pytest.mark.parametrize("lost", [RayActorError(), OutOfMemoryError("killed for memory")], ids=type)
def test_an_actor_that_dies_between_membership_and_init_is_handled(fake_vllm, lost):
    pool = fake_pool(2)
    dying = pool.actors[1]
    answer = dying._weight_transfer

    async def die_at_first_init(step, payload=None):
        if step == "init" and dying.pid == 1001:
            dying.restart()  # Ray restarts it; the call that was in flight fails
            raise lost
        return await answer(step, payload)

    dying.weight_transfer = Remote(die_at_first_init)
    sync = NcclSync(LocalPoolHandle(pool), device="cpu")
    sync.publish(DictWeights({"a.weight": torch.ones(2, 3)}), 1)
    [engine] = fake_vllm.made  # the second attempt formed the group
    assert engine.init_info.world_size == 3 and sync.members == [(0, 1000), (1, 1101)]
    assert [a.pushed_version for a in pool.actors] == [1, 1]


def test_the_sent_source_is_a_weight_source_with_its_group_api(fake_vllm):
    pool = fake_pool(1)
    sync = NcclSync(LocalPoolHandle(pool), device="cpu")
    weights = DictWeights({"a.weight": torch.ones(2, 3, dtype=torch.bfloat16), "b.bias": torch.zeros(4, dtype=torch.bfloat16)})
    sync.publish(weights, version=1)
    assert fake_vllm.made[0].source.weights is None  # the group keeps nothing of a finished publish
    source = weight_sync.weight_source(weights, "cpu")
    assert isinstance(source, FakeWeightSource) and source.held_names() is None
    groups = list(source.iter_groups())
    assert [names for names, _ in groups] == [["a.weight"], ["b.bias"]]
    assert all(t.dtype == torch.bfloat16 for _, tensors in groups for t in tensors)


def test_weight_sync_for_the_config():
    cfg = types.SimpleNamespace(rollout=types.SimpleNamespace(backend="vllm", transfer_timeout_s=5.0))
    sync = weight_sync.weight_sync_for(cfg, None)
    assert isinstance(sync, NcclSync) and sync.timeout_s == sync.client.timeout_s == 5.0
    cfg.rollout.backend = "hf"
    assert isinstance(weight_sync.weight_sync_for(cfg, None), ObjectStoreSync)


def test_a_state_with_tied_weights_can_be_written_for_vllm_to_reload(tmp_path):
    from safetensors.torch import load_file, save_file

    from s3ray.rollout.engine.vllm import _contiguous_copies

    embed = torch.randn(5, 3)
    state = {"embed.weight": embed, "lm_head.weight": embed, "proj.weight": torch.randn(3, 4).t()}
    save_file(_contiguous_copies(state), str(tmp_path / "model.safetensors"))  # shared or strided would raise
    back = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in state.items())
