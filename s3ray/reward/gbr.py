"""Gain Beyond RAG (s3 §3): how much better the generator answers with the searcher's context than
with naive RAG's top-k docs.

``gbr`` (the paper):  GenAcc(G(q, D_s3)) - GenAcc(G(q, D_RAG))   in {-1, 0, 1}
``seed`` (the code):  2 * GenAcc(G(q, D_s3)) - GenAcc(G(q, D_RAG)) in {-1, 0, 1, 2}

The RAG term is read from the naive-RAG cache (or, with ``rag_cache.baseline`` naming a gatherer, from the
cache of that gatherer's contexts: a "gain beyond" any baseline; a miss is then an error). A question missing from the cache is recomputed with
the same generator, retriever and k through :func:`s3ray.reward.naive.score_naive_rag` (never a
zero-shot answer, the seed's inconsistent fallback), and remembered for later samples.
The trainer puts the scalar on the episode's last action token (see :mod:`s3ray.agent.episode`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Literal

from s3ray.agent.episode import Episode
from s3ray.reward.naive import answer_and_score, score_naive_rag
from s3ray.types import Question

log = logging.getLogger(__name__)

RewardVariant = Literal["gbr", "seed"]


def gain_beyond_rag(acc_s3: float, acc_rag: float, variant: RewardVariant = "gbr") -> float:
    if variant == "gbr":
        return acc_s3 - acc_rag
    if variant == "seed":
        return 2.0 * acc_s3 - acc_rag
    raise ValueError(f"unknown reward variant {variant!r}; known: gbr, seed")


class RewardScorer:
    """Scores a batch of finished episodes: generator answers and GenAcc, all calls concurrent.

    Failures are not swallowed: the clients retry, then raise, and the whole batch fails loudly.
    """

    def __init__(self, generator_client, scorer, rag_cache, retriever_client, rag_k: int,
                 variant: RewardVariant = "gbr", baseline: str = "naive_rag", answer_prompt: str = "s3ray"):
        gain_beyond_rag(0.0, 0.0, variant)  # reject an unknown variant now, not after a rollout
        self.generator = generator_client
        self.scorer = scorer
        self.rag_cache = rag_cache  # a RagCache, or None: every RAG term is recomputed
        self.retriever = retriever_client
        self.rag_k = rag_k
        self.variant = variant
        self.baseline = baseline  # rag_cache.baseline: only naive RAG's term can be recomputed on a miss
        self.answer_prompt = answer_prompt  # agent.answer_prompt, the cache's too
        self._recomputed: dict[str, float] = {}  # cache misses scored by this scorer
        self.cache_misses = 0

    async def score(self, episodes: Sequence[Episode]) -> None:
        """Fill ``acc_s3``, ``acc_rag``, ``reward`` and ``decided_by`` of every episode in place."""
        if not episodes:
            return
        acc_s3, acc_rag = await asyncio.gather(self._score_contexts(episodes), self._rag_accuracies(episodes))
        for ep, (acc, decided_by) in zip(episodes, acc_s3, strict=True):
            ep.acc_s3, ep.decided_by = acc, decided_by
            ep.acc_rag = acc_rag[ep.question_id]
            ep.reward = gain_beyond_rag(ep.acc_s3, ep.acc_rag, self.variant)

    async def _score_contexts(self, episodes: Sequence[Episode]) -> list[tuple[float, str]]:
        _, scores = await answer_and_score([(ep.question, ep.context, ep.golden_answers) for ep in episodes],
                                           self.generator, self.scorer, self.answer_prompt)
        return [(s.genacc, s.decided_by) for s in scores]

    async def _rag_accuracies(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """question id -> naive RAG's GenAcc: from the cache, else recomputed once."""
        out: dict[str, float] = {}
        missing: dict[str, Question] = {}
        for ep in episodes:
            record = self.rag_cache.get(ep.question_id) if self.rag_cache is not None else None
            if record is not None:
                out[ep.question_id] = record.genacc
            elif ep.question_id in self._recomputed:
                out[ep.question_id] = self._recomputed[ep.question_id]
            else:
                missing[ep.question_id] = Question(ep.question_id, ep.question, tuple(ep.golden_answers),
                                                   ep.source)
        if missing and self.baseline != "naive_rag":
            raise RuntimeError(f"{len(missing)} questions (e.g. {next(iter(missing))}) have no cached baseline "
                               f"accuracy for rag_cache.baseline={self.baseline}: run `s3ray precompute` with "
                               "that baseline's contexts for every training question")
        if missing:
            log.info("naive-RAG cache misses: recomputing %d questions (k=%d)", len(missing), self.rag_k)
            self.cache_misses += len(missing)
            records = await score_naive_rag(list(missing.values()), self.retriever, self.generator,
                                            self.scorer, self.rag_k, answer_prompt=self.answer_prompt)
            for record in records:
                self._recomputed[record.question_id] = out[record.question_id] = record.genacc
        return out
