"""Scripted stand-ins for the runner's unit tests: a chat-capable word tokenizer, an engine that plays
back turn texts and records what it was fed, and a deterministic retriever."""

from __future__ import annotations

from collections.abc import Callable

from s3ray.agent.parser import QUERY_CLOSE
from s3ray.rollout.engine import Generation, SamplingParams
from s3ray.types import Doc
from tests.agent.fakes import WordTokenizer


class ChatWordTokenizer(WordTokenizer):
    eos_token_id = None

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True, return_dict=False):
        text = " ".join(f"{m['role']}: {m['content']}" for m in messages)
        return self.encode(text + (" assistant:" if add_generation_prompt else ""))


class ScriptedEngine:
    """Plays back ``turns`` (a list, or a function of the turn index); cuts at ``</query>`` as a real
    engine stops there. Logprobs are distinct negative numbers so tests can trace them."""

    def __init__(self, tokenizer: WordTokenizer, turns: list[str] | Callable[[int], str], version: int = 7):
        self.tokenizer = tokenizer
        self.turns = turns
        self.version = version
        self.fed: list[list[int]] = []
        self.sampling: list[SamplingParams] = []
        self.outputs: list[Generation] = []

    async def generate(self, prompt_ids, sampling):
        t = len(self.fed)
        self.fed.append(list(prompt_ids))
        self.sampling.append(sampling)
        text = self.turns(t) if callable(self.turns) else self.turns[t]
        finish = "eos"
        if QUERY_CLOSE in text:
            text, finish = text[:text.index(QUERY_CLOSE) + len(QUERY_CLOSE)], "stop"
        ids = self.tokenizer.encode(text)[:sampling.max_tokens]
        out = Generation(ids, [-(t + 1) - i / 100 for i in range(len(ids))], finish)
        self.outputs.append(out)
        return out

    async def load_state_dict(self, state, version):
        self.version = version


class FakeRetriever:
    def __init__(self):
        self.calls: list[tuple[list[str], int]] = []

    @staticmethod
    def docs_for(query: str, k: int) -> list[Doc]:
        key = "-".join(query.split())
        return [Doc(f"{key}-{i}", f"{key} title {i}", f"passage {i} about {key}") for i in range(1, k + 1)]

    async def asearch(self, queries: list[str], k: int) -> list[list[Doc]]:
        self.calls.append((list(queries), k))
        return [self.docs_for(q, k) for q in queries]


def query(text: str) -> str:
    return f'<query>{{"query": "{text}"}}</query>'


COMPLETE = "<search_complete>True</search_complete>"


class DictWeights:
    """The weight syncs' ``Weights`` over a dict of tensors already in the rollout dtype; counts how often
    it was iterated (a sync iterates once: under FSDP each pass is a round of gathers)."""

    def __init__(self, state: dict):
        self.state = state
        self.iterations = 0

    def metadata(self):
        return [(name, t.dtype, tuple(t.shape)) for name, t in self.state.items()]

    def __iter__(self):
        self.iterations += 1
        yield from self.state.items()
