"""The rollout pool end to end: real retriever and generator services, the tiny model, two actors."""

from __future__ import annotations

import time

import pytest

from s3ray.data.qa import load_questions

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def questions(session_cfg):
    return load_questions(session_cfg.data.dev[0].model_copy(update={"limit": 4}))


@pytest.fixture(scope="module")
def pool(services, tiny_model_dir, ray_cluster):
    from s3ray.rollout.pool import create_pool

    handle = create_pool(services, tiny_model_dir)
    assert ray_cluster.get(handle.ready.remote()) == services.rollout.num_actors == 2
    yield handle
    ray_cluster.kill(handle)


def keys(questions, samples):
    return [(q.id, s) for q in questions for s in range(samples)]


def test_sampled_episodes_with_rewards_in_input_order(pool, questions, ray_cluster):
    episodes = ray_cluster.get(pool.run.remote(questions, samples_per_question=2))
    assert [ep.key for ep in episodes] == keys(questions, 2)
    for ep in episodes:
        ep.check()
        assert ep.reward is not None and ep.acc_s3 is not None and ep.acc_rag is not None
        assert ep.context and len(ep.initial_docs) == 3 and ep.temperature == 0.6 and ep.turns
        assert sum(ep.action_mask) > 0
    stats = ray_cluster.get(pool.stats.remote())
    assert stats["episodes"] == 8 and stats["reruns"] == 0 and stats["episodes_per_s"] > 0


def test_greedy_is_reproducible_and_the_heuristic_searches(pool, questions, ray_cluster):
    two = questions[:2]
    first = ray_cluster.get(pool.run.remote(two, greedy=True, with_reward=False))
    second = ray_cluster.get(pool.run.remote(two[::-1], greedy=True, with_reward=False))[::-1]
    assert [ep.response_ids for ep in first] == [ep.response_ids for ep in second]  # whichever actor ran it
    assert all(ep.reward is None and ep.temperature == 1.0 for ep in first)
    heuristic = ray_cluster.get(pool.run.remote(two, policy="heuristic", with_reward=False))
    for ep in heuristic:
        ep.check()
        assert ep.finish == "complete" and set(ep.logprobs) == {0.0}


def test_actor_killed_mid_batch_loses_and_duplicates_nothing(pool, questions, tiny_model_dir, ray_cluster):
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert ray_cluster.get(pool.update_weights.remote([ray_cluster.put(state)], 4)) == 4
    victim = ray_cluster.get(pool.handles.remote())[0]
    batch = pool.run.remote(questions, samples_per_question=8, with_reward=False)
    deadline = time.monotonic() + 60
    while not ray_cluster.get(victim.running_calls.remote()):  # its half of the batch is under way
        assert time.monotonic() < deadline, "the victim never started its part of the batch"
        time.sleep(0.01)
    ray_cluster.kill(victim, no_restart=False)
    episodes = ray_cluster.get(batch)
    assert [ep.key for ep in episodes] == keys(questions, 8)
    for ep in episodes:
        ep.check()
        assert ep.policy_version == 4  # the restarted actor got the latest weights before re-running
    stats = ray_cluster.get(pool.stats.remote())
    assert stats["reruns"] >= 1 and stats["actors"] == 2
