"""s3's training details as options: verl's warmup factors and the value head's initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s3ray.train.policy import Critic
from s3ray.train.schedule import per_update_factor, verl_factor


def test_verl_warmup_makes_step_zero_lr_zero_even_without_warmup():
    # s3's actor: lr_warmup_steps_ratio 0 -> 0 warmup steps; the factor is min(1, t / max(1, 0)).
    assert [verl_factor(t, 0) for t in range(3)] == [0.0, 1.0, 1.0]
    # s3's critic: int(0.01 * 1500) = 15 warmup steps, so over s3's 20 steps it reaches full lr at step 15.
    factors = [verl_factor(t, 15) for t in range(20)]
    assert factors[0] == 0.0 and factors[5] == pytest.approx(1 / 3) and factors[15:] == [1.0] * 5


def test_per_update_ramp_starts_above_zero():
    assert [per_update_factor(i, 4) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert per_update_factor(0, 0) == 1.0


def test_value_head_init():
    zeros = Critic(nn.Identity(), 512)
    assert torch.count_nonzero(zeros.value_head.weight) == 0
    torch.manual_seed(0)
    normal = Critic(nn.Identity(), 512, init="normal", init_std=0.02)
    assert normal.value_head.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.count_nonzero(normal.value_head.bias) == 0
    with pytest.raises(ValueError, match="unknown value head init"):
        Critic(nn.Identity(), 8, init="xavier")


def test_the_learner_steps_verls_schedule_once_per_training_step(random_lm_dir):
    """4 optimiser updates a step (120 episodes, mini-batches of 30): the actor's lr is 0 for all of step 0,
    then full; the critic's ramps by 1/15 a step; the critic's head is verl's normal init."""
    from s3ray.config import PolicyConfig, TrainConfig
    from s3ray.train.update import build_learner

    cfg = TrainConfig(lr_warmup="verl", actor_warmup_steps=0, critic_warmup_steps=15, value_head_init="normal")
    learner = build_learner(random_lm_dir, PolicyConfig(), cfg, torch.device("cpu"))
    actor_lrs, critic_lrs = [], []
    for _ in range(8):  # two training steps of 4 updates each
        actor_lrs.append(learner.actor_optim.param_groups[0]["lr"])
        critic_lrs.append(learner.critic_optim.param_groups[0]["lr"])
        for scheduler in learner.schedulers:
            scheduler.step()
    assert actor_lrs == [0.0] * 4 + [cfg.actor_lr] * 4
    assert critic_lrs == pytest.approx([0.0] * 4 + [cfg.critic_lr / 15] * 4)
    assert torch.count_nonzero(learner.critic.value_head.weight) > 0
