"""Process-group helpers and FSDP wrapping: plain ``torch.distributed``, no Ray.

Every helper is the identity (or a local computation) when no process group is initialised, so the
update code runs unchanged in one process (tests, local mode) and under Ray Train's DDP / FSDP workers.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from s3ray.train.policy import hf_state_dict


def process_group() -> Any | None:
    """``torch.distributed`` when a process group is up, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    dist = process_group()
    return dist.get_rank() if dist else 0


def world_size() -> int:
    dist = process_group()
    return dist.get_world_size() if dist else 1


def barrier() -> None:
    dist = process_group()
    if dist is not None:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a copy; ``t`` itself is untouched)."""
    return _all_reduce(t, "SUM")


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of ``t`` over the ranks (a copy; ``t`` itself is untouched)."""
    return _all_reduce(t, "MAX")


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    dist = process_group()
    if dist is None:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=getattr(dist.ReduceOp, op))
    return out


def scatter(per_rank: list[Any] | None) -> Any:
    """Rank 0's ``per_rank[r]`` on every rank r. The objects travel through the process group
    (a Ray ObjectRef pickled through torch would reach the other ranks unregistered with its owner)."""
    dist = process_group()
    if dist is None:
        return per_rank[0]
    box = [None]
    dist.scatter_object_list(box, per_rank if dist.get_rank() == 0 else None, src=0)
    return box[0]


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a broadcast of one picklable object)."""
    dist = process_group()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across_ranks(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    if process_group() is None or not metrics:
        return metrics
    keys = sorted(metrics)
    summed = all_reduce_sum(torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device))
    return {k: float(v) / world_size() for k, v in zip(keys, summed.tolist(), strict=True)}


# ------------------------------------------------------------------------------------------------
# FSDP
# ------------------------------------------------------------------------------------------------
def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(model, FullyShardedDataParallel)


def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The transformer block classes of a Hugging Face model (its ``_no_split_modules``, e.g.
    ``Qwen2DecoderLayer``), found among its submodules: FSDP's wrap units."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) to wrap")
    return classes


def wrap_fsdp(model: nn.Module, compute_dtype: torch.dtype, device: torch.device,
              cpu_offload: bool = False) -> nn.Module:
    """FSDP over ``model`` (kept in fp32: the master weights), one unit per decoder layer.

    Forward and backward run in ``compute_dtype`` (``MixedPrecision.param_dtype``), gradients are
    reduced in fp32 and the optimiser updates the fp32 shards: at lr 1e-6 a bf16 weight would round
    most Adam steps away. ``use_orig_params=True`` keeps the original parameters visible (names,
    ``requires_grad``), which LoRA's mix of frozen and trainable weights in one unit needs. ``cpu_offload``:
    FSDP's ``CPUOffload(offload_params=True)``, shards and gradients in host memory and the optimizer step
    on the CPU; each unit is copied to ``device`` when it is gathered.
    """
    from torch.distributed.fsdp import CPUOffload, FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    model = model.to(torch.float32)
    # Offloading is from a GPU: CPU runs already hold everything in host memory (and FSDP's offload pins
    # memory, which needs an accelerator).
    offload = cpu_offload and device.type == "cuda"
    mixed = None
    if compute_dtype != torch.float32:
        mixed = MixedPrecision(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=decoder_layer_classes(model))
    return FullyShardedDataParallel(model, auto_wrap_policy=policy, mixed_precision=mixed, use_orig_params=True,
                                    device_id=device, cpu_offload=CPUOffload(offload_params=offload))


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the gradients of ``model``'s trainable parameters to a total norm of ``max_norm``; returns the
    norm before clipping. Under FSDP the norm is over all ranks' shards (FSDP's own ``clip_grad_norm_``);
    each rank clipping by its own shard's norm would be wrong."""
    if is_fsdp(model):
        return float(model.clip_grad_norm_(max_norm))
    params = [p for p in model.parameters() if p.requires_grad]
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def offload_to_cpu(model: nn.Module) -> bool:
    """Whether FSDP may gather ``model``'s full state straight to CPU. Only from GPU shards, or shards FSDP
    offloads from a GPU run (``train.fsdp_cpu_offload``; gathered on the GPU, else the full fp32 model
    would stay there): with CPU parameters of a CPU run torch 2.13 crashes in it (gloo), and with one
    rank FSDP runs NO_SHARD, where ``summon_full_params`` refuses it."""
    offloaded = model.cpu_offload.offload_params
    return (next(model.parameters()).is_cuda or offloaded) and world_size() > 1


def hf_full_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The policy's full weights under Hugging Face names (LoRA merged), on CPU, on rank 0; None on the
    other ranks. Collective under FSDP (every rank must call it)."""
    if not is_fsdp(model):
        return hf_state_dict(model) if rank() == 0 else None
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=True,
                                                     offload_to_cpu=offload_to_cpu(model)):
        return hf_state_dict(model.module) if rank() == 0 else None
