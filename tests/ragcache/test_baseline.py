"""A pluggable reward baseline (rag_cache.baseline): another gatherer's cached contexts instead of naive RAG."""

from __future__ import annotations

import asyncio

import pytest

from s3ray.agent.episode import Episode
from s3ray.config import load_config
from s3ray.inference.base import GatheredContext
from s3ray.inference.store import append_records
from s3ray.ragcache.baseline import baseline_contexts_dir, load_baseline_docs
from s3ray.reward.cache import RagCache
from s3ray.reward.gbr import RewardScorer
from s3ray.reward.naive import score_docs
from s3ray.reward.record import CacheIdentity
from s3ray.scoring.genacc import GenAccScorer
from s3ray.types import Doc, Question

from .test_cache import EchoGenerator, record


def cfg_for(tmp_path, *overrides):
    return load_config("test", [f"paths.work_dir={tmp_path}", *overrides])


def test_another_baseline_is_another_cache(tmp_path):
    naive = CacheIdentity.from_config(cfg_for(tmp_path))
    r1 = CacheIdentity.from_config(cfg_for(tmp_path, "rag_cache.baseline=search_r1"))
    assert r1 != naive and r1.retriever.startswith("contexts:search_r1:")


def test_baseline_docs_come_from_the_gatherers_context_files(tmp_path):
    cfg = cfg_for(tmp_path, "rag_cache.baseline=search_r1")
    assert baseline_contexts_dir(cfg) == cfg.inference.dir / "search_r1"
    with pytest.raises(FileNotFoundError, match="gather them first"):
        load_baseline_docs(cfg)
    q = Question("hotpotqa-1", "capital of france?", ("Paris",), "hotpotqa")
    doc = Doc("d9", "France", "Paris is the capital")
    for spec in cfg.data.train:
        append_records(baseline_contexts_dir(cfg) / f"{spec.name}.jsonl", [GatheredContext.of(q, [doc]).to_dict()])
    assert load_baseline_docs(cfg) == {"hotpotqa-1": [doc]}
    [rec] = asyncio.run(score_docs([q], [[doc]], EchoGenerator(), GenAccScorer(None), CacheIdentity.from_config(cfg)))
    assert rec.genacc == 1.0 and rec.doc_ids == ["d9"] and rec.retriever.startswith("contexts:search_r1:")


def episode(qid: str) -> Episode:
    return Episode(question_id=qid, question="capital of france?", golden_answers=["Paris"], source="hotpotqa",
                   prompt_ids=[1], context=[Doc("d", "France", "Paris is the capital")])


def test_the_reward_reads_the_baselines_accuracy_and_refuses_to_recompute_it():
    cache = RagCache({"q1": record("q1", 1.0)}, None)
    scorer = RewardScorer(EchoGenerator(), GenAccScorer(None), cache, None, 3, "gbr", baseline="search_r1")
    [ep] = [episode("q1")]
    asyncio.run(scorer.score([ep]))
    assert (ep.acc_s3, ep.acc_rag, ep.reward) == (1.0, 1.0, 0.0)  # no gain beyond a baseline that answers
    with pytest.raises(RuntimeError, match="no cached baseline accuracy for rag_cache.baseline=search_r1"):
        asyncio.run(scorer.score([episode("q2")]))


def test_the_answer_prompt_reaches_the_cache_and_names_it(tmp_path):
    class Recorder:
        model = "rec"

        def __init__(self):
            self.batches = []

        async def achat_many(self, batch):
            self.batches.append(batch)
            return ["Paris"] * len(batch)

    q = Question("q1", "capital of france?", ("Paris",), "hotpotqa")
    doc = Doc("d", "France", "Paris is the capital")
    gen = Recorder()
    identity = CacheIdentity.from_config(cfg_for(tmp_path, "agent.answer_prompt=s3"))
    asyncio.run(score_docs([q], [[doc]], gen, GenAccScorer(None), identity, answer_prompt="s3"))
    assert gen.batches[0][0][0]["content"].startswith("Use the following contexts (some might be irrelevant) on demand")
    assert identity.generator.endswith(":prompt=s3") and identity != CacheIdentity.from_config(cfg_for(tmp_path))
