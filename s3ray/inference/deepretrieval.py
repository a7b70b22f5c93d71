"""DeepRetrieval: a rewriter LLM turns the question into a Boolean BM25 query, JSON inside ``<answer>``;
the top-k BM25 docs for that query are the context.

As s3 ran it (``generator_llms/query_rewrite.py``, ``scripts/baselines/bm25_retrieval.py --rewriter nq``):
the released ``DeepRetrieval-NQ-BM25-3B`` rewriter (``inference.deepretrieval_rewriter``) at temperature
0.7, 512 tokens, with the prompt below; the query is the ``"query"`` of the JSON in the last
``<answer>`` (a missing opening or closing tag is added first); a rewrite that does not parse leaves the
question without context. How the Boolean query reaches bm25s is ``inference.deepretrieval_query``
(:mod:`s3ray.inference.boolean_query`).
"""

from __future__ import annotations

import asyncio
import json
import re

from s3ray.config import SamplingConfig
from s3ray.inference import boolean_query
from s3ray.inference.base import ContextGatherer, GatheredContext
from s3ray.types import Doc, Question

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

SYSTEM = ("You are a helpful assistant. You first thinks about the reasoning process in the mind and then "
          "provides the user with the answer.")
INSTRUCTION = ("\nYou are a query rewriting expert. Your task is to create query terms for user query to find "
               "relevant literature in a Wikipedia corpus using BM25.\n")
# The user message of query_rewrite.format_prompt: it repeats the system turn in Qwen's chat markup,
# as the checkpoint was trained, and ends inside an opened <think>.
USER_TEMPLATE = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{INSTRUCTION}"
    "\nShow your work in <think> </think> tags. Your final response must be in JSON format within "
    "<answer> </answer> tags. For example,\n<think>\n[thinking process]\n</think>\n<answer>\n{{\n"
    '    "query": "...."\n}} \n</answer>. \n'
    "Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms "
    "appropriately.\n\nHere's the user query:\n{question}\nAssistant: Let me rewrite the query with "
    "reasoning. \n<think>\n"
)


def rewrite_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER_TEMPLATE.format(question=question)}]


def parse_rewrite(text: str) -> str | None:
    """The ``"query"`` of the JSON in the last ``<answer>`` (tags completed as s3 does), None if absent."""
    if "<answer>" not in text:
        text = "<answer>" + text
    if "</answer>" not in text:
        text = text + "</answer>"
    answers = _ANSWER.findall(text)
    if not answers:
        return None
    try:
        parsed = json.loads(answers[-1].strip())
    except json.JSONDecodeError:
        return None
    query = parsed.get("query") if isinstance(parsed, dict) else None
    if not query:
        return None
    return " ".join(str(query).split()) or None


class DeepRetrievalGatherer(ContextGatherer):
    name = "deepretrieval"

    def __init__(self, bm25_retriever, rewriter, k: int, sampling: SamplingConfig,
                 query_mode: str = "bag_of_words", candidates: int = 100, on_failed_rewrite: str = "no_context"):
        if query_mode not in ("bag_of_words", "boolean"):
            raise ValueError(f"unknown DeepRetrieval query mode {query_mode!r}; known: bag_of_words, boolean")
        if on_failed_rewrite not in ("no_context", "question"):
            raise ValueError(f"unknown on_failed_rewrite {on_failed_rewrite!r}; known: no_context, question")
        self.retriever, self.rewriter, self.k, self.sampling = bm25_retriever, rewriter, k, sampling
        self.query_mode, self.candidates, self.on_failed_rewrite = query_mode, candidates, on_failed_rewrite

    async def _retrieve(self, rewrite: str) -> tuple[str, list[Doc], bool]:
        """(the text sent to bm25s, the top-k docs, whether the Boolean filter was applied)."""
        if self.query_mode == "boolean":
            try:
                tree = boolean_query.parse(rewrite)
            except boolean_query.QuerySyntaxError:
                tree = None  # not a Boolean expression: ranked as a bag of words
            if tree is not None and (terms := boolean_query.positive_terms(tree)):
                sent = " ".join(terms)
                [pool] = await self.retriever.asearch([sent], max(self.candidates, self.k))
                kept = [d for d in pool if boolean_query.matches(tree, f"{d.title} {d.text}")]
                return sent, kept[:self.k], True
        sent = boolean_query.bag_of_words(rewrite)
        [docs] = await self.retriever.asearch([sent], self.k)
        return sent, docs, False

    async def _gather_one(self, question: Question, output: str) -> GatheredContext:
        rewrite = parse_rewrite(output)
        if rewrite is not None and not boolean_query.bag_of_words(rewrite):
            rewrite = None  # nothing a bag of words could rank
        source = rewrite or (question.question if self.on_failed_rewrite == "question" else None)
        sent, docs, filtered = await self._retrieve(source) if source else ("", [], False)
        return GatheredContext.of(question, docs, {"turns": 1, "queries": [sent] if sent else [],
                                                   "raw_outputs": [output], "rewrite": rewrite,
                                                   "rewrite_failed": rewrite is None, "boolean_filter": filtered,
                                                   "retrieved_ids": [d.id for d in docs]})

    async def gather(self, questions: list[Question]) -> list[GatheredContext]:
        s = self.sampling
        outputs = await asyncio.gather(*(self.rewriter.achat(rewrite_messages(q.question), max_tokens=s.max_tokens,
                                                             temperature=s.temperature, top_p=s.top_p)
                                         for q in questions))
        return list(await asyncio.gather(*(self._gather_one(q, out) for q, out in zip(questions, outputs,
                                                                                      strict=True))))
