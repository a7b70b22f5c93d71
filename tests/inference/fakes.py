"""Scripted stand-ins for the retriever and the reasoning LLM, for the gatherers' unit tests."""

from __future__ import annotations

from s3ray.types import Doc, Question


def question(i: int = 0, text: str = "Who founded the band?") -> Question:
    return Question(id=f"q{i:03d}", question=text, golden_answers=("Tulsa",), source="hotpotqa")


class FakeRetriever:
    """Docs named after the query: ``<query>#<rank>``; ``shared`` ids are returned for every query."""

    def __init__(self, shared: tuple[str, ...] = ()):
        self.calls: list[tuple[list[str], int]] = []
        self.shared = shared

    def docs_for(self, query: str, k: int) -> list[Doc]:
        ids = [*self.shared, *(f"{query}#{r}" for r in range(k))][:k]
        return [Doc(id=i, title=f"T {i}", text=f"text of {i}") for i in ids]

    async def asearch(self, queries: list[str], k: int) -> list[list[Doc]]:
        self.calls.append((list(queries), k))
        return [self.docs_for(q, k) for q in queries]


class ScriptedLLM:
    """Answers calls with the scripted outputs in order; records the messages it was sent."""

    def __init__(self, outputs: list[str]):
        self.outputs = list(outputs)
        self.messages: list = []  # chat messages, or the prompt text of a completions call
        self.sampling: list[dict] = []  # max_tokens / temperature / top_p of each call

    async def achat(self, messages, max_tokens=None, temperature=None, top_p=None) -> str:
        self.messages.append(messages)
        self.sampling.append({"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p})
        if not self.outputs:
            raise AssertionError("the gatherer made more LLM calls than scripted")
        return self.outputs.pop(0)

    async def acomplete(self, prompt, max_tokens=None, temperature=None, top_p=None) -> str:
        return await self.achat(prompt, max_tokens, temperature, top_p)

    async def achat_many(self, batch, max_tokens=None) -> list[str]:
        return [await self.achat(m, max_tokens) for m in batch]
