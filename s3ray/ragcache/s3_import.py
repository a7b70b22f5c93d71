"""Importing s3's released naive-RAG cache (``data/rag_cache/rag_cache.json`` of pat-jj/s3, also on the HF
dataset ``pat-jj/s3_processed_data``) into ``rag_cache.dir``.

Its shape is ``{source: {question text: {"answer": str, "score": 0|1, "em_score": 0|1}}}``: ``score`` is
s3's GenAcc and is what its reward reads (``zeroshot_answers[data_source][question]['score']``). Entries are
matched to the configured training questions by source and question text; the records carry this config's
cache identity, so the import is meant for a config that reproduces s3's generator, retriever and k
(``s3_8_3_3``). Questions it lacks are left for ``s3ray precompute``, which scores only what is missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from s3ray.config import S3Config
from s3ray.ragcache.precompute import write_part
from s3ray.reward.cache import RagCache
from s3ray.reward.record import CacheIdentity, RagRecord
from s3ray.scoring.metrics import exact_match, span_match, token_f1
from s3ray.types import Question

log = logging.getLogger(__name__)

DECIDED_BY = "s3:rag_cache.json"


def question_key(text: str) -> str:
    """Search-R1's data processing strips a question and appends "?" when it lacks one; match either form."""
    return text.strip().rstrip("?").strip()


def s3_entries(data: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """``(source, question key) -> entry`` of a loaded rag_cache.json; raises on any other shape."""
    if not isinstance(data, dict):
        raise ValueError("rag_cache.json must map source -> question -> {answer, score, em_score}")
    entries = {}
    for source, by_question in data.items():
        if not isinstance(by_question, dict):
            raise ValueError(f"rag_cache.json source {source!r} must map question -> entry")
        for text, entry in by_question.items():
            if not isinstance(entry, dict) or "answer" not in entry or entry.get("score") not in (0, 1):
                raise ValueError(f"rag_cache.json entry {source}/{text!r} lacks an answer or a 0/1 score: "
                                 f"{entry!r}")
            entries[(source, question_key(text))] = entry
    return entries


def imported_records(questions: list[Question], entries: dict[tuple[str, str], dict[str, Any]],
                     identity: CacheIdentity) -> list[RagRecord]:
    """One record per question found in ``entries``; s3's score is the GenAcc, EM/F1/span are recomputed
    from its answer (its ``em_score`` used the same normalisation)."""
    records = []
    for q in questions:
        entry = entries.get((q.source, question_key(q.question)))
        if entry is None:
            continue
        answer, golds = str(entry["answer"]), list(q.golden_answers)
        span = span_match(answer, golds)
        records.append(RagRecord(
            question_id=q.id, source=q.source, question=q.question, golds=golds, doc_ids=[], answer=answer,
            genacc=float(entry["score"]), span=span, judge=None if span else bool(entry["score"]),
            em=exact_match(answer, golds), f1=token_f1(answer, golds), decided_by=DECIDED_BY,
            generator=identity.generator, retriever=identity.retriever, k=identity.k,
            judged_by=identity.judge))
    return records


def import_rag_cache(cfg: S3Config) -> Path:
    """Add s3's cached naive-RAG results for the training questions not yet cached; returns the cache dir."""
    from s3ray.data.qa import load_datasets

    path = cfg.rag_cache.import_path
    if path is None:
        raise ValueError("set rag_cache.import_path to s3's rag_cache.json")
    if not Path(path).is_file():
        raise FileNotFoundError(f"rag_cache.import_path={path} is not a file")
    entries = s3_entries(json.loads(Path(path).read_text()))
    identity = CacheIdentity.from_config(cfg)
    cached = RagCache.load(cfg.rag_cache.dir, identity)
    todo = [q for q in load_datasets(cfg.data.train) if q.id not in cached]
    records = imported_records(todo, entries, identity)
    if records:
        write_part(cfg.rag_cache.dir, records)
    log.info("import-rag-cache %s: %d entries in %s; %d training questions not cached, %d imported as %s, "
             "%d left for `s3ray precompute`", path, len(entries), path, len(todo), len(records), identity,
             len(todo) - len(records))
    return cfg.rag_cache.dir
