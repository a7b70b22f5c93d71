"""`s3ray precompute`: the naive-RAG cache of the training questions, as a Ray Data pipeline (or, with
``rag_cache.baseline`` naming a gatherer, the cache of that gatherer's contexts: the reward's baseline).

    questions not cached yet ─► map_batches(NaiveRagBatch, actors) ─► part-<uuid>.parquet per batch
                                  │ one batched retrieve (deployment handle), concurrent chat completions, GenAcc

Each actor writes its batch's records itself (temp file + rename), so a crash loses nothing that was
written and a re-run skips every question already cached for the same generator/retriever/k/judge.
A batch whose services fail is not written: its questions are listed in ``failed.jsonl`` (and retried
by the next run). At the end: ``stats.json`` (GenAcc/EM/F1 by source) and an MLflow run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s3ray.config import S3Config
from s3ray.progress import ProgressLog
from s3ray.reward.cache import RagCache, is_yes_no
from s3ray.reward.record import CacheIdentity, RagRecord
from s3ray.types import Question

log = logging.getLogger(__name__)


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([("question_id", pa.string()), ("source", pa.string()), ("question", pa.string()),
                      ("golds", pa.list_(pa.string())), ("doc_ids", pa.list_(pa.string())),
                      ("answer", pa.string()), ("genacc", pa.float64()), ("span", pa.bool_()),
                      ("judge", pa.bool_()), ("em", pa.float64()), ("f1", pa.float64()),
                      ("decided_by", pa.string()), ("generator", pa.string()), ("retriever", pa.string()),
                      ("k", pa.int64()), ("judged_by", pa.string())])


def write_part(cache_dir: Path, records: list[RagRecord]) -> Path:
    """Write records as one new part file, atomically (a reader never sees half a file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache_dir.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp, final = cache_dir / f".tmp-{name}.parquet", cache_dir / f"part-{name}.parquet"
    pq.write_table(pa.Table.from_pylist([r.to_dict() for r in records], schema=_parquet_schema()), tmp)
    os.replace(tmp, final)
    return final


class NaiveRagBatch:
    """Ray Data actor: a batch of questions -> naive-RAG records in a new part file -> one status row each."""

    def __init__(self, cfg: S3Config):
        from s3ray.reward.services import Services

        self.services = Services(cfg)
        self.cache_dir = cfg.rag_cache.dir
        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: the HTTP clients persist
        self.answer_prompt = cfg.agent.answer_prompt
        self.baseline_docs = None  # naive RAG; else the baseline gatherer's docs by question id
        if cfg.rag_cache.baseline != "naive_rag":
            from s3ray.ragcache.baseline import load_baseline_docs

            self.baseline_docs = load_baseline_docs(cfg)

    def _score(self, questions: list[Question]):
        from s3ray.reward.naive import score_docs, score_naive_rag

        services = self.services
        if self.baseline_docs is None:
            return score_naive_rag(questions, services.retriever, services.generator, services.scorer,
                                   services.identity.k, services.identity, self.answer_prompt)
        missing = [q.id for q in questions if q.id not in self.baseline_docs]
        if missing:
            raise KeyError(f"no baseline context for {missing[:3]}")
        return score_docs(questions, [self.baseline_docs[q.id] for q in questions], services.generator,
                          services.scorer, services.identity, self.answer_prompt)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        questions = [Question.from_dict(json.loads(p)) for p in batch["payload"]]
        ids, sources = [q.id for q in questions], [q.source for q in questions]
        try:
            records = self.loop.run_until_complete(self._score(questions))
        except Exception as err:  # the services failed after their retries: list the batch, go on
            error = f"{type(err).__name__}: {err}"
            log.warning("naive-RAG batch of %d failed: %s", len(questions), error)
            return {"question_id": ids, "source": sources, "genacc": [float("nan")] * len(ids),
                    "error": [error] * len(ids)}
        write_part(self.cache_dir, records)
        return {"question_id": ids, "source": sources, "genacc": [r.genacc for r in records],
                "error": [""] * len(ids)}


def run_pipeline(cfg: S3Config, todo: list[Question],
                 on_batch: Callable[[int], None] | None = None) -> list[dict[str, str]]:
    """Score ``todo`` through Ray Data; returns the failures ``{question_id, source, error}``.

    ``on_batch(n)`` runs on the driver after the n-th finished batch (progress hooks, crash tests).
    """
    import ray

    from s3ray.cluster import init_ray

    init_ray(cfg)
    batch_size = cfg.rag_cache.batch_size
    items = [{"payload": json.dumps(q.to_dict())} for q in todo]
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch_size)))
    ds = ds.map_batches(NaiveRagBatch, fn_constructor_kwargs={"cfg": cfg},
                        batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=cfg.rag_cache.concurrency),
                        num_cpus=cfg.rag_cache.num_cpus)
    failures, done = [], 0
    progress = ProgressLog(log, "precompute", len(todo), "question", cfg.tracking.progress_every_s)
    for n, batch in enumerate(ds.iter_batches(batch_size=None, batch_format="numpy"), start=1):
        for qid, source, error in zip(batch["question_id"], batch["source"], batch["error"], strict=True):
            if error:
                failures.append({"question_id": str(qid), "source": str(source), "error": str(error)})
        done += len(batch["question_id"])
        progress.update(done, f"{len(failures)} failed")
        if on_batch is not None:
            on_batch(n)
    return failures


