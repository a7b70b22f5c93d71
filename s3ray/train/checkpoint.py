"""Training checkpoints: the learner's trainable weights, optimiser and scheduler states, and RNG state.

Under FSDP every rank holds a shard, so gathering is collective: :func:`gather_state` runs on every rank
and gives rank 0 full (unsharded, CPU) state dicts (FSDP's ``FULL_STATE_DICT`` and
``FSDP.optim_state_dict``). :func:`load` runs on every rank with the full dicts read from the checkpoint
folder, and FSDP re-shards them (``load_state_dict`` under the same state-dict type,
``FSDP.optim_state_dict_to_load``). Without FSDP (one process or DDP replicas) rank 0's copy is the state.

RNG: every rank seeds the same and draws the same numbers (the mini-batch order), so rank 0's RNG state
is every rank's; a resumed run continues the uninterrupted run's random stream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from s3ray.train.distributed import is_fsdp, offload_to_cpu
from s3ray.train.policy import export_pretrained, hf_state_dict, load_policy, unwrap
from s3ray.train.update import Learner

if TYPE_CHECKING:
    from s3ray.config import PolicyConfig, S3Config

log = logging.getLogger(__name__)

_FSDP_PREFIX = "_fsdp_wrapped_module."


def _trainable_names(model: nn.Module) -> set[str]:
    """The trainable parameters' names as a (full) state dict names them."""
    return {n.replace(_FSDP_PREFIX, "") for n, p in unwrap(model).named_parameters() if p.requires_grad}


@contextlib.contextmanager
def _full_state_dicts(model: nn.Module, rank0_only: bool):
    """FSDP's full (unsharded) state-dict mode for the model and its optimiser; a no-op without FSDP."""
    if not is_fsdp(model):
        yield
        return
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    offload = offload_to_cpu(model)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
                              FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only)):
        yield


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    trainable = _trainable_names(model)
    with _full_state_dicts(model, rank0_only=True):
        state = (model if is_fsdp(model) else unwrap(model)).state_dict()
    return {k: v.detach().cpu() for k, v in state.items() if k in trainable}


def _optim_state(model: nn.Module, optim: torch.optim.Optimizer) -> dict[str, Any]:
    if not is_fsdp(model):
        return optim.state_dict()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with _full_state_dicts(model, rank0_only=True):
        return FSDP.optim_state_dict(model, optim)


