"""One cached naive-RAG result and the identity that makes cached results comparable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from s3ray.config import S3Config


@dataclass(frozen=True)
class CacheIdentity:
    """Who produced a record: a cached score is reused only for the same generator, retriever, k, judge."""

    generator: str
    retriever: str
    k: int
    judge: str  # "none" (span-only GenAcc) or the judge generator

    @classmethod
    def from_config(cls, cfg: S3Config) -> CacheIdentity:
        from s3ray.generation import generator_identity

        # The judge's wording changes its verdicts: a cache judged in another style is another cache.
        judge = (f"{generator_identity(cfg.judge.generator or cfg.generator)}:{cfg.judge.style}"
                 if cfg.judge.enabled else "none")
        retriever = f"{cfg.retriever.backend}:{cfg.encoder.model}:{cfg.index.kind}:{cfg.corpus.path.name}"
        if cfg.rag_cache.baseline != "naive_rag":  # another gatherer's contexts: a cache of its own
            retriever = f"contexts:{cfg.rag_cache.baseline}:{retriever}"
        generator = generator_identity(cfg.generator)
        if cfg.agent.answer_prompt != "s3ray":  # another answer prompt: other answers, another cache
            generator += f":prompt={cfg.agent.answer_prompt}"
        return cls(generator, retriever, cfg.rag_cache.topk, judge)


@dataclass(frozen=True)
class RagRecord:
    question_id: str
    source: str
    question: str
    golds: list[str]
    doc_ids: list[str]
    answer: str
    genacc: float
    span: bool
    judge: bool | None
    em: float
    f1: float
    decided_by: str
    generator: str
    retriever: str
    k: int
    judged_by: str  # "none" when GenAcc was span-only

    @property
    def identity(self) -> CacheIdentity:
        return CacheIdentity(self.generator, self.retriever, self.k, self.judged_by)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> RagRecord:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["golds"], values["doc_ids"] = list(values["golds"]), list(values["doc_ids"])
        return cls(**values)
