"""``s3ray train``: PPO/GRPO on Ray Train, fed by the rollout pool, tracked in MLflow.

The driver (:func:`train`) checks the services, loads the filtered training questions, creates the
rollout pool, optionally warm-starts the tiny model, and runs a ``TorchTrainer`` (Train V2). Each step
of the worker loop (:func:`train_loop`):

1. rank 0 asks the pool for episodes of the step's questions (a seeded order, so a resumed run gets the
   same next batch) and shares them with the other ranks as one object reference;
2. each rank takes the episodes of its share of the questions (whole GRPO groups stay on one rank),
   computes old/ref log-probs and values, advantages, and runs the PPO epochs (DDP or FSDP sync grads);
3. rank 0 publishes the new weights to the pool with ``version = step``, logs the step to MLflow, and
   every ``checkpoint_every`` steps all ranks report a checkpoint (model, optimisers, critic, data
   position, RNG state). A re-run with the same ``train.dir`` and run name resumes from it, pushing the
   checkpoint's weights to the pool before sampling.

The final policy is exported in Hugging Face format to ``<train.dir>/export``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from s3ray.agent.episode import Episode
from s3ray.config import S3Config, TrainConfig, config_from_dict
from s3ray.rollout.weight_sync import weight_sync_for
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import Critic, export_pretrained, hf_state_dict, load_policy, load_reference, unwrap
from s3ray.train.update import Learner, num_minibatches, ppo_epochs, prepare_batch
from s3ray.types import Question

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
_ARTIFACT_MAX_BYTES = 200 * 1024 * 1024  # larger exports are recorded as a path tag, not copied


# ------------------------------------------------------------------------------------------------
# Data order
# ------------------------------------------------------------------------------------------------
def step_question_indices(num_questions: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the questions of ``step`` (1-based): consecutive slices of seeded permutations (one per
    epoch); an epoch's tail shorter than a batch is skipped, so a step never holds a question twice.
    Depends only on the step, so a resumed run continues exactly."""
    if batch_size > num_questions:
        raise ValueError(f"train.batch_size={batch_size} is larger than the {num_questions} training questions")
    per_epoch = num_questions // batch_size
    epoch, slot = divmod(step - 1, per_epoch)
    order = list(range(num_questions))
    random.Random(seed + epoch).shuffle(order)
    return order[slot * batch_size:(slot + 1) * batch_size]


def samples_per_question(cfg: TrainConfig) -> int:
    return cfg.grpo_group_size if cfg.algorithm == "grpo" else 1


def check_train_config(cfg: TrainConfig) -> None:
    """Fail before any work on batch shapes the ranks cannot share evenly."""
    world = max(cfg.num_workers, 1)
    if cfg.batch_size % world:
        raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by train.num_workers={world}: "
                         "each rank trains on an equal share of the questions")
    if cfg.algorithm == "grpo" and cfg.grpo_group_size < 2:
        raise ValueError("GRPO needs train.grpo_group_size >= 2 (a group of one has no baseline)")
    if cfg.micro_batch_size < 1 or cfg.mini_batch_size < 1:
        raise ValueError("train.mini_batch_size and train.micro_batch_size must be >= 1")


# ------------------------------------------------------------------------------------------------
# Episode statistics (rank 0, whole batch)
# ------------------------------------------------------------------------------------------------
def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    n = len(episodes)

    def mean(values) -> float:
        values = [float(v) for v in values]
        return sum(values) / max(len(values), 1)

    return {
        "reward": mean(e.reward for e in episodes),
        "genacc": mean(e.acc_s3 for e in episodes),
        "rag_acc": mean(e.acc_rag for e in episodes),
        "turns": mean(len(e.turns) for e in episodes),
        "docs_selected": mean(len(e.context) for e in episodes),
        "invalid_action_rate": (sum(e.invalid_turns for e in episodes)
                                / max(sum(len(e.turns) for e in episodes), 1)),
        "response_tokens": mean(len(e.response_ids) for e in episodes),
        "action_tokens": mean(sum(e.action_mask) for e in episodes),
        "episodes": float(n),
    }


