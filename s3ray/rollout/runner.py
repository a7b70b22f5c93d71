"""One episode as an async loop, token in / token out, over an environment (s3 §2.3's rules live in
:class:`s3ray.agent.environment.S3Environment`).

Each turn feeds the policy exactly ``prompt_ids + response_ids`` so far and appends its own token ids
(action tokens, with their logprobs); the environment's observations are encoded once and appended as
non-action tokens. Nothing the policy saw is ever re-encoded from text. The runner owns the token
budget: the episode ends when ``max_total_tokens`` (prompt and response) leaves no room for a turn, or
for the observation that would follow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from s3ray.agent.environment import S3Environment
from s3ray.agent.episode import Episode
from s3ray.agent.prompt import encode_prompt
from s3ray.rollout.engine import SamplingParams
from s3ray.rollout.policy import Policy
from s3ray.types import Doc, Question


def turn_sampling(sampling: SamplingParams, env: S3Environment) -> SamplingParams:
    """A turn also ends at the environment's stop strings (``</query>``: the search must be answered)."""
    stop = sampling.stop + tuple(s for s in env.stop_strings if s not in sampling.stop)
    return replace(sampling, stop=stop)


async def run_episode(env: S3Environment, question: Question, initial_docs: Sequence[Doc], policy: Policy,
                      tokenizer, sampling: SamplingParams, sample_index: int = 0) -> Episode:
    cfg = env.cfg  # the token budget: max_total_tokens, max_turn_tokens
    sampling = turn_sampling(sampling, env)
    prompt_ids = encode_prompt(tokenizer, env.reset(question.question, initial_docs))
    ep = Episode(question_id=question.id, question=question.question,
                 golden_answers=list(question.golden_answers), source=question.source, prompt_ids=prompt_ids,
                 temperature=sampling.logprob_temperature, trace=env.trace, policy_version=policy.version,
                 sample_index=sample_index)
    while not env.done:
        room = cfg.max_total_tokens - len(prompt_ids) - len(ep.response_ids)
        if room < 1:
            env.out_of_tokens(observation_unread=False)
            break
        gen = await policy.act(prompt_ids + ep.response_ids, env,
                               replace(sampling, max_tokens=min(cfg.max_turn_tokens, room)))
        ep.append(gen.token_ids, action=True, logprobs=gen.logprobs)
        step = await env.step(tokenizer.decode(gen.token_ids, skip_special_tokens=True),
                              finish_reason=gen.finish_reason, num_tokens=len(gen.token_ids))
        if step.observation is None:
            break
        obs_ids = tokenizer.encode(step.observation, add_special_tokens=False)
        if len(prompt_ids) + len(ep.response_ids) + len(obs_ids) >= cfg.max_total_tokens:
            env.out_of_tokens(observation_unread=True)  # no room to read the results: never seen
            break
        ep.append(obs_ids, action=False)
    ep.context = env.context
    ep.text = tokenizer.decode(ep.response_ids, skip_special_tokens=True)
    return ep
