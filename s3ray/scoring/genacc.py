"""GenAcc = span match OR an LLM judge's yes (s3, §3.3), with EM and F1 alongside.

The judge is asked only when the span check fails, and only if a judge client is configured
(``judge.enabled``); without one GenAcc is span-only. Each score records which path decided it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from s3ray.config import GeneratorConfig, S3Config
from s3ray.scoring.metrics import exact_match, span_match, token_f1

DecidedBy = Literal["span", "judge", "none"]


@dataclass(frozen=True)
class AnswerScore:
    genacc: float  # 1.0 / 0.0
    span: bool
    judge: bool | None  # None: the judge was not asked (span matched, or no judge configured)
    em: float
    f1: float
    decided_by: DecidedBy  # what made it correct; "none" when it is wrong

    def to_dict(self) -> dict:
        return asdict(self)


class GenAccScorer:
    def __init__(self, judge_client=None, judge_max_tokens: int = 10, judge_style: str = "contains",
                 span_check: bool = True):
        self.judge_client = judge_client  # a GeneratorClient / HandleGenerator, or None for span-only GenAcc
        self.judge_max_tokens = judge_max_tokens
        self.judge_style = judge_style  # a key of generation.prompts.JUDGE_TEMPLATES
        # False: the judge alone decides (s3's MIRAGE evaluation); needs a judge client
        if not span_check and judge_client is None:
            raise ValueError("a judge-only GenAcc needs a judge client")
        self.span_check = span_check

    @classmethod
    def from_config(cls, cfg: S3Config, judge: GeneratorConfig | None = None, style: str | None = None,
                    span_check: bool = True) -> GenAccScorer:
        """The configured scorer; ``judge``/``style``/``span_check`` replace the ``judge`` section's choices
        (the evaluation's own judge, MIRAGE's wording)."""
        if not cfg.judge.enabled:
            return cls(None)
        judge = judge or cfg.judge.generator or cfg.generator
        if judge.backend == "reader":
            raise ValueError("judge.enabled needs an LLM judge: the extractive reader cannot answer yes/no "
                             "questions. Set judge.generator to an hf/vllm/openai backend or disable the judge")
        from s3ray.generation.handle import in_cluster_generator

        return cls(in_cluster_generator(judge, cfg.serve), cfg.judge.max_tokens, style or cfg.judge.style,
                   span_check)

    async def _ask_judge(self, question: str, prediction: str, golds: Sequence[str]) -> bool:
        from s3ray.generation.prompts import judge_messages, parse_judge

        messages = judge_messages(question, prediction, golds, self.judge_style)
        for _ in range(2):  # one more try when the reply is neither yes nor no, as s3 does
            verdict = parse_judge(await self.judge_client.achat(messages, max_tokens=self.judge_max_tokens))
            if verdict is not None:
                return verdict
        return False

    async def score(self, question: str, prediction: str, golds: Sequence[str]) -> AnswerScore:
        golds = list(golds)
        span = self.span_check and span_match(prediction, golds)
        em, f1 = exact_match(prediction, golds), token_f1(prediction, golds)
        if span:
            return AnswerScore(1.0, True, None, em, f1, "span")
        if self.judge_client is None:
            return AnswerScore(0.0, False, None, em, f1, "none")
        judge = await self._ask_judge(question, prediction, golds)
        return AnswerScore(float(judge), False, judge, em, f1, "judge" if judge else "none")

    async def score_many(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> list[AnswerScore]:
        """Scores in input order; judge calls run concurrently."""
        return list(await asyncio.gather(*(self.score(q, p, g) for q, p, g in items)))
