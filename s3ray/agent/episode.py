"""One searcher episode: the token record the trainer learns from, the typed trace of its turns, and the
context the generator sees.

Token layout (:class:`TokenRecord`, token-in, token-out): ``prompt_ids`` is the chat prompt;
``response_ids`` is every token after it, in order: the policy's own sampled ids for each turn
(``action_mask`` 1, ``logprobs`` as the engine sampled them) and the encoded observations and nudges
between turns (``action_mask`` 0, ``logprobs`` 0.0). The rollout fed exactly ``prompt_ids +
response_ids[:t]`` to the engine before turn t, so training on these ids trains on what the policy saw;
nothing is re-encoded from text.

The turns (:class:`s3ray.agent.trace.Trace`) are what the environment recorded; the queries, the turn-0
docs and the invalid-turn count are read from there, not stored twice.

One type end to end: the rollout actors return ``Episode`` objects (Ray pickles dataclasses), the
pool passes them on, and the trainer collates them; nothing converts them to dicts and back.

Reward: ``reward`` is the episode's scalar (Gain Beyond RAG). The trainer places it on the last
token whose ``action_mask`` is 1 (``s3ray.train.batch.collate_episodes``); every other token gets 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s3ray.agent.trace import Finish, Trace, Turn
from s3ray.types import Doc


@dataclass(kw_only=True)
class TokenRecord:
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    action_mask: list[int] = field(default_factory=list)  # 1: searcher token, 0: observation / nudge
    logprobs: list[float] = field(default_factory=list)  # rollout logprobs; 0.0 off action tokens
    temperature: float = 1.0  # the T of the logprobs: log_softmax(logits / T); 1 when greedy
    policy_version: int = 0

    @property
    def name(self) -> str:
        """How the invariant errors name the record."""
        return "token record"

    def append(self, token_ids: list[int], *, action: bool, logprobs: list[float] | None = None) -> None:
        """Extend the response with a turn's sampled tokens (action) or an observation's tokens."""
        if action and (logprobs is None or len(logprobs) != len(token_ids)):
            raise ValueError("action tokens need one logprob each")
        self.response_ids.extend(int(t) for t in token_ids)
        self.action_mask.extend([1 if action else 0] * len(token_ids))
        self.logprobs.extend([float(x) for x in logprobs] if action else [0.0] * len(token_ids))

    def check(self) -> None:
        """The invariants the trainer relies on; raises ValueError naming the broken one."""
        n = len(self.response_ids)
        if len(self.action_mask) != n or len(self.logprobs) != n:
            raise ValueError(f"{self.name}: response_ids, action_mask, logprobs have lengths "
                             f"{n}, {len(self.action_mask)}, {len(self.logprobs)}")
        if not self.prompt_ids:
            raise ValueError(f"{self.name} has an empty prompt")
        if any(m not in (0, 1) for m in self.action_mask):
            raise ValueError(f"{self.name}: action_mask holds values other than 0 and 1")
        if any(lp != 0.0 for lp, m in zip(self.logprobs, self.action_mask, strict=True) if m == 0):
            raise ValueError(f"{self.name}: observation tokens carry logprobs")


@dataclass(kw_only=True)
class Episode(TokenRecord):
    question_id: str
    question: str
    golden_answers: list[str]
    source: str
    trace: Trace = field(default_factory=Trace)
    text: str = ""  # the decoded response (turns and observations)
    context: list[Doc] = field(default_factory=list)  # what the generator receives
    sample_index: int = 0
    acc_s3: float | None = None
    acc_rag: float | None = None
    reward: float | None = None
    decided_by: str | None = None  # how acc_s3 was decided: span, judge or none

    @property
    def key(self) -> tuple[str, int]:
        """Unique within a rollout batch: (question id, sample index)."""
        return self.question_id, self.sample_index

    @property
    def name(self) -> str:
        return f"episode {self.key}"

    @property
    def turns(self) -> list[Turn]:
        return self.trace.turns

    @property
    def queries(self) -> list[str]:
        return self.trace.queries

    @property
    def initial_docs(self) -> list[Doc]:
        return self.trace.initial_docs

    @property
    def invalid_turns(self) -> int:
        return self.trace.invalid_turns

    @property
    def finish(self) -> Finish:
        return self.trace.finish
