"""`s3ray evaluate`: answer every gathered context with the frozen generator, score it, report.

    <evaluation.dir>/results/<gatherer>/<dataset>.jsonl   one scored answer per question (resumable)
    <evaluation.dir>/table.{md,csv} em.* f1.* span_judge.* context_size.* genacc.png report.md

Contexts of the ``rag`` kind are answered with ``answer_messages(question, docs)``; the direct and
CoT rows with the zero-shot and CoT prompts (the CoT answer is the text inside ``<answer>``).
Scores: GenAcc (span match, else the LLM judge when enabled), EM and token F1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from s3ray.config import GeneratorConfig, S3Config
from s3ray.inference.base import GatheredContext
from s3ray.inference.run import context_path
from s3ray.inference.store import append_records, read_records, write_sorted
from s3ray.progress import ProgressLog

log = logging.getLogger(__name__)


def result_path(cfg: S3Config, gatherer: str, dataset: str) -> Path:
    return cfg.evaluation.dir / "results" / gatherer / f"{dataset}.jsonl"


def answer_prompt(ctx: GatheredContext, style: str = "s3ray") -> list[dict[str, str]]:
    from s3ray.generation import prompts

    if ctx.answer_mode == "zero_shot":
        return prompts.zero_shot_messages_as(style, ctx.question)
    if ctx.answer_mode == "cot":
        return prompts.cot_messages_as(style, ctx.question)
    return prompts.answer_messages_as(style, ctx.question, ctx.docs)


def prediction_of(ctx: GatheredContext, output: str, style: str = "s3ray") -> str:
    from s3ray.generation.prompts import extract_cot_answer

    return extract_cot_answer(output, first=style != "s3ray") if ctx.answer_mode == "cot" else output


def context_digest(ctx: GatheredContext) -> str:
    """What a result was scored from, stored with it: a context gathered again since (another searcher's
    docs) is scored again."""
    return hashlib.sha256(json.dumps(ctx.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def context_words(ctx: GatheredContext) -> int:
    return sum(len(d.title.split()) + len(d.text.split()) for d in ctx.docs)


async def score_contexts(contexts: list[GatheredContext], generator, scorer, gatherer: str,
                         dataset: str, style: str = "s3ray") -> list[dict[str, Any]]:
    """One scored record per context: the generator's answer, GenAcc/EM/F1 and the context size."""
    outputs = await generator.achat_many([answer_prompt(c, style) for c in contexts])
    predictions = [prediction_of(c, out, style) for c, out in zip(contexts, outputs, strict=True)]
    scores = await scorer.score_many([(c.question, p, list(c.golden_answers))
                                      for c, p in zip(contexts, predictions, strict=True)])
    return [{"question_id": c.question_id, "gatherer": gatherer, "dataset": dataset,
             "question": c.question, "golden_answers": list(c.golden_answers), "answer_mode": c.answer_mode,
             "prediction": p, "raw_output": out, "genacc": float(s.genacc), "span": bool(s.span),
             "judge": s.judge, "em": float(s.em), "f1": float(s.f1), "decided_by": s.decided_by,
             "num_docs": len(c.docs), "context_words": context_words(c), "context_digest": context_digest(c)}
            for c, out, p, s in zip(contexts, outputs, predictions, scores, strict=True)]


def unscored(contexts_file: Path, results_file: Path) -> tuple[list[GatheredContext], dict[str, dict]]:
    """(contexts without a result of their own yet, sorted by id; the results already there). A result
    scored from another context of its question (one gathered again since) is not one of its own."""
    contexts = [GatheredContext.from_dict(r) for r in read_records(contexts_file).values()]
    digests = {c.question_id: context_digest(c) for c in contexts}
    results = read_records(results_file)
    done = {qid: r for qid, r in results.items() if qid in digests and r.get("context_digest") == digests[qid]}
    rescored = sum(qid in digests for qid in results) - len(done)
    if rescored:
        log.info("%s: %d result(s) were scored from other contexts than %s holds now: scored again",
                 results_file, rescored, contexts_file)
    return sorted((c for c in contexts if c.question_id not in done), key=lambda c: c.question_id), done


async def evaluate_file(contexts_file: Path, results_file: Path, generator, scorer, gatherer: str,
                        dataset: str, batch_size: int, style: str = "s3ray", progress_every_s: float = 0.0) -> int:
    """Score the contexts of ``contexts_file`` missing from ``results_file``; returns how many were new.
    Progress lines come at most every ``progress_every_s`` seconds (0: after every batch)."""
    todo, done = unscored(contexts_file, results_file)
    progress = ProgressLog(log, f"evaluate {gatherer}/{dataset}", len(todo), "question", progress_every_s)
    for i in range(0, len(todo), batch_size):
        records = await score_contexts(todo[i:i + batch_size], generator, scorer, gatherer, dataset, style)
        append_records(results_file, records)
        done.update((r["question_id"], r) for r in records)
        progress.update(i + len(records))
    wanted = set(read_records(contexts_file))
    write_sorted(results_file, [r for qid, r in done.items() if qid in wanted])
    return len(todo)


