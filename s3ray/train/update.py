"""One policy-gradient update on a batch of episodes: old/ref log-probs and values, the algorithm's
advantages (:mod:`s3ray.train.algorithms`), then clipped-surrogate epochs over mini- and micro-batches.

Plain torch, no Ray: the Ray Train loop calls it on each worker's shard, the learning test calls it
directly. Cross-rank statistics (advantage whitening, token counts) go through
:mod:`s3ray.train.distributed`, whose helpers are the identity on a single process.

Loss scale: every loss is a token sum over the *mini-batch* on all ranks together, divided by the
algorithm's denominator of that mini-batch (its action-token count: a token mean; Dr. GRPO: a constant per
episode), all-reduced, so a micro-batch contributes its token sum over it. The gradient is then the same
whatever ``micro_batch_size`` and however the episodes fall on the ranks.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from s3ray.precision import compute_dtype
from s3ray.train import distributed, losses
from s3ray.train.algorithms import algorithm_for, global_mean
from s3ray.train.batch import Experience
from s3ray.train.policy import Critic, autocast, load_policy, load_reference, token_logprobs
from s3ray.train.schedule import per_update_factor, verl_factor

if TYPE_CHECKING:  # annotations only: an update needs no config tree
    from s3ray.config import PolicyConfig, TrainConfig


@dataclass
class Learner:
    """The models and optimisers one worker updates (the critic is None unless the algorithm uses one, the
    reference None without a KL term). ``autocast`` opens the compute precision of their passes."""

    actor: nn.Module
    reference: nn.Module | None
    actor_optim: torch.optim.Optimizer
    critic: nn.Module | None = None
    critic_optim: torch.optim.Optimizer | None = None
    schedulers: list[torch.optim.lr_scheduler.LRScheduler] = field(default_factory=list)
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext

    @property
    def device(self) -> torch.device:
        """Where the passes run. Under FSDP that is its compute device: with ``train.fsdp_cpu_offload`` the
        actor's parameters sit on the CPU between passes, and a batch sent there meets the GPU reference."""
        return getattr(self.actor, "compute_device", None) or next(self.actor.parameters()).device


