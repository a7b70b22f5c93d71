"""The RL algorithm of a run (``train.algorithm``): one object per algorithm, holding everything that
differs between them. That is whether it trains a critic, how many episodes it samples per question, its
advantages, its extra loss terms and what its summed token losses are divided by. The update
(:mod:`s3ray.train.update`) asks the object and never checks the algorithm's name, so a new algorithm is
a new class here (and its name in ``TrainConfig.algorithm``).

* PPO: a critic, GAE over the KL-penalised reward (the KL is a reward term), whitened advantages.
* GRPO: no critic; ``train.grpo_group_size`` episodes per question, advantages normalised within each
  question's group; the KL to the reference is a k3 loss term (:mod:`s3ray.train.losses`).
* Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): GRPO without its two biases. Group
  advantages are centred but not divided by the group's std, and the token losses are summed and divided
  by a constant (``train.dr_grpo_max_tokens`` per episode), not by the episode's length. A long wrong
  answer is then penalised as much per token as a short one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from s3ray.train import distributed, losses
from s3ray.train.batch import Experience

if TYPE_CHECKING:
    from s3ray.config import TrainConfig


def global_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the masked positions of every rank's shard."""
    stats = distributed.all_reduce_sum(torch.stack([(x * mask).sum(), mask.sum()]))
    return stats[0] / stats[1].clamp(min=1)


class Algorithm:
    """Defaults: no critic, one episode per question, no extra loss term, a token mean."""

    uses_critic = False

    def samples_per_question(self, cfg: TrainConfig) -> int:
        return 1

    def advantages(self, exp: Experience, cfg: TrainConfig) -> tuple[Experience, dict[str, float]]:
        """``exp`` (with ``logp_old``, ``logp_ref`` and, with a critic, ``values_old``) with its
        ``advantages`` (and ``value_mask``, ``returns``) set; metrics."""
        raise NotImplementedError

    def extra_loss(self, logp: torch.Tensor, micro: Experience, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
        """A loss term beside the clipped surrogate and the entropy bonus, summed over action tokens."""
        return logp.new_zeros(()), {}

    def extra_loss_is_zero(self, exp: Experience, cfg: TrainConfig) -> bool:
        """Whether :meth:`extra_loss` is 0 with no gradient on every row of ``exp``: then a row whose
        advantage is 0 everywhere adds nothing to the loss, and the update skips it."""
        return True

    def loss_denominator(self, action_tokens: torch.Tensor, episodes: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        """What a mini-batch's summed token losses are divided by (``action_tokens`` and ``episodes`` are
        counted over all ranks): its action-token count, a token mean."""
        return action_tokens.clamp(min=1)


class PPO(Algorithm):
    uses_critic = True

    def advantages(self, exp: Experience, cfg: TrainConfig) -> tuple[Experience, dict[str, float]]:
        if exp.values_old is None:
            raise ValueError("PPO needs a critic")
        action = exp.action_mask
        logp_ref = exp.logp_old if exp.logp_ref is None else exp.logp_ref
        rewards, _ = losses.kl_penalized_rewards(exp.scores, exp.last_action_index, exp.logp_old, logp_ref,
                                                 action, cfg.kl_coef)
        value_mask = exp.response_mask if cfg.critic_sees_observations else action
        advantages, returns = losses.gae_advantages(rewards, exp.values_old * value_mask, value_mask, cfg.gamma,
                                                    cfg.lam)
        if cfg.whiten_advantages:
            mean = global_mean(advantages, value_mask)
            var = global_mean((advantages - mean) ** 2, value_mask)
            advantages = losses.masked_whiten(advantages, value_mask, stats=(mean, var))
        metrics = {"value_mean": global_mean(exp.values_old, value_mask).item()}
        return replace(exp, advantages=advantages, returns=returns, value_mask=value_mask), metrics


class GRPO(Algorithm):
    def samples_per_question(self, cfg: TrainConfig) -> int:
        return cfg.grpo_group_size

    def episode_advantages(self, scores: torch.Tensor, group_ids: Sequence[str]) -> torch.Tensor:
        return losses.grpo_advantages(scores, group_ids)

    def advantages(self, exp: Experience, cfg: TrainConfig) -> tuple[Experience, dict[str, float]]:
        # Outcome rewards only: the KL to the reference is a loss term (extra_loss), never in the advantage.
        advantages = self.episode_advantages(exp.scores, exp.group_ids)[:, None] * exp.action_mask
        return (replace(exp, advantages=advantages, value_mask=exp.action_mask),
                {"varied_groups": losses.varied_group_share(exp.scores, exp.group_ids)})

    def extra_loss(self, logp: torch.Tensor, micro: Experience, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
        if micro.logp_ref is None:  # train.kl_coef 0: no reference model was loaded
            return logp.new_zeros(()), {}
        kl_sum = (losses.kl_k3(logp, micro.logp_ref) * micro.action_mask).sum()
        return cfg.kl_coef * kl_sum, {"kl_loss": (kl_sum / micro.action_mask.sum().clamp(min=1)).item()}

    def extra_loss_is_zero(self, exp: Experience, cfg: TrainConfig) -> bool:
        return exp.logp_ref is None


class DrGRPO(GRPO):
    def episode_advantages(self, scores: torch.Tensor, group_ids: Sequence[str]) -> torch.Tensor:
        """``score - mean_group``: no division by the group's std (a group of one, or of equal scores, gets 0)."""
        return losses.grpo_advantages(scores, group_ids, scale_by_std=False)

    def loss_denominator(self, action_tokens: torch.Tensor, episodes: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        return episodes.clamp(min=1) * cfg.dr_grpo_max_tokens


ALGORITHMS: dict[str, Algorithm] = {"ppo": PPO(), "grpo": GRPO(), "dr_grpo": DrGRPO()}


def algorithm_for(cfg: TrainConfig) -> Algorithm:
    return ALGORITHMS[cfg.algorithm]
