"""`s3ray import-rag-cache`: s3's rag_cache.json ({source: {question: {answer, score, em_score}}}) becomes
naive-RAG records that the training filter reads, and a re-import or precompute adds only what is missing."""

from __future__ import annotations

import json

import pytest

from s3ray.cli import main
from s3ray.config import DatasetSpec, load_config
from s3ray.ragcache.s3_import import import_rag_cache, s3_entries
from s3ray.reward.cache import RagCache, filter_training

TRAIN = [
    {"id": "train_0", "question": "who wrote hamlet", "golden_answers": ["William Shakespeare"]},
    {"id": "train_1", "question": "capital of peru?", "golden_answers": ["Lima"]},
    {"id": "train_2", "question": "tallest mountain?", "golden_answers": ["Everest"]},
]
# s3's keys: Search-R1's processing appended "?" to the first question; the third is absent.
S3_CACHE = {"nq": {"who wrote hamlet?": {"answer": "William Shakespeare wrote it", "score": 1, "em_score": 0},
                   "capital of peru?": {"answer": "Cusco", "score": 0, "em_score": 0}},
            "hotpotqa": {"tallest mountain?": {"answer": "Everest", "score": 1, "em_score": 1}}}


@pytest.fixture
def cfg(tmp_path):
    train = tmp_path / "nq_train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in TRAIN))
    cache_json = tmp_path / "rag_cache.json"
    cache_json.write_text(json.dumps(S3_CACHE))
    cfg = load_config(None, [f"paths.work_dir={tmp_path / 'work'}", f"rag_cache.import_path={cache_json}"])
    cfg.data.train = [DatasetSpec(name="nq", path=train)]
    return cfg


def test_import_matches_by_source_and_question_and_feeds_the_training_filter(cfg):
    import_rag_cache(cfg)
    cache = RagCache.for_config(cfg)
    assert sorted(cache.records) == ["nq-train_0", "nq-train_1"]  # train_2 is hotpotqa's in s3's file
    first = cache.get("nq-train_0")
    assert (first.genacc, first.answer, first.span, first.em) == (1.0, "William Shakespeare wrote it", True, 0.0)
    assert cache.get("nq-train_1").genacc == 0.0
    from s3ray.data.qa import load_datasets

    questions = load_datasets(cfg.data.train)
    with pytest.raises(LookupError, match="lacks 1 of 3"):  # the unmatched question still needs precompute
        filter_training(questions, cache)
    kept = filter_training(questions[:2], cache)
    assert [q.id for q in kept] == ["nq-train_1"]  # naive RAG answered train_0 by s3's score


def test_reimport_adds_nothing_twice(cfg):
    import_rag_cache(cfg)
    import_rag_cache(cfg)
    assert len(list(cfg.rag_cache.dir.glob("part-*.parquet"))) == 1


def test_the_cli_stage_runs_and_a_missing_path_is_a_clear_error(cfg, tmp_path):
    assert main(["import-rag-cache", f"paths.work_dir={tmp_path / 'w2'}",
                 f"rag_cache.import_path={cfg.rag_cache.import_path}"]) == 0  # default data: nothing matches
    with pytest.raises(ValueError, match="rag_cache.import_path"):
        import_rag_cache(load_config(None, [f"paths.work_dir={tmp_path}"]))


@pytest.mark.parametrize("bad", [[1], {"nq": ["q"]}, {"nq": {"q": {"answer": "a", "score": 0.5}}},
                                 {"nq": {"q": {"score": 1}}}])
def test_other_shapes_are_refused(bad):
    with pytest.raises(ValueError, match="rag_cache.json"):
        s3_entries(bad)
