"""The generator's in-cluster path: ``generator.handle.qps`` (requests/s of 32 closed-loop callers, one
naive-RAG answer request each, through the deployment handle, :mod:`s3ray.generation.handle`: what the
reward, the precompute and the evaluate stage use) against the same callers over HTTP through Serve's
proxy (``GeneratorClient``, what they used before; baseline). ``demo_cpu``'s reader answers the dev
questions over their top-3 passages (from the corpus's first 1,000). Handle and HTTP run alternately,
``--rounds`` times; medians.

    python bench/bench_generator.py [--requests 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys

from common import closed_loop, demo_services, figure, shutdown

CALLERS = 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=256, help="answer requests per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating HTTP / handle rounds")
    args = parser.parse_args()

    from s3ray.config import REPO_ROOT
    from s3ray.data.qa import load_datasets
    from s3ray.generation.client import GeneratorClient
    from s3ray.generation.handle import HandleGenerator
    from s3ray.generation.prompts import answer_messages
    from s3ray.retrieval.client import RetrieverClient

    # 1,000 passages are enough to answer from (the figure is the generator's), and index in a minute
    cfg = demo_services([f"paths.work_dir={REPO_ROOT / 'runs' / 'bench_generator'}", "corpus.limit=1000",
                         "data.train=[{name: hotpotqa, path: hotpotqa/dev.jsonl}]"])
    questions = load_datasets(cfg.data.train)[:args.requests]
    docs = RetrieverClient.from_config(cfg).search([q.question for q in questions], cfg.rag_cache.topk)
    requests = [answer_messages(q.question, d) for q, d in zip(questions, docs, strict=True)]
    clients = {"http": GeneratorClient.from_config(cfg.generator), "handle": HandleGenerator.from_config(cfg.generator)}
    rates: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, client in clients.items():
            qps, _ = asyncio.run(closed_loop(lambda r, c=client: c.achat(r[0]), requests, CALLERS, 1))
            rates[name].append(qps)
        print(f"# c{CALLERS}: handle {rates['handle'][-1]:.1f} req/s, http {rates['http'][-1]:.1f}",
              file=sys.stderr, flush=True)
    figure(f"generator.handle.qps.c{CALLERS}", statistics.median(rates["handle"]), "requests/s",
           statistics.median(rates["http"]))


if __name__ == "__main__":
    try:
        main()
    finally:
        shutdown()
