"""Value types that cross stage boundaries: a retrieved document and a question; the two ways a list of
documents drops its repeats."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Doc:
    """One passage as the retriever returns it."""

    id: str
    title: str
    text: str
    score: float | None = None

    @property
    def contents(self) -> str:
        """The wiki-18 / Search-R1 layout: a quoted title on the first line, then the text."""
        return f'"{self.title}"\n{self.text}'

    def render(self, index: int) -> str:
        """``Doc i (Title: T) text``: the form s3's prompts and context parser use."""
        return f"Doc {index} (Title: {self.title}) {self.text}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Doc:
        return cls(id=str(row["id"]), title=row.get("title", ""), text=row.get("text", ""),
                   score=row.get("score"))


def dedup_by_id(docs: Iterable[Doc]) -> list[Doc]:
    """First occurrence of each doc id, in order: a doc retrieved twice is one doc of context (the
    baselines' contexts, as their own code builds them)."""
    seen: set[str] = set()
    out = []
    for doc in docs:
        if doc.id not in seen:
            seen.add(doc.id)
            out.append(doc)
    return out


def dedup_by_id_or_content(docs: Iterable[Doc]) -> list[Doc]:
    """First occurrence of each doc, in order; a doc repeats if its id, or its (title, text) with the ends'
    whitespace stripped, was seen: the same passage under two ids (two index rows) counts once (s3's
    context, :mod:`s3ray.agent.selection`)."""
    seen_ids: set[str] = set()
    seen_content: set[tuple[str, str]] = set()
    out = []
    for doc in docs:
        content = (doc.title.strip(), doc.text.strip())
        if doc.id in seen_ids or content in seen_content:
            continue
        seen_ids.add(doc.id)
        seen_content.add(content)
        out.append(doc)
    return out

@dataclass(frozen=True)
class Question:
    """A QA item. ``id`` is unique across every source loaded together."""

    id: str
    question: str
    golden_answers: tuple[str, ...]
    source: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def retrieval_query(self, without_options: bool = True) -> str:
        """What a naive retrieval searches for: the question, without the answer options a multiple-choice
        (MIRAGE) question carries in its text, as s3's retrieval scripts strip them (``meta["query"]``)."""
        return self.meta.get("query", self.question) if without_options else self.question

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "golden_answers": list(self.golden_answers),
                "source": self.source, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Question:
        return cls(id=str(row["id"]), question=row["question"],
                   golden_answers=tuple(row["golden_answers"]), source=row.get("source", ""),
                   meta=dict(row.get("meta") or {}))
