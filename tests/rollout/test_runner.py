"""run_episode over the s3 environment, with a scripted engine and retriever: token layout, turn budget,
nudges, selection."""

from __future__ import annotations

import asyncio

from s3ray.agent.environment import S3Environment
from s3ray.agent.observation import FINAL_TURN_NOTE, INVALID_TURN_NOTE, NUDGE, render_information
from s3ray.agent.prompt import encode_prompt, searcher_messages
from s3ray.config import AgentConfig
from s3ray.rollout.engine import SamplingParams
from s3ray.rollout.policy import EnginePolicy
from s3ray.rollout.runner import run_episode
from s3ray.types import Question

from .fakes import COMPLETE, ChatWordTokenizer, FakeRetriever, ScriptedEngine, query

QUESTION = Question("q1", "Who directed the film?", ("Spielberg",), "hotpotqa")
INITIAL = FakeRetriever.docs_for("initial", 3)
SAMPLING = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=500)


def cfg(**kw) -> AgentConfig:
    return AgentConfig(**{"max_turns": 2, "search_k": 3, "max_doc_tokens": 20, "max_turn_tokens": 40,
                          "final_selection_turn": False, **kw})


def run(turns, agent_cfg=None, sampling=SAMPLING):
    tok, retriever = ChatWordTokenizer(), FakeRetriever()
    engine = ScriptedEngine(tok, turns)
    env = S3Environment(agent_cfg or cfg(), retriever, tok)
    ep = asyncio.run(run_episode(env, QUESTION, INITIAL, EnginePolicy(engine), tok, sampling, sample_index=2))
    return ep, engine, retriever, tok


def test_token_in_token_out_and_masks():
    ep, engine, retriever, tok = run([query("film director"), f"<important_info>[2]</important_info> {COMPLETE}"])
    ep.check()
    assert ep.prompt_ids == encode_prompt(tok, searcher_messages(QUESTION.question, INITIAL, cfg()))
    # Before each turn the engine saw exactly the prompt and the response so far; nothing re-encoded.
    starts = [len(fed) - len(ep.prompt_ids) for fed in engine.fed] + [len(ep.response_ids)]
    for t, out in enumerate(engine.outputs):
        begin, n, end = starts[t], len(out.token_ids), starts[t + 1]
        assert engine.fed[t] == ep.prompt_ids + ep.response_ids[:begin]
        assert ep.response_ids[begin:begin + n] == out.token_ids
        assert ep.action_mask[begin:begin + n] == [1] * n and ep.logprobs[begin:begin + n] == out.logprobs
        assert ep.action_mask[begin + n:end] == [0] * (end - begin - n)  # the observation after it
        assert ep.logprobs[begin + n:end] == [0.0] * (end - begin - n)
    observation = render_information(FakeRetriever.docs_for("film director", 3), max_doc_tokens=20, tokenizer=tok)
    assert tok.decode(ep.response_ids[len(engine.outputs[0].token_ids):
                                      len(engine.fed[1]) - len(ep.prompt_ids)]) == tok.decode(tok.encode(observation))
    assert retriever.calls == [(["film director"], 3)]
    assert ep.finish == "complete" and ep.queries == ["film director"] and ep.invalid_turns == 0
    assert [t.action for t in ep.turns] == ["search", "complete"]
    assert ep.policy_version == 7 and ep.sample_index == 2 and ep.temperature == 0.6
    # Selected doc 2 of the search block first, then the unselected turn-0 block.
    searched = FakeRetriever.docs_for("film director", 3)
    assert ep.context == [searched[1], *INITIAL]
    assert ep.text == tok.decode(ep.response_ids)


def test_every_turn_stops_at_query_close_within_the_turn_budget():
    _, engine, _, _ = run([query("a"), COMPLETE])
    for sp in engine.sampling:
        assert "</query>" in sp.stop and sp.max_tokens == 40 and sp.temperature == 0.6 and sp.top_p == 0.95


