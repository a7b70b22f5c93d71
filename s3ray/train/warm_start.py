"""Supervised warm start for the from-scratch tiny searcher (``train.warm_start.enabled``).

The tiny model of the CPU default is randomly initialised: it cannot write a single well-formed
``<query>`` by chance, so RL alone has no signal to start from. Before RL we teach it the output format
by imitation: the rollout pool runs a simple heuristic searcher (``policy="heuristic"``) over training
questions, and the tiny model is trained with cross-entropy on the searcher's own tokens (action tokens;
prompts and observations are context only). This is a warm start, not part of the s3 method: the
paper's searcher is an instruction-tuned 7B model that already follows the format. The warm-started
weights become both the RL start point and the KL reference.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from s3ray.config import S3Config, WarmStartConfig
from s3ray.train.batch import collate_episodes
from s3ray.train.losses import masked_mean
from s3ray.train.policy import autocast, export_pretrained, hf_state_dict, load_policy, token_logprobs
from s3ray.types import Question

log = logging.getLogger(__name__)

_DONE = "warm_start.json"


def action_token_nll(model: torch.nn.Module, episodes: Sequence[Any], pad_id: int = 0) -> torch.Tensor:
    """Mean negative log-likelihood of the searcher's tokens (action mask), at temperature 1."""
    batch = collate_episodes(episodes, pad_id).to(next(model.parameters()).device)
    logp, _ = token_logprobs(model, batch, 1.0)
    return -masked_mean(logp, batch.action_mask)


def supervised_epochs(model: torch.nn.Module, episodes: Sequence[Any], ws: WarmStartConfig,
                      seed: int = 0, precision: Callable[[], AbstractContextManager] = contextlib.nullcontext,
                      progress_every_s: float = 15.0) -> list[float]:
    """``ws.epochs`` shuffled passes of cross-entropy on action tokens, forwards under ``precision``
    (:func:`s3ray.train.policy.autocast`); returns the mean loss per epoch. Logs its progress (episodes
    fitted, the epoch's NLL so far, an ETA) at most every ``progress_every_s``: SmolLM2's fit of 284
    episodes runs ~20 minutes on 2 cores."""
    from s3ray.progress import ProgressLog

    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=ws.lr)
    rng = random.Random(seed)
    order = list(range(len(episodes)))
    model.train()
    epoch_losses = []
    progress = ProgressLog(log, "warm start", ws.epochs * len(episodes), "episode", progress_every_s)
    for epoch in range(ws.epochs):
        rng.shuffle(order)
        total, batches = 0.0, 0
        for start in range(0, len(order), ws.batch_size):
            chunk = order[start:start + ws.batch_size]
            with precision():
                loss = action_token_nll(model, [episodes[i] for i in chunk])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            total, batches = total + loss.item(), batches + 1
            progress.update(epoch * len(episodes) + start + len(chunk),
                            f"epoch {epoch + 1}/{ws.epochs}, action-token NLL {total / batches:.3f}")
        epoch_losses.append(total / max(batches, 1))
        log.info("warm start epoch %d/%d: action-token NLL %.3f", epoch + 1, ws.epochs, epoch_losses[-1])
    return epoch_losses


def cut_teacher_turns(episodes: Sequence[Any]) -> int:
    """Teacher turns that ``agent.max_turn_tokens`` cut short: imitating one teaches a turn that never
    closes its tags (a model that spells each tag in several tokens needs far more than one that has
    them as single tokens)."""
    return sum(turn.finish_reason == "length" for ep in episodes for turn in ep.turns)


def warm_start_questions(questions: Sequence[Question], cfg: S3Config, answered: Sequence[Question] = ()
                         ) -> tuple[list[Question], list[Question]]:
    """(the warm start's questions, RL's) for ``warm_start.questions``:

    - ``filtered``: a seeded ``warm_start.num_questions`` of ``questions`` (the filter's), and the rest for
      RL when at least a batch is left (RL on questions the warm start fitted would start from memorised
      teacher turns), else all of them;
    - ``answered``: a seeded ``warm_start.num_questions`` of ``answered`` (those naive RAG answers, which
      earn no reward), and every one of ``questions`` for RL;
    - ``all``: a seeded ``warm_start.num_questions`` of both, and every one of ``questions`` for RL.
    """
    ws = cfg.train.warm_start
    pool = {"filtered": questions, "answered": answered, "all": [*answered, *questions]}[ws.questions]
    picked = list(pool)
    random.Random(cfg.train.seed).shuffle(picked)
    picked = picked[:ws.num_questions]
    if not picked:
        hint = (" (none is answered by naive RAG, or rag_cache.drop_answered=false keeps those in training)"
                if ws.questions == "answered" else "")
        raise ValueError(f"train.warm_start.questions={ws.questions}: no such training question to warm-start "
                         f"on{hint}")
    if ws.questions != "filtered":
        return picked, list(questions)
    chosen = {q.id for q in picked}
    rest = [q for q in questions if q.id not in chosen]
    return picked, rest if len(rest) >= cfg.train.batch_size else list(questions)


