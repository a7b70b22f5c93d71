"""Reading the naive-RAG cache and the paper's training filter.

Layout of ``rag_cache.dir``: ``part-*.parquet`` (one file per finished batch, written atomically),
``failed.jsonl`` (questions the last run could not score, with the error), ``stats.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from s3ray.config import S3Config
from s3ray.reward.record import CacheIdentity, RagRecord
from s3ray.types import Question

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
YES_NO = frozenset({"yes", "no", "true", "false"})


def read_records(cache_dir: Path) -> list[RagRecord]:
    """Every record of every part file, in file-name order."""
    import pyarrow.parquet as pq

    records = []
    for path in sorted(Path(cache_dir).glob(PART_GLOB)):
        records += [RagRecord.from_dict(row) for row in pq.read_table(path).to_pylist()]
    return records


class RagCache:
    def __init__(self, records: dict[str, RagRecord], identity: CacheIdentity | None):
        self.records = records
        self.identity = identity

    @classmethod
    def load(cls, cache_dir: Path, identity: CacheIdentity | None = None) -> RagCache:
        """The records of one identity. Without ``identity`` the directory must hold exactly one."""
        records = read_records(cache_dir)
        found = Counter(r.identity for r in records)
        if identity is None and len(found) > 1:
            raise ValueError(f"{cache_dir} holds caches of {len(found)} generator/retriever/k/judge "
                             f"combinations {sorted(found, key=str)}: pass the identity to use")
        if identity is None and found:
            identity = next(iter(found))
        by_id: dict[str, RagRecord] = {}
        for r in records:
            if r.identity == identity:
                by_id.setdefault(r.question_id, r)
        duplicates = found[identity] - len(by_id) if identity in found else 0
        if duplicates:
            log.warning("%s: %d duplicate records (concurrent runs?); the first of each is used",
                        cache_dir, duplicates)
        return cls(by_id, identity)

    @classmethod
    def for_config(cls, cfg: S3Config) -> RagCache:
        return cls.load(cfg.rag_cache.dir, CacheIdentity.from_config(cfg))

    def get(self, question_id: str) -> RagRecord | None:
        return self.records.get(question_id)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, question_id: str) -> bool:
        return question_id in self.records


def is_yes_no(question: Question) -> bool:
    return any(g.strip().lower() in YES_NO for g in question.golden_answers)


def answered_by_naive_rag(cache: RagCache, question: Question) -> bool:
    """Naive RAG's cached context already earns full GenAcc on ``question``: no gain beyond it is left."""
    record = cache.get(question.id)
    return record is not None and record.genacc >= 1.0


def filter_training(questions: list[Question], cache: RagCache, drop_yes_no: bool = True,
                    drop_answered: bool = True) -> list[Question]:
    """The paper's filter: drop yes/no/true/false golds and questions naive RAG already answers.

    Raises if the cache lacks any question that reaches the naive-RAG check.
    """
    kept = [q for q in questions if not (drop_yes_no and is_yes_no(q))]
    n_yes_no = len(questions) - len(kept)
    n_answered = 0
    if drop_answered:
        missing = [q.id for q in kept if q.id not in cache]
        if missing:
            raise LookupError(f"the naive-RAG cache ({cache.identity}) lacks {len(missing)} of {len(kept)} "
                              f"training questions, e.g. {missing[:3]}: run `s3ray precompute` first")
        answered = {q.id for q in kept if answered_by_naive_rag(cache, q)}
        n_answered = len(answered)
        kept = [q for q in kept if q.id not in answered]
    log.info("training filter: %d questions -> dropped %d yes/no, %d already answered by naive RAG -> %d kept",
             len(questions), n_yes_no, n_answered, len(kept))
    return kept


def training_sets(cfg: S3Config) -> tuple[list[Question], list[Question]]:
    """(the training questions after the filter, those it drops because naive RAG answers them), for the
    configured generator/retriever/k, from one read of the training set and the RAG cache. No Gain Beyond
    RAG can be earned on the second set; it is empty with ``rag_cache.drop_answered=false`` (nothing is
    dropped for naive RAG then), and yes/no questions are in neither when the filter drops those."""
    from s3ray.data.qa import load_datasets

    questions, cache, rc = load_datasets(cfg.data.train), RagCache.for_config(cfg), cfg.rag_cache
    kept = filter_training(questions, cache, rc.drop_yes_no, rc.drop_answered)
    if not rc.drop_answered:
        return kept, []
    return kept, [q for q in questions if not (rc.drop_yes_no and is_yes_no(q)) and answered_by_naive_rag(cache, q)]
