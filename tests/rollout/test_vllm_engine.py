"""VLLMEngine on a GPU against the transformers reference: the same greedy tokens, logprobs under the
sampled policy (and the documented nucleus renormalisation when top_p < 1), and a weight push that
changes what it generates. Skips without a CUDA GPU or without vllm (the `gpu` extra).

Every call runs on one event loop: ``AsyncLLM``'s output handler is a task of the loop that first used
it, so a second ``asyncio.run`` would find it dead."""

from __future__ import annotations

import asyncio
import math

import pytest

from s3ray.rollout.engine import HFEngine, SamplingParams

from .test_engine import PROMPTS, encode, perturbed_state, recomputed_logprobs

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engines(tiny_model_dir, loop):
    pytest.importorskip("vllm")
    from s3ray.rollout.engine import VLLMEngine

    async def make():
        return VLLMEngine(tiny_model_dir, seed=0, gpu_memory_utilization=0.2, max_model_len=2048, dtype="float32")

    hf, vllm_engine = HFEngine(tiny_model_dir, seed=0), loop.run_until_complete(make())
    yield hf, vllm_engine
    vllm_engine.shutdown()


def generate_all(loop, engine, prompts, sampling):
    async def go():
        return await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))

    return loop.run_until_complete(go())


def test_greedy_tokens_and_logprobs_match_transformers(engines, loop):
    hf, vllm_engine = engines
    prompts = [encode(hf, p) for p in PROMPTS]
    greedy = SamplingParams(greedy=True, max_tokens=12)
    ours = generate_all(loop, vllm_engine, prompts, greedy)
    reference = generate_all(loop, hf, prompts, greedy)
    assert [g.token_ids for g in ours] == [g.token_ids for g in reference]
    for prompt, out in zip(prompts, ours, strict=True):
        assert out.logprobs == pytest.approx(recomputed_logprobs(hf.model, prompt, out.token_ids, 1.0), abs=1e-3)


def test_sampled_logprobs_are_at_the_sampling_temperature(engines, loop):
    hf, vllm_engine = engines
    prompts = [encode(hf, p) for p in PROMPTS]
    outs = generate_all(loop, vllm_engine, prompts, SamplingParams(temperature=0.6, top_p=1.0, max_tokens=12))
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.logprobs == pytest.approx(recomputed_logprobs(hf.model, prompt, out.token_ids, 0.6), abs=1e-3)


def test_top_p_logprobs_are_nucleus_renormalised_within_the_bound(engines, loop):
    """processed_logprobs (engine/vllm.py): log p_nucleus = log p_T - log(nucleus mass), mass in [top_p, 1]."""
    hf, vllm_engine = engines
    top_p = 0.5
    prompts = [encode(hf, p) for p in PROMPTS]
    outs = generate_all(loop, vllm_engine, prompts, SamplingParams(temperature=0.6, top_p=top_p, max_tokens=12))
    for prompt, out in zip(prompts, outs, strict=True):
        full = recomputed_logprobs(hf.model, prompt, out.token_ids, 0.6)
        for ours, reference in zip(out.logprobs, full, strict=True):
            assert -1e-3 <= ours - reference <= -math.log(top_p) + 1e-3


def test_weight_push_changes_outputs_and_version(engines, loop):
    hf, vllm_engine = engines
    prompts = [encode(hf, p) for p in PROMPTS]
    greedy = SamplingParams(greedy=True, max_tokens=8)
    before = generate_all(loop, vllm_engine, prompts, greedy)
    state = perturbed_state(hf.model)
    loop.run_until_complete(vllm_engine.load_state_dict(state, 7))
    loop.run_until_complete(hf.load_state_dict(state, 7))
    after = generate_all(loop, vllm_engine, prompts, greedy)
    assert vllm_engine.version == 7
    assert [g.token_ids for g in after] != [g.token_ids for g in before]
    assert [g.token_ids for g in after] == [g.token_ids for g in generate_all(loop, hf, prompts, greedy)]
