"""Sharded checkpoints (torch.distributed.checkpoint) on 2 gloo ranks under FSDP: the round trip restores
weights, optimiser, schedulers and RNG exactly, and each rank writes about half the bytes."""

from __future__ import annotations

from pathlib import Path

import torch

from s3ray.config import PolicyConfig
from s3ray.train import checkpoint
from s3ray.train.update import build_learner

from .conftest import run_ranks
from .test_fsdp import CPU, RESUME_CFG, _assert_same, _train_step
from .test_update_mechanics import random_episodes


def _round_trip(rank: int, world: int, model_dir: str, ckpt: str, out: str) -> None:
    policy_cfg = PolicyConfig(dtype="bfloat16")
    trained = build_learner(Path(model_dir), policy_cfg, RESUME_CFG, CPU)
    _train_step(trained, RESUME_CFG, random_episodes(4, seed=3), rank, world)
    checkpoint.save_sharded(Path(ckpt), trained, {"step": 1}, rank)
    expected = checkpoint.gather_state(trained)
    fresh = build_learner(Path(model_dir), policy_cfg, RESUME_CFG, CPU)
    torch.manual_seed(1234)  # the RNG must come back from the checkpoint
    meta = checkpoint.load_sharded(Path(ckpt), fresh)
    restored = checkpoint.gather_state(fresh)
    if rank == 0:
        torch.save({"expected": expected, "restored": restored, "meta": meta}, out)


def test_sharded_round_trip_is_exact_and_each_rank_writes_its_share(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from .conftest import BANDIT_VOCAB

    torch.manual_seed(0)  # wide enough that the shards, not per-entry overheads, are most of the bytes
    config = Qwen2Config(vocab_size=BANDIT_VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model_dir = tmp_path / "lm"
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    run_ranks(_round_trip, 2, str(model_dir), str(ckpt), str(out))
    result = torch.load(out, weights_only=False)
    assert result["meta"] == {"step": 1}
    expected, restored = result["expected"], result["restored"]
    assert expected["actor_optim"]["state"] and expected["critic_optim"]["state"] and expected["schedulers"]
    for key in ("actor", "critic", "actor_optim", "critic_optim", "schedulers"):
        _assert_same(expected[key], restored[key], key)
    rng, back = expected["rng"], restored["rng"]
    assert torch.equal(rng["torch"], back["torch"]) and rng["python"] == back["python"]
    kind, keys, *rest = rng["numpy"]
    assert (kind, rest) == (back["numpy"][0], list(back["numpy"][2:])) and (keys == back["numpy"][1]).all()
    shards = sorted((ckpt / checkpoint.SHARDED_DIR).glob("*.distcp"))
    sizes = [p.stat().st_size for p in shards]
    assert len(sizes) == 2 and all(0.35 < s / sum(sizes) < 0.65 for s in sizes), sizes
