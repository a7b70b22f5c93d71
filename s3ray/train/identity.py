"""Which config a training folder's warm start and checkpoints belong to.

``train.dir`` holds the warm-started model and the run's checkpoints (under ``ray_train``), and a re-run
resumes from them. That is right for the same run (a crash, a longer ``train.steps``) and silently wrong for another one: a
re-run with another learning rate, warm start or reward would continue the old run's weights. So the
folder records the config it was trained with (``identity.json``), and a run whose config differs moves
the old run aside (nothing is deleted) and starts afresh, naming the keys that differ.

What may change without a new run: where things live and how they are tracked, evaluated or scheduled
(``IGNORED_SECTIONS``), how the retriever and the generator are served, and how long the run is and how
often it checkpoints (``IGNORED_KEYS``). A recorded identity is read through the same filter, so a serving
option added in a later version (``retriever.chunk_timeout_s`` was) does not start a finished run afresh.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from s3ray.config import S3Config
from s3ray.train.checkpoint_store import complete_steps, is_complete, step_folder

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
RUN_ARTIFACTS = ("warm_start", "ray_train")  # what a re-run would otherwise resume from
IGNORED_SECTIONS = ("name", "paths", "cluster", "serve", "tracking", "inference", "evaluation", "demo")
IGNORED_KEYS = {
    "train": ("steps", "checkpoint_every", "checkpoints_to_keep", "max_failures", "torch_threads", "dir",
              "resume", "log_episodes", "eval_every", "eval_questions"),
    # Where and how the services run, batch, time out and retry: the same docs and answers either way.
    "retriever": ("url", "direct_port", "app_name", "route_prefix", "num_replicas", "num_cpus", "num_gpus",
                  "index_shards", "torch_threads", "encoder_max_batch_size", "encoder_batch_wait_s",
                  "max_ongoing_requests", "split_min_queries", "chunk_timeout_s", "max_queries",
                  "max_body_bytes", "timeout_s", "retries", "use_handle", "health_check"),
    "generator": ("served_model_name", "base_url", "api_key_env", "app_name", "route_prefix", "num_replicas",
                  "num_cpus", "num_gpus", "torch_threads", "tensor_parallel_size", "gpu_memory_utilization",
                  "timeout_s", "retries", "max_concurrency", "max_ongoing_requests", "max_batch_size",
                  "batch_wait_s", "max_body_bytes", "reader_cache_entries", "use_handle"),
}


def training_identity(cfg: S3Config) -> dict[str, Any]:
    """The resolved config (as JSON values), less what a run may change and still resume."""
    return without_ignored(cfg.to_dict())


def without_ignored(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict less ``IGNORED_SECTIONS`` and ``IGNORED_KEYS`` (a section's other keys kept)."""
    identity = {k: v for k, v in config.items() if k not in IGNORED_SECTIONS}
    for section, ignored in IGNORED_KEYS.items():
        if isinstance(identity.get(section), dict):
            identity[section] = {k: v for k, v in identity[section].items() if k not in ignored}
    return identity


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (added and removed keys included)."""
    keys = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def claim_train_dir(cfg: S3Config) -> Path | None:
    """Make ``train.dir`` this config's: if it holds a run of another config (or of an unrecorded one),
    move that run's artifacts to ``train.dir/superseded/<time>/``; record this config. Returns where the
    old run went, or None when there was nothing to move."""
    train_dir = Path(cfg.train.dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    identity = training_identity(cfg)
    path = train_dir / IDENTITY_FILE
    recorded = without_ignored(json.loads(path.read_text())) if path.exists() else None
    present = [name for name in RUN_ARTIFACTS if (train_dir / name).exists()]
    moved_to = None
    if present and recorded != identity:
        moved_to = superseded_dir(train_dir)
        for name in present:
            (train_dir / name).rename(moved_to / name)
        if recorded is not None:
            (moved_to / IDENTITY_FILE).write_text(json.dumps(recorded, indent=1))
        why = ("it differs in " + ", ".join(changed_keys(recorded, identity)[:12]) if recorded is not None
               else "it has no recorded config")
        log.warning("train.dir held a run of another config (%s): moved it to %s; training afresh",
                    why, moved_to)
    path.write_text(json.dumps(identity, indent=1))
    return moved_to


def superseded_dir(train_dir: Path) -> Path:
    """A new, empty ``train_dir/superseded/<time>/`` for a run's artifacts that are moved aside."""
    path = train_dir / "superseded" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path.mkdir(parents=True)
    return path


def checkpoints_dir(cfg: S3Config) -> Path:
    """Where this run's checkpoints live (``step_NNNNNN`` folders, beside Ray Train's own files of the run:
    on shared storage in a cluster, as every rank writes its shards there; the run name keys resume)."""
    from s3ray.tracking import run_name

    return Path(cfg.train.dir) / "ray_train" / run_name(cfg, "train")


def checkpoint_path(cfg: S3Config, step: int) -> Path:
    return step_folder(checkpoints_dir(cfg), step)


def kept_steps(cfg: S3Config) -> list[int]:
    """The steps whose checkpoints are on disk and complete, in order."""
    return complete_steps(checkpoints_dir(cfg))


def apply_resume_choice(cfg: S3Config) -> Path | None:
    """Apply ``train.resume`` before the trainer starts. Returns the checkpoint folder to start from, or
    None: under ``auto`` the trainer resumes the run's own newest complete checkpoint, if any; under
    ``never`` and with a path the run's own checkpoints are moved to ``train.dir/superseded`` first (the
    trainer would otherwise resume the newest of them), and a chosen folder among them is followed there."""
    choice = cfg.train.resume
    if choice == "auto":
        return None
    chosen = None
    if choice != "never":
        chosen = Path(choice).expanduser().resolve()
        if not is_complete(chosen):
            raise ValueError(f"train.resume={choice!r} is not a complete checkpoint folder (its state.json is "
                             "written last); use auto, never or a step_N folder under train.dir/ray_train")
    own = checkpoints_dir(cfg)
    if own.exists():
        moved = superseded_dir(Path(cfg.train.dir)) / "ray_train" / own.name
        moved.parent.mkdir()
        own.rename(moved)
        log.info("train.resume=%s: moved this run's checkpoints to %s", choice, moved)
        if chosen is not None and chosen.is_relative_to(own.resolve()):
            chosen = moved / chosen.relative_to(own.resolve())
    return chosen
