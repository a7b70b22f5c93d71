"""The naive-RAG precompute through Ray Data against the real retriever and CPU generator services:
a crash part way loses nothing written, a re-run scores only what is missing, failures are listed."""

from __future__ import annotations

import json

import pytest

from s3ray.config import load_config
from s3ray.ragcache.precompute import precompute
from s3ray.reward.cache import RagCache, read_records, training_sets
from s3ray.reward.record import CacheIdentity

pytestmark = pytest.mark.ray


def cfg_for(session_cfg, cache_dir, *extra):
    return load_config("test", [
        f"paths.work_dir={session_cfg.paths.work_dir}", f"corpus.path={session_cfg.corpus.path}",
        f"serve.port={session_cfg.serve.port}", f"rag_cache.dir={cache_dir}", "rag_cache.batch_size=4",
        "rag_cache.concurrency=1", "data.train=[{name: hotpotqa, path: hotpotqa/train.jsonl, limit: 12}]",
        *extra])


class Crash(Exception):
    pass


def test_crash_then_resume_scores_each_question_once(services, tmp_path):
    import mlflow

    cfg = cfg_for(services, tmp_path / "cache")

    def crash_after_first_batch(n: int) -> None:
        raise Crash(f"killed after batch {n}")

    with pytest.raises(Crash):
        precompute(cfg, on_batch=crash_after_first_batch)
    written = len(read_records(cfg.rag_cache.dir))
    assert 4 <= written < 12  # the finished batch survived the crash, the rest was never written

    precompute(cfg)
    records = read_records(cfg.rag_cache.dir)
    assert len(records) == 12 and len({r.question_id for r in records}) == 12  # none lost, none twice
    stats = json.loads((cfg.rag_cache.dir / "stats.json").read_text())
    assert stats["cached"] == 12 and stats["failed"] == 0 and stats["scored_this_run"] == 12 - written
    assert 0.0 <= stats["by_source"]["all"]["genacc"] <= 1.0
    cache = RagCache.for_config(cfg)
    assert cache.identity == CacheIdentity.from_config(cfg)
    assert all(len(r.doc_ids) == cfg.rag_cache.topk and r.answer for r in records)

    kept = training_sets(cfg)[0]
    assert all(cache.get(q.id).genacc < 1.0 for q in kept)  # naive-RAG-answered questions are filtered
    assert len(kept) <= 12

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment],
                              filter_string="tags.`s3ray.stage` = 'precompute'", output_format="list")
    assert runs and "genacc.all" in runs[0].data.metrics


def test_a_dead_generator_lists_every_question_as_failed(services, tmp_path):
    from conftest import free_port

    cfg = cfg_for(services, tmp_path / "cache", f"generator.base_url=http://127.0.0.1:{free_port()}/v1",
                  "generator.retries=0", "generator.timeout_s=2")
    precompute(cfg)
    failed = [json.loads(line) for line in (cfg.rag_cache.dir / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 12 and all(f["error"] for f in failed)
    assert read_records(cfg.rag_cache.dir) == []
    with pytest.raises(LookupError, match="run `s3ray precompute` first"):
        training_sets(cfg)[0]
