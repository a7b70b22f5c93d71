"""Naive-RAG precompute throughput and the default generator's naive-RAG GenAcc on the dev set.

    precompute.questions_per_s            the Ray Data pipeline (batched retrieve through the deployment
                                          handles, concurrent answers) over the dev set, against the seed's
                                          way on the same services: a loop that retrieves and answers one
                                          question at a time over HTTP (baseline, ratio).
    precompute.questions_per_s.vs_reader  the same pipeline rate against the reader's own in-process
                                          throughput on the same questions and documents (batches of
                                          generator.max_batch_size, the replica's torch threads): on CPU
                                          the generator is the bound, so this is the physical limit.
    rag.genacc.dev                        naive-RAG GenAcc (k = rag_cache.topk) of the CPU default generator.

Baselines and the pipeline run alternately, ``ROUNDS`` times; the figures are medians.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import time

from common import demo_services, figure, shutdown

BASELINE_QUESTIONS = 40  # the sequential loop is slow; its rate is measured on a prefix
ROUNDS = 2


def sequential_rate(cfg, questions) -> float:
    """The seed's precompute: for each question, one retrieve request, one generation, one score."""
    from s3ray.generation.client import GeneratorClient
    from s3ray.generation.prompts import answer_messages
    from s3ray.retrieval.client import RetrieverClient
    from s3ray.reward.services import Services

    # HTTP, as the seed retrieved and answered (not the services' handles)
    retriever, generator = RetrieverClient.from_config(cfg), GeneratorClient.from_config(cfg.generator)
    scorer = Services(cfg).scorer
    start = time.perf_counter()
    for q in questions:
        [docs] = retriever.search([q.question], cfg.rag_cache.topk)
        answer = generator.chat(answer_messages(q.question, docs))
        asyncio.run(scorer.score(q.question, answer, q.golden_answers))
    return len(questions) / (time.perf_counter() - start)


def reader_rate(reader, items, batch_size: int) -> float:
    """Questions/s of the extractive reader answering ``items`` in this process."""
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        reader.answer_many(items[i:i + batch_size])
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    from s3ray.cluster import set_torch_threads
    from s3ray.config import REPO_ROOT
    from s3ray.data.qa import load_datasets
    from s3ray.generation.reader import ExtractiveReader
    from s3ray.ragcache.precompute import precompute
    from s3ray.retrieval.client import RetrieverClient

    cfg = demo_services([f"rag_cache.dir={REPO_ROOT / 'runs' / 'bench' / 'rag_cache_dev'}",
                         "data.train=[{name: hotpotqa, path: hotpotqa/dev.jsonl}]"])
    questions = load_datasets(cfg.data.train)
    docs = RetrieverClient.from_config(cfg).search([q.question for q in questions], cfg.rag_cache.topk)
    items = [(q.question, d) for q, d in zip(questions, docs, strict=True)]
    set_torch_threads(cfg.generator.torch_threads)  # as in the generator's replica
    reader = ExtractiveReader.from_config(cfg.generator, cache_entries=0)  # the bare reader: no cache

    sequential, in_process, ours = [], [], []
    for _ in range(ROUNDS):
        sequential.append(sequential_rate(cfg, questions[:BASELINE_QUESTIONS]))
        in_process.append(reader_rate(reader, items, cfg.generator.max_batch_size))
        shutil.rmtree(cfg.rag_cache.dir, ignore_errors=True)  # a cold cache every round
        start = time.perf_counter()
        precompute(cfg)
        ours.append(len(questions) / (time.perf_counter() - start))
        print(f"# precompute {ours[-1]:.2f} q/s, sequential {sequential[-1]:.2f}, reader in-process "
              f"{in_process[-1]:.2f}", file=sys.stderr, flush=True)
    figure("precompute.questions_per_s", statistics.median(ours), "questions/s", statistics.median(sequential))
    figure("precompute.questions_per_s.vs_reader", statistics.median(ours), "questions/s",
           statistics.median(in_process))

    stats = json.loads((cfg.rag_cache.dir / "stats.json").read_text())
    figure("rag.genacc.dev", stats["by_source"]["all"]["genacc"], "GenAcc")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutdown()
