"""The services the reward and every scoring stage talk to, built from one config in one place: the
in-cluster retriever and generator (deployment handles where this cluster serves them, else HTTP), the
GenAcc scorer (and its LLM judge), the naive-RAG cache and its identity. Rollout actors, the precompute's
Ray Data actors and the evaluate stage all take them from here.

Each is built on first use, so a caller pays only for what it uses: an inference rollout never loads the
cache, the evaluate stage never retrieves, and a judge misconfiguration fails where a judge is needed.
"""

from __future__ import annotations

from functools import cached_property

from s3ray.config import GeneratorConfig, S3Config
from s3ray.reward.cache import RagCache
from s3ray.reward.gbr import RewardScorer
from s3ray.reward.record import CacheIdentity


class Services:
    def __init__(self, cfg: S3Config, generator: GeneratorConfig | None = None, judge: GeneratorConfig | None = None):
        """``generator`` / ``judge`` replace who answers and who judges (the evaluate stage's own
        ``evaluation.generator`` / ``evaluation.judge``); by default the training generator answers and
        ``judge.generator`` (else the generator) judges."""
        self.cfg = cfg
        self.generator_config = generator or cfg.generator
        self.judge_config = judge

    @cached_property
    def retriever(self):
        from s3ray.retrieval.handle import in_cluster_retriever

        return in_cluster_retriever(self.cfg)

    @cached_property
    def generator(self):
        """The Serve app's deployment handle when this cluster serves the generator, else HTTP."""
        from s3ray.generation.handle import in_cluster_generator

        return in_cluster_generator(self.generator_config, self.cfg.serve)

    @cached_property
    def scorer(self):
        """GenAcc as ``judge`` configures it: span match, then the judge when enabled."""
        return self.genacc_scorer()

    def genacc_scorer(self, style: str | None = None, span_check: bool = True):
        """A GenAcc scorer with another judge wording (``style``), or the judge alone (``span_check=False``)."""
        from s3ray.scoring.genacc import GenAccScorer

        return GenAccScorer.from_config(self.cfg, judge=self.judge_config, style=style, span_check=span_check)

    @cached_property
    def identity(self) -> CacheIdentity:
        """The generator/retriever/k/judge a cached naive-RAG score must match to be reused."""
        return CacheIdentity.from_config(self.cfg)

    @cached_property
    def rag_cache(self) -> RagCache:
        """The naive-RAG cache of this identity; an absent cache is empty."""
        return RagCache.for_config(self.cfg)

    def reward_scorer(self) -> RewardScorer:
        """Gain Beyond RAG for rollouts: RAG terms from the cache, a miss recomputed with these services."""
        cfg = self.cfg
        return RewardScorer(self.generator, self.scorer, self.rag_cache, self.retriever, cfg.rag_cache.topk,
                            cfg.agent.reward, cfg.rag_cache.baseline, cfg.agent.answer_prompt)
