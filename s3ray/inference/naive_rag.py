"""Naive RAG: the top-k docs for the raw question, one batched retriever call per batch."""

from __future__ import annotations

from s3ray.inference.base import ContextGatherer, GatheredContext
from s3ray.types import Question


class NaiveRagGatherer(ContextGatherer):
    def __init__(self, name: str, retriever, k: int, query_without_options: bool = True):
        self.name = name
        self.retriever = retriever  # RetrieverClient (dense or BM25 behind it)
        self.k = k
        self.query_without_options = query_without_options

    async def gather(self, questions: list[Question]) -> list[GatheredContext]:
        queries = [q.retrieval_query(self.query_without_options) for q in questions]
        results = await self.retriever.asearch(queries, self.k)
        if len(results) != len(questions):
            raise RuntimeError(f"retriever answered {len(results)} queries for {len(questions)} questions")
        return [GatheredContext.of(q, docs, {"turns": 1, "queries": [query],
                                             "retrieved_ids": [d.id for d in docs]})
                for q, query, docs in zip(questions, queries, results, strict=True)]
