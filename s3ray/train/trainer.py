"""``s3ray train``: PPO/GRPO on Ray Train, fed by the rollout pool, tracked in MLflow.

The driver (:func:`train`) checks the services, loads the filtered training questions, creates the
rollout pool, optionally warm-starts the tiny model, and runs a ``TorchTrainer`` (Train V2). Each step
of the worker loop (:func:`train_loop`) reads in order:

1. **sample**: rank 0 asks the pool for episodes of the step's questions (a seeded order, so a resumed
   run gets the same next batch);
2. **shard**: rank 0 sends each rank the episodes of its share of the questions (whole GRPO groups stay
   on one rank) through the process group;
3. **prepare**: each rank computes old/ref log-probs and values, and advantages;
4. **epochs**: the PPO epochs (DDP or FSDP sync the gradients);
5. **publish**: the new weights go to the pool with ``version = step``;
6. **report**: rank 0 logs the step to MLflow; every ``checkpoint_every`` steps every rank writes its
   shards of a checkpoint (:mod:`s3ray.train.checkpoint`). A re-run with the same ``train.dir``, run name
   and training config, after a kill at any point, resumes from the newest complete one
   (:mod:`s3ray.train.checkpoint_store`), pushing its weights to the pool before sampling; a run of
   another config is moved aside first (:mod:`s3ray.train.identity`).

The final policy is exported in Hugging Face format to ``train.export_dir``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from s3ray.agent.episode import Episode
from s3ray.cluster import set_torch_threads
from s3ray.config import S3Config
from s3ray.heap import release_free_heap
from s3ray.precision import compute_dtype
from s3ray.progress import ProgressLog, show_info_logs
from s3ray.rollout.pool import WeightsNeeded
from s3ray.rollout.weight_sync import WeightSync, weight_sync_for
from s3ray.train import checkpoint, distributed
from s3ray.train.algorithms import algorithm_for
from s3ray.train.batch import collate_episodes
from s3ray.train.checkpoint_store import newest_complete, prune
from s3ray.train.identity import checkpoint_path, checkpoints_dir
from s3ray.train.policy import export_pretrained
from s3ray.train.step_metrics import StepClock, episode_metrics, episode_table
from s3ray.train.update import Learner, build_learner, num_minibatches, ppo_epochs, prepare_batch
from s3ray.train.weight_stream import PolicyWeights
from s3ray.types import Question

log = logging.getLogger(__name__)

_ARTIFACT_MAX_BYTES = 200 * 1024 * 1024  # larger exports are recorded as a path tag, not copied


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


def shard_episodes(episodes: list[Episode], question_ids: list[str], rank: int, world: int,
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


def publish(learner: Learner, weights: WeightSync, version: int, dtype: torch.dtype) -> None:
    """The actor's weights to the rollout engines in ``dtype``, one FSDP unit at a time. Collective: every
    rank walks the units in the same order; rank 0 sends."""
    stream = PolicyWeights(learner.actor, dtype)
    if distributed.rank() == 0:
        weights.publish(stream, version)
    else:
        for _ in stream:  # the same unit gathers as rank 0's send; nothing is yielded here
            pass


def collect(pool, run: dict[str, Any], republish: Callable[[], None]) -> list[Episode] | None:
    """Rank 0: the episodes of ``pool.run(**run)``; None on the other ranks. Collective: every rank calls it.

    When the pool cannot run for want of weights that only the trainer can send (:class:`WeightsNeeded`:
    a rollout actor restarted after an NCCL transfer), every rank calls ``republish`` (a collective
    publish of the current weights, which re-forms the group with the restarted actor) and rank 0 asks
    the pool for the rest of the batch, whose finished episodes it kept. Each round follows an actor
    restart, and restarts are bounded (``rollout.max_actor_restarts``), so this ends."""
    import ray

    first, episodes = True, None
    while True:
        lost = False
        if distributed.rank() == 0:
            try:
                episodes = ray.get(pool.run.remote(**run) if first else pool.resume.remote())
            except WeightsNeeded as err:
                log.warning("re-publishing the weights for the rollout pool: %s", err)
                lost = True
        if not distributed.from_rank0(lost):
            return episodes
        republish()
        first = False


def train_loop(config: dict[str, Any]) -> None:
    """The Ray Train worker function (every rank runs it)."""
    import mlflow
    import ray
    import ray.train
    import ray.train.torch

    from s3ray import tracking

    show_info_logs()
    cfg: S3Config = config["cfg"]
    tc = cfg.train
    pool = config["pool"]
    model_dir = Path(config["init_model_dir"])
    questions: list[Question] = ray.get(config["questions"][0])
    dev_questions: list[Question] = config["dev_questions"]
    rank, world = distributed.rank(), distributed.world_size()
    device = ray.train.torch.get_device()
    samples = algorithm_for(tc).samples_per_question(tc)
    if not tc.use_gpu:
        set_torch_threads(tc.torch_threads, sharers=world)

    learner = build_learner(model_dir, cfg.policy, tc, device)
    start_step, run_id = 0, None
    resume = distributed.scatter([resume_folder(cfg, config["resume_from"])] * world if rank == 0 else None)
    if resume is not None:
        meta = checkpoint.load(resume, learner)
        start_step, run_id = meta["step"], meta["mlflow_run_id"]
        log.info("rank %d: resumed from %s (step %d, data position %d)", rank, resume, start_step,
                 meta["data_position"])

    with contextlib.ExitStack() as stack:
        if rank == 0:
            run = stack.enter_context(tracking.start_run(
                cfg, "train", tags={"s3ray.algorithm": tc.algorithm, **config["tags"]}, run_id=run_id))
            run_id = run.info.run_id
        # The pool starts from the base weights: give it ours (warm-started or resumed) before sampling.
        # policy.dtype as this device resolves it (auto: bf16 only where native); the engines' dtype too
        weights, wire = weight_sync_for(cfg, pool), compute_dtype(cfg.policy.dtype, device)
        if rank == 0:
            mlflow.set_tag("s3ray.compute_dtype", str(wire).removeprefix("torch."))
        publish(learner, weights, start_step, wire)
        progress = ProgressLog(log, "train", tc.steps, "step", cfg.tracking.progress_every_s, initial=start_step)
        for step in range(start_step + 1, tc.steps + 1):
            clock = StepClock()
            step_questions = [questions[i] for i in step_question_indices(len(questions), step, tc.batch_size,
                                                                          tc.seed)]
            num_episodes = len(step_questions) * samples
            shards, stats = None, {}
            with clock.section("rollout"):
                request = {"questions": step_questions, "samples_per_question": samples, "with_reward": True}
                episodes = collect(pool, request, functools.partial(publish, learner, weights, step - 1, wire))
            if rank == 0:
                stats = episode_metrics(episodes)
                if tc.log_episodes:
                    mlflow.log_table(episode_table(episodes, tc.log_episodes), f"episodes/step_{step:06d}.json")
                question_ids = [q.id for q in step_questions]
                shards = [shard_episodes(episodes, question_ids, r, world, samples) for r in range(world)]
            shard = distributed.scatter(shards)
            with clock.section("update"):
                batch = collate_episodes(shard, pad_id=0)
                prepared, prep_metrics = prepare_batch(batch, learner, tc)
                update_metrics = ppo_epochs(prepared, learner, tc, num_minibatches(num_episodes, tc))
            with clock.section("publish"):
                publish(learner, weights, step, wire)
            release_free_heap()  # the update's activations, freed, go back to the OS for the rollout actors
            update_metrics = distributed.mean_across_ranks(update_metrics, device)
            tokens = distributed.all_reduce_sum(torch.tensor(float(batch.attention_mask.sum()), device=device))
            metrics = {**stats, **prep_metrics, **update_metrics, "data_position": step * tc.batch_size,
                       **clock.metrics(tokens.item(), stats.get("response_tokens", 0.0) * num_episodes)}
            if dev_questions and is_eval_step(step, tc.eval_every, tc.steps):
                dev = collect(pool, {"questions": dev_questions, "greedy": True, "with_reward": True},
                              functools.partial(publish, learner, weights, step, wire))
                if rank == 0:
                    metrics.update(dev_metrics(dev))
            report(step, metrics, learner, run_id, cfg, model_dir)
            if rank == 0:
                progress.update(step, f"reward {metrics['reward']:.3f}")
        final_state = distributed.hf_full_state(learner.actor)  # collective under FSDP; None off rank 0
        if rank == 0:
            finish(cfg, final_state, model_dir, run_id)


def resume_folder(cfg: S3Config, resume_from: str | None) -> Path | None:
    """The checkpoint a (re-)started run loads: the run's own newest complete one (a re-run, a killed run,
    a worker-group restart), else ``train.resume=<path>``'s, else None. Rank 0 decides and tells the others:
    on shared storage another node may list the folder a moment late."""
    own = newest_complete(checkpoints_dir(cfg))
    return own or (Path(resume_from) if resume_from else None)


def is_eval_step(step: int, eval_every: int, steps: int) -> bool:
    """Dev evaluation runs every ``eval_every`` steps and at the last one (never when ``eval_every`` is 0)."""
    return eval_every > 0 and (step % eval_every == 0 or step == steps)


def dev_metrics(episodes: list[Episode]) -> dict[str, float]:
    """The dev slice's GenAcc with s3's context and its Gain Beyond RAG (the reward), means over questions."""
    stats = episode_metrics(episodes)
    return {"dev_genacc": stats["genacc"], "dev_gbr": stats["reward"]}


def report(step: int, metrics: dict[str, float], learner: Learner, run_id: str | None, cfg: S3Config,
           model_dir: Path) -> None:
    """Log the step (rank 0) and report it to Ray Train; on checkpoint steps every rank first writes its
    shards of a checkpoint, which the MLflow run links by a tag (``s3ray.checkpoint.step_N``: its folder,
    for ``s3ray export --step N``), and rank 0 prunes the older ones once it is complete."""
    import mlflow
    import ray.train

    tc = cfg.train
    if distributed.rank() == 0:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        nan = float("nan")  # kl without a reference, gap without a recomputed logp_old
        # varied: the share of GRPO groups whose episodes scored differently (the only ones with a gradient)
        log.info("step %d/%d: reward %.3f genacc %.3f rag_acc %.3f kl %.4f gap %.4f pg %.4f entropy %.3f "
                 "clip %.3f varied %.2f | %.1fs (rollout %.1fs, old logp %.1fs, ref %.1fs, update %.1fs)", step,
                 tc.steps, metrics["reward"], metrics["genacc"], metrics["rag_acc"], metrics.get("kl", nan),
                 metrics.get("logprob_gap", nan), metrics["policy_loss"], metrics["entropy"],
                 metrics["clip_fraction"], metrics.get("varied_groups", nan), metrics["step_s"], metrics["rollout_wait_s"],
                 metrics.get("old_logprobs_s", 0.0), metrics.get("ref_logprobs_s", 0.0), metrics["update_s"])
        if "dev_genacc" in metrics:
            log.info("step %d/%d: dev GenAcc %.3f GBR %.3f", step, tc.steps, metrics["dev_genacc"], metrics["dev_gbr"])
    if not step % tc.checkpoint_every or step == tc.steps:
        folder = checkpoint_path(cfg, step)
        # init_model_dir: the weights the trainable ones apply to (the warm start's or the base model's)
        checkpoint.save(folder, learner, {"step": step, "data_position": step * tc.batch_size,
                                          "mlflow_run_id": run_id, "algorithm": tc.algorithm,
                                          "init_model_dir": str(model_dir)})
        if distributed.rank() == 0:
            pruned = prune(folder.parent, tc.checkpoints_to_keep)
            mlflow.set_tag(f"s3ray.checkpoint.{folder.name}", str(folder))
            log.info("checkpoint at step %d: %s (pruned steps %s)", step, folder, pruned or "none")
    ray.train.report(metrics)


def finish(cfg: S3Config, state: dict[str, torch.Tensor], model_dir: Path, run_id: str) -> None:
    """Rank 0: Hugging Face export, reward-curve plot, artifacts."""
    import mlflow

    from s3ray import tracking
    from s3ray.train.reward_curve import REWARD_CURVE_LABELS, reward_curve

    export = export_pretrained(state, model_dir, cfg.train.export_dir)
    log.info("exported the policy to %s", export)
    mlflow.set_tag("s3ray.export_path", str(export))
    size = sum(f.stat().st_size for f in export.rglob("*") if f.is_file())
    if size <= _ARTIFACT_MAX_BYTES:
        mlflow.log_artifacts(str(export), artifact_path="model")
    plot = reward_curve(tracking.metric_history(run_id, list(REWARD_CURVE_LABELS)), cfg.train.reward_curve_path)
    if plot is not None:
        mlflow.log_artifact(str(plot))


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
def _check_services(cfg: S3Config) -> None:
    """Fail before any training work when the retriever cannot answer: ``GET <url>/health``, or with
    ``retriever.health_check=false`` one retrieval of one query (all a Search-R1 / s3 server serves)."""
    from s3ray.retrieval.client import RetrievalError, RetrieverClient

    client = RetrieverClient.from_config(cfg)
    if not cfg.retriever.health_check:
        try:
            client.search(["retriever check"], 1)
        except RetrievalError as err:
            raise RuntimeError(f"the retriever at {cfg.retriever.url} cannot retrieve ({err}); start it first"
                               " (`s3ray deploy`, or your own /retrieve server)") from err
        return
    try:
        healthy = client.health()
    except Exception as err:  # any transport error means the same thing here
        raise RuntimeError(f"the retriever at {cfg.retriever.url} is not reachable ({err}); "
                           "start the services first: `s3ray deploy`") from err
    if not healthy:
        raise RuntimeError(f"the retriever at {cfg.retriever.url} is not healthy (GET /health); start the "
                           "services first: `s3ray deploy`, or set retriever.health_check=false for a server "
                           "that serves only POST /retrieve")


def dev_questions(cfg: S3Config) -> list[Question]:
    """The fixed dev slice of the evaluation during training (none when it is off)."""
    if not cfg.train.eval_every:
        return []
    from s3ray.data.qa import load_datasets

    return load_datasets(cfg.data.dev)[:cfg.train.eval_questions]


def run_trainer(cfg: S3Config, pool, questions: list[Question], init_model_dir: Path,
                resume_from: Path | None = None):
    """The TorchTrainer over ``pool`` (any actor with ``run`` and ``update_weights``); returns its Result.
    ``resume_from``: a checkpoint folder to start from when the run has none of its own."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from s3ray import tracking

    tc = cfg.train
    resources = {"CPU": tc.cpus_per_worker} | ({"GPU": 1} if tc.use_gpu else {})
    trainer = TorchTrainer(
        train_loop,
        # Ray Train wants a dict here and pickles it to every worker: its values travel as themselves.
        train_loop_config={"cfg": cfg, "pool": pool, "init_model_dir": str(init_model_dir),
                           "questions": [ray.put(list(questions))],
                           "tags": tracking.ray_job_tags(),
                           "resume_from": str(resume_from) if resume_from else None,
                           "dev_questions": dev_questions(cfg)},
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo", timeout_s=tc.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker=resources if tc.num_workers else None),
        # The workers keep the run's checkpoints themselves, in the run's folder under the storage path
        # (resume_folder, report); Ray Train is given none to list.
        run_config=RunConfig(name=tracking.run_name(cfg, "train"), storage_path=str(Path(tc.dir) / "ray_train"),
                             failure_config=FailureConfig(max_failures=tc.max_failures)),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return result


def ensure_policy_model(cfg: S3Config) -> Path:
    """The searcher's initial weights as a local folder: the tiny model built, or a bundled model
    converted, on first use; a configured folder or hub id as it is."""
    from s3ray.bundled_models import ensure_bundled_model, is_bundled
    from s3ray.train.tinylm import ensure_tiny_model

    if cfg.policy.model is None:
        return ensure_tiny_model(cfg.policy_model_dir, cfg.corpus.path, cfg.policy.tiny)
    if is_bundled(cfg.policy.model):
        return ensure_bundled_model(cfg.policy.model, cfg.paths.work_dir)
    return cfg.policy_model_dir


def train(cfg: S3Config) -> Path:
    """The ``train`` stage. Returns the exported policy's folder."""
    import ray

    from s3ray.cluster import init_ray
    from s3ray.reward.cache import training_sets
    from s3ray.rollout.pool import create_pool
    from s3ray.train.identity import apply_resume_choice, claim_train_dir
    from s3ray.train.memory_plan import check_memory_plan

    tc = cfg.train
    init_ray(cfg)
    model_dir = ensure_policy_model(cfg)
    check_memory_plan(cfg, model_dir)  # printed; a run that cannot fit its GPUs stops here
    _check_services(cfg)
    questions, answered = training_sets(cfg)
    if not questions:
        raise RuntimeError("the filtered naive-RAG cache holds no training questions: run `s3ray precompute`, "
                           "or check rag_cache.drop_answered / data.train")
    if len(questions) < tc.batch_size:
        raise RuntimeError(f"{len(questions)} training questions are left after the filter, fewer than "
                           f"train.batch_size={tc.batch_size}: lower the batch size or add questions")
    log.info("training on %d questions (naive-RAG-answered ones filtered out)", len(questions))
    claim_train_dir(cfg)  # a warm start or checkpoints of another config are moved aside, not resumed
    resume_from = apply_resume_choice(cfg)
    pool = create_pool(cfg, model_dir)
    try:
        init_dir = model_dir
        if tc.warm_start.enabled:
            from s3ray.train.warm_start import warm_start, warm_start_questions

            warm, questions = warm_start_questions(questions, cfg, answered)
            log.info("warm start on %d %s questions", len(warm), tc.warm_start.questions)
            init_dir = warm_start(cfg, pool, warm, model_dir)
            log.info("RL on %d questions", len(questions))
        run_trainer(cfg, pool, questions, init_dir, resume_from)
    finally:
        ray.kill(pool)
    log.info("training done: %s", tc.export_dir)
    return tc.export_dir
