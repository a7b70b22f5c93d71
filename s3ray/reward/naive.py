"""Naive RAG for a batch of questions: one batched retrieve, concurrent answers, GenAcc; and the same
answering and scoring for docs another gatherer found (:func:`score_docs`) and for the searcher's own
context (:func:`answer_and_score`, the reward's other term).

The precompute and the reward's cache-miss recompute both call :func:`score_naive_rag`, so a cached
score and a recomputed one mean the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3ray.reward.record import CacheIdentity, RagRecord
from s3ray.types import Doc, Question


async def score_naive_rag(questions: Sequence[Question], retriever_client, generator_client, scorer, k: int,
                          identity: CacheIdentity | None = None, answer_prompt: str = "s3ray") -> list[RagRecord]:
    """Records in input order. ``identity`` names the generator/retriever/judge in the records
    (default: the clients' model and URL). Errors of the services propagate (nothing is faked)."""
    if not questions:
        return []
    if identity is None:
        judge = getattr(scorer.judge_client, "model", None)
        identity = CacheIdentity(f"{generator_client.model}", f"{retriever_client.url}", k, judge or "none")
    results = await retriever_client.asearch([q.question for q in questions], k)
    return await score_docs(questions, results, generator_client, scorer, identity, answer_prompt)


async def answer_and_score(items: Sequence[tuple[str, Sequence[Doc], Sequence[str]]], generator_client, scorer,
                           answer_prompt: str = "s3ray") -> tuple[list[str], list]:
    """(answers, GenAcc scores) of the generator answering each ``(question, docs, golds)``: the one way both
    terms of the reward are measured (the searcher's context and naive RAG's docs)."""
    from s3ray.generation.prompts import answer_messages_as

    answers = await generator_client.achat_many([answer_messages_as(answer_prompt, q, list(d)) for q, d, _ in items])
    scores = await scorer.score_many([(q, a, golds) for (q, _, golds), a in zip(items, answers, strict=True)])
    return answers, scores


async def score_docs(questions: Sequence[Question], docs: Sequence[Sequence[Doc]], generator_client, scorer,
                     identity: CacheIdentity, answer_prompt: str = "s3ray") -> list[RagRecord]:
    """The generator's answer with each question's docs, scored: naive RAG's, or another gatherer's
    cached contexts (``rag_cache.baseline``)."""
    items = [(q.question, d, q.golden_answers) for q, d in zip(questions, docs, strict=True)]
    answers, scores = await answer_and_score(items, generator_client, scorer, answer_prompt)
    return [RagRecord(question_id=q.id, source=q.source, question=q.question, golds=list(q.golden_answers),
                      doc_ids=[x.id for x in d], answer=a, genacc=s.genacc, span=s.span, judge=s.judge,
                      em=s.em, f1=s.f1, decided_by=s.decided_by, generator=identity.generator,
                      retriever=identity.retriever, k=identity.k, judged_by=identity.judge)
            for q, d, a, s in zip(questions, docs, answers, scores, strict=True)]
