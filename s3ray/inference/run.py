"""`s3ray infer`: gather contexts for every (gatherer, dev dataset) into resumable JSONL files.

    <inference.dir>/<gatherer>/<dataset>.jsonl   one GatheredContext per line, sorted by question id

Questions go through the gatherer in batches of ``inference.batch_size`` (the last batch may be
short; nothing is dropped). Each finished batch is appended at once, so a crash loses at most the
batch in flight, and a re-run only gathers the questions missing from the file, or made by another
maker than the gatherer's now (``ContextGatherer.made_by``: a searcher trained further since).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from s3ray.config import S3Config
from s3ray.inference.base import ContextGatherer
from s3ray.inference.registry import GATHERERS, GathererUnavailable, build_gatherer
from s3ray.inference.store import append_records, read_records, write_sorted
from s3ray.progress import ProgressLog
from s3ray.types import Question

log = logging.getLogger(__name__)


def context_path(cfg: S3Config, gatherer: str, dataset: str) -> Path:
    return cfg.inference.dir / gatherer / f"{dataset}.jsonl"


def dev_questions(cfg: S3Config) -> dict[str, list[Question]]:
    """dataset name -> its dev questions (``inference.limit`` per dataset), in file order."""
    from s3ray.data.qa import load_datasets

    names = [spec.name for spec in cfg.data.dev]
    if len(set(names)) != len(names):
        raise ValueError(f"data.dev has repeated dataset names: {names}")
    out = {}
    for spec in cfg.data.dev:
        questions = load_datasets([spec])
        out[spec.name] = questions[:cfg.inference.limit] if cfg.inference.limit is not None else questions
    return out


async def gather_dataset(gatherer: ContextGatherer, questions: list[Question], path: Path,
                         batch_size: int, label: str = "", progress_every_s: float = 0.0) -> int:
    """Gather the questions missing from ``path``; returns how many were gathered now. Progress lines
    come at most every ``progress_every_s`` seconds (0: after every batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    label = label or f"{gatherer.name}/{path.stem}"
    made_by = gatherer.made_by
    done = read_records(path)
    stale = sorted(qid for qid, r in done.items() if r.get("made_by") != made_by)
    if stale:
        log.warning("%s: %d context(s) in %s were made by %r, not by %r: gathered again", label, len(stale),
                    path, done[stale[0]].get("made_by"), made_by)
        for qid in stale:
            del done[qid]
    todo = [q for q in questions if q.id not in done]
    if done:
        log.info("%s: %d of %d questions already gathered", label, len(questions) - len(todo), len(questions))
    progress = ProgressLog(log, f"infer {label}", len(todo), "question", progress_every_s)
    for i in range(0, len(todo), batch_size):
        batch = todo[i:i + batch_size]
        contexts = await gatherer.gather(batch)
        got = [c.question_id for c in contexts]
        if got != [q.id for q in batch]:
            raise RuntimeError(f"{label}: gatherer returned contexts for {got[:3]}... instead of the batch")
        records = [c.to_dict() | {"made_by": made_by} for c in contexts]
        append_records(path, records)
        done.update((r["question_id"], r) for r in records)
        progress.update(i + len(batch))
    wanted = {q.id for q in questions}
    write_sorted(path, [r for qid, r in done.items() if qid in wanted])
    return len(todo)


async def _gather_all(cfg: S3Config, datasets: dict[str, list[Question]]) -> None:
    """Every gatherer at once (each writes its own files): one waits on the generator while another
    waits on the retriever or starts its rollout pool, instead of each waiting its turn."""

    async def run(name: str) -> None:
        try:
            gatherer = build_gatherer(name, cfg)  # inside the loop: async clients belong to it
        except GathererUnavailable as err:
            log.warning("SKIPPING gatherer %s: %s", name, err)
            return
        try:
            for dataset, questions in datasets.items():
                await gather_dataset(gatherer, questions, context_path(cfg, name, dataset),
                                     cfg.inference.batch_size, f"{name}/{dataset}", cfg.tracking.progress_every_s)
        finally:
            gatherer.close()

    await asyncio.gather(*(run(name) for name in cfg.inference.gatherers))


def gather_contexts(cfg: S3Config) -> Path:
    unknown = [g for g in cfg.inference.gatherers if g not in GATHERERS]
    if unknown:
        raise ValueError(f"unknown gatherers {unknown}; known: {sorted(GATHERERS)}")
    datasets = dev_questions(cfg)
    log.info("gathering contexts: gatherers %s on %s", cfg.inference.gatherers,
             {name: len(qs) for name, qs in datasets.items()})
    asyncio.run(_gather_all(cfg, datasets))
    print(f"contexts: {cfg.inference.dir}", flush=True)
    return cfg.inference.dir