def _load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    with _full_state_dicts(model, rank0_only=False):
        missing, unexpected = (model if is_fsdp(model) else unwrap(model)).load_state_dict(state, strict=False)
    lost = _trainable_names(model) & {k.replace(_FSDP_PREFIX, "") for k in missing}
    if lost or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {sorted(lost)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")


def _load_optim_state(model: nn.Module, optim: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if is_fsdp(model):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with _full_state_dicts(model, rank0_only=False):
            state = FSDP.optim_state_dict_to_load(model, optim, state)
    optim.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    import numpy as np

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def gather_state(learner: Learner) -> dict[str, Any]:
    """Everything a checkpoint holds, full and on CPU on rank 0 (collective under FSDP: call on every rank;
    the other ranks' copy is partial and must not be saved)."""
    state: dict[str, Any] = {"actor": _model_state(learner.actor),
                             "actor_optim": _optim_state(learner.actor, learner.actor_optim),
                             "schedulers": [s.state_dict() for s in learner.schedulers], "rng": rng_state()}
    if learner.critic is not None:
        state["critic"] = _model_state(learner.critic)
        state["critic_optim"] = _optim_state(learner.critic, learner.critic_optim)
    return state


def save(directory: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write :func:`gather_state`'s result (rank 0's) and ``meta`` (step, data position, run id)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / "learner.pt")
    (directory / "state.json").write_text(json.dumps(meta, indent=1))


def load(directory: Path, learner: Learner) -> dict[str, Any]:
    """Restore the learner and the RNG from a checkpoint folder (on every rank); returns its meta."""
    state = torch.load(directory / "learner.pt", weights_only=False)
    _load_model_state(learner.actor, state["actor"])
    _load_optim_state(learner.actor, learner.actor_optim, state["actor_optim"])
    if learner.critic is not None:
        _load_model_state(learner.critic, state["critic"])
        _load_optim_state(learner.critic, learner.critic_optim, state["critic_optim"])
    for scheduler, saved in zip(learner.schedulers, state["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    set_rng_state(state["rng"])
    return json.loads((directory / "state.json").read_text())


# ------------------------------------------------------------------------------------------------
# Sharded checkpoints (torch.distributed.checkpoint): each rank writes and reads its own shards. Not yet
# what the trainer calls (it still saves the full gather above); the trainer's resume is being changed
# in parallel, and switching it over is the next step.
# ------------------------------------------------------------------------------------------------
SHARDED_DIR = "sharded"


def _sharded_state(learner: Learner) -> dict[str, Any]:
    """Model and optimiser state dicts as this rank holds them (under FSDP: its shards, unsharded never),
    via torch.distributed.checkpoint.state_dict.get_state_dict; they double as load targets."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    state = {}
    for name, model, optim in (("actor", learner.actor, learner.actor_optim),
                               ("critic", learner.critic, learner.critic_optim)):
        if model is not None:
            state[name], state[f"{name}_optim"] = get_state_dict(model, optim, options=_dcp_options())
    return state


def _dcp_options():
    """Optimizer state keyed by parameter name, one leaf per tensor and hyper-parameter: the same keys on
    every rank and for a fresh optimizer, which DCP's load plan matches against what was saved."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def save_sharded(directory: Path, learner: Learner, meta: dict[str, Any], rank: int) -> None:
    """Every rank: ``dcp.save`` writes this rank's shards of the weights and optimiser states; rank 0 also
    writes the schedulers, the RNG (the same on every rank) and ``meta``."""
    import torch.distributed.checkpoint as dcp

    directory.mkdir(parents=True, exist_ok=True)
    dcp.save(_sharded_state(learner), checkpoint_id=str(directory / SHARDED_DIR))
    if rank == 0:
        torch.save({"schedulers": [s.state_dict() for s in learner.schedulers], "rng": rng_state()},
                   directory / "host.pt")
        (directory / "state.json").write_text(json.dumps(meta, indent=1))


def load_sharded(directory: Path, learner: Learner) -> dict[str, Any]:
    """Every rank: ``dcp.load`` reads only this rank's shards into the learner; returns the meta."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _sharded_state(learner)
    dcp.load(state, checkpoint_id=str(directory / SHARDED_DIR))
    for name, model, optim in (("actor", learner.actor, learner.actor_optim),
                               ("critic", learner.critic, learner.critic_optim)):
        if model is not None:
            set_state_dict(model, optim, model_state_dict=state[name], optim_state_dict=state[f"{name}_optim"],
                           options=_dcp_options())
    host = torch.load(directory / "host.pt", weights_only=False)
    for scheduler, saved in zip(learner.schedulers, host["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    set_rng_state(host["rng"])
    return json.loads((directory / "state.json").read_text())
def export_checkpoint(directory: Path, policy_cfg: PolicyConfig, out_dir: Path) -> Path:
    """A kept checkpoint as a Hugging Face model folder (LoRA merged): its trainable weights loaded onto the
    weights they were trained from (the checkpoint's ``init_model_dir``), written by :func:`export_pretrained`."""
    meta = json.loads((directory / "state.json").read_text())
    base = Path(meta["init_model_dir"])
    if not base.is_dir():
        raise FileNotFoundError(f"{directory} was trained from {base}, which is gone: it cannot be exported")
    actor = load_policy(base, policy_cfg)
    _load_model_state(actor, torch.load(directory / "learner.pt", weights_only=False)["actor"])
    return export_pretrained(hf_state_dict(actor), base, out_dir)


def export_step(cfg: S3Config, step: int | None = None, out_dir: Path | None = None) -> Path:
    """``s3ray export [--step N] [--out DIR]``: export a kept checkpoint of the run (default: the last one)
    to ``out_dir`` (default: ``train.dir/export_step_N``)."""
    from s3ray.train.identity import checkpoint_path, checkpoints_dir, kept_steps

    kept = kept_steps(cfg)
    if not kept:
        raise FileNotFoundError(f"no checkpoint under {checkpoints_dir(cfg)}: train first (`s3ray train`)")
    step = kept[-1] if step is None else step
    if step not in kept:
        raise ValueError(f"no checkpoint of step {step}; kept: {', '.join(map(str, kept))} "
                         "(train.checkpoints_to_keep and train.checkpoint_every decide which)")
    out = export_checkpoint(checkpoint_path(cfg, step), cfg.policy,
                            out_dir or Path(cfg.train.dir) / f"export_step_{step:06d}")
    log.info("exported step %d to %s", step, out)
    return out
