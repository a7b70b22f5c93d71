"""The learning check, through the real pipeline: generated bridge world -> Ray Data index -> Serve
retriever and generator -> naive-RAG cache -> warm start (tag format only) and GRPO on Ray Train fed by
the rollout pool -> s3 and naive RAG contexts on dev questions never trained on -> GenAcc.

Naive RAG cannot answer by construction (the birth city is only in the founder's passage, which names
no company); the trained searcher must have discovered that the query to write names the founder."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from s3ray.config import load_config
from s3ray.evaluation.evaluate import result_path
from s3ray.inference.store import read_records


def mean_genacc(cfg, gatherer: str) -> float:
    records = read_records(result_path(cfg, gatherer, "bridge")).values()
    assert records, f"no evaluated {gatherer} contexts"
    return 100.0 * sum(r["genacc"] for r in records) / len(records)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_rl_discovers_the_bridge_query_and_beats_naive_rag_on_unseen_questions(tmp_path):
    overrides = [f"paths.work_dir={tmp_path / 'work'}", f"paths.data_dir={tmp_path / 'data'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    proc = subprocess.run([sys.executable, "-m", "s3ray.cli", "demo", "--config", "learning_check", *overrides],
                          capture_output=True, text=True, timeout=2100, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    cfg = load_config("learning_check", overrides)
    s3, naive = mean_genacc(cfg, "s3"), mean_genacc(cfg, "naive_rag")
    assert naive <= 30.0, f"naive RAG answers {naive:.1f}% of the bridge questions: the world leaks"
    assert s3 >= 70.0, f"the trained searcher reaches only {s3:.1f}% GenAcc (naive RAG {naive:.1f}%)"
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    train_run = runs[runs["tags.s3ray.stage"] == "train"].iloc[0]["run_id"]
    history = sorted(mlflow.tracking.MlflowClient().get_metric_history(train_run, "reward"), key=lambda m: m.step)
    rewards = [m.value for m in history]
    assert len(rewards) == cfg.train.steps
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, f"the reward did not rise: {rewards}"
