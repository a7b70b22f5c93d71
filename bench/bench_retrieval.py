"""Retrieval benchmark: index build speed, served throughput / latency, and recall, each against a
baseline built the way the single-process tools s3ray replaces are built, measured alternately in the
same run (``--rounds`` rounds; every figure is the median over rounds). Settings are ``demo_cpu``'s
(MiniLM, 128-token inputs, the automatic embed actors) over a slice of the HotpotQA corpus.

- ``index.passages_per_s``: ``build_index`` end to end (doc store, Ray Data embedding, FAISS, BM25,
  manifest); baseline: one process running ``encode`` over the same passages with the same encoder
  settings and every core, nothing else (its model already loaded).
- ``index.passages_per_s.vs_script``: the same build against the peer's index builder run the way it is
  run (Search-R1's ``index_builder.py``): a new process that imports the encoder library, loads the model,
  reads the passages, encodes them, builds a flat inner-product FAISS index and writes it. Both sides
  then pay the encoder's import and load once, which the first figure charges to s3ray alone.
- ``retriever.qps.c1`` / ``.c8`` / ``.c32`` (queries/s), ``retriever.latency_p50_ms.cN`` / ``_p99_ms.cN``:
  N closed-loop clients sending one query per HTTP request; ``retriever.qps.batch32``: one client
  sending 32 queries per request. Baseline: the s3 / Search-R1 retrieval server, one FastAPI + uvicorn
  process with a sync handler that encodes and searches each request on its own, every core.
- ``retriever.handle.qps.c32``: 32 concurrent single-query callers inside Ray through the deployment
  handle (:mod:`s3ray.retrieval.handle`, what the rollout actors and the precompute use), against the
  baseline's HTTP at c32.
- ``retriever.qps.batch32.c4``: 4 clients sending 32 queries per request.
- Every served figure again with ``--busy-loops`` (2) processes spinning on the cores (suffix ``.busy2``),
  the baseline measured under the same load.
- ``retriever.recall_at_3.dev``: share of dev questions (yes/no answers excluded) with a golden answer,
  normalized, inside one of the top-3 passages; baseline: BM25 over the same slice.

    python bench/bench_retrieval.py [--passages 1000] [--requests 128] [--rounds 2] [--busy-loops 2]
                                    [--loads c1 c8 c32 batch32 batch32.c4] [--index-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from common import closed_loop, figure, free_port, shutdown

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s3ray.config import load_config  # noqa: E402

# name: (clients, queries per request)
LOADS = {"c1": (1, 1), "c8": (8, 1), "c32": (32, 1), "batch32": (1, 32), "batch32.c4": (4, 32)}


def note(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


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
    return load_config("demo_cpu", [f"paths.work_dir={work}", f"corpus.path={corpus}", "corpus.limit=null",
                                    f"serve.port={port}", f"retriever.direct_port={free_port()}", *extra])


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
def measure(client, name: str, questions: list[str], requests: int,
            loads: list[str]) -> dict[str, tuple[float, float, float]]:
    out = {}
    for load in loads:
        clients, per_request = LOADS[load]
        n = (requests // 2 if clients == 1 and per_request == 1 else requests) * per_request
        stream = [questions[i % len(questions)] for i in range(n)]
        qps, lat = asyncio.run(closed_loop(lambda r: client.asearch(r, 3), stream, clients, per_request))
        out[load] = (qps, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)))
        note(f"{name} {load}: {qps:.1f} q/s, p50 {out[load][1]:.1f} ms, p99 {out[load][2]:.1f} ms")
    return out


def handle_qps(cfg, questions: list[str], requests: int) -> float:
    from s3ray.retrieval.handle import in_cluster_retriever

    retriever = in_cluster_retriever(cfg)  # what the rollout actors and the precompute use
    qps, _ = asyncio.run(closed_loop(lambda r: retriever.asearch(r, 3), questions[:requests], 32, 1))
    note(f"handle c32: {qps:.1f} q/s")
    return qps


def wait_health(url: str, timeout_s: float = 300.0) -> None:
    from s3ray.retrieval.client import RetrieverClient

    client, deadline = RetrieverClient(url, retries=0), time.monotonic() + timeout_s
    while not client.health():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------------
def bare_encode_rate(cfg) -> float:
    """Passages/s of one process encoding every doc-store passage in one ``encode`` call."""
    import pyarrow.parquet as pq

    from s3ray.retrieval.encoder import encode, load_encoder
    from s3ray.retrieval.indexing import passage_text

    docs = pq.read_table(cfg.index.dir / "docs.parquet", columns=["title", "text"])
    texts = [passage_text(t, x) for t, x in zip(docs["title"].to_pylist(), docs["text"].to_pylist(),
                                                strict=True)]
    model = load_encoder(cfg.encoder)
    started = time.perf_counter()
    encode(model, texts, cfg.encoder.passage_prefix, cfg.encoder)
    return len(texts) / (time.perf_counter() - started)


PEER_INDEX_SCRIPT = """
import json, sys
import faiss
import pyarrow.parquet as pq
from s3ray.config import config_from_dict
from s3ray.retrieval.encoder import encode, load_encoder
from s3ray.retrieval.indexing import passage_text
cfg = config_from_dict(json.loads(sys.argv[1]))
docs = pq.read_table(cfg.index.dir / "docs.parquet", columns=["title", "text"])
texts = [passage_text(t, x) for t, x in zip(docs["title"].to_pylist(), docs["text"].to_pylist())]
vectors = encode(load_encoder(cfg.encoder), texts, cfg.encoder.passage_prefix, cfg.encoder)
index = faiss.IndexFlatIP(vectors.shape[1])
index.add(vectors)
faiss.write_index(index, sys.argv[2])
"""


def peer_script_rate(cfg, out: Path) -> float:
    """Passages/s of the peer's index builder as a user runs it: a new process, from its start to its exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", PEER_INDEX_SCRIPT, json.dumps(cfg.model_dump(mode="json")), str(out)],
                   check=True, cwd=REPO)
    seconds = time.perf_counter() - started
    import faiss

    return faiss.read_index(str(out)).ntotal / seconds


