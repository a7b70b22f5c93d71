"""The reward's baseline when it is not naive RAG (``rag_cache.baseline``): another gatherer's contexts
for the training questions, as ``s3ray infer`` wrote them (``<dir>/<dataset>.jsonl``, one
``GatheredContext`` per line), answered and scored like naive RAG's docs."""

from __future__ import annotations

from pathlib import Path

from s3ray.config import S3Config
from s3ray.types import Doc


def baseline_contexts_dir(cfg: S3Config) -> Path:
    return Path(cfg.rag_cache.baseline_contexts or cfg.inference.dir / cfg.rag_cache.baseline)


def load_baseline_docs(cfg: S3Config) -> dict[str, list[Doc]]:
    """question id -> the baseline gatherer's docs, over the training datasets' files."""
    from s3ray.inference.base import GatheredContext
    from s3ray.inference.store import read_records

    folder = baseline_contexts_dir(cfg)
    missing = [spec.name for spec in cfg.data.train if not (folder / f"{spec.name}.jsonl").exists()]
    if missing:
        raise FileNotFoundError(
            f"rag_cache.baseline={cfg.rag_cache.baseline}: no contexts for the training sets {missing} in "
            f"{folder}; gather them first (s3ray infer with inference.gatherers=[{cfg.rag_cache.baseline}] "
            "and data.dev set to the training sets), or point rag_cache.baseline_contexts at them")
    out: dict[str, list[Doc]] = {}
    for spec in cfg.data.train:
        for row in read_records(folder / f"{spec.name}.jsonl").values():
            context = GatheredContext.from_dict(row)
            out[context.question_id] = context.docs
    return out
