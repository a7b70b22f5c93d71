"""Episodes -> :class:`Experience`, the one type the update works on: padded token tensors from the token
ids the rollout produced (never re-tokenized), then what :func:`s3ray.train.update.prepare_batch` adds.

A row is ``input_ids = prompt_ids + response_ids``, right-padded. Per-token tensors are aligned to
the *predicting* positions: index ``t`` describes token ``t + 1`` (the logits at ``t`` predict it), so
they have ``length - 1`` columns and line up with ``logits[:, :-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

from s3ray.agent.episode import Episode


@dataclass
class Experience:
    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long
    action_mask: torch.Tensor  # [B, L-1] float: predicts a searcher token
    response_mask: torch.Tensor  # [B, L-1] float: predicts any response token (action or observation)
    rollout_logprobs: torch.Tensor  # [B, L-1] float: the rollout engine's logprobs (0 off action tokens)
    last_action_index: torch.Tensor  # [B] long: where the episode's reward goes
    scores: torch.Tensor  # [B] float: the episode reward (GBR); NaN for episodes scored without reward
    temperature: torch.Tensor  # [B] float: the sampling temperature of the logprobs (1 when greedy)
    group_ids: list[str]  # the stable question id of each row (GRPO groups)
    # Set by prepare_batch, [B, L-1]; None before it, or where the algorithm has no such term.
    logp_old: torch.Tensor | None = None  # the clipped ratio's denominator
    advantages: torch.Tensor | None = None  # 0 off action tokens
    value_mask: torch.Tensor | None = None  # where the critic is trained (action tokens, or the whole response)
    values_old: torch.Tensor | None = None  # the critic's values before the update (PPO)
    returns: torch.Tensor | None = None  # the critic's targets (PPO)
    logp_ref: torch.Tensor | None = None  # the reference log-probs of a KL loss term (GRPO)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_action_tokens(self) -> int:
        return int(self.action_mask.sum().item())

    def select(self, rows: Sequence[int] | torch.Tensor) -> Experience:
        """The given rows, with columns trimmed to the longest of them."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        length = int(self.attention_mask[rows].sum(dim=1).max().item())
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif f.name == "group_ids":
                out[f.name] = [value[i] for i in rows.tolist()]
            elif value.dim() == 1:
                out[f.name] = value[rows]
            else:
                width = length if value.shape[1] == self.input_ids.shape[1] else length - 1
                out[f.name] = value[rows, :width]
        return Experience(**out)

    def to(self, device: torch.device | str) -> Experience:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})


def _check_episode(ep: Episode) -> None:
    if not any(ep.action_mask):
        raise ValueError(f"episode {ep.key} has no searcher token to credit")
    ep.check()


def collate_episodes(episodes: Sequence[Episode], pad_id: int) -> Experience:
    """Pad a list of episodes into an :class:`Experience` (its token fields)."""
    if not episodes:
        raise ValueError("no episodes to collate")
    eps = list(episodes)
    for ep in eps:
        _check_episode(ep)
    length = max(len(ep.prompt_ids) + len(ep.response_ids) for ep in eps)
    b = len(eps)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, length), dtype=torch.long)
    action_mask = torch.zeros((b, length - 1))
    response_mask = torch.zeros((b, length - 1))
    rollout_logprobs = torch.zeros((b, length - 1))
    last_action_index = torch.zeros(b, dtype=torch.long)
    for i, ep in enumerate(eps):
        prompt, response = ep.prompt_ids, ep.response_ids
        p, r = len(prompt), len(response)
        input_ids[i, :p + r] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention_mask[i, :p + r] = 1
        # Response token j sits at p + j and is predicted from position p + j - 1.
        start = p - 1
        action_mask[i, start:start + r] = torch.tensor(ep.action_mask, dtype=torch.float32)
        response_mask[i, start:start + r] = 1.0
        rollout_logprobs[i, start:start + r] = torch.tensor(ep.logprobs, dtype=torch.float32)
        last_action_index[i] = int(action_mask[i].nonzero().max().item())
    return Experience(
        input_ids=input_ids,
        attention_mask=attention_mask,
        action_mask=action_mask,
        response_mask=response_mask,
        rollout_logprobs=rollout_logprobs * action_mask,
        last_action_index=last_action_index,
        scores=torch.tensor([float("nan") if ep.reward is None else float(ep.reward) for ep in eps]),
        # Greedy episodes carry T = 1; a 0 would mean the same (argmax), never a division by zero.
        temperature=torch.tensor([float(ep.temperature) or 1.0 for ep in eps]),
        group_ids=[str(ep.question_id) for ep in eps],
    )
