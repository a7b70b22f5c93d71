"""The s3 search environment (s3 §2.3): the episode's rules, apart from the tokens.

``reset(question, initial_docs)`` gives the searcher's prompt (chat messages holding the turn-0 block);
``await step(action_text)`` parses the searcher's turn, runs its search, and gives the observation to
append, whether the episode is done and the context so far. A driver (:mod:`s3ray.rollout.runner`) owns
the tokens: it encodes the prompt and the observations, asks a policy for each turn, and tells the
environment when its token budget ends the episode (:meth:`S3Environment.out_of_tokens`).

Turn budget: ``max_turns`` search-enabled turns (one more with ``seed_extra_turn``, as the seed code
runs), then, with ``final_selection_turn``, one last turn with search disabled, announced in the
observation before it, so the searcher can select from the newest results. The episode also ends when
the searcher completes. An invalid turn (neither a search nor a completion) is answered with the nudge.

The state a policy may read (the warm start's teacher does): ``question``, ``trace`` (the turns so far,
with the blocks and queries derived from them) and ``final_turn``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from s3ray.agent.observation import FINAL_TURN_NOTE, INVALID_TURN_NOTE, NUDGE, render_information
from s3ray.agent.parser import QUERY_CLOSE, parse_turn
from s3ray.agent.prompt import searcher_messages
from s3ray.agent.selection import select_context
from s3ray.agent.trace import Finish, Trace, Turn
from s3ray.config import AgentConfig
from s3ray.types import Doc


@dataclass(frozen=True)
class StepResult:
    observation: str | None  # what to append after the turn; None when the turn ended the episode
    done: bool  # no turn follows (after its observation, if any)
    context: list[Doc]  # the docs the generator would receive now


class S3Environment:
    """One episode's environment; ``retriever``: ``await asearch(queries, k)``; ``tokenizer``: the
    policy's, which cuts each observed document to ``max_doc_tokens``."""

    # A turn ends at the first </query>: the environment must answer the search.
    stop_strings = (QUERY_CLOSE,)

    def __init__(self, cfg: AgentConfig, retriever, tokenizer):
        self.cfg = cfg
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.search_turns = cfg.max_turns + (1 if cfg.seed_extra_turn else 0)
        self.question = ""
        self.trace = Trace()
        self.done = True

    def reset(self, question: str, initial_docs: Sequence[Doc]) -> list[dict[str, str]]:
        """A new episode; the prompt: one user message with the question and the turn-0 block."""
        self.question = question
        self.trace = Trace(initial_docs=list(initial_docs))
        self.done = self._budget_spent()
        return searcher_messages(question, initial_docs, self.cfg)

    @property
    def final_turn(self) -> bool:
        """The next turn is the search-disabled selection turn."""
        return len(self.trace.turns) == self.search_turns

    @property
    def context(self) -> list[Doc]:
        return select_context(self.trace.blocks, self.trace.selections, self.cfg)

    async def step(self, action_text: str, finish_reason: str | None = None, num_tokens: int = 0) -> StepResult:
        """The searcher's turn (``finish_reason`` and ``num_tokens``: how its policy wrote it, recorded in
        the trace)."""
        if self.done:
            raise RuntimeError("step on a finished episode: reset first")
        action = parse_turn(action_text)
        final = self.final_turn
        turn = Turn(text=action.text, action=action.kind, query=action.query, selected_ids=action.important_info,
                    final=final, finish_reason=finish_reason, num_tokens=num_tokens)
        self.trace.turns.append(turn)
        if action.kind == "complete" or final:
            self._end("complete" if action.kind == "complete" else "final_selection")
            return StepResult(None, True, self.context)
        next_final = self.final_turn and self.cfg.final_selection_turn
        if action.kind == "search":
            turn.results = list((await self.retriever.asearch([action.query], self.cfg.search_k))[0])
            observation = render_information(turn.results, max_doc_tokens=self.cfg.max_doc_tokens,
                                             tokenizer=self.tokenizer)
        else:  # the nudge opens a query, except before the final turn, where no search is left
            observation = INVALID_TURN_NOTE if next_final else NUDGE
        if next_final:
            observation += FINAL_TURN_NOTE
        self.done = self._budget_spent()  # the turn budget ends the episode after this observation
        return StepResult(observation, self.done, self.context)

    def out_of_tokens(self, observation_unread: bool) -> None:
        """The driver's token budget ends the episode. ``observation_unread``: the last step's observation
        did not fit, so the searcher never read its results and they never reach the context."""
        if observation_unread and self.trace.turns:
            self.trace.turns[-1].results = None
        self._end("length")

    def _budget_spent(self) -> bool:
        return self.final_turn and not self.cfg.final_selection_turn

    def _end(self, finish: Finish) -> None:
        self.trace.finish = finish
        self.done = True
