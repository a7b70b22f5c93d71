"""A kept checkpoint exported as a Hugging Face folder: LoRA adapters merged into the weights they trained."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train import checkpoint
from s3ray.train.policy import hf_state_dict
from s3ray.train.update import build_learner


def test_a_lora_checkpoint_exports_merged_weights(tiny_model_dir, tmp_path):
    policy_cfg = PolicyConfig(lora={"enabled": True, "r": 4})
    learner = build_learner(tiny_model_dir, policy_cfg, TrainConfig(algorithm="grpo"), torch.device("cpu"))
    model = learner.actor
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at 0: the adapters would change nothing
                param.normal_(std=0.5)
    # what the trainer saves (in one process here): the trainable (adapter) weights only, and the weights
    # they apply to
    checkpoint.save(tmp_path / "step_000002", learner, {"step": 2, "init_model_dir": str(tiny_model_dir)})
    saved = checkpoint.sharded_weights(learner)["actor"]
    assert not [key for key in saved if "lora" not in key], list(saved)[:8]
    out = checkpoint.export_checkpoint(tmp_path / "step_000002", policy_cfg, tmp_path / "hf")
    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    expected = hf_state_dict(model)
    assert set(expected) <= set(exported) and not any("lora" in k for k in exported)
    assert all(torch.allclose(exported[k], expected[k]) for k in expected)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not torch.allclose(exported["model.layers.0.self_attn.q_proj.weight"],
                              base["model.layers.0.self_attn.q_proj.weight"])  # the adapters are in
