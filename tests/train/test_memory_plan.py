"""The trainer's memory plan from Qwen2.5-7B's config.json alone (a fixture: the meta device, no weights):
the issue's arithmetic, the preset fitting 8x80 GB, and a run that cannot fit refused with its numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3ray.cli import main
from s3ray.config import load_config
from s3ray.train.memory_plan import GB, check_memory_plan, model_shapes, plan

QWEN_7B = Path(__file__).parents[1] / "fixtures" / "qwen2_5_7b"


@pytest.fixture(scope="module")
def shapes():
    return model_shapes(QWEN_7B)


def test_shapes_are_qwen2_5_7b(shapes):
    policy, critic = shapes
    assert policy.params == 7_615_616_512  # the published parameter count of Qwen2.5-7B
    assert critic.params == 7_070_619_136 + 3584 + 1  # the backbone without lm_head, plus the value head
    assert policy.root_params == 2 * 152064 * 3584 + 3584  # embeddings, lm_head (untied), final norm
    assert (policy.layers, policy.kv_dim) == (28, 4 * 128)


def test_states_split_over_fsdp_ranks_as_the_issue_computed(shapes):
    cfg = load_config("s3_8_3_3", ["train.fsdp_cpu_offload=false"])
    lines = plan(cfg, *shapes).lines
    assert lines["actor states (fp32 w+g+adam)"] / GB == pytest.approx(30.46, abs=0.01)
    assert lines["critic states (fp32 w+g+adam)"] / GB == pytest.approx(28.28, abs=0.01)
    assert lines["reference weights"] / GB == pytest.approx(15.23, abs=0.01)
    assert lines["logit chunk"] == 4096 * 152064 * (2 + 12)


def test_the_preset_fits_8x80gb_and_would_not_without_offload(shapes):
    fitting = plan(load_config("s3_8_3_3"), *shapes)
    assert fitting.budget == 80 * GB and fitting.fits and fitting.total < 60 * GB
    unfitting = plan(load_config("s3_8_3_3", ["train.fsdp_cpu_offload=false"]), *shapes)
    assert not unfitting.fits and unfitting.total > 110 * GB
    assert plan(load_config("s3_8_3_3", ["train.fsdp_cpu_offload=false", "train.gpu_memory_gb=141"]), *shapes).fits


def test_checkpointing_and_smaller_chunks_shrink_the_plan(shapes):
    base = plan(load_config("s3_8_3_3"), *shapes).lines
    no_ckpt = plan(load_config("s3_8_3_3", ["policy.gradient_checkpointing=false"]), *shapes).lines
    assert no_ckpt["activations"] > 10 * base["activations"]
    small = plan(load_config("s3_8_3_3", ["train.logprob_chunk_tokens=1024"]), *shapes).lines
    assert small["logit chunk"] * 4 == base["logit chunk"]


def test_a_run_that_cannot_fit_is_refused_with_the_numbers():
    cfg = load_config("s3_8_3_3", ["train.fsdp_cpu_offload=false"])
    with pytest.raises(ValueError, match=r"(?s)cannot fit train.gpu_memory_gb=80.*actor states.*DOES NOT FIT"):
        check_memory_plan(cfg, QWEN_7B)
    assert check_memory_plan(load_config("s3_8_3_3"), QWEN_7B).fits
    assert check_memory_plan(load_config(), QWEN_7B) is None  # CPU runs are not planned


def test_cli_prints_the_table(capsys):
    assert main(["memory-plan", "--config", "s3_8_3_3", f"policy.model={QWEN_7B}"]) == 0
    out = capsys.readouterr().out
    assert "reference weights" in out and "(fits)" in out
    assert main(["memory-plan", "--config", "s3_8_3_3", f"policy.model={QWEN_7B}",
                 "train.fsdp_cpu_offload=false"]) == 1



def test_no_kl_term_plans_no_reference(shapes):
    without = plan(load_config("s3_8_3_3", ["train.kl_coef=0"]), *shapes)
    assert without.lines["reference weights"] == 0
    assert without.total < plan(load_config("s3_8_3_3"), *shapes).total
