"""The Ray Train loop end to end against a scripted bandit environment behind the pool's interface
(``run`` / ``update_weights``): two DDP workers on CPU, checkpoints, resume at the same step and batch,
MLflow history across the resume, weight versions published to the pool, Hugging Face export.

The real rollout pool and services are exercised in ``test_train_integration.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TARGETS = range(100, 400)  # reward 1 when the one written token falls here


@pytest.fixture(scope="module")
def bandit_pool_cls(ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0.25)
    class BanditPool:
        """One-turn episodes sampled from the pushed weights; reward 1 for a target token."""

        def __init__(self, model_dir: str):
            import torch
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
            self.generator = torch.Generator().manual_seed(0)
            self.versions: list[int] = []
            self.weights: list[dict] = []  # every pushed state, in order
            self.calls: list[list[str]] = []

        def update_weights(self, refs, version: int) -> None:
            import ray

            [state] = ray.get(refs)  # the object-store sync nests the ref, as the real pool expects
            self.model.load_state_dict(state)
            self.versions.append(version)
            self.weights.append(state)

        def run(self, questions, greedy: bool = False, samples_per_question: int = 1, with_reward: bool = True):
            import torch

            from s3ray.agent.episode import Episode
            from s3ray.agent.trace import Trace, Turn

            self.calls.append([q.id for q in questions])
            episodes = []
            for q in questions:
                prompt = [5 + len(q.question) % 50, 7, 9]
                for i in range(samples_per_question):
                    with torch.no_grad():
                        logits = self.model(input_ids=torch.tensor([prompt])).logits[0, -1]
                    logp = torch.log_softmax(logits, -1)
                    token = int(torch.multinomial(logp.exp(), 1, generator=self.generator))
                    reward = float(token in TARGETS)
                    episodes.append(Episode(
                        question_id=q.id, question=q.question, golden_answers=list(q.golden_answers),
                        source=q.source, prompt_ids=prompt, response_ids=[token], action_mask=[1],
                        logprobs=[float(logp[token])], temperature=1.0,
                        trace=Trace(turns=[Turn(text="", action="complete")], finish="complete"),
                        policy_version=self.versions[-1] if self.versions else -1,
                        sample_index=i, acc_s3=reward, acc_rag=0.0, reward=reward, decided_by="span"))
            return episodes

        def state(self):
            return self.versions, self.calls

        def pushed(self):
            return self.weights

    return BanditPool


@pytest.mark.ray
def test_two_workers_checkpoint_resume_and_track(session_cfg, tiny_model_dir, bandit_pool_cls, tmp_path):
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM

    from s3ray.cli import main
    from s3ray.config import load_config
    from s3ray.train.identity import apply_resume_choice, kept_steps
    from s3ray.train.trainer import dev_questions, run_trainer, step_question_indices
    from s3ray.types import Question

    questions = [Question(id=f"q{i}", question="x" * i, golden_answers=("a",), source="bandit")
                 for i in range(10)]

    def overrides(steps: int) -> list[str]:
        return [f"paths.work_dir={tmp_path}", f"corpus.path={session_cfg.corpus.path}",
                f"train.dir={tmp_path / 'train'}", f"train.steps={steps}", "train.num_workers=2",
                "train.batch_size=4", "train.mini_batch_size=4", "train.micro_batch_size=2",
                "train.checkpoint_every=1", "train.cpus_per_worker=0.5"]

    def cfg_for(steps: int, *more: str):
        return load_config("test", [*overrides(steps), *more])

    pool = bandit_pool_cls.remote(str(tiny_model_dir))
    run_trainer(cfg_for(2), pool, questions, tiny_model_dir)
    assert kept_steps(cfg_for(2)) == [1, 2]
    versions, calls = ray_get(pool.state.remote())
    assert versions == [0, 1, 2]  # initial weights before sampling, then one version per step

    # "Stopped" after step 2; a re-run with a longer schedule resumes from the checkpoint.
    run_trainer(cfg_for(3), pool, questions, tiny_model_dir)
    versions, calls = ray_get(pool.state.remote())
    assert versions == [0, 1, 2, 2, 3]  # the checkpoint's weights go to the pool before step 3 samples
    pushed = ray_get(pool.pushed.remote())
    # The resumed run starts from step 2's weights (restored, not the base model's).
    assert all(torch.equal(pushed[3][k], pushed[2][k]) for k in pushed[2])
    assert any(not torch.equal(pushed[3][k], pushed[0][k]) for k in pushed[0])
    assert len(calls) == 3
    assert calls[2] == [questions[i].id for i in step_question_indices(10, 3, 4, 42)]

    mlflow.set_tracking_uri(cfg_for(3).tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["s3ray"], filter_string="tags.`s3ray.stage` = 'train'",
                              output_format="list")
    assert len(runs) == 1  # the resumed run continues the same MLflow run
    client = mlflow.MlflowClient()
    history = client.get_metric_history(runs[0].info.run_id, "reward")
    assert sorted(m.step for m in history) == [1, 2, 3]
    for name in ("kl", "logprob_gap", "policy_loss", "value_loss", "entropy", "clip_fraction",
                 "rollout_wait_share", "train_tokens_per_s", "genacc", "rag_acc", "turns"):
        assert len(client.get_metric_history(runs[0].info.run_id, name)) == 3, name
    gap = client.get_metric_history(runs[0].info.run_id, "logprob_gap")
    assert max(m.value for m in gap) < 1e-3  # the trainer agrees with the sampler's log-probs
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"reward_curve.png", "model", "config.yaml", "episodes"} <= artifacts
    tables = [a.path for a in client.list_artifacts(runs[0].info.run_id, "episodes")]
    assert tables == [f"episodes/step_00000{i}.json" for i in (1, 2, 3)]  # one per step, across the resume
    table = json.loads(Path(client.download_artifacts(runs[0].info.run_id, "episodes/step_000003.json",
                                                      str(tmp_path))).read_text())  # MLflow's split format
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert len(rows) == 4 and rows[0]["pick"] == "best" and rows[0]["reward"] == max(r["reward"] for r in rows)

    export = tmp_path / "train" / "export"
    exported = AutoModelForCausalLM.from_pretrained(export)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not (a == b).all() for a, b in zip(exported.state_dict().values(), base.state_dict().values(),
                                                  strict=True))

    # The run links each checkpoint; `s3ray export --step 2` writes step 2's weights (what the pool got).
    tags = runs[0].data.tags
    assert [k for k in sorted(tags) if k.startswith("s3ray.checkpoint.")] == [
        f"s3ray.checkpoint.step_00000{i}" for i in (1, 2, 3)]
    assert kept_steps(cfg_for(3)) == [2, 3]  # checkpoints_to_keep=2
    out = tmp_path / "step2_hf"
    assert main(["export", "--config", "test", "--step", "2", "--out", str(out), *overrides(3)]) == 0
    step2 = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert all(torch.equal(step2[k], pushed[2][k]) for k in pushed[2])
    assert main(["export", "--config", "test", "--step", "1", *overrides(3)]) == 2  # not kept: says which are

    # train.resume=<step 2's folder>: the run's checkpoints are moved aside and step 3 is trained again,
    # then (its last step) evaluated on the dev slice through the same pool.
    again = cfg_for(3, f"train.resume={tags['s3ray.checkpoint.step_000002']}", "train.eval_every=2",
                    "train.eval_questions=3")
    run_trainer(again, pool, questions, tiny_model_dir, apply_resume_choice(again))
    versions, calls = ray_get(pool.state.remote())
    assert versions[5:] == [2, 3] and calls[3] == calls[2]
    assert calls[4] == [q.id for q in dev_questions(again)] and len(calls[4]) == 3
    dev = client.get_metric_history(runs[0].info.run_id, "dev_genacc")
    assert [m.step for m in dev] == [3] and 0.0 <= dev[0].value <= 1.0
    assert len(client.get_metric_history(runs[0].info.run_id, "dev_gbr")) == 1
    assert all(torch.equal(ray_get(pool.pushed.remote())[5][k], pushed[2][k]) for k in pushed[2])


def ray_get(ref):
    import ray

    return ray.get(ref)
