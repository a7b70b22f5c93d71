"""The learner under FSDP for real (gloo process groups on CPU): the preset's precision settings keep
fp32 master weights so a step at lr 1e-6 moves them, and a resumed run equals an uninterrupted one
(actor, critic, optimiser states, RNG)."""

from __future__ import annotations

from pathlib import Path

import torch

from s3ray.config import PolicyConfig, TrainConfig, load_config
from s3ray.train import checkpoint
from s3ray.train.batch import collate_episodes
from s3ray.train.distributed import is_fsdp
from s3ray.train.update import build_learner, ppo_epochs, prepare_batch

from .conftest import run_ranks
from .test_update_mechanics import random_episodes

CPU = torch.device("cpu")


def _train_step(learner, cfg: TrainConfig, episodes: list[dict], rank: int, world: int) -> None:
    prepared, _ = prepare_batch(collate_episodes(episodes[rank::world], pad_id=0), learner, cfg)
    ppo_epochs(prepared, learner, cfg, num_minibatches=2)


def _preset_step(rank: int, world: int, model_dir: str, out: str) -> None:
    preset = load_config("s3_8_3_3")
    policy_cfg = preset.policy.model_copy(update={"model": None})
    # The preset's precision at its lr; its verl schedule would run this first step at lr 0 (the
    # original's), which tests nothing about precision.
    train_cfg = preset.train.model_copy(update={"lr_warmup": "per_update"})
    learner = build_learner(Path(model_dir), policy_cfg, train_cfg, CPU)
    before = {n: p.detach().clone() for n, p in learner.actor.named_parameters()}
    _train_step(learner, train_cfg, random_episodes(4), rank, world)
    layers = [n for n in before if ".layers." in n and n.endswith("proj.weight")]
    changed = sum(int((dict(learner.actor.named_parameters())[n] != before[n]).sum()) for n in layers)
    total = sum(before[n].numel() for n in layers)
    torch.save({"fsdp": is_fsdp(learner.actor), "lr": preset.train.actor_lr, "compute": policy_cfg.dtype,
                "master_dtypes": {p.dtype for p in learner.actor.parameters()},
                "changed_share": changed / total}, out)


def test_one_step_at_lr_1e6_under_the_preset_precision_moves_the_weights(random_lm_dir, tmp_path):
    out = tmp_path / "result.pt"
    run_ranks(_preset_step, 1, str(random_lm_dir), str(out))
    result = torch.load(out, weights_only=False)
    assert result["fsdp"] and result["lr"] == 1e-6 and result["compute"] == "bfloat16"
    assert result["master_dtypes"] == {torch.float32}
    # Adam's first step moves every weight with a gradient by ~lr; in bf16 only ~2% would change.
    assert result["changed_share"] > 0.9, result


RESUME_CFG = TrainConfig(strategy="fsdp", num_workers=2, batch_size=4, mini_batch_size=2, micro_batch_size=1,
                         actor_lr=1e-3, critic_lr=1e-3, warmup_ratio=0.5, steps=2)


def _straight_and_resumed(rank: int, world: int, model_dir: str, straight: str, resumed: str) -> None:
    _run_two_steps(rank, world, model_dir, straight, interrupt=False)
    _run_two_steps(rank, world, model_dir, resumed, interrupt=True)


