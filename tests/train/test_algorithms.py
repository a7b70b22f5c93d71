"""The algorithm objects: what each carries, Dr. GRPO's unscaled group advantages and its constant loss
denominator, on the real update code."""

from __future__ import annotations

import pytest
import torch

from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train.algorithms import ALGORITHMS, DrGRPO, algorithm_for
from s3ray.train.batch import collate_episodes
from s3ray.train.update import accumulate_gradients, build_learner, prepare_batch

from .test_update_mechanics import CPU, random_episodes


def test_each_algorithm_carries_its_critic_and_samples():
    cfg = TrainConfig(algorithm="grpo", grpo_group_size=4)
    assert [(name, a.uses_critic, a.samples_per_question(cfg)) for name, a in ALGORITHMS.items()] == \
        [("ppo", True, 1), ("grpo", False, 4), ("dr_grpo", False, 4)]
    assert isinstance(algorithm_for(TrainConfig(algorithm="dr_grpo", grpo_group_size=2)), DrGRPO)


def test_dr_grpo_centres_group_scores_without_dividing_by_their_std():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.5])
    groups = ["a", "a", "a", "a", "b", "b", "c"]
    dr = ALGORITHMS["dr_grpo"].episode_advantages(scores, groups)
    torch.testing.assert_close(dr, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0]))
    grpo = ALGORITHMS["grpo"].episode_advantages(scores, groups)
    assert grpo[0] / dr[0] == pytest.approx(1 / scores[:4].std().item(), rel=1e-4)  # GRPO's std division


def _actor_gradient(model_dir, prepared, cfg) -> torch.Tensor:
    learner = build_learner(model_dir, PolicyConfig(), cfg, CPU)
    accumulate_gradients(prepared, torch.arange(len(prepared)), learner, cfg)
    return torch.cat([p.grad.flatten() for p in learner.actor.parameters() if p.grad is not None])


def test_dr_grpo_divides_summed_token_losses_by_a_constant_per_episode(random_lm_dir):
    """Same experience, same weights: Dr. GRPO's gradient is GRPO's (a token mean) times
    action tokens / (episodes x dr_grpo_max_tokens), so it grows with the episodes' length."""
    episodes = random_episodes(8, seed=5)
    for i, ep in enumerate(episodes):
        ep.question_id = f"g{i // 4}"
    shape = dict(grpo_group_size=4, batch_size=2, mini_batch_size=8, micro_batch_size=3, kl_coef=0.0,
                 entropy_coef=0.01, dr_grpo_max_tokens=7)
    dr_cfg, grpo_cfg = TrainConfig(algorithm="dr_grpo", **shape), TrainConfig(algorithm="grpo", **shape)
    prepared, _ = prepare_batch(collate_episodes(episodes, pad_id=0),
                                build_learner(random_lm_dir, PolicyConfig(), dr_cfg, CPU), dr_cfg)
    assert prepared.advantages.abs().sum() > 0
    tokens = prepared.action_mask.sum()
    dr, grpo = _actor_gradient(random_lm_dir, prepared, dr_cfg), _actor_gradient(random_lm_dir, prepared, grpo_cfg)
    assert grpo.abs().sum() > 0
    torch.testing.assert_close(dr, grpo * tokens / (len(episodes) * 7), rtol=1e-4, atol=1e-8)
