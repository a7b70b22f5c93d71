"""The s3 environment without tokens: reset, steps, the turn budget, and the trace it keeps."""

from __future__ import annotations

import asyncio

import pytest

from s3ray.agent.environment import S3Environment
from s3ray.agent.observation import FINAL_TURN_NOTE, NUDGE
from s3ray.agent.prompt import build_searcher_prompt
from s3ray.config import AgentConfig
from tests.agent.fakes import WordTokenizer
from tests.rollout.fakes import COMPLETE, FakeRetriever, query

QUESTION = "Who directed the film?"
INITIAL = FakeRetriever.docs_for("initial", 2)


def env(**kw) -> S3Environment:
    cfg = AgentConfig(**{"max_turns": 2, "search_k": 3, "final_selection_turn": False, **kw})
    return S3Environment(cfg, FakeRetriever(), WordTokenizer())


def steps(e: S3Environment, turns: list[str]):
    return [asyncio.run(e.step(turn)) for turn in turns]


def test_reset_gives_the_prompt_with_the_turn0_block():
    e = env()
    assert e.reset(QUESTION, INITIAL) == [{"role": "user", "content": build_searcher_prompt(QUESTION, INITIAL, e.cfg)}]
    assert e.trace.initial_docs == INITIAL and e.trace.blocks == [INITIAL] and not e.done


def test_a_search_then_a_selection_and_completion():
    e = env()
    e.reset(QUESTION, INITIAL)
    searched, done = steps(e, [query("film director"), f"<important_info>[2]</important_info> {COMPLETE}"])
    found = FakeRetriever.docs_for("film director", 3)
    assert "(Title: film-director title 1) passage 1" in searched.observation and not searched.done
    assert searched.context == [*INITIAL, *found]  # unselected blocks give all their docs
    assert done.observation is None and done.done and e.trace.finish == "complete"
    assert done.context == e.context == [found[1], *INITIAL]
    assert e.trace.queries == ["film director"] and e.trace.blocks == [INITIAL, found]
    assert e.trace.selections == [(1, [2])]
    with pytest.raises(RuntimeError, match="finished"):
        asyncio.run(e.step(COMPLETE))


def test_the_turn_budget_ends_after_the_last_searchs_observation():
    e = env(max_turns=1)
    e.reset(QUESTION, INITIAL)
    (last,) = steps(e, [query("a")])
    assert last.observation and last.done and e.trace.finish == "turn_budget"
    assert env(max_turns=0).reset(QUESTION, INITIAL) and env(max_turns=0).done  # no turn at all


def test_the_final_turn_is_announced_and_runs_no_search():
    e = env(max_turns=1, final_selection_turn=True)
    e.reset(QUESTION, INITIAL)
    invalid, final = steps(e, ["no idea", query("never run")])
    assert invalid.observation.endswith(FINAL_TURN_NOTE) and NUDGE not in invalid.observation
    assert final.done and e.trace.finish == "final_selection" and e.trace.turns[-1].final
    assert e.trace.queries == [] and e.trace.invalid_turns == 1 and e.retriever.calls == []


def test_results_the_searcher_never_read_leave_the_context_but_not_the_queries():
    e = env()
    e.reset(QUESTION, INITIAL)
    steps(e, [query("film director")])
    e.out_of_tokens(observation_unread=True)
    assert e.done and e.trace.finish == "length" and e.context == INITIAL
    assert e.trace.queries == ["film director"] and e.trace.turns[-1].results is None
