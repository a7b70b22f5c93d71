"""The naive-RAG cache: records by identity, the paper's training filter, and the shared scoring path."""

from __future__ import annotations

import asyncio

import pytest

from s3ray.ragcache.precompute import write_part
from s3ray.reward.cache import RagCache, filter_training, is_yes_no
from s3ray.reward.naive import score_naive_rag
from s3ray.reward.record import CacheIdentity, RagRecord
from s3ray.types import Doc, Question

IDENTITY = CacheIdentity("reader:minilm", "dense:minilm:flat:corpus.jsonl", 3, "none")


def record(qid: str, genacc: float, identity: CacheIdentity = IDENTITY) -> RagRecord:
    return RagRecord(question_id=qid, source="hotpotqa", question=f"q {qid}", golds=["a"], doc_ids=["d1"],
                     answer="a" if genacc else "b", genacc=genacc, span=bool(genacc), judge=None,
                     em=genacc, f1=genacc, decided_by="span" if genacc else "none",
                     generator=identity.generator, retriever=identity.retriever, k=identity.k,
                     judged_by=identity.judge)


def question(qid: str, golds=("Paris",)) -> Question:
    return Question(qid, f"question {qid}?", tuple(golds), "hotpotqa")


def test_parts_round_trip_and_identities_are_kept_apart(tmp_path):
    other = CacheIdentity("hf:other", IDENTITY.retriever, 5, "none")
    write_part(tmp_path, [record("q1", 1.0), record("q2", 0.0)])
    write_part(tmp_path, [record("q1", 0.0, other)])
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temp files
    with pytest.raises(ValueError, match="2 generator/retriever/k/judge"):
        RagCache.load(tmp_path)
    cache = RagCache.load(tmp_path, IDENTITY)
    assert len(cache) == 2 and cache.get("q1").genacc == 1.0 and cache.get("q3") is None
    assert RagCache.load(tmp_path, other).get("q1").genacc == 0.0


def test_an_empty_or_missing_cache_is_empty(tmp_path):
    assert len(RagCache.load(tmp_path / "none", IDENTITY)) == 0


def test_filter_drops_yes_no_and_answered_and_needs_every_question_cached():
    questions = [question("q1"), question("q2"), question("q3", golds=("Yes",)), question("q4", ("true", "x"))]
    cache = RagCache({"q1": record("q1", 1.0), "q2": record("q2", 0.0)}, IDENTITY)
    assert is_yes_no(questions[2]) and is_yes_no(questions[3]) and not is_yes_no(questions[0])
    assert [q.id for q in filter_training(questions, cache)] == ["q2"]
    assert [q.id for q in filter_training(questions, cache, drop_yes_no=False, drop_answered=False)] == \
        ["q1", "q2", "q3", "q4"]
    with pytest.raises(LookupError, match="lacks 1 of 3"):
        filter_training(questions + [question("q5")], cache)


class FakeRetriever:
    url = "http://fake/retrieve"

    def __init__(self):
        self.calls = []

    async def asearch(self, queries, k):
        self.calls.append((list(queries), k))
        return [[Doc(f"{q}-{i}", "T", "Paris is the capital" if "france" in q else "nothing") for i in range(k)]
                for q in queries]


class EchoGenerator:
    """Answers with the whole system message (the contexts) when it names Paris, else "unknown"."""

    model = "echo"

    async def achat_many(self, messages_list):
        return [m[0]["content"] if "Paris" in m[0]["content"] else "unknown" for m in messages_list]


def test_score_naive_rag_batches_retrieval_and_scores_each_question():
    from s3ray.scoring.genacc import GenAccScorer

    retriever = FakeRetriever()
    questions = [Question("a", "capital of france", ("Paris",), "s"), Question("b", "capital of mars", ("x",), "s")]
    records = asyncio.run(score_naive_rag(questions, retriever, EchoGenerator(), GenAccScorer(None), k=2))
    assert len(retriever.calls) == 1 and retriever.calls[0] == (["capital of france", "capital of mars"], 2)
    assert [r.question_id for r in records] == ["a", "b"]
    assert [r.genacc for r in records] == [1.0, 0.0]
    assert records[0].doc_ids == ["capital of france-0", "capital of france-1"]
    assert records[0].k == 2 and records[0].retriever == "http://fake/retrieve" and records[0].judged_by == "none"


def test_the_judge_and_its_wording_are_part_of_the_identity(tmp_path):
    from s3ray.config import load_config

    def identity(*overrides):
        return CacheIdentity.from_config(load_config(None, [f"paths.work_dir={tmp_path}", *overrides]))

    judged = ["judge.enabled=true", "judge.generator={backend: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}"]
    assert identity().judge == "none"
    assert identity(*judged).judge == "openai:m:contains"
    assert identity(*judged, "judge.style=lenient") != identity(*judged)
