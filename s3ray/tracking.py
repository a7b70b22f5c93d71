"""MLflow tracking: one place that knows the store, the experiment and how a run records its config."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from s3ray.config import S3Config

_RAY_JOB_ENV = "RAY_JOB_SUBMISSION_ID"


def configure(cfg: S3Config) -> None:
    """Point the mlflow module at the configured store and experiment."""
    import mlflow

    uri = cfg.tracking.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    artifacts = cfg.paths.work_dir / "mlartifacts"
    if mlflow.get_experiment_by_name(cfg.tracking.experiment) is None:
        mlflow.create_experiment(cfg.tracking.experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(cfg.tracking.experiment)


def run_name(cfg: S3Config, stage: str) -> str:
    """The MLflow run name of a stage (and the Ray Train run name of ``train``, which keys its resume)."""
    return f"{cfg.tracking.run_name or cfg.name}-{stage}"


def ray_job_tags() -> dict[str, str]:
    """The Ray job this process runs in (set in a submitted job's driver; pass it on to workers)."""
    job = os.environ.get(_RAY_JOB_ENV)
    return {"ray.job_submission_id": job} if job else {}


@contextlib.contextmanager
def start_run(cfg: S3Config, stage: str, tags: dict[str, str] | None = None,
              run_id: str | None = None) -> Iterator[Any]:
    """An MLflow run for one stage, holding the resolved config as params and as a YAML artifact.
    With ``run_id`` the existing run continues (a resumed training run), without logging the config again."""
    import mlflow

    configure(cfg)
    if run_id is not None:
        with mlflow.start_run(run_id=run_id) as run:
            yield run
        return
    all_tags = {"s3ray.stage": stage, "s3ray.config": cfg.name, **ray_job_tags(), **(tags or {})}
    with mlflow.start_run(run_name=run_name(cfg, stage), tags=all_tags) as run:
        log_config(cfg)
        yield run


def latest_per_step(metrics: Iterable[Any]) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` sorted by step, one per step: the value logged last. A resumed run redoes
    the steps after its checkpoint in the same MLflow run, and its curve is the run that went on, not both."""
    latest: dict[int, Any] = {}
    for m in metrics:
        if m.step not in latest or m.timestamp >= latest[m.step].timestamp:
            latest[m.step] = m
    return [(step, latest[step].value) for step in sorted(latest)]


def metric_history(run_id: str, names: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``name -> [(step, value), ...]`` sorted by step (the latest value of a redone step), for the given
    metrics of a run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return {name: latest_per_step(client.get_metric_history(run_id, name)) for name in names}


def log_config(cfg: S3Config) -> None:
    import mlflow

    params = cfg.flat_params()
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow caps one batch at 100 params
        mlflow.log_params({k: v[:6000] for k, v in items[i:i + 100]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        mlflow.log_artifact(str(path))