def _fit(cfg: S3Config, episodes: Sequence[Any], base_model_dir: Path, model_dir: Path
         ) -> tuple[float, list[float], float]:
    """Fit the searcher to the teacher's episodes and export it to ``model_dir``; returns the NLL before,
    the NLL per epoch and the seconds the fit took."""
    from s3ray.cluster import set_torch_threads
    from s3ray.progress import show_info_logs

    show_info_logs()
    set_torch_threads(cfg.train.torch_threads)  # the rollout actors idle while it runs: every core
    ws = cfg.train.warm_start
    torch.manual_seed(cfg.train.seed)
    model = load_policy(base_model_dir, cfg.policy)
    with torch.no_grad():
        before = action_token_nll(model, episodes[:ws.batch_size]).item()
    t0 = time.perf_counter()
    losses = supervised_epochs(model, episodes, ws, seed=cfg.train.seed,
                               precision=functools.partial(autocast, cfg.policy, torch.device("cpu")),
                               progress_every_s=cfg.tracking.progress_every_s)
    train_s = time.perf_counter() - t0
    export_pretrained(hf_state_dict(model), base_model_dir, model_dir)
    return before, losses, train_s


def warm_start(cfg: S3Config, pool, picked: Sequence[Question], base_model_dir: Path) -> Path:
    """Run the warm start once on ``picked`` (its folder is reused by later runs) and return the warm
    model's folder."""
    import mlflow
    import ray

    from s3ray import tracking

    # max_calls=1: the worker process exits after the fit (Ray would otherwise keep it, and its memory, idle)
    _fit_and_export = ray.remote(num_cpus=1, max_calls=1)(_fit)
    out = Path(cfg.train.dir) / "warm_start"
    model_dir = out / "model"
    if (out / _DONE).exists():
        log.info("warm start: reusing %s", model_dir)
        return model_dir
    ws = cfg.train.warm_start
    log.info("warm start: %d heuristic episodes for each of %d questions", ws.samples_per_question, len(picked))
    t0 = time.perf_counter()
    episodes = ray.get(pool.run.remote(list(picked), policy="heuristic", with_reward=False,
                                       samples_per_question=ws.samples_per_question))
    rollout_s = time.perf_counter() - t0
    if not episodes:
        raise RuntimeError("warm start: the heuristic searcher returned no episodes")
    cut = cut_teacher_turns(episodes)
    if cut:
        log.warning("warm start: %d of %d teacher turns were cut at agent.max_turn_tokens=%d; the searcher "
                    "will imitate turns that never close: raise agent.max_turn_tokens", cut,
                    sum(len(ep.turns) for ep in episodes), cfg.agent.max_turn_tokens)
    # The fit runs in a task of its own: its process (the model, its optimiser state and whatever the
    # allocator keeps) is gone before RL starts, instead of staying in this driver beside the rollout
    # actors and the train worker (~6 GB for SmolLM2, which took the 24 GB machine to an OOM kill).
    before, losses, train_s = ray.get(_fit_and_export.remote(cfg, episodes, base_model_dir, model_dir))
    with tracking.start_run(cfg, "warm_start"):
        for epoch, loss in enumerate(losses, start=1):
            mlflow.log_metric("warm_start_nll", loss, step=epoch)
        mlflow.log_metrics({"warm_start_nll_before": before, "warm_start_episodes": len(episodes),
                            "warm_start_cut_turns": cut, "warm_start_rollout_s": rollout_s,
                            "warm_start_train_s": train_s})
    (out / _DONE).write_text(json.dumps({"episodes": len(episodes), "nll_before": before, "nll": losses}))
    log.info("warm start: NLL %.3f -> %.3f, model at %s", before, losses[-1], model_dir)
    return model_dir
