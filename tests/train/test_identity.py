"""A training folder resumes only the run of its own config (s3ray.train.identity)."""

import json

import pytest

from s3ray.config import load_config
from s3ray.train.identity import IDENTITY_FILE, changed_keys, claim_train_dir


def make_run(train_dir, marker):
    """What a run leaves: a warm-started model and its checkpoints."""
    (train_dir / "warm_start").mkdir(parents=True)
    (train_dir / "warm_start" / "model.txt").write_text(marker)
    (train_dir / "ray_train").mkdir()


def test_same_config_resumes_and_a_longer_run_too(tmp_path):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    assert claim_train_dir(cfg) is None  # nothing there yet
    make_run(cfg.train.dir, "run 1")
    longer = load_config("test", [f"paths.work_dir={tmp_path}", "train.steps=9", "train.checkpoint_every=3",
                                  "inference.limit=5", "cluster.num_cpus=2"])
    assert claim_train_dir(longer) is None
    assert (cfg.train.dir / "warm_start" / "model.txt").read_text() == "run 1"


def test_another_config_moves_the_old_run_aside_and_names_what_changed(tmp_path, caplog):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    claim_train_dir(cfg)
    make_run(cfg.train.dir, "run 1")
    other = load_config("test", [f"paths.work_dir={tmp_path}", "train.actor_lr=0.001",
                                 "train.warm_start.epochs=7"])
    moved = claim_train_dir(other)
    assert moved is not None and moved.parent == cfg.train.dir / "superseded"
    assert not (cfg.train.dir / "warm_start").exists() and not (cfg.train.dir / "ray_train").exists()
    assert (moved / "warm_start" / "model.txt").read_text() == "run 1"  # nothing lost
    assert json.loads((moved / IDENTITY_FILE).read_text())["train"]["actor_lr"] == cfg.train.actor_lr
    assert "train.actor_lr, train.warm_start.epochs" in caplog.text
    # The folder is now the new config's: its own re-run resumes.
    make_run(cfg.train.dir, "run 2")
    assert claim_train_dir(other) is None


def test_serving_options_even_ones_the_recorded_run_predates_resume_and_what_is_retrieved_does_not(tmp_path):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    claim_train_dir(cfg)
    make_run(cfg.train.dir, "run 1")
    served = load_config("test", [f"paths.work_dir={tmp_path}", "retriever.num_replicas=3",
                                  "retriever.chunk_timeout_s=5", "generator.max_batch_size=4",
                                  "generator.timeout_s=9"])
    assert claim_train_dir(served) is None
    # A run recorded by an older version: every retriever option written, one of today's not yet there.
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("paths", "tracking")}
    del old["retriever"]["chunk_timeout_s"]
    (cfg.train.dir / IDENTITY_FILE).write_text(json.dumps(old))
    assert claim_train_dir(cfg) is None
    assert (cfg.train.dir / "warm_start" / "model.txt").read_text() == "run 1"
    other = load_config("test", [f"paths.work_dir={tmp_path}", "retriever.backend=bm25"])
    assert claim_train_dir(other) is not None


def test_a_run_without_a_recorded_config_is_not_resumed(tmp_path):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    make_run(cfg.train.dir, "unknown")
    moved = claim_train_dir(cfg)
    assert moved is not None and (moved / "warm_start" / "model.txt").read_text() == "unknown"


def test_changed_keys_walks_nested_sections():
    old = {"train": {"lr": 1, "ws": {"epochs": 2}}, "agent": {"k": 3}}
    new = {"train": {"lr": 1, "ws": {"epochs": 4}}, "agent": {"k": 3, "cap": 1}}
    assert changed_keys(old, new) == ["agent.cap", "train.ws.epochs"]


def make_checkpoints(cfg, steps):
    from s3ray.train.identity import checkpoint_path

    for step in steps:
        folder = checkpoint_path(cfg, step)
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"step": step}))
        (folder / "host_0.pt").write_text("rng")


def test_resume_auto_keeps_never_moves_aside_and_a_path_is_followed(tmp_path):
    from s3ray.train.identity import apply_resume_choice, checkpoint_path, checkpoints_dir, kept_steps

    def cfg_with(resume):
        return load_config("test", [f"paths.work_dir={tmp_path}", f"train.resume={resume}"])

    make_checkpoints(cfg_with("auto"), [2, 4])
    (checkpoints_dir(cfg_with("auto")) / "step_000006").mkdir()  # an unfinished one (no state.json)
    assert apply_resume_choice(cfg_with("auto")) is None and kept_steps(cfg_with("auto")) == [2, 4]

    assert apply_resume_choice(cfg_with("never")) is None
    assert kept_steps(cfg_with("auto")) == []  # Ray Train finds nothing to resume
    [old] = (tmp_path / "train" / "superseded").iterdir()
    assert json.loads((old / "ray_train" / "test-train" / "step_000004" / "state.json").read_text()) \
        == {"step": 4}

    # A step of this run's own checkpoints: they are moved aside, and the chosen one is followed there.
    make_checkpoints(cfg_with("auto"), [8, 10])
    chosen = apply_resume_choice(cfg_with(checkpoint_path(cfg_with("auto"), 8)))
    assert json.loads((chosen / "state.json").read_text()) == {"step": 8} and kept_steps(cfg_with("auto")) == []
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        apply_resume_choice(cfg_with(tmp_path / "nowhere"))
