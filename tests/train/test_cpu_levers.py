"""The levers that make a pretrained searcher affordable on CPU, each doing what it says and nothing else:
bf16 compute over fp32 master weights, training only the top decoder layers, the rollout's log-probs as
``logp_old``, and no reference model without a KL term."""

from __future__ import annotations

import pytest
import torch

from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train.batch import collate_episodes
from s3ray.train.update import build_learner, ppo_epochs, prepare_batch

from .test_update_mechanics import random_episodes

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def three_layer_lm_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    out = tmp_path_factory.mktemp("three_layer_lm")
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def _grpo(**overrides) -> TrainConfig:
    return TrainConfig(**{"algorithm": "grpo", "grpo_group_size": 4, "batch_size": 2, "mini_batch_size": 8,
                          "micro_batch_size": 8, "actor_lr": 1e-3, "entropy_coef": 0.0} | overrides)


def _grpo_batch(seed: int = 3):
    episodes = random_episodes(8, seed=seed)
    for i, ep in enumerate(episodes):
        ep.question_id, ep.sample_index = f"g{i // 4}", i % 4
        ep.logprobs = [-0.5 - 0.01 * j if m else 0.0 for j, m in enumerate(ep.action_mask)]
    return collate_episodes(episodes, pad_id=0)


def _update(learner, cfg: TrainConfig, batch) -> dict[str, float]:
    prepared, metrics = prepare_batch(batch, learner, cfg)
    ppo_epochs(prepared, learner, cfg, num_minibatches=1)
    return metrics


def test_bf16_compute_keeps_fp32_master_weights_that_a_small_step_moves(three_layer_lm_dir):
    cfg = _grpo(actor_lr=1e-6)
    learner = build_learner(three_layer_lm_dir, PolicyConfig(dtype="bfloat16"), cfg, CPU)
    assert {p.dtype for p in learner.actor.parameters()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in learner.actor.named_parameters()}
    with learner.autocast():
        assert learner.actor.model.layers[0].mlp.up_proj(torch.ones(1, 32)).dtype == torch.bfloat16
    _update(learner, cfg, _grpo_batch())
    weights = [n for n in before if n.endswith("proj.weight")]
    changed = sum(int((dict(learner.actor.named_parameters())[n] != before[n]).sum()) for n in weights)
    # Adam's first step moves every weight with a gradient by ~lr: in fp32 nearly all of them change; a
    # bf16 weight would round most of these 1e-6 steps away.
    assert changed / sum(before[n].numel() for n in weights) > 0.9


def test_only_the_top_layers_train(three_layer_lm_dir):
    cfg = _grpo()
    learner = build_learner(three_layer_lm_dir, PolicyConfig(trainable_layers=1), cfg, CPU)
    before = {n: p.detach().clone() for n, p in learner.actor.named_parameters()}
    _update(learner, cfg, _grpo_batch())
    after = dict(learner.actor.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all(n.startswith(("model.layers.2.", "model.norm.")) for n in moved), sorted(moved)
    assert any(n.startswith("model.layers.2.") for n in moved)
    with pytest.raises(ValueError, match="has 3 decoder layers"):
        build_learner(three_layer_lm_dir, PolicyConfig(trainable_layers=4), cfg, CPU)


def test_rollout_logprobs_as_logp_old_skip_the_actor_forward(three_layer_lm_dir):
    batch = _grpo_batch()
    cfg = _grpo(logp_old="rollout", kl_coef=0.0)
    learner = build_learner(three_layer_lm_dir, PolicyConfig(), cfg, CPU)
    prepared, metrics = prepare_batch(batch, learner, cfg)
    assert torch.equal(prepared.logp_old, batch.rollout_logprobs)
    assert "old_logprobs_s" not in metrics
    recomputed, metrics = prepare_batch(batch, learner, _grpo(kl_coef=0.0))
    assert "old_logprobs_s" in metrics and not torch.equal(recomputed.logp_old, batch.rollout_logprobs)
    with pytest.raises(ValueError, match="ppo_epochs=1"):
        _grpo(logp_old="rollout", ppo_epochs=2)


def test_no_kl_term_no_reference_model(three_layer_lm_dir):
    learner = build_learner(three_layer_lm_dir, PolicyConfig(), _grpo(kl_coef=0.0), CPU)
    assert learner.reference is None
    metrics = _update(learner, _grpo(kl_coef=0.0), _grpo_batch())
    assert "kl" not in metrics and "ref_logprobs_s" not in metrics
    with_kl = build_learner(three_layer_lm_dir, PolicyConfig(), _grpo(kl_coef=0.01), CPU)
    assert with_kl.reference is not None and "ref_logprobs_s" in _update(with_kl, _grpo(kl_coef=0.01), _grpo_batch())