# ------------------------------------------------------------------------------------------------
# Distributed helpers (no-ops on one process / local mode)
# ------------------------------------------------------------------------------------------------
def _dist() -> Any | None:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist = _dist()
    if dist is None:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def _scatter(per_rank: list[Any] | None) -> Any:
    """Rank 0's ``per_rank[r]`` on every rank r. The objects travel through the process group
    (a Ray ObjectRef pickled through torch would reach the other ranks unregistered with its owner)."""
    dist = _dist()
    if dist is None:
        return per_rank[0]
    box = [None]
    dist.scatter_object_list(box, per_rank if dist.get_rank() == 0 else None, src=0)
    return box[0]


def _mean_across_ranks(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    if _dist() is None or not metrics:
        return metrics
    keys = sorted(metrics)
    world = _dist().get_world_size()
    summed = _all_reduce_sum(torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device))
    return {k: float(v) / world for k, v in zip(keys, summed.tolist(), strict=True)}


def _is_fsdp(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(model, FullyShardedDataParallel)


def _full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters (what a checkpoint must hold), gathered to CPU. Collective under FSDP."""
    if _is_fsdp(model):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(offload_to_cpu=True, rank0_only=True)):
            return model.state_dict()
    inner = unwrap(model)
    trainable = {n for n, p in inner.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in inner.state_dict().items() if k in trainable}


def _load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    inner = unwrap(model)
    missing, unexpected = inner.load_state_dict(state, strict=False)
    trainable = {n for n, p in inner.named_parameters() if p.requires_grad}
    lost = trainable & set(missing)
    if lost or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {sorted(lost)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")


def _publish_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Hugging Face-named full weights for the rollout engines (rank 0 gets them; collective on FSDP)."""
    if _is_fsdp(model):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, rank0_only=True, offload_to_cpu=True):
            return hf_state_dict(model.module) if _rank() == 0 else None
    return hf_state_dict(model) if _rank() == 0 else None


def _rank() -> int:
    import ray.train

    return ray.train.get_context().get_world_rank()


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    import numpy as np

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _save_checkpoint(directory: Path, learner: Learner, actor_state, critic_state,
                     meta: dict[str, Any]) -> None:
    torch.save(actor_state, directory / "actor.pt")
    torch.save(learner.actor_optim.state_dict(), directory / "actor_optim.pt")
    if learner.critic is not None:
        torch.save(critic_state, directory / "critic.pt")
        torch.save(learner.critic_optim.state_dict(), directory / "critic_optim.pt")
    torch.save({"rng": _rng_state(), "schedulers": [s.state_dict() for s in learner.schedulers]},
               directory / "rng_sched.pt")
    (directory / "state.json").write_text(json.dumps(meta, indent=1))


def _load_checkpoint(directory: Path, learner: Learner) -> dict[str, Any]:
    _load_trainable(learner.actor, torch.load(directory / "actor.pt", weights_only=True))
    learner.actor_optim.load_state_dict(torch.load(directory / "actor_optim.pt", weights_only=True))
    if learner.critic is not None:
        _load_trainable(learner.critic, torch.load(directory / "critic.pt", weights_only=True))
        learner.critic_optim.load_state_dict(torch.load(directory / "critic_optim.pt", weights_only=True))
    extra = torch.load(directory / "rng_sched.pt", weights_only=False)
    _set_rng_state(extra["rng"])
    for scheduler, state in zip(learner.schedulers, extra["schedulers"], strict=True):
        scheduler.load_state_dict(state)
    return json.loads((directory / "state.json").read_text())


