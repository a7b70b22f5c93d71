"""Where a lone query's time goes: one client, one query per request, each hop timed on its own, against
the peer (Search-R1's FastAPI ``retrieval_server.py`` built as in bench_retrieval.py) on the same index.
Settings and corpus slice are bench_retrieval.py's; ``--rounds`` alternating rounds, medians of the p50s.

    retriever.single.p50_ms              POST /retrieve on the replicas' direct port (retriever.direct_port,
                                         what an outside client pays); baseline: the peer's POST /retrieve
                                         (ratio: peer/ours)
    retriever.single.p50_ms.direct_noop  GET /retrieve/health on the direct port (uvicorn in the replica, no
                                         search); baseline: the peer's GET health (uvicorn + FastAPI)
    retriever.single.p50_ms.proxy        POST /retrieve through Serve's proxy (the route every node answers);
                                         baseline: the peer's
    retriever.single.p50_ms.proxy_noop   GET /retrieve/health through the proxy (proxy + ingress, no search);
                                         baseline: the peer's GET health
    retriever.single.p50_ms.handle       the deployment handle's ``search`` (router, replica, @serve.batch,
                                         search thread; no HTTP)
    retriever.single.p50_ms.handle_noop  the same with no query: the handle's round trip alone
    retriever.single.p50_ms.in_process   ``searcher.search`` in this process with the replica's torch threads
                                         (the compute alone); baseline: the same with torch's default threads
                                         (the peer's)

    python bench/bench_single_query.py [--passages 1000] [--requests 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_retrieval import corpus_slice, make_config, read_jsonl, wait_health
from common import figure, free_port, shutdown


def p50_ms(call, items: list, warmup: int = 5) -> float:
    for item in items[:warmup]:
        call(item)
    times = []
    for item in items:
        started = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import httpx
    import torch
    from ray import serve

    from s3ray.cluster import init_ray, set_torch_threads
    from s3ray.retrieval.indexing import build_index
    from s3ray.retrieval.searchers import load_searcher
    from s3ray.retrieval.service import deploy

    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_single_") as tmp:
        work = Path(tmp)
        probe = make_config(work, work / "corpus.jsonl", 0)
        dev = read_jsonl(probe.paths.data_dir / "hotpotqa" / "dev.jsonl")
        corpus_slice(probe.paths.data_dir, work / "corpus.jsonl", args.passages, dev[:150])
        cfg = make_config(work, work / "corpus.jsonl", free_port())
        questions = [q["question"] for q in dev][:args.requests]
        bench_retrieval = str(Path(__file__).with_name("bench_retrieval.py"))
        try:
            init_ray(cfg)
            build_index(cfg)
            searcher = load_searcher(cfg)
            port = free_port()
            server = subprocess.Popen([sys.executable, bench_retrieval, "--baseline-server",
                                       json.dumps(cfg.model_dump(mode="json")), str(port)])
            peer = f"http://127.0.0.1:{port}/retrieve"
            try:
                wait_health(peer)
                ours = deploy(cfg)  # the direct port's URL
                proxy = cfg.serve.url(cfg.retriever.route_prefix)
                handle = serve.get_app_handle(cfg.retriever.app_name)
                http = httpx.Client(timeout=60)
                rows: dict[str, list[float]] = {}

                def post(url):
                    return lambda q: http.post(url, json={"queries": [q], "topk": 3, "return_scores": True})

                for _ in range(args.rounds):  # alternately: the machine's load drifts
                    measured = {
                        "peer": p50_ms(post(peer), questions),
                        "ours": p50_ms(post(ours), questions),
                        "proxy": p50_ms(post(proxy), questions),
                        "peer_noop": p50_ms(lambda _: http.get(f"{peer}/health"), questions),
                        "ours_noop": p50_ms(lambda _: http.get(f"{ours}/health"), questions),
                        "proxy_noop": p50_ms(lambda _: http.get(f"{proxy}/health"), questions),
                        "handle": p50_ms(lambda q: handle.search.remote([q], 3).result(), questions),
                        # no query: the handle's round trip alone (no batch, no search thread)
                        "handle_noop": p50_ms(lambda _: handle.search.remote([], 3).result(), questions),
                    }
                    set_torch_threads(default_threads)
                    measured["bare_default_threads"] = p50_ms(lambda q: searcher.search([q], 3), questions)
                    set_torch_threads(cfg.retriever.torch_threads)
                    measured["bare_replica_threads"] = p50_ms(lambda q: searcher.search([q], 3), questions)
                    print(f"# p50 ms: { {k: round(v, 2) for k, v in measured.items()} }", file=sys.stderr, flush=True)
                    for name, value in measured.items():
                        rows.setdefault(name, []).append(value)
            finally:
                server.terminate()
                server.wait(timeout=30)
            med = {name: statistics.median(values) for name, values in rows.items()}
            figure("retriever.single.p50_ms", med["ours"], "ms", med["peer"], lower_is_better=True)
            figure("retriever.single.p50_ms.direct_noop", med["ours_noop"], "ms", med["peer_noop"],
                   lower_is_better=True)
            figure("retriever.single.p50_ms.proxy", med["proxy"], "ms", med["peer"], lower_is_better=True)
            figure("retriever.single.p50_ms.proxy_noop", med["proxy_noop"], "ms", med["peer_noop"],
                   lower_is_better=True)
            figure("retriever.single.p50_ms.handle", med["handle"], "ms")
            figure("retriever.single.p50_ms.handle_noop", med["handle_noop"], "ms")
            figure("retriever.single.p50_ms.in_process", med["bare_replica_threads"], "ms",
                   med["bare_default_threads"], lower_is_better=True)
        finally:
            shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
