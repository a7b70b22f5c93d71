"""The learning check, through the real pipeline: generated bridge world -> Ray Data index -> Serve
retriever and generator -> naive-RAG cache -> copy pretraining, warm start (tag format and query form,
every entity of the top doc equally often) and GRPO on Ray Train fed by the rollout pool -> naive RAG,
teacher and s3 contexts on dev questions never trained on -> GenAcc.

Asserted: naive RAG fails by construction (<= 30); RL raises the reward (the mean of the last third of
the steps beats the first third's by more than two standard errors of 0/1 rewards); the trained
searcher reaches >= 60 GenAcc on dev. Measured with the whole-name copy pretraining (README): 71 at the
preset's seed 42, with the reward 0.28 -> 0.58 (first third -> last third); with the shared-prefix pass
(2026-12-05) 74, the reward 0.33 -> 0.63. The floor keeps a margin for seed and scheduling noise (rollout
batches depend on timing).

It is also CI's whole `s3ray demo`: run as the first command on a new machine (an empty home folder, so
no Ray token exists yet), it leaves its reward curve and table and prints where they are; a re-run
reuses every finished stage."""

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
@pytest.mark.timeout(3900)  # a whole demo and its re-run on 2 cores
def test_rl_discovers_the_bridge_query_and_beats_naive_rag_on_unseen_questions(tmp_path):
    overrides = [f"paths.work_dir={tmp_path / 'work'}", f"paths.data_dir={tmp_path / 'data'}"]
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    env["HOME"] = str(home)
    cmd = [sys.executable, "-m", "s3ray.cli", "demo", "--config", "learning_check", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3300, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"token: created {home / '.ray' / 'auth_token'}" in proc.stdout
    cfg = load_config("learning_check", overrides)
    assert (cfg.train.dir / "reward_curve.png").stat().st_size > 0
    table = (cfg.evaluation.dir / "table.md").read_text()
    assert "s3_teacher" in table and "naive_rag" in table
    assert "Reward curve:" in proc.stdout and str(cfg.evaluation.dir) in proc.stdout
    naive, teacher, s3 = (mean_genacc(cfg, g) for g in ("naive_rag", "s3_teacher", "s3"))
    print(f"learning check GenAcc on dev: naive_rag {naive:.1f}, s3_teacher {teacher:.1f}, s3 {s3:.1f}")
    assert naive <= 30.0, f"naive RAG answers {naive:.1f}% of the bridge questions: the world leaks"
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    train_run = runs[runs["tags.s3ray.stage"] == "train"].iloc[0]["run_id"]
    history = mlflow.tracking.MlflowClient().get_metric_history(train_run, "reward")
    assert len({m.step for m in history}) == cfg.train.steps
    assert all(-1.0 <= m.value <= 1.0 for m in history)  # Gain Beyond RAG
    rewards = [m.value for m in sorted(history, key=lambda m: m.step)]
    third = len(rewards) // 3
    first, last = sum(rewards[:third]) / third, sum(rewards[-third:]) / third
    episodes = cfg.train.batch_size * cfg.train.grpo_group_size
    noise = 2 * (0.25 / (episodes * third)) ** 0.5  # two standard errors of a mean of 0/1 rewards
    print(f"reward: first third {first:.3f}, last third {last:.3f} (noise {noise:.3f}): {rewards}")
    assert last - first > noise, f"the reward did not rise: {first:.3f} -> {last:.3f}"
    assert s3 >= 60.0, f"the trained searcher reaches {s3:.1f} GenAcc on dev (naive RAG {naive:.1f})"

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("reused") >= 4