def context_files(cfg: S3Config) -> list[tuple[str, str, Path]]:
    """(gatherer, dataset, file) for every configured pair whose contexts exist; missing ones are named."""
    found, missing = [], []
    for gatherer in cfg.inference.gatherers:
        for spec in cfg.data.dev:
            path = context_path(cfg, gatherer, spec.name)
            (found if path.exists() else missing).append((gatherer, spec.name, path))
    for gatherer, dataset, path in missing:
        log.warning("no contexts for %s/%s at %s (skipped by infer, or infer not run): not evaluated",
                    gatherer, dataset, path)
    if not found:
        raise FileNotFoundError(f"no contexts under {cfg.inference.dir}: run `s3ray infer` first")
    return found


def _generator_identity(gen: GeneratorConfig) -> str:
    return f"{gen.backend}:{gen.served_model_name or gen.model}"


def evaluation_generator(cfg: S3Config) -> GeneratorConfig:
    """Who answers in the evaluation: ``evaluation.generator``, else the training generator."""
    return cfg.evaluation.generator or cfg.generator


def evaluation_judge(cfg: S3Config) -> GeneratorConfig:
    """Who judges in the evaluation: ``evaluation.judge``, else ``judge.generator``, else who answers."""
    return cfg.evaluation.judge or cfg.judge.generator or evaluation_generator(cfg)


def mirage_datasets(cfg: S3Config) -> set[str]:
    return {spec.name for spec in cfg.data.dev if spec.format == "mirage"}


def evaluation_services(cfg: S3Config):
    """The evaluation's generator and judge (:func:`evaluation_generator`, :func:`evaluation_judge`)."""
    from s3ray.reward.services import Services

    return Services(cfg, generator=evaluation_generator(cfg), judge=evaluation_judge(cfg))


def scorers(cfg: S3Config, services) -> tuple[Any, Any]:
    """(the GenAcc scorer, the scorer of MIRAGE datasets): the second is s3's judge-only "aligns" test
    under ``evaluation.mirage_scoring=aligns_judge`` when a judge is enabled, else the first."""
    general = services.scorer
    if cfg.evaluation.mirage_scoring == "span_then_judge" or not mirage_datasets(cfg):
        return general, general
    if not cfg.judge.enabled:
        log.warning("evaluation.mirage_scoring=aligns_judge needs judge.enabled; the MIRAGE datasets %s are "
                    "scored by the span rule instead", sorted(mirage_datasets(cfg)))
        return general, general
    return general, services.genacc_scorer(style="aligns", span_check=False)


def identity_tags(cfg: S3Config) -> dict[str, str]:
    """Who answered, who judged, what retrieved: the tags that make two evaluate runs comparable."""
    judge = _generator_identity(evaluation_judge(cfg)) if cfg.judge.enabled else "none (span-only GenAcc)"
    retriever = f"{cfg.retriever.backend}:{cfg.encoder.model}:{cfg.index.kind}:{cfg.corpus.path.name}"
    return {"s3ray.generator": _generator_identity(evaluation_generator(cfg)), "s3ray.judge": judge,
            "s3ray.retriever": retriever,
            "s3ray.reasoner": _generator_identity(cfg.inference.reasoner or cfg.generator)}


async def _score_all(cfg: S3Config, pairs: list[tuple[str, str, Path]]) -> None:
    pending = [(g, d, path) for g, d, path in pairs if unscored(path, result_path(cfg, g, d))[0]]
    if not pending:  # a re-run only rebuilds the report: the services need not be up
        log.info("every gathered context is already scored")
        return
    services = evaluation_services(cfg)
    generator = services.generator
    general, mirage = scorers(cfg, services)
    medical = mirage_datasets(cfg)
    # Every file at once: their requests share the generator's batches instead of queueing file by file.
    await asyncio.gather(*(evaluate_file(path, result_path(cfg, gatherer, dataset), generator,
                                         mirage if dataset in medical else general, gatherer, dataset,
                                         cfg.evaluation.batch_size, cfg.evaluation.answer_prompt,
                                         cfg.tracking.progress_every_s)
                           for gatherer, dataset, path in pending))


def load_results(cfg: S3Config, pairs: list[tuple[str, str, Path]]) -> list[dict[str, Any]]:
    records = []
    for gatherer, dataset, _ in pairs:
        records += read_records(result_path(cfg, gatherer, dataset)).values()
    return records


def evaluate(cfg: S3Config) -> Path:
    import mlflow

    from s3ray.evaluation.report import build_report
    from s3ray.tracking import start_run

    pairs = context_files(cfg)
    asyncio.run(_score_all(cfg, pairs))
    records = load_results(cfg, pairs)
    tags = identity_tags(cfg)
    report = build_report(records, cfg.evaluation.dir, cfg.inference.gatherers,
                          [spec.name for spec in cfg.data.dev],
                          title=f"GenAcc — generator {tags['s3ray.generator']}", averages=cfg.evaluation.averages)
    with start_run(cfg, "evaluate", tags=tags):
        mlflow.log_metrics(report.metrics())
        for path in report.files:
            mlflow.log_artifact(str(path), artifact_path="report")
    print(report.markdown, flush=True)
    print(f"report: {cfg.evaluation.dir}", flush=True)
    return cfg.evaluation.dir
