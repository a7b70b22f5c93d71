"""The PPO/GRPO pieces against small hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from s3ray.train import losses


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_gamma_lambda_one_is_return_minus_value():
    adv, ret = losses.gae_advantages(t([0, 0, 1]), t([0.5, 0.2, 0.1]), t([1, 1, 1]), gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([0.5, 0.8, 0.9]))
    assert torch.allclose(ret, t([1.0, 1.0, 1.0]))


def test_gae_discounted_by_hand():
    adv, ret = losses.gae_advantages(t([0, 0, 1]), t([0.5, 0.2, 0.1]), t([1, 1, 1]), gamma=0.9, lam=0.5)
    # t=2: 1 - 0.1 = 0.9; t=1: (0.09 - 0.2) + 0.45*0.9 = 0.295; t=0: (0.18 - 0.5) + 0.45*0.295
    assert torch.allclose(adv, t([-0.18725, 0.295, 0.9]), atol=1e-6)
    assert torch.allclose(ret, adv + t([0.5, 0.2, 0.1]))


def test_gae_skips_masked_positions_as_if_absent():
    # The observation token in the middle has a large value and reward; neither may leak in.
    adv, ret = losses.gae_advantages(t([0, 5, 1]), t([0.5, 9.0, 0.1]), t([1, 0, 1]), gamma=0.9, lam=0.5)
    compact, _ = losses.gae_advantages(t([0, 1]), t([0.5, 0.1]), t([1, 1]), gamma=0.9, lam=0.5)
    assert torch.allclose(adv[:, [0, 2]], compact)
    assert torch.allclose(compact, t([-0.005, 0.9]), atol=1e-6)  # 0.09 - 0.5 + 0.45 * 0.9
    assert adv[0, 1] == 0 and ret[0, 1] == 0


def test_gae_rows_are_independent():
    rewards = t([0, 1], [1, 0])
    values = t([0.2, 0.3], [0.0, 0.0])
    adv, _ = losses.gae_advantages(rewards, values, t([1, 1], [1, 0]), gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([0.8, 0.7], [1.0, 0.0]))


def test_policy_loss_clips_by_hand():
    logp_old = t([0.0, 0.0, 0.0, 0.0])
    logp = torch.log(t([1.5, 0.5, 0.5, 7.0]))
    adv = t([1.0, 1.0, -1.0, 100.0])
    mask = t([1, 1, 1, 0])  # the last token is an observation: its huge ratio must not count
    loss, clip_frac = losses.policy_loss(logp, logp_old, adv, mask, clip_ratio=0.2)
    # per token max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8) / 3)
    assert clip_frac.item() == pytest.approx(2 / 3)


def test_policy_loss_gradient_points_along_advantage():
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = losses.policy_loss(logp, torch.zeros(1, 2), t([2.0, -1.0]), t([1, 1]), clip_ratio=0.2)
    loss.backward()
    # Descending the loss raises the log-prob of the good token and lowers the bad one's.
    assert logp.grad[0, 0] < 0 < logp.grad[0, 1]


def test_value_loss_clipped_by_hand():
    loss, clip_frac = losses.value_loss(t([1.0, 0.2]), t([0.0, 0.0]), t([1.0, 0.0]), t([1, 1]), value_clip=0.5)
    # token 0: max((1-1)^2, (0.5-1)^2) = 0.25; token 1: inside the clip range, 0.04
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.04) / 2)
    assert clip_frac.item() == pytest.approx(0.5)


def test_kl_penalized_rewards_on_action_tokens_only():
    rewards, kl = losses.kl_penalized_rewards(
        scores=torch.tensor([1.0]), last_action_index=torch.tensor([2]),
        logp_old=t([-1.0, -2.0, -3.0, -4.0]), logp_ref=t([-1.5, -2.0, -2.0, 0.0]),
        action_mask=t([1, 1, 1, 0]), kl_coef=0.1)
    assert torch.allclose(kl, t([0.5, 0.0, -1.0, 0.0]))
    assert torch.allclose(rewards, t([-0.05, 0.0, 0.1 + 1.0, 0.0]))


def test_grpo_advantages_grouped_by_question_id():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 0.3, 0.3])
    adv = losses.grpo_advantages(scores, ["a", "b", "a", "b", "c", "d", "d"], eps=0.0)
    half = 1 / math.sqrt(2)  # (1 - 0.5) / std([1, 0]) with the unbiased std
    assert torch.allclose(adv, torch.tensor([half, -half, -half, half, 0.0, 0.0, 0.0]), atol=1e-6)


def test_grpo_advantages_reject_misaligned_ids():
    with pytest.raises(ValueError, match="group ids"):
        losses.grpo_advantages(torch.zeros(3), ["a", "b"])


def test_masked_whiten_and_mean():
    x, mask = t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0])
    assert losses.masked_mean(x, mask).item() == pytest.approx(2.0)
    out = losses.masked_whiten(x, mask, eps=0.0)
    s = math.sqrt(1.5)  # 1 / sqrt(var = 2/3)
    assert torch.allclose(out, t([-s, 0.0, s, 0.0]), atol=1e-6)


def test_entropy_from_logits():
    uniform = torch.zeros(1, 1, 4)
    certain = torch.tensor([[[100.0, 0.0, 0.0, 0.0]]])
    assert losses.entropy_from_logits(uniform).item() == pytest.approx(math.log(4))
    assert losses.entropy_from_logits(certain).item() == pytest.approx(0.0, abs=1e-6)


def test_the_varied_group_share_counts_the_groups_a_grpo_step_learns_from():
    scores = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.5])
    groups = ["a", "a", "b", "b", "c", "c", "d"]  # a: all equal, b: all equal, c: varied, d: alone
    assert losses.varied_group_share(scores, groups) == pytest.approx(1 / 3)
    advantages = losses.grpo_advantages(scores, groups)  # the share is where the advantage is not 0
    assert {g for g, a in zip(groups, advantages.tolist(), strict=True) if a != 0} == {"c"}
    assert losses.varied_group_share(torch.tensor([0.3]), ["a"]) == 0.0
