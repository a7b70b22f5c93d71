"""Naive-RAG precompute throughput and the default generator's naive-RAG GenAcc on the dev set.

    precompute.questions_per_s   Ray Data pipeline (batched retrieve, concurrent answers) over the dev
                                 set, against the seed's way on the same services: a loop that retrieves
                                 and answers one question at a time over HTTP (baseline, ratio).
    rag.genacc.dev               naive-RAG GenAcc (k = rag_cache.topk) of the CPU default generator.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

from common import demo_services, figure, shutdown

BASELINE_QUESTIONS = 40  # the sequential loop is slow; its rate is measured on a prefix


def sequential_rate(cfg, questions) -> float:
    """The seed's precompute: for each question, one retrieve request, one generation, one score."""
    from s3ray.generation.client import GeneratorClient
    from s3ray.generation.prompts import answer_messages
    from s3ray.retrieval.client import RetrieverClient
    from s3ray.scoring.genacc import GenAccScorer

    retriever = RetrieverClient.from_config(cfg)
    generator = GeneratorClient.from_config(cfg.generator)
    scorer = GenAccScorer.from_config(cfg)
    start = time.perf_counter()
    for q in questions:
        [docs] = retriever.search([q.question], cfg.rag_cache.topk)
        answer = generator.chat(answer_messages(q.question, docs))
        asyncio.run(scorer.score(q.question, answer, q.golden_answers))
    return len(questions) / (time.perf_counter() - start)


def main() -> None:
    from s3ray.config import REPO_ROOT
    from s3ray.data.qa import load_datasets
    from s3ray.ragcache.precompute import precompute

    cfg = demo_services([f"rag_cache.dir={REPO_ROOT / 'runs' / 'bench' / 'rag_cache_dev'}", "rag_cache.concurrency=2",
                         "data.train=[{name: hotpotqa, path: hotpotqa/dev.jsonl}]"])
    shutil.rmtree(cfg.rag_cache.dir, ignore_errors=True)  # a cold cache every run
    questions = load_datasets(cfg.data.train)

    baseline = sequential_rate(cfg, questions[:BASELINE_QUESTIONS])
    start = time.perf_counter()
    precompute(cfg)
    figure("precompute.questions_per_s", len(questions) / (time.perf_counter() - start), "questions/s", baseline)

    stats = json.loads((cfg.rag_cache.dir / "stats.json").read_text())
    figure("rag.genacc.dev", stats["by_source"]["all"]["genacc"], "GenAcc")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutdown()