# ------------------------------------------------------------------------------------------------
# The worker loop
# ------------------------------------------------------------------------------------------------
def _build_learner(cfg: S3Config, model_dir: Path, device: torch.device) -> Learner:
    import ray.train.torch

    tc = cfg.train
    torch.manual_seed(tc.seed)
    strategy = "fsdp" if tc.strategy == "fsdp" else "ddp"
    actor = ray.train.torch.prepare_model(load_policy(model_dir, cfg.policy), parallel_strategy=strategy)
    reference = load_reference(model_dir, cfg.policy).to(device)
    actor_optim = torch.optim.AdamW([p for p in actor.parameters() if p.requires_grad], lr=tc.actor_lr)
    critic = critic_optim = None
    if tc.algorithm == "ppo":
        critic = ray.train.torch.prepare_model(Critic.from_pretrained(model_dir, cfg.policy),
                                               parallel_strategy=strategy)
        critic_optim = torch.optim.AdamW([p for p in critic.parameters() if p.requires_grad], lr=tc.critic_lr)
    schedulers = []
    total_updates = tc.steps * tc.ppo_epochs * num_minibatches(tc.batch_size * samples_per_question(tc), tc)
    warmup = int(tc.warmup_ratio * total_updates)
    if warmup > 0:
        def ramp(i: int) -> float:
            return min(1.0, (i + 1) / warmup)

        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, ramp) for o in (actor_optim, critic_optim) if o]
    return Learner(actor, reference, actor_optim, critic, critic_optim, schedulers)


def _shard_episodes(episodes: list[Episode], question_ids: list[str], rank: int, world: int,
                    samples: int) -> list[Episode]:
    """This rank's episodes: those of every ``world``-th question of the step (whole groups per rank)."""
    by_question: dict[str, list[Episode]] = {}
    for ep in episodes:
        by_question.setdefault(str(ep.question_id), []).append(ep)
    wrong = {q: len(by_question.get(q, [])) for q in question_ids if len(by_question.get(q, [])) != samples}
    if wrong or len(episodes) != samples * len(question_ids):
        raise RuntimeError(f"the pool returned {len(episodes)} episodes for {len(question_ids)} questions x "
                           f"{samples} samples; mismatched questions (id: count): {dict(list(wrong.items())[:5])}")
    mine = question_ids[rank::world]
    return [ep for q in mine for ep in sorted(by_question[q], key=lambda e: e.sample_index)]


