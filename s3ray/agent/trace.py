"""What happened in one searcher episode, turn by turn, as typed records (the token record is apart:
:class:`s3ray.agent.episode.TokenRecord`).

Everything else an episode is asked about is derived from the turns, never stored beside them: the
queries it ran, its invalid turns, its ``<information>`` blocks and the selections that claim them
(:mod:`s3ray.agent.selection` builds the generator's context from those two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from s3ray.agent.parser import ActionKind
from s3ray.agent.selection import Selection
from s3ray.types import Doc

Finish = Literal["complete", "turn_budget", "final_selection", "length"]


@dataclass
class Turn:
    text: str  # the turn as the searcher wrote it, up to its first </query>
    action: ActionKind
    query: str | None = None  # the search it asked for (action "search"; not run on the final turn)
    selected_ids: list[int] | None = None  # the ids of its <important_info>, from 1; None: no tag
    final: bool = False  # the search-disabled selection turn
    # What its search returned, as the searcher then read it: None when no search ran, or when the episode
    # ended (out of tokens) before the results could be shown.
    results: list[Doc] | None = None
    finish_reason: str | None = None  # how the policy's turn ended: eos, stop (a stop string) or length
    num_tokens: int = 0  # the policy's tokens in the turn


@dataclass
class Trace:
    initial_docs: list[Doc] = field(default_factory=list)  # block 0: the turn-0 naive-RAG docs
    turns: list[Turn] = field(default_factory=list)
    finish: Finish = "turn_budget"

    @property
    def queries(self) -> list[str]:
        """The queries the retriever ran, in order (the final turn's query is never run)."""
        return [t.query for t in self.turns if t.action == "search" and not t.final]

    @property
    def invalid_turns(self) -> int:
        """Turns answered with the nudge: neither a search nor a completion (the final turn gets none)."""
        return sum(t.action == "invalid" and not t.final for t in self.turns)

    @property
    def blocks(self) -> list[list[Doc]]:
        """The ``<information>`` blocks the searcher read: the turn-0 docs, then each search's results."""
        return [self.initial_docs] + [t.results for t in self.turns if t.results is not None]

    @property
    def selections(self) -> list[Selection]:
        """Each ``<important_info>`` with the index of the block just before it."""
        out: list[Selection] = []
        block = 0
        for turn in self.turns:
            if turn.selected_ids is not None:  # an empty selection claims its block too
                out.append((block, turn.selected_ids))
            if turn.results is not None:
                block += 1
        return out
