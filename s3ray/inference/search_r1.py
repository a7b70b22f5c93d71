"""Search-R1: a checkpoint trained end to end to search with ``<search>q</search>``; the docs of all
its ``<information>`` blocks form the context.

As s3 ran it (``scripts/baselines/search_r1.sh`` → ``s3/llm_agent/generation_searchr1.py``, validation):
the prompt is Search-R1's instruction as one user message under the checkpoint's chat template, and the
model continues that one text, greedy, 500 tokens per turn, for ``max_turns`` (4) search turns plus one
last turn whose search is not run. Each turn's text is cut after the first ``</search>`` (else after the
first ``</answer>``); the first ``<search>``/``<answer>`` element is the action; a search appends
``\\n\\n<information>docs</information>\\n\\n`` (top-3), an answer ends the episode, anything else appends
the fixed invalid-action note.

``api="completions"`` sends that text to ``/v1/completions`` (what the checkpoint was trained on);
``api="chat"`` asks each turn over chat completions with the trajectory as the previous assistant
message (s3ray's earlier approximation, for endpoints without the completions API).
The context is the docs of every ``<information>`` block, each once.
"""

from __future__ import annotations

import re

from s3ray.config import SamplingConfig
from s3ray.inference.base import GatheredContext, PerQuestionGatherer
from s3ray.types import Doc, Question, dedup_by_id

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)

# The instruction Search-R1 checkpoints were trained with (s3's scripts/data_process/process_mirage_r1.py).
PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every "
    "time you get new information. After reasoning, if you find you lack some knowledge, you can call "
    "a search engine by <search> query </search> and it will return the top searched results between "
    "<information> and </information>. You can search as many times as your want. If you find no "
    "further external knowledge needed, you can directly provide the answer inside <answer> and "
    "</answer>, without detailed illustrations. For example, <answer> Beijing </answer>. "
    "Question: {question}\n"
)
INVALID_ACTION = ("\nMy previous action is invalid. If I want to search, I should put the query between "
                  "<search> and </search>. If I want to give the final answer, I should put the answer "
                  "between <answer> and </answer>. Let me try again.\n")


def render_information(docs: list[Doc]) -> str:
    """Search-R1's observation: ``Doc i(Title: T) text`` lines (no space before the parenthesis)."""
    body = "".join(f"Doc {i + 1}(Title: {d.title}) {d.text}\n" for i, d in enumerate(docs))
    return f"\n\n<information>{body.strip()}</information>\n\n"


def cut_at_action(text: str) -> str:
    """Cut after the first ``</search>`` if there is one, else after the first ``</answer>``."""
    for tag in ("</search>", "</answer>"):
        if tag in text:
            return text.split(tag, 1)[0] + tag
    return text


def parse_action(text: str) -> tuple[str, str]:
    """("search", query) | ("answer", answer) | ("invalid", ""): the first search/answer element, stripped."""
    match = _ACTION.search(text)
    if match is None:
        return "invalid", ""
    return match.group(1), match.group(2).strip()


class SearchR1Gatherer(PerQuestionGatherer):
    name = "search_r1"

    def __init__(self, retriever, model_client, k: int, max_turns: int, sampling: SamplingConfig,
                 api: str = "completions", template: str = "{prompt}", final_turn: bool = True):
        if api not in ("completions", "chat"):
            raise ValueError(f"unknown Search-R1 api {api!r}; known: completions, chat")
        if "{prompt}" not in template:
            raise ValueError("inference.search_r1_template must contain {prompt} (where the instruction goes)")
        self.retriever, self.model = retriever, model_client
        self.k, self.max_turns, self.sampling = k, max_turns, sampling
        self.api, self.template, self.final_turn = api, template, final_turn

    async def _generate(self, prompt: str, trajectory: str) -> str:
        s = self.sampling
        if self.api == "completions":
            return await self.model.acomplete(self.template.replace("{prompt}", prompt) + trajectory,
                                              max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p)
        messages = [{"role": "user", "content": prompt}]
        if trajectory:
            messages.append({"role": "assistant", "content": trajectory})
        return await self.model.achat(messages, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p)

    async def gather_one(self, question: Question) -> GatheredContext:
        prompt = PROMPT.format(question=question.question)
        trajectory, queries, raw, retrieved = "", [], [], []
        answer, stop = None, "max_turns"
        for turn in range(self.max_turns + int(self.final_turn)):
            search_allowed = turn < self.max_turns
            output = await self._generate(prompt, trajectory)
            raw.append(output)
            text = cut_at_action(output)
            action, body = parse_action(text)
            if action == "answer":
                answer, stop = body, "answer"
                break
            if not search_allowed:
                break  # the last turn's search is never run
            if action == "search":
                [docs] = await self.retriever.asearch([body], self.k)
                queries.append(body)
                retrieved.extend(docs)
                trajectory += text + render_information(docs)
            else:
                trajectory += text + INVALID_ACTION
        trace = {"turns": len(raw), "queries": queries, "raw_outputs": raw, "stop": stop,
                 "model_answer": answer, "retrieved_ids": [d.id for d in retrieved]}
        # s3's verl/utils/reward_score/extract.py keeps each (title, text) once
        return GatheredContext.of(question, dedup_by_id(retrieved), trace)