def train_loop(config: dict[str, Any]) -> None:
    """The Ray Train worker function (every rank runs it)."""
    import mlflow
    import ray
    import ray.train
    import ray.train.torch

    from s3ray import tracking

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_dict(config["cfg"])
    tc = cfg.train
    pool = config["pool"]
    model_dir = Path(config["init_model_dir"])
    questions: list[dict] = ray.get(config["questions"][0])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    samples = samples_per_question(tc)

    learner = _build_learner(cfg, model_dir, device)
    start_step, mlflow_run_id = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            meta = _load_checkpoint(Path(ckpt_dir), learner)
        start_step, mlflow_run_id = meta["step"], meta["mlflow_run_id"]
        log.info("rank %d: resumed from step %d (data position %d)", rank, start_step, meta["data_position"])

    run = None
    if rank == 0:
        tracking.configure(cfg)
        if mlflow_run_id:
            run = mlflow.start_run(run_id=mlflow_run_id)
        else:
            run = mlflow.start_run(run_name=f"{cfg.tracking.run_name or cfg.name}-train",
                                   tags={"s3ray.stage": "train", "s3ray.config": cfg.name,
                                         "s3ray.algorithm": tc.algorithm})
            tracking.log_config(cfg)
        mlflow_run_id = run.info.run_id

    weights = weight_sync_for(cfg, pool, rank)

    def publish(version: int) -> float:
        t0 = time.perf_counter()
        weights.publish(_publish_state(learner.actor), version)  # collective gather; rank 0 sends
        return time.perf_counter() - t0

    # The pool starts from the base weights: give it ours (warm-started or resumed) before sampling.
    publish(start_step)
    try:
        for step in range(start_step + 1, tc.steps + 1):
            t_step = time.perf_counter()
            idx = step_question_indices(len(questions), step, tc.batch_size, tc.seed)
            step_questions = [questions[i] for i in idx]
            shards, wait_s, stats = None, 0.0, {}
            num_episodes = len(step_questions) * samples
            if rank == 0:
                t0 = time.perf_counter()
                episodes = ray.get(pool.run.remote(step_questions, samples_per_question=samples, with_reward=True))
                wait_s = time.perf_counter() - t0
                stats = episode_metrics(episodes)
                question_ids = [str(q["id"]) for q in step_questions]
                shards = [_shard_episodes(episodes, question_ids, r, world, samples) for r in range(world)]
            shard = _scatter(shards)

            t_update = time.perf_counter()
            batch = collate_episodes(shard, pad_id=0)
            prepared, prep_metrics = prepare_batch(batch, learner, tc, _all_reduce_sum)
            update_metrics = ppo_epochs(prepared, learner, tc, num_minibatches(num_episodes, tc))
            update_metrics = _mean_across_ranks(update_metrics, device)
            tokens = _all_reduce_sum(torch.tensor(float(batch.attention_mask.sum()), device=device)).item()
            update_s = time.perf_counter() - t_update
            sync_s = publish(step)
            step_s = time.perf_counter() - t_step

            metrics = {**stats, **prep_metrics, **update_metrics, "step": step,
                       "data_position": step * tc.batch_size, "step_s": step_s, "rollout_wait_s": wait_s,
                       "rollout_wait_share": wait_s / step_s, "update_s": update_s, "weight_sync_s": sync_s,
                       "train_tokens_per_s": tokens / update_s,
                       "rollout_tokens_per_s": stats.get("response_tokens", 0.0) * num_episodes / max(wait_s, 1e-9)}
            if rank == 0:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "step"}, step=step)
                log.info("step %d/%d: reward %.3f genacc %.3f rag_acc %.3f kl %.4f gap %.4f pg %.4f "
                         "entropy %.3f clip %.3f | %.1fs (rollout %.1fs)", step, tc.steps, metrics["reward"],
                         metrics["genacc"], metrics["rag_acc"], metrics["kl"], metrics["logprob_gap"],
                         metrics["policy_loss"], metrics["entropy"], metrics["clip_fraction"], step_s, wait_s)
            _report(step, metrics, learner, mlflow_run_id, cfg)
        final_state = _publish_state(learner.actor)  # collective under FSDP; None off rank 0
        if rank == 0:
            _finish(cfg, final_state, model_dir, mlflow_run_id)
    finally:
        if run is not None:
            mlflow.end_run()


def _report(step: int, metrics: dict[str, float], learner: Learner, mlflow_run_id: str | None,
            cfg: S3Config) -> None:
    """Report the step to Ray Train; on checkpoint steps rank 0 attaches a checkpoint."""
    import ray.train
    from ray.train import Checkpoint

    tc = cfg.train
    due = step % tc.checkpoint_every == 0 or step == tc.steps
    if not due:
        ray.train.report(metrics)
        return
    actor_state = _full_state(learner.actor)
    critic_state = _full_state(learner.critic) if learner.critic is not None else None
    if _rank() != 0:
        ray.train.report(metrics)
        return
    tmp = Path(tempfile.mkdtemp(prefix="s3ray-ckpt-"))
    try:
        _save_checkpoint(tmp, learner, actor_state, critic_state,
                         {"step": step, "data_position": step * tc.batch_size, "mlflow_run_id": mlflow_run_id,
                          "algorithm": tc.algorithm})
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)),
                         checkpoint_dir_name=f"step_{step:06d}")
        log.info("checkpoint at step %d", step)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish(cfg: S3Config, state: dict[str, torch.Tensor], model_dir: Path, mlflow_run_id: str) -> None:
    """Rank 0: Hugging Face export, reward-curve plot, artifacts."""
    import mlflow

    export = export_pretrained(state, model_dir, Path(cfg.train.dir) / EXPORT_DIR)
    log.info("exported the policy to %s", export)
    mlflow.set_tag("s3ray.export_path", str(export))
    size = sum(f.stat().st_size for f in export.rglob("*") if f.is_file())
    if size <= _ARTIFACT_MAX_BYTES:
        mlflow.log_artifacts(str(export), artifact_path="model")
    plot = _reward_curve(mlflow_run_id, Path(cfg.train.dir) / "reward_curve.png")
    if plot is not None:
        mlflow.log_artifact(str(plot))


