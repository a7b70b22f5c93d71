"""`s3ray train` SIGKILLed mid-run and run again: it resumes from the last complete checkpoint, finishes
every step, and the step after the resume trains on the batch the killed run had drawn for it.

The train stage runs as its own process (the CLI) against this session's cluster and services. It is
killed once step 2's episodes are logged (the step's batch, logged right after its rollout), so during
step 2's update, before step 2's checkpoint: step 1's is the last complete one. A kill mid-write of a
checkpoint is ``test_checkpoint_store``'s (a folder without its marker is skipped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3ray.config import load_config
from s3ray.train.algorithms import algorithm_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def step_questions(client, run_id: str, step: int, out: Path) -> list[str]:
    """The question of each row of a step's episodes table, in order (every episode is logged:
    train.log_episodes is large). MLflow's log_table appends to a table already logged under that name."""
    path = client.download_artifacts(run_id, f"episodes/step_{step:06d}.json", str(out))
    table = json.loads(Path(path).read_text())
    return [row[table["columns"].index("question")] for row in table["data"]]


def same_batch_after_resume(drawn: list[str], logged: list[str]) -> bool:
    """``logged``: the killed run's rows of the step (``drawn``), then the resumed run's rows appended."""
    return logged[:len(drawn)] == drawn and sorted(logged[len(drawn):]) == sorted(drawn)


def test_train_killed_mid_update_resumes_from_the_last_checkpoint_with_the_same_batch(services, tiny_model_dir,
                                                                                      ray_cluster, tmp_path):
    import mlflow

    from s3ray.ragcache.precompute import precompute
    from s3ray.train.identity import checkpoints_dir, kept_steps

    overrides = [
        f"paths.work_dir={services.paths.work_dir}", f"corpus.path={services.corpus.path}",
        f"serve.port={services.serve.port}", f"rag_cache.dir={tmp_path / 'rag_cache'}",
        f"train.dir={tmp_path / 'train'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "data.train=[{name: hotpotqa, path: hotpotqa/train.jsonl, limit: 16}]", "tracking.run_name=killed",
        f"train.steps={STEPS}", "train.num_workers=2", "train.cpus_per_worker=0.5", "train.batch_size=4",
        "train.mini_batch_size=4", "train.micro_batch_size=2", "train.checkpoint_every=1",
        "train.log_episodes=64", f"cluster.address={ray_cluster.get_runtime_context().gcs_address}"]
    cfg = load_config("test", overrides)
    precompute(cfg)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    cmd = [sys.executable, "-m", "s3ray.cli", "train", "--config", "test", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def run(log: Path) -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)

    killed = run(tmp_path / "killed.log")
    deadline = time.monotonic() + 600
    run_id = None
    while True:  # until step 2's batch is logged
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "step 2 never started"
        runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list",
                                  filter_string="tags.`s3ray.stage` = 'train'") if run_id is None else []
        run_id = run_id or (runs[0].info.run_id if runs else None)
        if run_id and "episodes/step_000002.json" in {a.path for a in client.list_artifacts(run_id, "episodes")}:
            break
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert kept_steps(cfg) == [1], "the kill came after step 2's checkpoint: the update took under 0.2 s?"
    drawn = step_questions(client, run_id, 2, tmp_path / "killed")

    again = run(tmp_path / "again.log")
    assert again.wait(timeout=900) == 0, (tmp_path / "again.log").read_text()[-3000:]
    log = (tmp_path / "again.log").read_text()
    assert f"resumed from {checkpoints_dir(cfg) / 'step_000001'} (step 1" in log
    assert kept_steps(cfg) == [2, 3]
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list",
                              filter_string="tags.`s3ray.stage` = 'train'")
    assert [r.info.run_id for r in runs] == [run_id]  # the same MLflow run continued
    # Step 1 was not trained again, step 2 was (its metrics are logged after its update: once), step 3 too.
    assert sorted(m.step for m in client.get_metric_history(run_id, "reward")) == [1, 2, 3]
    assert same_batch_after_resume(drawn, step_questions(client, run_id, 2, tmp_path / "again"))
    assert len(drawn) == 4 * algorithm_for(cfg.train).samples_per_question(cfg.train)
    assert (cfg.train.export_dir / "config.json").is_file()
