"""The policy's weights as the rollout engines load them, gathered one FSDP unit at a time.

A publish that gathers the whole model on rank 0 first (``summon_full_params`` over every unit, then a
Hugging Face-named copy) holds several full fp32 copies at once: about 90 GB of host memory for a 7B
searcher. :class:`PolicyWeights` instead walks the model in state-dict order and gathers each FSDP unit
only while its tensors are read (``summon_full_params(unit, recurse=False)``); every tensor is cast to
the rollout dtype (a copy) as it is handed to the sender, and the unit is resharded before the next one.
The root unit (embeddings, final norm, LM head) stays gathered for the whole walk, because the
embeddings come first and the head last; so rank 0's extra memory is the root unit, one decoder layer
and the tensors the sender holds, on the trainer's device, and nothing is kept after the publish.

Walking is a collective under FSDP: every rank iterates the same object in the same order (rank 0's
iteration yields the tensors; the others' only take part in the gathers). LoRA adapters are merged into
their base weights per layer while it is gathered, and unmerged after, under the base model's names
(:func:`s3ray.train.policy.hf_name`). :meth:`PolicyWeights.metadata` (names, dtypes and shapes, which
vLLM's sender needs before the first tensor) comes from the model's config on the meta device, without
gathering anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from s3ray.train.distributed import rank
from s3ray.train.policy import hf_name, unwrap


def hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a DDP / FSDP wrapper and a LoRA (peft) wrapper."""
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class PolicyWeights:
    """``metadata()`` then ``iter()``: the policy's tensors under Hugging Face names, in ``dtype``."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        self.model = model
        self.dtype = dtype

    def metadata(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, shape) of every tensor, in the order :meth:`__iter__` yields them."""
        base = hf_model(self.model)
        with torch.device("meta"):
            shadow = type(base)(base.config)
        return [(name, self.dtype, tuple(t.shape)) for name, t in shadow.state_dict().items()]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        """On rank 0 the tensors (copies in ``dtype``, on the trainer's device); on the other ranks
        nothing, after the same gathers. Every rank must iterate to the end."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        with contextlib.ExitStack() as stack:
            if isinstance(self.model, FullyShardedDataParallel):  # the root unit wraps the LoRA wrapper too
                stack.enter_context(_gathered(self.model))
            yield from self._walk(hf_model(self.model), "")

    def _walk(self, module: nn.Module, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        """``module``'s own tensors (a state dict's order: parameters, persistent buffers, children),
        each nested FSDP unit gathered while it is walked."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if isinstance(module, FullyShardedDataParallel):
            with _gathered(module):
                yield from self._walk(module.module, prefix)
            return
        with _lora_merged(module):
            if rank() == 0:
                own = [*module.named_parameters(recurse=False),
                       *((n, b) for n, b in module.named_buffers(recurse=False)
                         if n not in module._non_persistent_buffers_set)]
                for name, tensor in own:
                    key = hf_name(prefix + name)
                    if key is not None:
                        yield key, tensor.detach().to(self.dtype, copy=True)
            for name, child in module.named_children():
                yield from self._walk(child, prefix + name + ".")


@contextlib.contextmanager
def _gathered(unit: nn.Module):
    """One FSDP unit's full parameters (its own only), on rank 0; the others take part and free theirs."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=False, rank0_only=True):
        yield


@contextlib.contextmanager
def _lora_merged(module: nn.Module):
    """A peft LoRA layer with its adapters merged into the base weight (gathered here) for the read.
    Unmerged after: under FSDP's NO_SHARD (one rank) and outside FSDP the base weight is the master."""
    merge = rank() == 0 and hasattr(module, "base_layer") and hasattr(module, "merge")
    if merge:
        module.merge()
    try:
        yield
    finally:
        if merge:
            module.unmerge()
