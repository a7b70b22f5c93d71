"""Training checkpoints in shards: the learner's trainable weights through ``torch.distributed.checkpoint``
(DCP), each rank's optimiser states, schedulers and RNG state as its own file, and the step's meta.

Every rank writes and reads only what it holds; no rank ever gathers the full fp32 model and Adam states
(176 GB for the 7B preset). Weights: under FSDP each rank's shards, under DDP replicas DCP splits the
identical tensors among the ranks (each writes about 1/world of them), in one process the same call on one
rank; keyed by parameter name (no ``_fsdp_wrapped_module.`` or ``module.`` prefix), so
:func:`export_checkpoint` assembles a Hugging Face folder from them offline, in one CPU process.

Optimiser states: each rank's own ``optim.state_dict()`` (under FSDP its local flat shards), read back by
the same rank. A resumed run has the same ranks and wrapping (``train.num_workers`` and ``train.strategy``
are part of the run's identity), so nothing needs re-sharding. FSDP's sharded optimiser state dict (the
DCP route) was tried first: in torch 2.13 it all-gathers each unit's full state, and on 2 gloo ranks it
aborted with a gloo collective mismatch (bench/bench_checkpoint.py's model, after one optimiser step).

Folder layout: ``shards/`` (DCP's ``*.distcp`` files and its ``.metadata``), ``host_<rank>.pt`` (that rank's
optimiser states, schedulers and RNG state: a resumed rank continues its own random stream exactly) and the
completion marker ``state.json`` (:mod:`s3ray.train.checkpoint_store`), written last, by rank 0, once DCP
has returned, i.e. once every rank has written its host file and its shards.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from s3ray.train import distributed
from s3ray.train.checkpoint_store import mark_complete, read_meta
from s3ray.train.policy import export_pretrained, hf_state_dict, load_policy, unwrap
from s3ray.train.update import Learner

if TYPE_CHECKING:
    from s3ray.config import PolicyConfig, S3Config

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
_FSDP_PREFIX = "_fsdp_wrapped_module."


def _host_file(directory: Path, rank: int) -> Path:
    return directory / f"host_{rank}.pt"


def rng_state() -> dict[str, Any]:
    import numpy as np

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _options():
    """Trainable parameters only (LoRA adapters, the unfrozen top layers: frozen ones come back from the
    weights the run started from). ``strict=False``: loading leaves the frozen parameters alone (DCP's load
    has already failed on any trainable one the checkpoint lacks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False)


def _models(learner: Learner) -> dict[str, nn.Module]:
    return {name: model for name, model in (("actor", learner.actor), ("critic", learner.critic)) if model}


def _optimizers(learner: Learner) -> list[torch.optim.Optimizer]:
    return [optim for optim in (learner.actor_optim, learner.critic_optim) if optim is not None]


def _trainable_names(model: nn.Module) -> set[str]:
    """The trainable parameters' names as state dicts name them, each once: a tied weight (the LM head of
    a model with tied embeddings) is saved under one name only, as ``named_parameters`` lists it."""
    return {n.replace(_FSDP_PREFIX, "") for n, p in unwrap(model).named_parameters() if p.requires_grad}


def _model_state(model: nn.Module) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    trainable = _trainable_names(model)
    return {k: v for k, v in get_model_state_dict(model, options=_options()).items() if k in trainable}


def sharded_weights(learner: Learner) -> dict[str, Any]:
    """The trainable weights as this rank holds them (under FSDP its shards, never unsharded): what
    :func:`save` writes through DCP, and the targets :func:`load` reads into."""
    return {name: _model_state(model) for name, model in _models(learner).items()}


def host_state(learner: Learner) -> dict[str, Any]:
    """This rank's own file: its optimiser states (under FSDP its local shards), schedulers, RNG."""
    return {"optimizers": [o.state_dict() for o in _optimizers(learner)],
            "schedulers": [s.state_dict() for s in learner.schedulers], "rng": rng_state()}


def save(directory: Path, learner: Learner, meta: dict[str, Any]) -> None:
    """Every rank (collective): write this rank's schedulers, RNG and shards; rank 0 last the marker with
    ``meta`` (step, data position, run id, the weights the trainable ones apply to). A folder left
    incomplete by a killed attempt at this step is removed first."""
    import torch.distributed.checkpoint as dcp

    rank = distributed.rank()
    if rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    distributed.barrier()  # no rank writes into the folder before it is fresh
    torch.save(host_state(learner), _host_file(directory, rank))
    dcp.save(sharded_weights(learner), checkpoint_id=str(directory / SHARDS_DIR))
    if rank == 0:  # DCP returns on rank 0 after every rank's write finished and its .metadata is written
        mark_complete(directory, meta)


def load(directory: Path, learner: Learner) -> dict[str, Any]:
    """Every rank (collective): read this rank's shards into the learner, restore its optimisers, schedulers
    and RNG; returns the checkpoint's meta."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    weights = sharded_weights(learner)
    dcp.load(weights, checkpoint_id=str(directory / SHARDS_DIR))
    for name, model in _models(learner).items():
        set_model_state_dict(model, weights[name], options=_options())
    host = torch.load(_host_file(directory, distributed.rank()), weights_only=False)
    for optim, saved in zip(_optimizers(learner), host["optimizers"], strict=True):
        optim.load_state_dict(saved)
    for scheduler, saved in zip(learner.schedulers, host["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    set_rng_state(host["rng"])
    return read_meta(directory)


def export_checkpoint(directory: Path, policy_cfg: PolicyConfig, out_dir: Path) -> Path:
    """A complete checkpoint as a Hugging Face model folder (LoRA merged), in this one process on CPU: the
    actor's trainable weights read from the shards (whatever world size wrote them) onto the weights they
    were trained from (the meta's ``init_model_dir``), written by :func:`export_pretrained`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    meta = read_meta(directory)
    base = Path(meta["init_model_dir"])
    if not base.is_dir():
        raise FileNotFoundError(f"{directory} was trained from {base}, which is gone: it cannot be exported")
    actor = load_policy(base, policy_cfg)
    state = {"actor": _model_state(actor)}
    dcp.load(state, checkpoint_id=str(directory / SHARDS_DIR), no_dist=True)  # the actor's keys only
    set_model_state_dict(actor, state["actor"], options=_options())
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
