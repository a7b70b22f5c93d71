"""A tiny randomly initialised causal LM folder (no tokenizer), for the trainer's unit and learning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

BANDIT_VOCAB = 64


@pytest.fixture(scope="module")
def random_lm_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=BANDIT_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    out = tmp_path_factory.mktemp("random_lm")
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def run_ranks(fn, world: int, *args) -> None:
    """``fn(rank, world, *args)`` in ``world`` processes joined in a gloo process group on CPU: FSDP and
    DDP for real, without GPUs or Ray. ``fn`` must be a module-level function (it is pickled)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(world, port, fn, args), nprocs=world, join=True)


def _rank_main(rank: int, world: int, port: int, fn, args) -> None:
    import os

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        # The ranks leave together: one that tore its group down while the other was still writing aborted
        # once in CI ("terminate called without an active exception", SIGABRT, the sharded-checkpoint test).
        dist.barrier()
    finally:
        dist.destroy_process_group()
