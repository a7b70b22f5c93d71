"""IRCoT (interleaving retrieval with chain of thought), as the s3 paper re-implements it
(``scripts/baselines/ircot.py`` of the s3 repo).

Retrieve top-k for the question; then up to ``max_steps`` times the reasoner continues its chain of
thought and ends with ``<search_complete>Yes/No</search_complete>``; unless it says Yes, its output
(tag removed) is the next top-k query. The context is every retrieved doc, in retrieval order.

Styles (``inference.ircot_style``):

- ``original``: s3's prompt, one user message with the question, the context retrieved so far and the
  chain so far; the reasoner's whole output is the query; the stop test is the exact lower-cased
  ``<search_complete>yes</search_complete>``; every block is kept, repeats included (``dedup=False``).
- ``one_sentence``: s3ray's earlier variant: one-sentence steps, the docs in the system message's context
  block; the step sentence is the query; any yes/true tag stops.
"""

from __future__ import annotations

import re

from s3ray.config import SamplingConfig
from s3ray.inference.base import GatheredContext, PerQuestionGatherer, context_block
from s3ray.types import Doc, Question, dedup_by_id

_COMPLETE = re.compile(r"<search_complete>\s*(.*?)\s*</search_complete>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<search_complete>.*?</search_complete>", re.IGNORECASE | re.DOTALL)
ORIGINAL_STOP = "<search_complete>yes</search_complete>"

# s3's build_prompt, after the question, the context and the chain so far.
ORIGINAL_INSTRUCTION = (
    "\nPlease reason through the problem step by step based on the given context. "
    "Only provide the final answer if you are confident and have sufficient information. "
    "Otherwise, continue with intermediate reasoning steps.\n\n"
    "At the end of your response, write one of the following tags to indicate whether further information "
    "is needed:\n"
    "    <search_complete>Yes</search_complete>   if no more information is needed.\n"
    "    <search_complete>No</search_complete>    if more information is needed.\n\n"
    "Now continue reasoning:"
)
ONE_SENTENCE_INSTRUCTION = (
    "You answer a question by reasoning one step at a time over the retrieved documents below. "
    "Write only the next reasoning step: one sentence that states a fact you need or have found. "
    "Then say whether the documents and steps so far are enough to answer the question, as "
    "<search_complete>Yes</search_complete> or <search_complete>No</search_complete>."
)


def render_block(docs: list[Doc]) -> str:
    """One retrieval as s3's scripts format it: ``Doc i (Title: T) text`` lines, numbered per block."""
    return "".join(f"Doc {i} (Title: {d.title}) {d.text}\n" for i, d in enumerate(docs, start=1))


def original_prompt(question: str, blocks: list[list[Doc]], chain: list[str]) -> str:
    """s3's ``build_prompt``: the blocks retrieved so far joined by newlines, the chain numbered."""
    context = "\n".join(render_block(b) for b in blocks)
    prompt = f"Question: {question}\n\n"
    if context.strip():
        prompt += "Context:\n" + context.strip() + "\n"
    if chain:
        prompt += "\nChain of Thought:\n" + "".join(f"{i}. {s.strip()}\n" for i, s in enumerate(chain, 1))
    return prompt + ORIGINAL_INSTRUCTION


def one_sentence_messages(question: str, docs: list[Doc], steps: list[str]) -> list[dict[str, str]]:
    """The docs in the system message's context block; the question and the steps so far as the user's."""
    so_far = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps)) or "(none yet)"
    return [{"role": "system", "content": f"{ONE_SENTENCE_INSTRUCTION}\n{context_block(docs)}"},
            {"role": "user", "content": f"{question}\nReasoning steps so far:\n{so_far}\nNext step:"}]


def parse_step(text: str) -> tuple[str, bool | None]:
    """(step text without the tag, complete?) — complete is None when the tag is missing."""
    match = _COMPLETE.search(text)
    complete = None if match is None else match.group(1).strip().lower() in ("yes", "true", "y", "1")
    step = _COMPLETE.sub(" ", text)
    return " ".join(step.split()), complete


def original_query(output: str) -> tuple[str, bool]:
    """(next query, stop?) by s3's rule: the output with every tag removed, stripped; stop only on the
    exact lower-cased ``<search_complete>yes</search_complete>``."""
    return _TAG.sub("", output).strip(), ORIGINAL_STOP in output.lower()


class IrcotGatherer(PerQuestionGatherer):
    name = "ircot"

    def __init__(self, retriever, reasoner, k: int, max_steps: int, sampling: SamplingConfig,
                 style: str = "original", dedup: bool = False):
        if style not in ("original", "one_sentence"):
            raise ValueError(f"unknown IRCoT style {style!r}; known: original, one_sentence")
        self.retriever, self.reasoner = retriever, reasoner
        self.k, self.max_steps, self.sampling = k, max_steps, sampling
        self.style, self.dedup = style, dedup

    async def _reason(self, messages: list[dict[str, str]]) -> str:
        s = self.sampling
        return await self.reasoner.achat(messages, max_tokens=s.max_tokens, temperature=s.temperature,
                                         top_p=s.top_p)

    async def gather_one(self, question: Question) -> GatheredContext:
        [docs] = await self.retriever.asearch([question.question], self.k)
        blocks = [list(docs)]
        queries, steps, raw, untagged = [question.question], [], [], 0
        stop = "max_steps"
        for _ in range(self.max_steps):
            if self.style == "original":
                output = await self._reason([{"role": "user",
                                              "content": original_prompt(question.question, blocks, steps)}])
                raw.append(output)
                steps.append(output.strip())  # s3 keeps the tagged output in the chain
                query, complete = original_query(output)
                untagged += _COMPLETE.search(output) is None
            else:
                retrieved = dedup_by_id(d for b in blocks for d in b)
                output = await self._reason(one_sentence_messages(question.question, retrieved, steps))
                raw.append(output)
                query, tagged = parse_step(output)
                untagged += tagged is None
                if query:
                    steps.append(query)
                complete = bool(tagged)
            if complete:
                stop = "complete"
                break
            if not query:  # nothing to search for (s3 would send an empty query; our retriever refuses it)
                stop = "empty_step"
                break
            [docs] = await self.retriever.asearch([query], self.k)
            queries.append(query)
            blocks.append(list(docs))
        retrieved = [d for b in blocks for d in b]
        context = dedup_by_id(retrieved) if self.dedup else retrieved
        trace = {"turns": len(raw), "queries": queries, "steps": steps, "raw_outputs": raw,
                 "stop": stop, "untagged_steps": untagged, "retrieved_ids": [d.id for d in retrieved]}
        return GatheredContext.of(question, context, trace)
