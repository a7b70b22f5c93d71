"""Retrieval benchmark: index build speed, served QPS / latency against a single-process baseline, and
recall on dev questions. One JSON object per figure on stdout (``name``, ``value``, ``unit``, and
``baseline`` / ``ratio`` = ours / baseline, higher is better, where there is a comparison).

- ``index.passages_per_s``: ``build_index`` end to end (parse, Ray Data embedding with two actors, FAISS,
  BM25, MLflow) over a slice of the HotpotQA corpus (10.8k passages in all; a CPU embeds ~20-30/s);
  baseline: one process encoding a sample of the same passages, nothing else.
- ``retriever.qps.cN`` / ``retriever.latency_p50_ms.cN`` / ``..._p99_ms.cN``: single-query requests from
  N concurrent clients against the Serve app; baseline: the s3 / Search-R1 retrieval server design, one
  FastAPI + uvicorn process that encodes and searches each request on its own (same index, same queries).
- ``retriever.recall_at_3.dev``: share of dev questions (yes/no answers excluded) with a golden answer,
  normalized, inside one of the top-3 passages; baseline: BM25 over the same slice.

    python bench/bench_retrieval.py [--passages 1000] [--requests 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the baseline processes; see make_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s3ray.config import load_config  # noqa: E402

CONCURRENCY = (1, 8, 32)


def emit(name: str, value: float, unit: str, baseline: float | None = None, ratio: bool = True) -> None:
    row = {"name": name, "value": round(value, 4), "unit": unit}
    if baseline is not None:
        row["baseline"] = round(baseline, 4)
        if ratio:
            row["ratio"] = round(value / baseline, 4) if baseline else None
    print(json.dumps(row), flush=True)


def note(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def corpus_slice(data_dir: Path, out: Path, passages: int, dev: list[dict]) -> None:
    """The dev questions' gold paragraphs plus the corpus's first other paragraphs, ``passages`` in all."""
    wanted = {pid for q in dev for pid in q["supporting_passage_ids"]}
    others = passages - len(wanted)
    with open(data_dir / "hotpotqa" / "corpus.jsonl", encoding="utf-8") as src, open(out, "w") as dst:
        for line in src:
            doc_id = json.loads(line)["id"]
            if doc_id in wanted or others > 0:
                dst.write(line)
                others -= doc_id not in wanted


def make_config(work: Path, corpus: Path, port: int, *extra: str):
    # One torch thread per process on both sides (OMP_NUM_THREADS=1 above; Ray gives a 1-CPU actor one):
    # two OpenMP threads contending for two busy cores were slower, not faster. Ray's side scales out
    # instead: two embedding actors, one retriever replica.
    return load_config(None, [f"paths.work_dir={work}", f"corpus.path={corpus}", f"serve.port={port}",
                              "cluster.num_cpus=4", "cluster.object_store_mb=400", "index.shard_rows=256",
                              "index.embed_actors=2", "index.embed_num_cpus=1", "retriever.num_cpus=1",
                              *extra])


# ---------------------------------------------------------------------------------------------------
# The baseline server: what s3 / Search-R1 run (FastAPI + uvicorn, one global retriever, no batching)
# ---------------------------------------------------------------------------------------------------
def baseline_server(config_json: str, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from s3ray.config import config_from_dict
    from s3ray.retrieval.searchers import load_searcher
    from s3ray.retrieval.service import parse_retrieve_request, response_body

    cfg = config_from_dict(json.loads(config_json))
    searcher = load_searcher(cfg)
    app = FastAPI()

    @app.get("/retrieve/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/retrieve")
    def retrieve(body: dict) -> dict:  # a sync handler, as in retrieval_server.py: one request at a time
        req = parse_retrieve_request(body, max_topk=100, max_queries=1024, default_topk=3)
        return response_body(searcher.search(req.queries, req.topk), req.return_scores)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------------------------------------------
# Load generation
# ---------------------------------------------------------------------------------------------------
async def load(url: str, queries: list[str], concurrency: int) -> tuple[float, list[float]]:
    """Send every query as its own request from ``concurrency`` workers; (qps, latencies in ms)."""
    from s3ray.retrieval.client import RetrieverClient

    client = RetrieverClient(url, timeout_s=120.0, retries=0)
    await asyncio.gather(*(client.asearch([q], 3) for q in queries[:concurrency]))  # warm-up
    todo, latencies = iter(queries), []

    async def worker() -> None:
        for query in todo:
            started = time.perf_counter()
            await client.asearch([query], 3)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(queries) / (time.perf_counter() - started), latencies


def measure(url: str, questions: list[str], requests: int) -> dict[int, tuple[float, float, float]]:
    out = {}
    for c in CONCURRENCY:
        n = max(requests // 4, 2 * c) if c == 1 else requests
        stream = [questions[i % len(questions)] for i in range(n)]
        qps, lat = asyncio.run(load(url, stream, c))
        out[c] = (qps, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)))
        note(f"{url} c={c}: {qps:.1f} qps, p50 {out[c][1]:.1f} ms, p99 {out[c][2]:.1f} ms")
    return out


def wait_health(url: str, timeout_s: float = 300.0) -> None:
    from s3ray.retrieval.client import RetrieverClient

    client, deadline = RetrieverClient(url, retries=0), time.monotonic() + timeout_s
    while not client.health():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------------
def encode_baseline(cfg, sample: int) -> float:
    """Passages/s of one process encoding doc-store passages in encoder-sized batches."""
    import pyarrow.parquet as pq

    from s3ray.retrieval.encoder import encode, load_encoder
    from s3ray.retrieval.indexing import passage_text

    docs = pq.read_table(cfg.index.dir / "docs.parquet", columns=["title", "text"]).slice(0, sample)
    texts = [passage_text(t, x) for t, x in zip(docs["title"].to_pylist(), docs["text"].to_pylist(),
                                                strict=True)]
    model = load_encoder(cfg.encoder)
    started = time.perf_counter()
    encode(model, texts, cfg.encoder.passage_prefix, cfg.encoder)
    return len(texts) / (time.perf_counter() - started)


def answer_recall(searcher, dev: list[dict], k: int = 3) -> float:
    from s3ray.scoring.metrics import normalize_answer

    results = searcher.search([q["question"] for q in dev], k)
    hits = 0
    for q, docs in zip(dev, results, strict=True):
        text = " " + " ".join(normalize_answer(f"{d.title} {d.text}") for d in docs) + " "
        hits += any(f" {normalize_answer(a)} " in text for a in q["golden_answers"] if normalize_answer(a))
    return hits / len(dev)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=1000, help="corpus slice size")
    parser.add_argument("--dev", type=int, default=150, help="dev questions whose gold paragraphs are in it")
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    parser.add_argument("--baseline-server", nargs=2, metavar=("CONFIG_JSON", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server[0], int(args.baseline_server[1]))
        return 0

    import ray
    from ray import serve

    from s3ray.retrieval.indexing import build_index
    from s3ray.retrieval.searchers import load_searcher
    from s3ray.retrieval.service import deploy

    with tempfile.TemporaryDirectory(prefix="bench_retrieval_") as tmp:
        work = Path(tmp)
        probe = make_config(work, work / "corpus.jsonl", 0)
        dev = read_jsonl(probe.paths.data_dir / "hotpotqa" / "dev.jsonl")[:args.dev]
        corpus_slice(probe.paths.data_dir, work / "corpus.jsonl", args.passages, dev)
        cfg = make_config(work, work / "corpus.jsonl", free_port())
        questions = [q["question"] for q in read_jsonl(cfg.paths.data_dir / "hotpotqa" / "dev.jsonl")]
        try:
            from s3ray.cluster import init_ray

            init_ray(cfg)  # started before the clock: the figure is the build, not Ray's start-up
            started = time.perf_counter()
            build_index(cfg)
            build_rate = args.passages / (time.perf_counter() - started)
            emit("index.passages_per_s", build_rate, "passages/s", encode_baseline(cfg, 256))

            dense, bm25 = load_searcher(cfg), load_searcher(make_config(work, cfg.corpus.path, 0,
                                                                       "retriever.backend=bm25"))
            factual = [q for q in dev if normalize(q) not in ("yes", "no")]
            emit("retriever.recall_at_3.dev", answer_recall(dense, factual), "fraction",
                 answer_recall(bm25, factual))
            del dense, bm25

            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--baseline-server",
                                       json.dumps(cfg.model_dump(mode="json")), str(port)])
            try:
                base_url = f"http://127.0.0.1:{port}/retrieve"
                wait_health(base_url)
                baseline = measure(base_url, questions, args.requests)
            finally:
                server.terminate()
                server.wait(timeout=30)

            url = deploy(cfg)
            ours = measure(url, questions, args.requests)
            for c in CONCURRENCY:
                emit(f"retriever.qps.c{c}", ours[c][0], "requests/s", baseline[c][0])
                emit(f"retriever.latency_p50_ms.c{c}", ours[c][1], "ms", baseline[c][1], ratio=False)
                emit(f"retriever.latency_p99_ms.c{c}", ours[c][2], "ms", baseline[c][2], ratio=False)
        finally:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
    return 0


def normalize(question: dict) -> str:
    from s3ray.scoring.metrics import normalize_answer

    return normalize_answer(question["golden_answers"][0])


if __name__ == "__main__":
    sys.exit(main())