def plain_local_state(learner) -> dict:
    """This rank's checkpointed state with FSDP's sharded tensors as their local shards (comparable)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    def plain(value):
        if isinstance(value, ShardedTensor):
            return [shard.tensor for shard in value.local_shards()]
        return {k: plain(v) for k, v in value.items()} if isinstance(value, dict) else value

    optimizers = dict(zip(("actor_optim", "critic_optim"), checkpoint.host_state(learner)["optimizers"], strict=True))
    return {**plain(checkpoint.sharded_weights(learner)), **optimizers}


def _run_two_steps(rank: int, world: int, model_dir: str, out: str, interrupt: bool) -> None:
    policy_cfg = PolicyConfig(dtype="bfloat16")
    learner = build_learner(Path(model_dir), policy_cfg, RESUME_CFG, CPU)
    _train_step(learner, RESUME_CFG, random_episodes(4, seed=3), rank, world)
    if interrupt:
        ckpt = Path(out).with_suffix(".ckpt")
        checkpoint.save(ckpt, learner, {"step": 1})
        learner = build_learner(Path(model_dir), policy_cfg, RESUME_CFG, CPU)  # a fresh start ...
        torch.manual_seed(1234)
        assert checkpoint.load(ckpt, learner) == {"step": 1}  # ... resumed
    _train_step(learner, RESUME_CFG, random_episodes(4, seed=4), rank, world)
    torch.save({**plain_local_state(learner), "schedulers": [s.state_dict() for s in learner.schedulers],
                "draw": torch.rand(3)}, f"{out}.{rank}")


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=where)
    else:
        assert a == b, where


def test_a_resumed_run_equals_an_uninterrupted_one(random_lm_dir, tmp_path):
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    run_ranks(_straight_and_resumed, 2, str(random_lm_dir), str(straight), str(resumed))
    for rank in range(2):
        a, b = torch.load(f"{straight}.{rank}", weights_only=False), torch.load(f"{resumed}.{rank}", weights_only=False)
        assert a["actor"] and a["critic"] and a["actor_optim"] and a["critic_optim"]
        for key in ("actor", "critic", "actor_optim", "critic_optim", "schedulers", "draw"):
            _assert_same(a[key], b[key], f"rank {rank} {key}")


def _lora_step(rank: int, world: int, model_dir: str, out: str) -> None:
    from s3ray.train.distributed import hf_full_state

    policy_cfg = PolicyConfig(dtype="bfloat16", gradient_checkpointing=True,
                              lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0})
    cfg = TrainConfig(strategy="fsdp", num_workers=2, batch_size=4, mini_batch_size=4, micro_batch_size=2,
                      actor_lr=1e-2, algorithm="grpo", grpo_group_size=2)
    learner = build_learner(Path(model_dir), policy_cfg, cfg, CPU)
    before = {n: p.detach().clone() for n, p in learner.actor.named_parameters()}
    episodes = random_episodes(4, seed=5)
    for i, ep in enumerate(episodes):
        ep.question_id, ep.reward = f"q{i // 2}", float(i % 2)  # two groups of two, rewards 0 and 1
    _train_step(learner, cfg, episodes, rank, world)
    moved = {n.replace("_fsdp_wrapped_module.", "") for n, p in learner.actor.named_parameters()
             if not torch.equal(p, before[n])}
    state = hf_full_state(learner.actor)
    if rank == 0:
        torch.save({"moved": moved, "state": state}, out)


def test_a_lora_policy_trains_and_publishes_under_fsdp(random_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora.pt"
    run_ranks(_lora_step, 2, str(random_lm_dir), str(out))
    result = torch.load(out, weights_only=False)
    assert result["moved"] and all("lora_" in n for n in result["moved"]), result["moved"]
    base = AutoModelForCausalLM.from_pretrained(random_lm_dir).state_dict()
    state = result["state"]
    assert set(state) == set(base)  # Hugging Face names, adapters merged in
    q = next(k for k in state if k.endswith("q_proj.weight"))
    assert not torch.equal(state[q], base[q])


def _skipping_and_every_row(rank: int, world: int, model_dir: str, out: str) -> None:
    """Rank 0 holds a group with signal and one without, rank 1 two without: rank 1 runs as many
    micro-batches of no gradient as rank 0 runs, else FSDP's gathers would not pair up."""
    from s3ray.train import update
    from s3ray.train.distributed import hf_full_state

    cfg = TrainConfig(strategy="fsdp", num_workers=2, algorithm="grpo", grpo_group_size=2, batch_size=4,
                      mini_batch_size=8, micro_batch_size=1, kl_coef=0.0, entropy_coef=0.0, actor_lr=1e-2,
                      logp_old="rollout")
    episodes = random_episodes(8, seed=7)
    for i, ep in enumerate(episodes):
        ep.question_id, ep.sample_index = f"g{i // 2}", i % 2
        if i >= 2:
            ep.reward = 0.5
    shard = collate_episodes(episodes[4 * rank:4 * rank + 4], pad_id=0)
    results, micro_batches = {}, []
    for name in ("skipping", "every_row"):
        if name == "every_row":
            update.rows_with_gradient = lambda prepared, rows, learner, cfg: rows
        torch.manual_seed(0)
        learner = build_learner(Path(model_dir), PolicyConfig(), cfg, CPU)
        prepared, _ = prepare_batch(shard, learner, cfg)
        micro_batches.append(len(update.accumulate_gradients(prepared, torch.arange(4), learner, cfg)))
        learner.actor_optim.step()
        results[name] = hf_full_state(learner.actor)
    if rank == 0:
        torch.save({**results, "micro_batches": micro_batches}, out)


def test_ranks_without_signal_run_as_many_micro_batches_and_the_step_equals_every_row_run(random_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "skip.pt"
    run_ranks(_skipping_and_every_row, 2, str(random_lm_dir), str(out))
    result = torch.load(out, weights_only=False)
    assert result["micro_batches"] == [2, 4]  # rank 0: its group with signal, not the one without
    base = AutoModelForCausalLM.from_pretrained(random_lm_dir).state_dict()
    assert any(not torch.equal(result["skipping"][k], base[k]) for k in base)
    assert result["skipping"].keys() == result["every_row"].keys()
    for k, weight in result["skipping"].items():
        torch.testing.assert_close(weight, result["every_row"][k], rtol=1e-5, atol=1e-6, msg=k)