def _reward_curve(run_id: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    series = {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
              for name in ("reward", "genacc", "rag_acc")}
    if not series["reward"]:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = {"reward": "reward (GBR)", "genacc": "GenAcc (s3 context)", "rag_acc": "GenAcc (naive RAG)"}
    for name, points in series.items():
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=labels[name])
    ax.set_xlabel("training step")
    ax.set_ylabel("batch mean")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
def _check_services(cfg: S3Config) -> None:
    from s3ray.retrieval.client import RetrieverClient

    client = RetrieverClient.from_config(cfg)
    try:
        healthy = client.health()
    except Exception as err:  # any transport error means the same thing here
        raise RuntimeError(f"the retriever at {cfg.retriever.url} is not reachable ({err}); "
                           "start the services first: `s3ray deploy`") from err
    if not healthy:
        raise RuntimeError(f"the retriever at {cfg.retriever.url} is not healthy; start the services first: "
                           "`s3ray deploy`")


def run_name(cfg: S3Config) -> str:
    """The Ray Train run name: re-running with the same name (and ``train.dir``) resumes."""
    return f"{cfg.tracking.run_name or cfg.name}-train"


def run_trainer(cfg: S3Config, pool, questions: list[Question], init_model_dir: Path):
    """The TorchTrainer over ``pool`` (any actor with ``run`` and ``update_weights``); returns its Result."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    tc = cfg.train
    check_train_config(tc)
    resources = {"CPU": tc.cpus_per_worker} | ({"GPU": 1} if tc.use_gpu else {})
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.to_dict(), "pool": pool, "init_model_dir": str(init_model_dir),
                           "questions": [ray.put([q.to_dict() for q in questions])]},
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker=resources if tc.num_workers else None),
        run_config=RunConfig(name=run_name(cfg), storage_path=str(Path(tc.dir) / "ray_train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=tc.checkpoints_to_keep),
                             failure_config=FailureConfig(max_failures=tc.max_failures)),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return result


def train(cfg: S3Config) -> Path:
    """The ``train`` stage. Returns the exported policy's folder."""
    import ray

    from s3ray.cluster import init_ray
    from s3ray.ragcache.cache import training_questions
    from s3ray.rollout.pool import create_pool
    from s3ray.tinylm import ensure_tiny_model

    tc = cfg.train
    check_train_config(tc)
    init_ray(cfg)
    model_dir = cfg.policy_model_dir
    if cfg.policy.model is None:
        ensure_tiny_model(model_dir, cfg.corpus.path, cfg.policy.tiny)
    _check_services(cfg)
    questions = training_questions(cfg)
    if not questions:
        raise RuntimeError("the filtered naive-RAG cache holds no training questions: run `s3ray precompute`, "
                           "or check rag_cache.drop_answered / data.train")
    if len(questions) < tc.batch_size:
        raise RuntimeError(f"{len(questions)} training questions are left after the filter, fewer than "
                           f"train.batch_size={tc.batch_size}: lower the batch size or add questions")
    log.info("training on %d questions (naive-RAG-answered ones filtered out)", len(questions))
    Path(tc.dir).mkdir(parents=True, exist_ok=True)
    pool = create_pool(cfg, model_dir)
    try:
        init_dir = model_dir
        if tc.warm_start.enabled:
            from s3ray.train.warm_start import warm_start

            init_dir = warm_start(cfg, pool, questions, model_dir)
        run_trainer(cfg, pool, questions, init_dir)
    finally:
        ray.kill(pool)
    export = Path(tc.dir) / EXPORT_DIR
    log.info("training done: %s", export)
    return export
