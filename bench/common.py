"""What the bench scripts share: the figure format, free ports, and the CPU-default services."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
