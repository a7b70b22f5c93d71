"""One searcher episode as an async loop, token in / token out (s3 §2.3).

Each turn feeds the engine exactly ``prompt_ids + response_ids`` so far and appends the engine's own
token ids (action tokens, with their logprobs); observations are encoded once and appended as
non-action tokens. Nothing the policy saw is ever re-encoded from text.

Turn budget: ``max_turns`` search-enabled turns (one more with ``seed_extra_turn``, as the seed code
runs), then, with ``final_selection_turn``, one last turn with search disabled, announced in the
observation before it, so the searcher can select from the newest results. The episode also ends when
the searcher completes, or when ``max_total_tokens`` (prompt and response) leaves no room for a turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from s3ray.agent.episode import Episode, Finish
from s3ray.agent.observation import FINAL_TURN_NOTE, INVALID_TURN_NOTE, NUDGE, render_information
from s3ray.agent.parser import QUERY_CLOSE, parse_turn
from s3ray.agent.prompt import encode_prompt, searcher_messages
from s3ray.agent.selection import Selection, select_context
from s3ray.config import AgentConfig
from s3ray.rollout.engine import RolloutEngine, SamplingParams
from s3ray.types import Doc, Question


def turn_sampling(sampling: SamplingParams) -> SamplingParams:
    """A turn ends at the first ``</query>``: the environment must answer the search."""
    stop = sampling.stop if QUERY_CLOSE in sampling.stop else (*sampling.stop, QUERY_CLOSE)
    return replace(sampling, stop=stop)


async def run_episode(question: Question, initial_docs: Sequence[Doc], engine: RolloutEngine, retriever,
                      tokenizer, agent_cfg: AgentConfig, sampling: SamplingParams,
                      sample_index: int = 0) -> Episode:
    cfg = agent_cfg
    sampling = turn_sampling(sampling)
    prompt_ids = encode_prompt(tokenizer, searcher_messages(question.question, initial_docs, cfg))
    ep = Episode(question_id=question.id, question=question.question,
                 golden_answers=list(question.golden_answers), source=question.source, prompt_ids=prompt_ids,
                 temperature=sampling.logprob_temperature, initial_docs=list(initial_docs),
                 policy_version=engine.version, sample_index=sample_index)
    blocks: list[list[Doc]] = [list(initial_docs)]  # block 0: the turn-0 naive-RAG docs
    selections: list[Selection] = []
    search_turns = cfg.max_turns + (1 if cfg.seed_extra_turn else 0)
    finish: Finish = "turn_budget"
    turn = 0
    while True:
        final = turn == search_turns  # the search-disabled selection turn
        if final and not cfg.final_selection_turn:
            break
        room = cfg.max_total_tokens - len(prompt_ids) - len(ep.response_ids)
        if room < 1:
            finish = "length"
            break
        gen = await engine.generate(prompt_ids + ep.response_ids,
                                    replace(sampling, max_tokens=min(cfg.max_turn_tokens, room)))
        ep.append(gen.token_ids, action=True, logprobs=gen.logprobs)
        action = parse_turn(tokenizer.decode(gen.token_ids, skip_special_tokens=True))
        if action.important_info is not None:  # an empty selection claims its block too
            selections.append((len(blocks) - 1, action.important_info))
        ep.turns.append({"text": action.text, "action": action.kind, "query": action.query,
                         "ids": action.important_info, "finish_reason": gen.finish_reason,
                         "num_tokens": len(gen.token_ids), "final": final})
        if action.kind == "complete":
            finish = "complete"
            break
        if final:
            finish = "final_selection"
            break
        next_final = turn + 1 == search_turns and cfg.final_selection_turn
        if action.kind == "search":
            docs = (await retriever.asearch([action.query], cfg.search_k))[0]
            observation = render_information(docs, max_doc_tokens=cfg.max_doc_tokens, tokenizer=tokenizer)
            ep.queries.append(action.query)
        else:  # the nudge opens a query, except before the final turn, where no search is left
            docs = None
            observation = INVALID_TURN_NOTE if next_final else NUDGE
            ep.invalid_turns += 1
        if next_final:
            observation += FINAL_TURN_NOTE
        obs_ids = tokenizer.encode(observation, add_special_tokens=False)
        if len(prompt_ids) + len(ep.response_ids) + len(obs_ids) >= cfg.max_total_tokens:
            finish = "length"  # the results would leave no room to read them: the searcher never sees them
            break
        ep.append(obs_ids, action=False)
        if docs is not None:
            blocks.append(list(docs))
        turn += 1
    ep.finish = finish
    ep.context = select_context(blocks, selections, cfg)
    ep.text = tokenizer.decode(ep.response_ids, skip_special_tokens=True)
    return ep
