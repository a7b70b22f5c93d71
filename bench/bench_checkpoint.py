"""Checkpoint memory and bytes per rank: 2 gloo ranks on CPU under FSDP, a small Qwen2 (actor + critic,
fp32 masters, Adam states filled by one step), one save and one load into a second such learner (as a
resumed run does), each mode in fresh processes:

    checkpoint.peak_rss_mb.rankR          peak RSS during save + load above the RSS before it (MB), sharded
                                           (baseline: the full gather the trainer used before issue 20)
    checkpoint.written_mb.rankR           the sizes of the files rank R wrote
    checkpoint.read_mb.rankR              the bytes rank R read (rchar) while loading

Sharded is :mod:`s3ray.train.checkpoint` (DCP). The baseline is the earlier path as it ran: rank 0 gathers
FSDP's full state dicts (``FULL_STATE_DICT``, ``rank0_only``) and ``torch.save``s one file; at load every
rank ``torch.load``s the whole file and FSDP re-shards it. Peak RSS is Linux's VmHWM, reset just before the
save (``/proc/self/clear_refs``); bytes read are ``/proc/self/io``'s rchar around the baseline's
``torch.load`` and around the whole ``checkpoint.load`` (with the few KB of DCP's plan messages).
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

from common import figure

WORLD = 2
MODEL = dict(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)


def _proc(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


class _Reads:
    """The rchar delta of this process over the ``with`` blocks it is entered for."""

    def __init__(self) -> None:
        self.bytes = 0

    def __enter__(self):
        self._start = _proc("/proc/self/io", "rchar")

    def __exit__(self, *exc):
        self.bytes += _proc("/proc/self/io", "rchar") - self._start


def _learner(model_dir: Path):
    import torch

    from s3ray.config import PolicyConfig, TrainConfig
    from s3ray.train.update import build_learner

    learner = build_learner(model_dir, PolicyConfig(dtype="bfloat16"),
                            TrainConfig(strategy="fsdp", num_workers=WORLD), torch.device("cpu"))
    ids = torch.randint(0, MODEL["vocab_size"], (2, 32), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    learner.actor(input_ids=ids, attention_mask=mask).logits.float().mean().backward()
    learner.critic(ids, mask).mean().backward()
    for optim in (learner.actor_optim, learner.critic_optim):  # Adam's states exist from the first step
        optim.step()
        optim.zero_grad()
    return learner


def _full_gather_save_and_load(learner, fresh, path: Path, reads: _Reads, rank: int) -> list[Path]:
    import torch
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    def parts(of):
        return (("actor", of.actor, of.actor_optim), ("critic", of.critic, of.critic_optim))

    def full(model, rank0_only: bool):
        return FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=rank0_only),
                                    FullOptimStateDictConfig(rank0_only=rank0_only))

    state = {}
    for name, model, optim in parts(learner):
        with full(model, rank0_only=True):
            state[name], state[f"{name}_optim"] = model.state_dict(), FSDP.optim_state_dict(model, optim)
    if rank == 0:
        torch.save(state, path)
    del state
    torch.distributed.barrier()
    with reads:
        state = torch.load(path, weights_only=False)
    for name, model, optim in parts(fresh):
        with full(model, rank0_only=False):
            model.load_state_dict(state[name])
            optim.load_state_dict(FSDP.optim_state_dict_to_load(model, optim, state[f"{name}_optim"]))
    return [path] if rank == 0 else []


def _sharded_save_and_load(learner, fresh, path: Path, reads: _Reads, rank: int) -> list[Path]:
    import torch.distributed as dist

    from s3ray.train import checkpoint
    from s3ray.train.checkpoint_store import MARKER

    checkpoint.save(path, learner, {"step": 1})
    dist.barrier()  # rank 0's marker is written
    with reads:
        checkpoint.load(path, fresh)
    shards = path / checkpoint.SHARDS_DIR
    return [*shards.glob(f"__{rank}_*.distcp"), path / f"host_{rank}.pt",
            *([shards / ".metadata", path / MARKER] if rank == 0 else [])]


def _rank(rank: int, mode: str, model_dir: str, out: str, port: int) -> None:
    import os

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    learner = _learner(Path(model_dir))
    fresh = _learner(Path(model_dir))  # the resumed run's (its Adam states exist: a load target)
    dist.barrier()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before_kb = _proc("/proc/self/status", "VmRSS")
    reads = _Reads()
    run = _sharded_save_and_load if mode == "sharded" else _full_gather_save_and_load
    written = run(learner, fresh, Path(out) / mode, reads, rank)
    peak_kb = _proc("/proc/self/status", "VmHWM")
    Path(out, f"{mode}.{rank}.json").write_text(json.dumps(
        {"peak_above_mb": (peak_kb - before_kb) / 1024, "before_mb": before_kb / 1024,
         "read_mb": reads.bytes / 2**20, "written_mb": sum(p.stat().st_size for p in written) / 2**20}))
    dist.barrier()
    dist.destroy_process_group()


def _measure(mode: str, model_dir: Path, out: Path) -> list[dict]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(mode, str(model_dir), str(out), port), nprocs=WORLD, join=True)
    return [json.loads((out / f"{mode}.{rank}.json").read_text()) for rank in range(WORLD)]


def main() -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "lm"
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(**MODEL))
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(model_dir)
        print(f"# {params / 1e6:.1f}M parameters: actor + critic fp32 weights and Adam states "
              f"~{2 * params * 12 / 2**20:.0f} MB", file=sys.stderr)
        results = {}
        for mode in ("full", "sharded"):
            (Path(tmp) / mode).mkdir()
            results[mode] = _measure(mode, model_dir, Path(tmp) / mode)
            print(f"# {mode}: {results[mode]}", file=sys.stderr)
    for rank in range(WORLD):
        full, sharded = results["full"][rank], results["sharded"][rank]
        figure(f"checkpoint.peak_rss_mb.rank{rank}", sharded["peak_above_mb"], "MB", full["peak_above_mb"],
               lower_is_better=True)
        for key in ("written_mb", "read_mb"):
            figure(f"checkpoint.{key}.rank{rank}", sharded[key], "MB", full[key], lower_is_better=True)


if __name__ == "__main__":
    main()
