"""The learning check, through the real pipeline: generated bridge world -> Ray Data index -> Serve
retriever and generator -> naive-RAG cache -> copy pretraining, warm start (tag format only) and GRPO on
Ray Train fed by the rollout pool -> naive RAG, teacher and s3 contexts on dev questions never trained on
-> GenAcc.

What it asserts is what holds today: the pipeline runs end to end on the generated world, every RL step
is recorded, and naive RAG fails there by construction. What the issue also asks (s3 >= 70 on dev, a
rising reward) is NOT reached yet: the trained searcher stays near the random teacher (see the issue
note for the measured numbers), so those assertions are not here; they belong here once it learns."""

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
def test_learning_check_runs_end_to_end_and_naive_rag_fails_by_construction(tmp_path):
    overrides = [f"paths.work_dir={tmp_path / 'work'}", f"paths.data_dir={tmp_path / 'data'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    proc = subprocess.run([sys.executable, "-m", "s3ray.cli", "demo", "--config", "learning_check", *overrides],
                          capture_output=True, text=True, timeout=2100, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    cfg = load_config("learning_check", overrides)
    naive, teacher, s3 = (mean_genacc(cfg, g) for g in ("naive_rag", "s3_teacher", "s3"))
    print(f"learning check GenAcc on dev: naive_rag {naive:.1f}, s3_teacher {teacher:.1f}, s3 {s3:.1f}")
    assert naive <= 30.0, f"naive RAG answers {naive:.1f}% of the bridge questions: the world leaks"
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    train_run = runs[runs["tags.s3ray.stage"] == "train"].iloc[0]["run_id"]
    history = mlflow.tracking.MlflowClient().get_metric_history(train_run, "reward")
    assert len({m.step for m in history}) == cfg.train.steps
    assert all(-1.0 <= m.value <= 1.0 for m in history)  # Gain Beyond RAG
