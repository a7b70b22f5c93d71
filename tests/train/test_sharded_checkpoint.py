"""Sharded checkpoints (torch.distributed.checkpoint) on 2 gloo ranks, under FSDP and DDP: the round trip
restores weights, optimiser, schedulers and RNG exactly on every rank, each rank writes about half the
bytes, and the shards export offline (one CPU process) to the same Hugging Face weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s3ray.config import PolicyConfig
from s3ray.train import checkpoint
from s3ray.train.distributed import hf_full_state
from s3ray.train.update import build_learner

from .conftest import run_ranks
from .test_fsdp import CPU, RESUME_CFG, _assert_same, _train_step, plain_local_state
from .test_update_mechanics import random_episodes


def _round_trip(rank: int, world: int, strategy: str, model_dir: str, ckpt: str, out: str) -> None:
    policy_cfg = PolicyConfig(dtype="bfloat16")
    cfg = RESUME_CFG.model_copy(update={"strategy": strategy})
    trained = build_learner(Path(model_dir), policy_cfg, cfg, CPU)
    _train_step(trained, cfg, random_episodes(4, seed=3), rank, world)
    checkpoint.save(Path(ckpt), trained, {"step": 1, "init_model_dir": model_dir})
    expected = {**plain_local_state(trained), "schedulers": [s.state_dict() for s in trained.schedulers],
                "rng": checkpoint.rng_state()}
    weights = hf_full_state(trained.actor)  # collective under FSDP; rank 0's
    fresh = build_learner(Path(model_dir), policy_cfg, cfg, CPU)
    torch.manual_seed(1234)  # the RNG must come back from the checkpoint
    meta = checkpoint.load(Path(ckpt), fresh)
    restored = {**plain_local_state(fresh), "schedulers": [s.state_dict() for s in fresh.schedulers],
                "rng": checkpoint.rng_state()}
    torch.save({"expected": expected, "restored": restored, "meta": meta, "weights": weights}, f"{out}.{rank}")


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_sharded_round_trip_is_exact_each_rank_writes_its_share_and_it_exports(strategy, tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from .conftest import BANDIT_VOCAB

    torch.manual_seed(0)  # wide enough that the shards, not per-entry overheads, are most of the bytes
    config = Qwen2Config(vocab_size=BANDIT_VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model_dir = tmp_path / "lm"
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.pt"
    run_ranks(_round_trip, 2, strategy, str(model_dir), str(ckpt), str(out))
    for rank in range(2):
        result = torch.load(f"{out}.{rank}", weights_only=False)
        assert result["meta"] == {"step": 1, "init_model_dir": str(model_dir)}
        expected, restored = result["expected"], result["restored"]
        assert expected["actor_optim"] and expected["critic_optim"] and expected["schedulers"]
        for key in ("actor", "critic", "actor_optim", "critic_optim", "schedulers"):
            _assert_same(expected[key], restored[key], f"rank {rank} {key}")
        rng, back = expected["rng"], restored["rng"]
        assert torch.equal(rng["torch"], back["torch"]) and rng["python"] == back["python"]
        kind, keys, *rest = rng["numpy"]
        assert (kind, rest) == (back["numpy"][0], list(back["numpy"][2:])) and (keys == back["numpy"][1]).all()
    shards = sorted((ckpt / checkpoint.SHARDS_DIR).glob("*.distcp"))
    sizes = [p.stat().st_size for p in shards]
    assert len(sizes) == 2 and all(0.35 < s / sum(sizes) < 0.65 for s in sizes), sizes

    # Offline, in this process (no process group): the shards become the trained Hugging Face weights.
    exported = AutoModelForCausalLM.from_pretrained(
        checkpoint.export_checkpoint(ckpt, PolicyConfig(), tmp_path / "hf")).state_dict()
    trained = torch.load(f"{out}.0", weights_only=False)["weights"]
    base = Qwen2ForCausalLM.from_pretrained(model_dir).state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in trained)  # the step moved the weights ...
    assert all(torch.equal(exported[k], trained[k]) for k in trained)  # ... and the export has them