def answer_recall(searcher, dev: list[dict], k: int = 3) -> float:
    from s3ray.scoring.metrics import normalize_answer

    results = searcher.search([q["question"] for q in dev], k)
    hits = 0
    for q, docs in zip(dev, results, strict=True):
        text = " " + " ".join(normalize_answer(f"{d.title} {d.text}") for d in docs) + " "
        hits += any(f" {normalize_answer(a)} " in text for a in q["golden_answers"] if normalize_answer(a))
    return hits / len(dev)


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[None]:
    """``n`` processes spinning (``while True: pass``) for the duration: the cores taken by other work."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def report(base: list[dict], ours: list[dict], handle: list[float], suffix: str, loads: list[str]) -> None:
    for load in loads:
        median_figure(f"retriever.qps.{load}{suffix}", [r[load][0] for r in ours], [r[load][0] for r in base],
                      "queries/s")
        for i, pct in ((1, "p50"), (2, "p99")):
            median_figure(f"retriever.latency_{pct}_ms.{load}{suffix}", [r[load][i] for r in ours],
                          [r[load][i] for r in base], "ms", lower_is_better=True)
    if handle:
        median_figure(f"retriever.handle.qps.c32{suffix}", handle, [r["c32"][0] for r in base], "queries/s")


def median_figure(name: str, ours: list[float], base: list[float], unit: str, **kwargs) -> None:
    note(f"{name}: ours {[round(v, 2) for v in ours]}, baseline {[round(v, 2) for v in base]}")
    figure(name, statistics.median(ours), unit, statistics.median(base), **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=1000, help="corpus slice size")
    parser.add_argument("--dev", type=int, default=150, help="dev questions whose gold paragraphs are in it")
    parser.add_argument("--requests", type=int, default=128, help="requests per load")
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline / ours rounds")
    parser.add_argument("--busy-loops", type=int, default=2,
                        help="the served figures again with this many spinning processes (0: idle only)")
    parser.add_argument("--loads", nargs="+", choices=list(LOADS), default=list(LOADS),
                        help="the served loads to measure (the handle's c32 figure comes with c32)")
    parser.add_argument("--index-only", action="store_true", help="the index figures only")
    parser.add_argument("--baseline-server", nargs=2, metavar=("CONFIG_JSON", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server[0], int(args.baseline_server[1]))
        return 0

    from s3ray.cluster import init_ray
    from s3ray.retrieval.client import RetrieverClient
    from s3ray.retrieval.indexing import build_index
    from s3ray.retrieval.manifest import MANIFEST
    from s3ray.retrieval.searchers import load_searcher
    from s3ray.retrieval.service import deploy
    from s3ray.scoring.metrics import normalize_answer

    with tempfile.TemporaryDirectory(prefix="bench_retrieval_") as tmp:
        work = Path(tmp)
        probe = make_config(work, work / "corpus.jsonl", 0)
        dev = read_jsonl(probe.paths.data_dir / "hotpotqa" / "dev.jsonl")[:args.dev]
        corpus_slice(probe.paths.data_dir, work / "corpus.jsonl", args.passages, dev)
        cfg = make_config(work, work / "corpus.jsonl", free_port())
        questions = [q["question"] for q in read_jsonl(cfg.paths.data_dir / "hotpotqa" / "dev.jsonl")]
        try:
            init_ray(cfg)  # started before the clock: the figure is the build, not Ray's start-up
            builds, encodes, scripts = [], [], []
            for _ in range(args.rounds):
                shutil.rmtree(cfg.index.dir, ignore_errors=True)
                started = time.perf_counter()
                build_index(cfg)
                builds.append(args.passages / (time.perf_counter() - started))
                encodes.append(bare_encode_rate(cfg))
                scripts.append(peer_script_rate(cfg, work / "peer_index.faiss"))
            median_figure("index.passages_per_s", builds, encodes, "passages/s")
            median_figure("index.passages_per_s.vs_script", builds, scripts, "passages/s")
            assert (cfg.index.dir / MANIFEST).exists()
            if args.index_only:
                return 0

            dense, bm25 = load_searcher(cfg), load_searcher(make_config(work, cfg.corpus.path, 0,
                                                                       "retriever.backend=bm25"))
            factual = [q for q in dev if normalize_answer(q["golden_answers"][0]) not in ("yes", "no")]
            figure("retriever.recall_at_3.dev", answer_recall(dense, factual), "fraction",
                   answer_recall(bm25, factual))
            del dense, bm25

            port = free_port()
            server = subprocess.Popen([sys.executable, __file__, "--baseline-server",
                                       json.dumps(cfg.model_dump(mode="json")), str(port)])
            try:
                base_client = RetrieverClient(f"http://127.0.0.1:{port}/retrieve", timeout_s=120.0, retries=0)
                wait_health(base_client.url)
                ours_client = RetrieverClient(deploy(cfg), timeout_s=120.0, retries=0)
                conditions = [("", 0)] + ([(f".busy{args.busy_loops}", args.busy_loops)] if args.busy_loops else [])
                for suffix, loops in conditions:  # idle, then with the cores taken
                    with busy_loops(loops):
                        base, ours, handle = [], [], []
                        for _ in range(args.rounds):  # alternately: the machine's load drifts
                            base.append(measure(base_client, f"baseline{suffix}", questions, args.requests,
                                                args.loads))
                            ours.append(measure(ours_client, f"s3ray{suffix}", questions, args.requests, args.loads))
                            if "c32" in args.loads:
                                handle.append(handle_qps(cfg, questions, 4 * args.requests))
                    report(base, ours, handle, suffix, args.loads)
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