def cache_stats(questions: list[Question], cache: RagCache) -> dict[str, Any]:
    """GenAcc/EM/F1 and the span/judge split by source, over the cached training questions."""
    groups: dict[str, list[RagRecord]] = defaultdict(list)
    for q in questions:
        record = cache.get(q.id)
        if record is not None:
            groups[q.source].append(record)
            groups["all"].append(record)

    def summary(records: list[RagRecord]) -> dict[str, float]:
        n = len(records)
        return {"n": n, "genacc": sum(r.genacc for r in records) / n, "em": sum(r.em for r in records) / n,
                "f1": sum(r.f1 for r in records) / n,
                "by_span": sum(r.decided_by == "span" for r in records) / n,
                "by_judge": sum(r.decided_by == "judge" for r in records) / n}

    return {"by_source": {source: summary(records) for source, records in sorted(groups.items())},
            "questions": len(questions), "cached": len(groups["all"]),
            "yes_no": sum(is_yes_no(q) for q in questions)}


def precompute(cfg: S3Config, on_batch: Callable[[int], None] | None = None) -> Path:
    """Fill ``rag_cache.dir`` for the training questions; returns the directory."""
    import mlflow

    from s3ray.data.qa import load_datasets
    from s3ray.tracking import start_run

    cache_dir = cfg.rag_cache.dir
    identity = CacheIdentity.from_config(cfg)
    questions = load_datasets(cfg.data.train)
    if cfg.rag_cache.baseline != "naive_rag":  # fail before any work when the baseline's contexts are absent
        from s3ray.ragcache.baseline import load_baseline_docs

        load_baseline_docs(cfg)
    cached = RagCache.load(cache_dir, identity)
    todo = [q for q in questions if q.id not in cached]
    log.info("precompute %s: %d training questions, %d already cached, %d to score", identity,
             len(questions), len(questions) - len(todo), len(todo))
    start = time.monotonic()
    failures = run_pipeline(cfg, todo, on_batch) if todo else []
    elapsed = time.monotonic() - start

    cache_dir.mkdir(parents=True, exist_ok=True)
    failed_path = cache_dir / "failed.jsonl"
    failed_path.write_text("".join(json.dumps(f) + "\n" for f in failures))
    if failures:
        log.error("precompute: %d questions failed (listed in %s); re-run to retry them", len(failures),
                  failed_path)
    cache = RagCache.load(cache_dir, identity)
    stats = cache_stats(questions, cache) | {"identity": vars(identity), "failed": len(failures),
                                             "scored_this_run": len(todo) - len(failures),
                                             "seconds_this_run": elapsed}
    stats_path = cache_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2))
    with start_run(cfg, "precompute"):
        mlflow.log_params({"cache.generator": identity.generator, "cache.retriever": identity.retriever,
                           "cache.k": identity.k, "cache.judge": identity.judge})
        metrics = {f"{name}.{source}": s[name] for source, s in stats["by_source"].items()
                   for name in ("genacc", "em", "f1")}
        metrics |= {"failed": len(failures), "cached": stats["cached"]}
        if todo and elapsed > 0:
            metrics["questions_per_s"] = (len(todo) - len(failures)) / elapsed
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(stats_path))
        mlflow.log_artifact(str(failed_path))
    log.info("precompute: GenAcc by source %s", {s: round(v["genacc"], 4) for s, v in stats["by_source"].items()})
    return cache_dir
