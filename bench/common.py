"""What the bench scripts share: the figure format, free ports, and the CPU-default services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def figure(name: str, value: float, unit: str, baseline: float | None = None, *,
           lower_is_better: bool = False) -> None:
    """One figure as one JSON line on stdout; ``ratio`` is ours over the baseline, or the baseline over
    ours for a figure where lower is better (latency): higher is better either way."""
    row = {"name": name, "value": round(value, 4), "unit": unit}
    if baseline:
        ratio = baseline / value if lower_is_better else value / baseline
        row |= {"baseline": round(baseline, 4), "ratio": round(ratio, 3)}
    print(json.dumps(row), flush=True)


async def closed_loop(search, queries: list[str], clients: int, per_request: int) -> tuple[float, list[float]]:
    """``clients`` workers each sending ``per_request`` queries per call until ``queries`` are done;
    (queries/s, per-call latencies in ms)."""
    requests = [queries[i:i + per_request] for i in range(0, len(queries), per_request)]
    await asyncio.gather(*(search(r) for r in requests[:clients]))  # warm-up
    todo, latencies = iter(requests), []

    async def worker() -> None:
        for request in todo:
            started = time.perf_counter()
            await search(request)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(queries) / (time.perf_counter() - started), latencies


def free_port() -> int:
    from s3ray.ports import free_ports

    return free_ports(1)[0]


def demo_services(overrides: list[str]):
    """The ``demo_cpu`` config over the whole bundled corpus, in runs/bench (its index is built once and
    reused across runs), with the retriever and generator deployed on a free port; returns the config."""
    from s3ray.config import REPO_ROOT, load_config
    from s3ray.deploy import deploy_services
    from s3ray.retrieval.indexing import build_index

    cfg = load_config("demo_cpu", [f"paths.work_dir={REPO_ROOT / 'runs' / 'bench'}",
                                   "corpus.limit=null", f"serve.port={free_port()}", *overrides])
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the figures only
        build_index(cfg)
        deploy_services(cfg)
    return cfg


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        from ray import serve

        serve.shutdown()
        ray.shutdown()
