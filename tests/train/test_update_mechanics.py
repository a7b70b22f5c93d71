"""The update's mechanics on a tiny random LM: the gradient does not depend on how a mini-batch is cut
into micro-batches, the critic's update reduces its value error, and chunked log-probs equal unchunked ones
in value and gradient."""

from __future__ import annotations

import random

import torch

from s3ray.agent.episode import Episode
from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import load_policy, token_logprobs
from s3ray.train.update import accumulate_gradients, build_learner, ppo_epochs, prepare_batch

CPU = torch.device("cpu")


def random_episodes(n: int, seed: int = 0) -> list[Episode]:
    """Episodes of different prompt and response lengths, with observation tokens between actions."""
    rng = random.Random(seed)
    episodes = []
    for i in range(n):
        r = rng.randint(1, 9)
        episodes.append(Episode(question_id=f"q{i}", question="", golden_answers=[], source="random",
                                prompt_ids=[rng.randrange(1, 60) for _ in range(rng.randint(2, 6))],
                                response_ids=[rng.randrange(1, 60) for _ in range(r)],
                                action_mask=[1] + [int(rng.random() < 0.7) for _ in range(r - 1)],
                                logprobs=[0.0] * r, temperature=1.0, reward=rng.random()))
    return episodes


def mini_batch_gradients(model_dir, micro_batch_size: int) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(micro_batch_size=micro_batch_size, mini_batch_size=30, batch_size=30, entropy_coef=0.01)
    learner = build_learner(model_dir, PolicyConfig(), cfg, CPU)
    prepared, _ = prepare_batch(collate_episodes(random_episodes(30), pad_id=0), learner, cfg)
    accumulate_gradients(prepared, torch.randperm(30, generator=torch.Generator().manual_seed(0)), learner, cfg)
    return {f"{role}.{n}": p.grad.clone() for role, model in (("actor", learner.actor), ("critic", learner.critic))
            for n, p in model.named_parameters() if p.grad is not None}


def test_micro_batch_size_does_not_change_the_gradient(random_lm_dir):
    whole, halves = mini_batch_gradients(random_lm_dir, 30), mini_batch_gradients(random_lm_dir, 15)
    assert whole.keys() == halves.keys()
    assert any(g.abs().sum() > 0 for k, g in whole.items() if k.startswith("actor"))
    assert any(g.abs().sum() > 0 for k, g in whole.items() if k.startswith("critic"))
    for name, grad in whole.items():
        torch.testing.assert_close(halves[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_the_update_reduces_the_value_error(random_lm_dir):
    cfg = TrainConfig(batch_size=8, mini_batch_size=8, micro_batch_size=4, critic_lr=1e-3, actor_lr=0.0)
    learner = build_learner(random_lm_dir, PolicyConfig(), cfg, CPU)
    batch = collate_episodes(random_episodes(8, seed=1), pad_id=0)

    def value_error() -> float:
        prepared, _ = prepare_batch(batch, learner, cfg)  # gamma = lam = 1: returns do not depend on V
        err = (prepared.values_old - prepared.returns) ** 2
        return float((err * prepared.value_mask).sum() / prepared.value_mask.sum())

    errors = [value_error()]
    for _ in range(10):
        prepared, _ = prepare_batch(batch, learner, cfg)
        ppo_epochs(prepared, learner, cfg, num_minibatches=1)
        errors.append(value_error())
    assert errors[-1] < 0.5 * errors[0], errors


def test_chunked_logprobs_equal_unchunked_in_value_and_gradient(random_lm_dir):
    model = load_policy(random_lm_dir, PolicyConfig())
    batch = collate_episodes(random_episodes(6, seed=2), pad_id=0)
    temperature = torch.linspace(0.5, 1.5, 6)
    results = []
    for chunk in (None, 7):  # 7 tokens over 6 rows: one position per chunk
        model.zero_grad()
        logp, entropy = token_logprobs(model, batch, temperature, with_entropy=True, chunk_tokens=chunk)
        ((logp * batch.action_mask).sum() + entropy.sum()).backward()
        results.append((logp.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters()]))
    (logp_a, ent_a, grads_a), (logp_b, ent_b, grads_b) = results
    assert (logp_a != 0).any()
    torch.testing.assert_close(logp_b, logp_a)
    torch.testing.assert_close(ent_b, ent_a)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a)
    with torch.no_grad():  # without autograd the head is not checkpointed; the numbers stay the same
        logp_c, _ = token_logprobs(model, batch, temperature, chunk_tokens=7)
    torch.testing.assert_close(logp_c, logp_a)
