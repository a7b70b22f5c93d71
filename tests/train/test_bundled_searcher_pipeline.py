"""The bundled pretrained searcher (SmolLM2-135M-Instruct) through the real train stage: converted from its
package by the trainer, warm-started on the teacher's episodes from the rollout pool, then two GRPO steps
against the retriever and generator Serve apps on Ray Train, with the CPU levers of ``demo_smollm2``
(bf16 compute, top layers only, the rollout's log-probs, no reference). After the warm start the searcher
writes well-formed turns through its own chat template, and the export reloads."""

from __future__ import annotations

import pytest

from s3ray.config import load_config
from s3ray.precision import compute_dtype

pytestmark = [pytest.mark.ray, pytest.mark.slow]


# In fp32 on a 2-core AVX2 machine (policy.dtype=auto there) a GRPO step of 4 episodes took 197 s (rollout
# 110 s, update 79 s) and the warm start on 8 questions 8 min: the step here has 2 episodes, the warm start
# 6 questions, and the test its own timeout.
@pytest.mark.timeout(1800)
def test_smollm2_warm_start_and_two_grpo_steps_through_the_pipeline(services, tmp_path):
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s3ray.ragcache.precompute import precompute
    from s3ray.train.trainer import train

    preset = load_config("demo_smollm2")
    cfg = load_config("test", [
        f"paths.work_dir={tmp_path / 'work'}", f"corpus.path={services.corpus.path}",
        f"serve.port={services.serve.port}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "data.train=[{name: hotpotqa, path: hotpotqa/train.jsonl, limit: 40}]",
        f"policy={preset.policy.model_dump_json()}",
        "train.algorithm=grpo", "train.grpo_group_size=2", "train.steps=2", "train.num_workers=1",
        "train.batch_size=1", "train.mini_batch_size=2", "train.micro_batch_size=2", "train.checkpoint_every=2",
        f"train.actor_lr={preset.train.actor_lr}", f"train.kl_coef={preset.train.kl_coef}",
        f"train.logp_old={preset.train.logp_old}", "train.entropy_coef=0.0",
        f"train.warm_start={preset.train.warm_start.model_dump_json()}",
        "train.warm_start.num_questions=6", "train.warm_start.epochs=2"])
    precompute(cfg)
    export = train(cfg)

    assert (cfg.paths.work_dir / "models" / "smollm2-135m-instruct" / "s3ray_bundled.json").exists()
    model = AutoModelForCausalLM.from_pretrained(export)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert AutoTokenizer.from_pretrained(export).chat_template  # the model's own template travels along

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    [run] = mlflow.search_runs(experiment_names=[cfg.tracking.experiment],
                               filter_string="tags.`s3ray.stage` = 'train'", output_format="list")
    # policy.dtype=auto, as this machine's CPU resolves it
    assert run.data.tags["s3ray.compute_dtype"] == str(compute_dtype("auto", "cpu")).removeprefix("torch.")
    invalid = [m.value for m in client.get_metric_history(run.info.run_id, "invalid_action_rate")]
    assert len(invalid) == 2
    # Most turns after the warm start are well-formed: a query, or a selection and a completion.
    assert sum(invalid) / len(invalid) < 0.5, invalid
    [warm] = mlflow.search_runs(experiment_names=[cfg.tracking.experiment],
                                filter_string="tags.`s3ray.stage` = 'warm_start'", output_format="list")
    nll = warm.data.metrics
    assert nll["warm_start_nll"] < nll["warm_start_nll_before"]
