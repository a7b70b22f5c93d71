"""PPO and GRPO pieces as pure torch functions over token tensors.

Every tensor here is ``[batch, positions]`` aligned to the *predicting* positions of a padded sequence
(see :mod:`s3ray.train.batch`): position ``t`` holds quantities about the token at ``t + 1``.
``action_mask`` is 1 where that token was written by the searcher; prompt, padding and observation
tokens (retrieved documents the environment inserted) are 0 and never contribute to a loss.

Critic and observation tokens (``train.critic_sees_observations``):

* ``False`` (our default): GAE runs over the sequence of action tokens only. Observation tokens are
  skipped, as if the episode were the searcher's tokens back to back; the critic is trained on action
  tokens only. The value of the last action token before an observation bootstraps from the value of
  the first action token after it.
* ``True``: GAE and the value loss also run over observation tokens (zero reward there), which is what
  the s3 seed code does (verl's full response mask). The policy loss, entropy and KL stay on action
  tokens in both modes.

KL to the reference policy:

* PPO: a reward-side penalty, as in the paper's run (``use_kl_loss=False``):
  ``r_t -= beta * (logp_old_t - logp_ref_t)`` on action tokens, the k1 estimator of KL(pi_old || pi_ref).
* GRPO: a loss term, ``beta * k3(logp, logp_ref)`` on action tokens (DeepSeekMath's GRPO objective),
  never part of the return. Folded into the return, it is all that differs within a group whose
  outcome rewards are equal, and the group normalisation divides it by its own tiny spread: every
  all-zero group (most of them, early on a sparse reward) then trains at full strength on KL noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

# "mean": over the masked positions of the given tensors; "sum": the caller divides (e.g. by a token
# count over a whole mini-batch on all ranks, see s3ray.train.update).
Reduce = Literal["mean", "sum"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (0 when the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _reduce(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    return masked_mean(x, mask) if reduce == "mean" else (x * mask).sum()


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8,
                  stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions; masked-out positions become 0.

    ``stats`` = (mean, var) computed elsewhere, e.g. over every rank's shard of the batch.
    """
    mean, var = stats if stats is not None else masked_mean_var(x, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def masked_mean_var(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return mean, var


def kl_penalized_rewards(scores: torch.Tensor, last_action_index: torch.Tensor, logp_old: torch.Tensor,
                         logp_ref: torch.Tensor, action_mask: torch.Tensor,
                         kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rewards: the episode's score on its last action token, minus ``kl_coef * k1`` per action token.

    Returns (token_rewards, kl) with ``kl = (logp_old - logp_ref) * action_mask`` (the k1 estimate).
    """
    kl = (logp_old - logp_ref) * action_mask
    rewards = -kl_coef * kl
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_action_index] += scores.to(rewards.dtype)
    return rewards, kl


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                   lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the positions where ``mask`` is 1, skipping the others.

    Positions with mask 0 carry no reward and no value: the recursion jumps over them, so a masked-out
    gap between two action tokens is invisible (``delta_t = r_t + gamma * V_next - V_t`` with ``V_next``
    the value at the next *masked-in* position; 0 after the last one). Returns (advantages, returns),
    both 0 where the mask is 0.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * m
        # Carry the recursion only through masked-in positions.
        next_advantage = torch.where(m > 0, advantage, next_advantage)
        next_value = torch.where(m > 0, values[:, t], next_value)
    returns = (advantages + values) * mask
    return advantages, returns


def grpo_advantages(scores: torch.Tensor, group_ids: Sequence[str], eps: float = 1e-6,
                    scale_by_std: bool = True) -> torch.Tensor:
    """Group-normalised episode advantages: ``(score - mean_group) / (std_group + eps)``, or only
    ``score - mean_group`` without ``scale_by_std`` (Dr. GRPO).

    Groups are the episodes of one question (its stable id). A group of one has no baseline to compare
    with and gets advantage 0 (it teaches nothing), as does a group whose scores are all equal.
    """
    if len(group_ids) != scores.shape[0]:
        raise ValueError(f"{len(group_ids)} group ids for {scores.shape[0]} scores")
    advantages = torch.zeros_like(scores, dtype=torch.float32)
    groups: dict[str, list[int]] = {}
    for i, gid in enumerate(group_ids):
        groups.setdefault(gid, []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        idx = torch.tensor(members, device=scores.device)
        group = scores[idx].float()
        std = group.std()
        if std > 0:
            advantages[idx] = (group - group.mean()) / (std + eps) if scale_by_std else group - group.mean()
    return advantages


def varied_group_share(scores: torch.Tensor, group_ids: Sequence[str]) -> float:
    """The share of groups (of two or more episodes) whose scores are not all equal: only those move a
    GRPO policy. A searcher that samples one answer per question gives every group equal scores, and the
    step's gradient is zero however high or low its reward."""
    groups: dict[str, list[float]] = {}
    for gid, score in zip(group_ids, scores.tolist(), strict=True):
        groups.setdefault(gid, []).append(score)
    sized = [g for g in groups.values() if len(g) > 1]
    return sum(max(g) > min(g) for g in sized) / len(sized) if sized else 0.0


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate ``exp(ref - logp) - (ref - logp) - 1`` (Schulman's k3:
    unbiased for samples from pi, never negative)."""
    delta = logp_ref - logp
    return torch.exp(delta) - delta - 1


def policy_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                action_mask: torch.Tensor, clip_ratio: float,
                reduce: Reduce = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate over action tokens (token mean, or sum). Returns (loss, clip_fraction)."""
    ratio = torch.exp(logp - logp_old)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    loss = _reduce(torch.maximum(unclipped, clipped), action_mask, reduce)
    clip_fraction = masked_mean((clipped > unclipped).float(), action_mask)
    return loss, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               value_clip: float, reduce: Reduce = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5 * max((V - R)^2, (V_clip - R)^2)``, with V_clip within ``value_clip``
    of the value at rollout time (token mean, or sum). Returns (loss, clip_fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * _reduce(torch.maximum(unclipped_err, clipped_err), mask, reduce)
    clip_fraction = masked_mean((clipped_err > unclipped_err).float(), mask)
    return loss, clip_fraction


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)
