"""The one interface every context gatherer implements, and what it returns per question."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from s3ray.types import Doc, Question

# How the evaluation asks the frozen generator: with the docs (rag), or without any (the direct and
# CoT rows of the paper use the zero-shot and chain-of-thought prompts instead).
AnswerMode = Literal["rag", "zero_shot", "cot"]
ANSWER_MODES = ("rag", "zero_shot", "cot")


@dataclass
class GatheredContext:
    """The documents handed to the generator for one question, and how they were found."""

    question_id: str
    source: str
    question: str
    golden_answers: list[str]
    docs: list[Doc]
    answer_mode: AnswerMode = "rag"
    # queries issued, turns, docs retrieved, raw model outputs: whatever the gatherer did.
    trace: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, question: Question, docs: list[Doc], trace: dict[str, Any] | None = None,
           answer_mode: AnswerMode = "rag") -> GatheredContext:
        return cls(question_id=question.id, source=question.source, question=question.question,
                   golden_answers=list(question.golden_answers), docs=list(docs),
                   answer_mode=answer_mode, trace=dict(trace or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"question_id": self.question_id, "source": self.source, "question": self.question,
                "golden_answers": list(self.golden_answers), "docs": [d.to_dict() for d in self.docs],
                "answer_mode": self.answer_mode, "trace": self.trace}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> GatheredContext:
        if row["answer_mode"] not in ANSWER_MODES:
            raise ValueError(f"context {row['question_id']}: unknown answer_mode {row['answer_mode']!r}")
        return cls(question_id=row["question_id"], source=row["source"], question=row["question"],
                   golden_answers=list(row["golden_answers"]),
                   docs=[Doc.from_dict(d) for d in row["docs"]], answer_mode=row["answer_mode"],
                   trace=dict(row["trace"]))


class ContextGatherer(ABC):
    """Takes questions, returns one ``GatheredContext`` per question, in the same order."""

    name: str

    @abstractmethod
    async def gather(self, questions: list[Question]) -> list[GatheredContext]: ...

    @property
    def made_by(self) -> str:
        """What makes this gatherer's contexts, stored with each one (``made_by``): a re-run of infer gathers
        again every context another maker made, such as a searcher trained further since. The name, for a
        gatherer whose contexts follow from the config alone."""
        return self.name

    def close(self) -> None:
        """Release what the gatherer holds (actors, pools); called once after the last batch."""
        return None  # most gatherers hold only HTTP clients


class PerQuestionGatherer(ContextGatherer):
    """A gatherer whose work is an independent async loop per question, run concurrently."""

    @abstractmethod
    async def gather_one(self, question: Question) -> GatheredContext: ...

    async def gather(self, questions: list[Question]) -> list[GatheredContext]:
        return list(await asyncio.gather(*(self.gather_one(q) for q in questions)))


def context_block(docs: list[Doc]) -> str:
    """Docs between the generator prompts' context markers, one ``Doc i (Title: T) text`` per line:
    the block every generator backend reads, and the only docs the extractive reader can see."""
    from s3ray.generation.prompts import CONTEXT_END, CONTEXT_START, render_docs

    return f"{CONTEXT_START}\n{render_docs(docs)}\n{CONTEXT_END}"
