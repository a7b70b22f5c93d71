"""Gain Beyond RAG on finished episodes: both terms measured the same way, a cache miss recomputed once."""

from __future__ import annotations

import asyncio

import pytest

from s3ray.agent.episode import Episode
from s3ray.reward.cache import RagCache
from s3ray.reward.gbr import RewardScorer, gain_beyond_rag
from s3ray.reward.record import CacheIdentity, RagRecord
from s3ray.scoring.genacc import GenAccScorer
from s3ray.types import Doc

IDENTITY = CacheIdentity("echo", "fake", 2, "none")
PARIS = Doc("d1", "France", "Paris is the capital")
NOTHING = Doc("d2", "Mars", "nothing here")


class ContextEcho:
    """Answers with its prompt's context: right exactly when the docs it was given name Paris."""

    model = "echo"

    def __init__(self):
        self.calls = 0

    async def achat_many(self, batch):
        self.calls += len(batch)
        return ["Paris" if any("Paris" in m["content"] for m in messages) else "unknown" for messages in batch]


class Retriever:
    url = "fake"

    def __init__(self, docs):
        self.docs, self.calls = docs, []

    async def asearch(self, queries, k):
        self.calls.append(list(queries))
        return [list(self.docs) for _ in queries]


def episode(qid: str, context: list[Doc]) -> Episode:
    return Episode(question_id=qid, question="capital of france?", golden_answers=["Paris"], source="hotpotqa",
                   prompt_ids=[1], context=context)


def cached(qid: str, genacc: float) -> RagRecord:
    return RagRecord(question_id=qid, source="hotpotqa", question="q", golds=["Paris"], doc_ids=[], answer="",
                     genacc=genacc, span=bool(genacc), judge=None, em=genacc, f1=genacc, decided_by="span",
                     generator=IDENTITY.generator, retriever=IDENTITY.retriever, k=IDENTITY.k, judged_by="none")


def test_the_two_variants():
    assert [gain_beyond_rag(s3, rag) for s3, rag in [(1, 0), (1, 1), (0, 1), (0, 0)]] == [1, 0, -1, 0]
    assert [gain_beyond_rag(s3, rag, "seed") for s3, rag in [(1, 0), (1, 1), (0, 1)]] == [2, 1, -1]
    with pytest.raises(ValueError, match="unknown reward variant"):
        RewardScorer(None, None, None, None, 3, "other")


def test_cached_baseline_is_read_and_the_searchers_context_answered():
    cache = RagCache({"q1": cached("q1", 0.0), "q2": cached("q2", 1.0)}, IDENTITY)
    scorer = RewardScorer(ContextEcho(), GenAccScorer(None), cache, None, 2)
    episodes = [episode("q1", [PARIS]), episode("q2", [NOTHING])]
    asyncio.run(scorer.score(episodes))
    assert [(ep.acc_s3, ep.acc_rag, ep.reward) for ep in episodes] == [(1.0, 0.0, 1.0), (0.0, 1.0, -1.0)]
    assert episodes[0].decided_by == "span" and scorer.cache_misses == 0


def test_a_cache_miss_is_naive_rag_recomputed_once_and_remembered():
    generator, retriever = ContextEcho(), Retriever([PARIS])
    scorer = RewardScorer(generator, GenAccScorer(None), RagCache({}, IDENTITY), retriever, 2)
    first, again = episode("q1", [NOTHING]), episode("q1", [PARIS])
    asyncio.run(scorer.score([first]))
    asyncio.run(scorer.score([again]))
    assert retriever.calls == [["capital of france?"]]  # the second sample of q1 reuses the recomputed term
    assert (first.acc_rag, first.reward, again.reward) == (1.0, -1.0, 0.0)
    assert scorer.cache_misses == 1 and generator.calls == 3  # two contexts + one naive-RAG answer