def test_turn_budget_and_seed_extra_turn():
    ep, engine, retriever, _ = run(lambda t: query(f"q{t}"))
    assert len(engine.fed) == 2 and len(retriever.calls) == 2 and ep.finish == "turn_budget"
    ep.check()
    ep, engine, retriever, _ = run(lambda t: query(f"q{t}"), cfg(seed_extra_turn=True))
    assert len(engine.fed) == 3 and len(retriever.calls) == 3 and ep.finish == "turn_budget"
    # Unselected blocks all contribute: the 3 initial docs and 3 per search.
    assert len(ep.context) == 3 + 3 * 3


def test_final_selection_turn_disables_search_and_selects():
    ep, engine, retriever, tok = run(
        [query("first"), query("second"), f"<important_info>[3]</important_info> {query('ignored')}"],
        cfg(final_selection_turn=True))
    assert len(engine.fed) == 3 and ep.finish == "final_selection"
    assert [c[0] for c in retriever.calls] == [["first"], ["second"]]  # the final turn's query is not run
    assert ep.turns[-1].final and ep.queries == ["first", "second"]
    # The observation before the final turn says that no searches are left.
    assert tok.decode(engine.fed[2]).endswith(tok.decode(tok.encode(FINAL_TURN_NOTE)))
    assert FINAL_TURN_NOTE.split()[0] not in tok.decode(engine.fed[1][len(ep.prompt_ids):])
    second = FakeRetriever.docs_for("second", 3)
    assert ep.context[0] == second[2]  # the final turn's selection from the newest block comes first
    assert second[0] not in ep.context
    ep.check()


def test_invalid_turn_gets_the_nudge():
    ep, engine, retriever, tok = run(["I am not sure", COMPLETE])
    assert ep.invalid_turns == 1 and ep.finish == "complete" and not retriever.calls
    nudge = tok.encode(NUDGE)
    first = len(engine.outputs[0].token_ids)
    assert ep.response_ids[first:first + len(nudge)] == nudge
    assert ep.action_mask[first:first + len(nudge)] == [0] * len(nudge)
    assert [t.action for t in ep.turns] == ["invalid", "complete"]
    assert ep.context == INITIAL


def test_the_turn_after_the_nudge_completes_its_opened_query():
    ep, _, retriever, _ = run(["I am not sure", '{"query": "film director"}</query>'])
    assert ep.invalid_turns == 1 and retriever.calls == [(["film director"], 3)]
    assert [t.action for t in ep.turns] == ["invalid", "search"]


def test_no_query_is_opened_before_the_search_disabled_final_turn():
    ep, engine, _, tok = run(["I am not sure", "still unsure", COMPLETE], cfg(max_turns=2, final_selection_turn=True))
    last_observation = tok.decode(engine.fed[2][len(engine.fed[1]) + len(engine.outputs[1].token_ids):])
    assert last_observation == tok.decode(tok.encode(INVALID_TURN_NOTE + FINAL_TURN_NOTE))


def test_an_empty_selection_claims_its_block_with_nothing():
    ep, *_ = run([query("film director"), f"<important_info>[]</important_info> {COMPLETE}"])
    assert ep.context == INITIAL  # not the search block's docs
    ep, *_ = run([query("film director"), COMPLETE])
    assert ep.context == [*INITIAL, *FakeRetriever.docs_for("film director", 3)]


def test_max_total_tokens_caps_the_episode():
    tok = ChatWordTokenizer()
    prompt_len = len(encode_prompt(tok, searcher_messages(QUESTION.question, INITIAL, cfg())))
    cap = prompt_len + 30  # room for a turn, not for the 3 search results that follow it
    ep, engine, retriever, _ = run(lambda t: query(f"q{t}"), cfg(max_total_tokens=cap))
    assert ep.finish == "length" and len(engine.fed) == 1
    assert engine.sampling[0].max_tokens == min(40, cap - prompt_len)
    assert len(ep.prompt_ids) + len(ep.response_ids) <= cap
    assert ep.context == INITIAL  # results the searcher never saw are not in the context
    ep.check()
    ep, engine, _, _ = run(lambda t: "x " * 100, cfg(max_total_tokens=prompt_len + 50))
    assert len(ep.prompt_ids) + len(ep.response_ids) <= prompt_len + 50 and ep.finish == "length"


def test_greedy_records_temperature_one():
    ep, _, _, _ = run([COMPLETE], sampling=SamplingParams(greedy=True))
    assert ep.temperature == 1.0 and ep.finish == "complete" and ep.context == INITIAL
