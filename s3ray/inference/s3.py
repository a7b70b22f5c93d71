"""s3: a trained searcher checkpoint, run greedily through the rollout pool; the context is the docs
the searcher selected (turn-0 naive-RAG docs included, as in the paper).

The paper's ablations are the same searcher with the agent's context rules switched off:
``s3_no_select`` (every retrieved doc, no selection), ``s3_no_init`` (no turn-0 docs in the context),
``s3_no_both``. ``s3_teacher`` runs the warm start's rule-based teacher (``train.warm_start.teacher``)
instead of a checkpoint: the row that says what the warm start imitated, and so what RL must improve on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from s3ray.config import S3Config, config_from_dict
from s3ray.inference.base import ContextGatherer, GatheredContext
from s3ray.types import Question

log = logging.getLogger(__name__)

# gatherer name -> (agent.use_selection, agent.use_initial_docs)
S3_VARIANTS: dict[str, tuple[bool, bool]] = {
    "s3": (True, True),
    "s3_no_select": (False, True),
    "s3_no_init": (True, False),
    "s3_no_both": (False, False),
    "s3_teacher": (True, True),
}


def searcher_checkpoint(cfg: S3Config) -> Path:
    """The configured checkpoint, else the training export, else (loudly) the untrained policy."""
    if cfg.inference.searcher_checkpoint:
        path = Path(cfg.inference.searcher_checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"inference.searcher_checkpoint {path} does not exist")
        return path
    export = cfg.train.export_dir
    if export.exists():
        return export
    fallback = cfg.policy_model_dir
    if not fallback.exists():
        raise FileNotFoundError(f"no searcher: neither the training export {export} nor the policy "
                                f"model {fallback} exists (run `s3ray train`, or set "
                                "inference.searcher_checkpoint)")
    log.warning("=" * 78)
    log.warning("NO TRAINED SEARCHER at %s: the s3 rows use the UNTRAINED policy %s. "
                "Their numbers say nothing about s3.", export, fallback)
    log.warning("=" * 78)
    return fallback


def folder_fingerprint(folder: Path) -> str:
    """A digest of every file's name, size and modification time under ``folder``: it changes when the
    training export is written again (a longer run, another config), without reading gigabytes of weights."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def variant_config(cfg: S3Config, name: str) -> S3Config:
    use_selection, use_initial_docs = S3_VARIANTS[name]
    data = cfg.to_dict()
    data["agent"] |= {"use_selection": use_selection, "use_initial_docs": use_initial_docs}
    return config_from_dict(data)


class S3Gatherer(ContextGatherer):
    """Greedy episodes on the rollout pool; the pool is created on first use and killed on close."""

    def __init__(self, cfg: S3Config, name: str = "s3"):
        if name not in S3_VARIANTS:
            raise ValueError(f"unknown s3 variant {name!r}; known: {sorted(S3_VARIANTS)}")
        self.name = name
        self.policy = "heuristic" if name == "s3_teacher" else "model"
        self.cfg = variant_config(cfg, name)
        self.model_dir = searcher_checkpoint(cfg)
        self._pool = None

    def _ensure_pool(self):
        if self._pool is None:
            from s3ray.cluster import init_ray
            from s3ray.rollout.pool import create_pool

            init_ray(self.cfg)
            self._pool = create_pool(self.cfg, self.model_dir, name=f"rollout_pool_{self.name}")
        return self._pool

    async def gather(self, questions: list[Question]) -> list[GatheredContext]:
        pool = self._ensure_pool()
        episodes = await pool.run.remote(list(questions), greedy=True, with_reward=False,
                                       policy=self.policy)
        if len(episodes) != len(questions):
            raise RuntimeError(f"rollout pool returned {len(episodes)} episodes for {len(questions)} "
                               "questions")
        return [self._context(q, ep) for q, ep in zip(questions, episodes, strict=True)]

    @property
    def checkpoint(self) -> str:
        """What plays the searcher: its checkpoint folder, or the rule-based teacher."""
        return str(self.model_dir) if self.policy == "model" else f"teacher:{self.cfg.train.warm_start.teacher}"

    @property
    def made_by(self) -> str:
        fingerprint = f" {folder_fingerprint(self.model_dir)}" if self.policy == "model" else ""
        return f"{self.name} {self.checkpoint}{fingerprint}"

    def _context(self, question: Question, episode) -> GatheredContext:
        # turns and queries as every other gatherer records them (the queries the retriever ran; a final
        # turn's query is never run), and the whole episode for reading
        trace = {"checkpoint": self.checkpoint, "turns": len(episode.turns), "queries": episode.queries,
                 "episode_text": episode.text}
        return GatheredContext.of(question, list(episode.context), trace)

    def close(self) -> None:
        if self._pool is not None:
            import ray

            ray.kill(self._pool)
            self._pool = None