def build_learner(model_dir: Path, policy_cfg: PolicyConfig, cfg: TrainConfig, device: torch.device) -> Learner:
    """Actor, reference, critic (when the algorithm uses one), AdamW optimisers and the warm-up schedule,
    wrapped for the process group if there is one: FSDP (fp32 masters, compute in ``policy_cfg.dtype``) or DDP.

    torch's wrappers directly rather than Ray's ``prepare_model``: in Ray 2.60 that moves the whole model
    to the device before wrapping, and refuses FSDP without CUDA. Here FSDP moves one unit at a time, and
    the same code runs (and is tested) on CPU with gloo, and on a GPU without Ray."""
    torch.manual_seed(cfg.seed)
    dtype = compute_dtype(policy_cfg.dtype, device)

    def wrap(model: nn.Module) -> nn.Module:
        if cfg.strategy == "fsdp" and distributed.process_group() is not None:
            return distributed.wrap_fsdp(model, dtype, device, cpu_offload=cfg.fsdp_cpu_offload)
        model = model.to(device)
        if distributed.world_size() > 1:
            ids = [device] if device.type == "cuda" else None
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def adamw(model: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    actor = wrap(load_policy(model_dir, policy_cfg))
    actor_optim = adamw(actor, cfg.actor_lr)
    algorithm = algorithm_for(cfg)
    critic = critic_optim = None
    if algorithm.uses_critic:
        critic = wrap(Critic.from_pretrained(model_dir, policy_cfg, cfg.value_head_init))
        critic_optim = adamw(critic, cfg.critic_lr)
    updates_per_step = cfg.ppo_epochs * num_minibatches(cfg.batch_size * algorithm.samples_per_question(cfg), cfg)
    warmup = int(cfg.warmup_ratio * cfg.steps * updates_per_step)
    schedulers = []
    if cfg.lr_warmup == "verl":  # the schedulers step once per update: the factor follows the training step
        for optim, steps in ((actor_optim, cfg.actor_warmup_steps), (critic_optim, cfg.critic_warmup_steps)):
            if optim is not None:
                schedulers.append(LambdaLR(optim, lambda i, n=steps: verl_factor(i // updates_per_step, n)))
    elif warmup > 0:
        schedulers = [LambdaLR(o, lambda i: per_update_factor(i, warmup)) for o in (actor_optim, critic_optim) if o]
    # kl_coef 0: the KL term is 0 whatever the reference says, so it is neither loaded nor run.
    reference = load_reference(model_dir, policy_cfg, device).to(device) if cfg.kl_coef else None
    fsdp = cfg.strategy == "fsdp" and distributed.process_group() is not None
    return Learner(actor, reference, actor_optim, critic, critic_optim, schedulers,
                   autocast=functools.partial(autocast, policy_cfg, device, enabled=not fsdp))


def _micro_slices(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def _forward_full_width(fn: Callable[[Experience], torch.Tensor], batch: Experience,
                        micro_batch_size: int) -> torch.Tensor:
    """``fn`` over micro-batches (each trimmed to its own length), written back at full width."""
    out = torch.zeros(batch.action_mask.shape, device=batch.input_ids.device)
    for s in _micro_slices(len(batch), micro_batch_size):
        part = fn(batch.select(torch.arange(s.start, s.stop)))
        out[s, :part.shape[1]] = part
    return out


def _train_mode(learner: Learner, training: bool) -> None:
    """train(): dropout (LoRA's) and transformers' gradient checkpointing on, for the loss passes;
    eval(): neither, for the no-grad passes (``logp_old`` must not carry dropout noise)."""
    for model in (learner.actor, learner.critic):
        if model is not None:
            model.train(training)


def prepare_batch(batch: Experience, learner: Learner, cfg: TrainConfig) -> tuple[Experience, dict[str, float]]:
    """Old and reference log-probs, values (with a critic) and the algorithm's advantages for one shard."""
    if torch.isnan(batch.scores).any():
        raise ValueError("episodes without a reward reached the RL update (run the pool with_reward=True)")
    batch = batch.to(learner.device)
    mb, chunk = cfg.micro_batch_size, cfg.logprob_chunk_tokens
    _train_mode(learner, False)
    action = batch.action_mask
    metrics: dict[str, float] = {}

    def logprobs(model: nn.Module, name: str) -> torch.Tensor:
        t0 = time.perf_counter()
        with learner.autocast():
            out = _forward_full_width(lambda b: token_logprobs(model, b, b.temperature, chunk_tokens=chunk)[0],
                                      batch, mb)
        metrics[f"{name}_s"] = time.perf_counter() - t0
        return out

    if cfg.logp_old == "rollout":
        logp_old = batch.rollout_logprobs
    else:
        logp_old = logprobs(learner.actor, "old_logprobs")
        metrics["logprob_gap"] = global_mean((batch.rollout_logprobs - logp_old).abs(), action).item()
    logp_ref = values_old = None
    if learner.reference is not None:
        logp_ref = logprobs(learner.reference, "ref_logprobs")
        metrics["kl"] = global_mean((logp_old - logp_ref) * action, action).item()
    if learner.critic is not None:
        with learner.autocast():
            values_old = _forward_full_width(lambda b: learner.critic(b.input_ids, b.attention_mask), batch, mb)
    batch = replace(batch, logp_old=logp_old, logp_ref=logp_ref, values_old=values_old)
    batch, advantage_metrics = algorithm_for(cfg).advantages(batch, cfg)
    return batch, metrics | advantage_metrics


def _step(model: nn.Module, optim: torch.optim.Optimizer, grad_clip: float) -> float:
    norm = distributed.clip_grad_norm(model, grad_clip)
    optim.step()
    optim.zero_grad(set_to_none=True)
    return norm


def ppo_epochs(prepared: Experience, learner: Learner, cfg: TrainConfig, num_minibatches: int,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """``cfg.ppo_epochs`` passes over the shard in ``num_minibatches`` optimiser steps.

    Every rank must use the same ``num_minibatches`` and shard size, so the gradient all-reduce lines up.
    Returns metrics averaged over micro-batches (grad norms over optimiser steps).
    """
    totals: dict[str, float] = {}
    count = 0
    _train_mode(learner, True)
    for _ in range(cfg.ppo_epochs):
        order = group_order(prepared.group_ids, generator)
        for mini in torch.tensor_split(order, num_minibatches):
            for stats in accumulate_gradients(prepared, mini, learner, cfg):
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                count += 1
            totals["actor_grad_norm"] = totals.get("actor_grad_norm", 0.0) + _step(
                learner.actor, learner.actor_optim, cfg.grad_clip)
            if learner.critic is not None:
                totals["critic_grad_norm"] = totals.get("critic_grad_norm", 0.0) + _step(
                    learner.critic, learner.critic_optim, cfg.grad_clip)
            for scheduler in learner.schedulers:
                scheduler.step()
    steps = cfg.ppo_epochs * num_minibatches
    return {k: v / (steps if k.endswith("grad_norm") else count) for k, v in totals.items()}


def group_order(group_ids: Sequence[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """A random order of the rows that keeps each group's rows together (the groups, and the rows within
    each, shuffled). Cut into mini- and micro-batches, a GRPO group's episodes then share a micro-batch
    and its whole prompt, which :func:`s3ray.train.policy.token_logprobs` runs once; rows shuffled one
    by one share only the instructions. Each mini-batch is still an unbiased draw of the batch."""
    members: dict[str, list[int]] = {}
    for row, group in enumerate(group_ids):
        members.setdefault(group, []).append(row)
    groups = list(members.values())
    order = []
    for g in torch.randperm(len(groups), generator=generator).tolist():
        rows = groups[g]
        order += [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
    return torch.tensor(order, dtype=torch.long)


def accumulate_gradients(prepared: Experience, rows: torch.Tensor, learner: Learner,
                         cfg: TrainConfig) -> list[dict[str, float]]:
    """Backward of one mini-batch (this rank's ``rows``), micro-batch by micro-batch, into ``.grad``.

    Each policy loss is a token sum over the algorithm's denominator of the mini-batch on all ranks, the
    value loss a token sum over the mini-batch's value-token count, both times the world size (DDP and
    FSDP average gradients over ranks). Returns each micro-batch's metrics.
    """
    algorithm, world = algorithm_for(cfg), distributed.world_size()
    counts = distributed.all_reduce_sum(torch.stack([prepared.action_mask[rows].sum(),
                                                     prepared.value_mask[rows].sum(),
                                                     torch.tensor(float(len(rows)), device=prepared.action_mask.device)]))
    action_scale = world / algorithm.loss_denominator(counts[0], counts[2], cfg)
    value_scale = world / counts[1].clamp(min=1)
    rows = rows_with_gradient(prepared, rows, learner, cfg)
    return [_micro_step(prepared.select(rows[s]), learner, cfg, action_scale, value_scale)
            for s in _micro_slices(len(rows), cfg.micro_batch_size)]


def rows_with_gradient(prepared: Experience, rows: torch.Tensor, learner: Learner, cfg: TrainConfig) -> torch.Tensor:
    """The rows of a mini-batch whose loss has a gradient, in their order: with no entropy bonus, critic or
    extra loss term (the algorithm's KL to a reference), an episode whose advantage is 0 on every action
    token (a GRPO group whose episodes all scored the same) adds exactly 0, so its forward and backward
    are skipped. The loss's denominator was counted over every row before, so the gradient is the same
    (up to float summation order).

    At least one row is kept, so a mini-batch without signal still takes its optimiser step on a zero
    gradient (Adam's momentum moves the weights as it did before), and every rank keeps as many rows as
    the rank that keeps most, padded with rows of no gradient: FSDP's gathers pair up micro-batch by
    micro-batch."""
    if cfg.entropy_coef or learner.critic is not None or not algorithm_for(cfg).extra_loss_is_zero(prepared, cfg):
        return rows
    moving = (prepared.advantages[rows] * prepared.action_mask[rows]).ne(0).any(dim=1)
    keep = distributed.all_reduce_max(moving.sum().clamp(min=1))
    return rows[torch.argsort(moving.logical_not().int(), stable=True)[:int(keep)]]


def _micro_step(micro: Experience, learner: Learner, cfg: TrainConfig, action_scale: torch.Tensor,
                value_scale: torch.Tensor) -> dict[str, float]:
    with learner.autocast():  # the forward only: backward follows the dtypes it recorded
        logp, entropy = token_logprobs(learner.actor, micro, micro.temperature, with_entropy=True,
                                       chunk_tokens=cfg.logprob_chunk_tokens)
    pg_sum, clip_frac = losses.policy_loss(logp, micro.logp_old, micro.advantages, micro.action_mask,
                                           cfg.clip_ratio, reduce="sum")
    entropy_sum = (entropy * micro.action_mask).sum()
    extra_sum, stats = algorithm_for(cfg).extra_loss(logp, micro, cfg)
    loss = pg_sum - cfg.entropy_coef * entropy_sum + extra_sum
    (loss * action_scale).backward()
    tokens = micro.action_mask.sum().clamp(min=1)
    stats |= {"policy_loss": (pg_sum / tokens).item(), "entropy": (entropy_sum / tokens).item(),
              "clip_fraction": clip_frac.item(),
              "ratio_mean": losses.masked_mean(torch.exp(logp - micro.logp_old), micro.action_mask).item()}
    if learner.critic is not None:
        with learner.autocast():
            values = learner.critic(micro.input_ids, micro.attention_mask)
        v_sum, v_clip = losses.value_loss(values, micro.values_old, micro.returns, micro.value_mask,
                                          cfg.value_clip, reduce="sum")
        (v_sum * value_scale).backward()
        stats |= {"value_loss": (v_sum / micro.value_mask.sum().clamp(min=1)).item(),
                  "value_clip_fraction": v_clip.item()}
    return stats


def num_minibatches(num_episodes: int, cfg: TrainConfig) -> int:
    """Optimiser steps per epoch: the global batch cut into mini-batches of ``cfg.mini_batch_size``."""
    return max(1, math.ceil(num_episodes / cfg.mini_batch_size))
