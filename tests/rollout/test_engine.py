"""HFEngine on the tiny model: batching, determinism, logprobs, stop strings, weight updates; and the
teacher policy in the same episode loop."""

from __future__ import annotations

import asyncio

import pytest
import torch

from s3ray.agent.environment import S3Environment
from s3ray.agent.prompt import encode_prompt, searcher_messages
from s3ray.config import AgentConfig
from s3ray.rollout.engine import HFEngine, SamplingParams
from s3ray.rollout.policy import EnginePolicy, TeacherPolicy
from s3ray.rollout.runner import run_episode
from s3ray.types import Doc, Question

from .fakes import FakeRetriever

PROMPTS = ["Who directed the film Jaws", "The capital of France is", "Doc 1 (Title: River) The river",
           "When was the band founded"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> HFEngine:
    return HFEngine(tiny_model_dir, max_batch=8, seed=0)


def encode(engine, text: str) -> list[int]:
    return engine.tokenizer.encode(text, add_special_tokens=False)


def generate_all(engine, prompts, sampling):
    async def go():
        return await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))

    return asyncio.run(go())


def recomputed_logprobs(model, prompt_ids, token_ids, temperature):
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    positions = range(len(prompt_ids) - 1, len(prompt_ids) + len(token_ids) - 1)
    return [float(logp[p, t]) for p, t in zip(positions, token_ids, strict=True)]


def test_concurrent_calls_are_batched_and_match_single_runs(engine):
    prompts = [encode(engine, p) for p in PROMPTS]
    budgets = [12, 3, 7, 12]  # rows leave the batch at different steps

    async def together():
        return await asyncio.gather(*(engine.generate(p, SamplingParams(greedy=True, max_tokens=n))
                                      for p, n in zip(prompts, budgets, strict=True)))

    before = len(engine.admissions)
    outs = asyncio.run(together())
    assert engine.admissions[before:] == [(len(prompts), 0)]  # one batch for all four callers
    for prompt, n, out in zip(prompts, budgets, outs, strict=True):
        alone = generate_all(engine, [prompt], SamplingParams(greedy=True, max_tokens=n))[0]
        assert alone.token_ids == out.token_ids  # left padding and leaving the batch change nothing
        assert alone.logprobs == pytest.approx(out.logprobs, abs=1e-4)
        assert len(out.token_ids) == n and out.finish_reason == "length"
    assert asyncio.run(together()) == outs  # greedy is deterministic


def test_a_request_joins_the_running_batch_and_leaves_it_first(engine):
    """Continuous batching: a call made while a long one decodes joins its batch between two steps,
    finishes first, and gets what it would alone."""
    long_prompt, short_prompt = encode(engine, PROMPTS[0]), encode(engine, PROMPTS[1])
    alone = generate_all(engine, [short_prompt], SamplingParams(greedy=True, max_tokens=4))[0]
    long_alone = generate_all(engine, [long_prompt], SamplingParams(greedy=True, max_tokens=60))[0]
    finished: list[str] = []

    async def scenario():
        async def call(name, prompt, n):
            out = await engine.generate(prompt, SamplingParams(greedy=True, max_tokens=n))
            finished.append(name)
            return out

        long_call = asyncio.ensure_future(call("long", long_prompt, 60))
        while not engine._waiting and len(engine.admissions) == before:  # the long call is decoding
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        short = await call("short", short_prompt, 4)
        return short, await long_call

    before = len(engine.admissions)
    short, long = asyncio.run(scenario())
    assert engine.admissions[before:] == [(1, 0), (1, 1)]  # the short call joined one running row
    assert finished == ["short", "long"] and len(long.token_ids) == 60
    for out, ref in ((short, alone), (long, long_alone)):  # joining and leaving change no row's output
        assert out.token_ids == ref.token_ids
        assert out.logprobs == pytest.approx(ref.logprobs, abs=1e-4)


def test_logprobs_are_the_models_at_the_sampling_temperature(engine):
    prompts = [encode(engine, p) for p in PROMPTS]
    for sampling in (SamplingParams(temperature=0.7, top_p=0.9, max_tokens=10),
                     SamplingParams(greedy=True, max_tokens=10)):
        for prompt, out in zip(prompts, generate_all(engine, prompts, sampling), strict=True):
            expected = recomputed_logprobs(engine.model, prompt, out.token_ids, sampling.logprob_temperature)
            assert out.logprobs == pytest.approx(expected, abs=1e-4)


def test_sampling_is_seeded(tiny_model_dir):
    prompts = [[5, 6, 7, 8]] * 3
    sampling = SamplingParams(temperature=1.0, max_tokens=8)
    first = generate_all(HFEngine(tiny_model_dir, seed=3), prompts, sampling)
    second = generate_all(HFEngine(tiny_model_dir, seed=3), prompts, sampling)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]


def test_stop_strings_end_the_sequence_and_are_kept(engine):
    prompt = encode(engine, PROMPTS[0])
    free = generate_all(engine, [prompt], SamplingParams(greedy=True, max_tokens=24))[0]
    text = engine.tokenizer.decode(free.token_ids)
    stop = engine.tokenizer.decode(free.token_ids[5:7]).strip() or text[-3:]
    out = generate_all(engine, [prompt], SamplingParams(greedy=True, max_tokens=24, stop=(stop,)))[0]
    assert out.finish_reason == "stop"
    decoded = engine.tokenizer.decode(out.token_ids)
    assert stop in decoded and stop not in engine.tokenizer.decode(out.token_ids[:-1])
    assert out.token_ids == free.token_ids[:len(out.token_ids)]


def perturbed_state(model) -> dict[str, torch.Tensor]:
    """The model's weights plus seeded noise: a "new policy version" whose greedy outputs differ."""
    torch.manual_seed(1)
    return {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items()}


def test_weight_update_changes_outputs_and_version(tiny_model_dir):
    engine = HFEngine(tiny_model_dir, seed=0)
    prompts = [encode(engine, p) for p in PROMPTS]
    greedy = SamplingParams(greedy=True, max_tokens=8)
    before = generate_all(engine, prompts, greedy)
    asyncio.run(engine.load_state_dict(perturbed_state(engine.model), 3))
    after = generate_all(engine, prompts, greedy)
    assert engine.version == 3
    assert [g.token_ids for g in after] != [g.token_ids for g in before]
    for prompt, out in zip(prompts, after, strict=True):  # the logprobs are the new weights' too
        assert out.logprobs == pytest.approx(recomputed_logprobs(engine.model, prompt, out.token_ids, 1.0), abs=1e-4)


def test_episode_logprobs_match_a_forward_pass_over_the_whole_episode(engine):
    """Token in / token out with the real tokenizer: the trainer's recomputation over the episode's
    ids reproduces the rollout's logprobs on every action token."""
    cfg = AgentConfig(max_turns=2, search_k=2, max_doc_tokens=16, max_turn_tokens=16)
    question = Question("q", "Who directed the film Jaws?", ("Spielberg",), "test")
    docs = [Doc("d1", "Jaws", "Jaws is a 1975 film."), Doc("d2", "Shark", "Sharks live in the sea.")]
    sampling = SamplingParams(temperature=0.8, top_p=0.95)
    env = S3Environment(cfg, FakeRetriever(), engine.tokenizer)
    ep = asyncio.run(run_episode(env, question, docs, EnginePolicy(engine), engine.tokenizer, sampling))
    ep.check()
    assert ep.prompt_ids == encode_prompt(engine.tokenizer, searcher_messages(question.question, docs, cfg))
    expected = recomputed_logprobs(engine.model, ep.prompt_ids, ep.response_ids, 0.8)
    for got, want, is_action in zip(ep.logprobs, expected, ep.action_mask, strict=True):
        if is_action:
            assert got == pytest.approx(want, abs=1e-4)
    assert sum(ep.action_mask) > 0 and len(ep.turns) >= 1


def test_the_teacher_writes_the_rule_based_turns(engine):
    cfg = AgentConfig(max_turns=2, search_k=2, max_doc_tokens=16, max_turn_tokens=64)
    teacher = TeacherPolicy(engine.tokenizer, cfg)
    question = Question("q", "Who directed the film Jaws?", ("Spielberg",), "test")
    docs = [Doc("d1", "Jaws", "Jaws is a 1975 film by Steven Spielberg.")]
    ep = asyncio.run(run_episode(S3Environment(cfg, FakeRetriever(), engine.tokenizer), question, docs, teacher,
                                 engine.tokenizer, SamplingParams(greedy=True)))
    ep.check()
    assert [t.action for t in ep.turns] == ["search", "search", "complete"] and ep.finish == "complete"
    assert ep.queries == ["Who directed the film Jaws?", "who is Steven Spielberg"]
    assert set(ep.logprobs) == {0.0}
    assert ep.response_ids[len(ep.response_ids) - 1] == engine.tokenizer.eos_token_id
    assert ep.turns[1].selected_ids == [1, 2] and ep.turns[2].selected_ids == [1, 2]
    assert [d.id for d in ep.context[:2]] == ["Who-directed-the-film-Jaws?-1", "Who-directed-the-film-Jaws?-2"]
    assert ep.context[2].id == "who-is-Steven-Spielberg-1"


def test_the_teacher_gives_each_sample_of_a_question_the_next_draw(engine):
    cfg = AgentConfig(max_turns=1, search_k=1, max_doc_tokens=16, max_turn_tokens=64)
    teacher = TeacherPolicy(engine.tokenizer, cfg, teacher="format")
    question = Question("q", "Who directed the film Jaws?", ("Spielberg",), "test")
    docs = [Doc("d1", "Jaws", "Jaws is a 1975 film by Steven Spielberg, made for Universal Pictures.")]

    def queries(n: int) -> list[str]:
        async def run():
            return await asyncio.gather(*[run_episode(S3Environment(cfg, FakeRetriever(), engine.tokenizer), question,
                                                      docs, teacher, engine.tokenizer, SamplingParams(greedy=True), i)
                                          for i in range(n)])
        return [ep.queries[0] for ep in asyncio.run(run())]

    first, again = queries(2), queries(2)
    assert sorted(first) == ["who is Steven Spielberg", "who is Universal Pictures"]
    assert first == again  # draws 2 and 3 repeat draws 0 and 1: two entities


@pytest.mark.parametrize("native,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_the_engine_holds_auto_in_the_dtype_its_cpu_computes(tiny_model_dir, monkeypatch, native, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    engine = HFEngine(tiny_model_dir, seed=0, dtype="auto")
    assert {p.dtype for p in engine.model.parameters()} == {expected}


def two_turn_episodes(engine, prompts, sampling, observation):
    """Each prompt's first turn, then its second: the prompt, the sampled tokens and an observation."""
    async def episode(prompt):
        first = await engine.generate(prompt, sampling)
        second = await engine.generate(prompt + first.token_ids + observation, sampling)
        return first, second

    async def go():
        return await asyncio.gather(*(episode(p) for p in prompts))

    return asyncio.run(go())


def test_the_prefix_cache_runs_only_new_tokens_and_changes_no_token_or_logprob(tiny_model_dir):
    """A GRPO group's shared first prompt runs once, a second turn runs only its observation, and
    every token and logprob is what an engine without the cache produces."""
    plain = HFEngine(tiny_model_dir, seed=5)
    cached = HFEngine(tiny_model_dir, seed=5, prefix_cache_tokens=4096)
    group = [encode(plain, PROMPTS[0])] * 4
    prompts = group + [encode(plain, p) for p in PROMPTS[1:]]
    observation = encode(plain, " Doc 1 (Title: Jaws) Jaws is a film by Steven Spielberg.")
    sampling = SamplingParams(temperature=1.0, max_tokens=6)
    want = two_turn_episodes(plain, prompts, sampling, observation)
    got = two_turn_episodes(cached, prompts, sampling, observation)
    for (w1, w2), (g1, g2) in zip(want, got, strict=True):
        assert g1.token_ids == w1.token_ids and g2.token_ids == w2.token_ids
        assert g1.logprobs == pytest.approx(w1.logprobs, abs=1e-4)
        assert g2.logprobs == pytest.approx(w2.logprobs, abs=1e-4)
    # Without the cache every prompt runs whole; with it the group's prompt runs once and a second turn
    # runs its observation and the last sampled token.
    assert plain.prefill_tokens == sum(len(p) for p in prompts) + sum(
        len(p) + len(first.token_ids) + len(observation) for p, (first, _) in zip(prompts, want, strict=True))
    assert cached.prefill_tokens <= (len(group[0]) + 4 + sum(len(p) for p in prompts[4:])
                                     + len(prompts) * (len(observation) + 1))


def test_new_weights_empty_the_prefix_cache(tiny_model_dir):
    """KV cached under the old weights must not stand in for the new ones' (a second turn after a
    weight load equals that of an engine that only ever held the new weights)."""
    cached = HFEngine(tiny_model_dir, seed=0, prefix_cache_tokens=4096)
    fresh = HFEngine(tiny_model_dir, seed=0)
    prompt = encode(cached, PROMPTS[2])
    greedy = SamplingParams(greedy=True, max_tokens=6)
    first = generate_all(cached, [prompt], greedy)[0]
    state = perturbed_state(cached.model)
    asyncio.run(cached.load_state_dict(state, 1))
    asyncio.run(fresh.load_state_dict(state, 1))
    turn = prompt + first.token_ids + encode(cached, " and then")
    after, want = generate_all(cached, [turn], greedy)[0], generate_all(fresh, [turn], greedy)[0]
    assert after.token_ids == want.token_ids
    assert after.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_prompts_the_cache_starts_and_prompts_it_misses_run_apart_with_the_same_tokens(tiny_model_dir):
    """A second turn (its start cached) and new prompts (nothing cached) joining together run as two
    forwards, not one whose rows all span the cached prefix plus a whole new prompt; the tokens and
    logprobs are an engine's without the cache, drawn in the same order."""
    plain = HFEngine(tiny_model_dir, seed=3)
    cached = HFEngine(tiny_model_dir, seed=3, prefix_cache_tokens=4096)
    sampling = SamplingParams(temperature=1.0, max_tokens=6)
    first = encode(plain, PROMPTS[0])
    turn = generate_all(plain, [first], sampling)[0]
    assert generate_all(cached, [first], sampling)[0].token_ids == turn.token_ids
    joining = [encode(plain, PROMPTS[1]), first + turn.token_ids + encode(plain, " and then"), encode(plain, PROMPTS[3])]
    forwards = []
    run = cached._forward_prompts
    cached._forward_prompts = lambda prompts, matches: forwards.append([len(p) for p in prompts]) or run(prompts, matches)
    want, got = generate_all(plain, joining, sampling), generate_all(cached, joining, sampling)
    for w, g in zip(want, got, strict=True):
        assert g.token_ids == w.token_ids
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    assert forwards == [[len(joining[1])], [len(joining[0]), len(joining[2])]]


def test_a_row_drop_lets_go_of_the_old_cache_buffers(tiny_model_dir):
    """After finished rows leave, no layer holds the buffer its keys were cut from (it would stay
    allocated beside the new keys until the next step), and the next step writes into a fresh one."""
    engine = HFEngine(tiny_model_dir, seed=0, prefix_cache_tokens=4096)
    seen = []
    drop = engine._drop_finished

    def spy(batch):
        rows = len(batch.requests)
        out = drop(batch)
        if out is not None:
            seen.append((rows, len(out.requests), [(layer._key_buffer, layer._value_buffer) for layer in out.cache.layers],
                         [layer.keys.untyped_storage().data_ptr() for layer in out.cache.layers]))
        return out

    engine._drop_finished = spy
    prompts = [encode(engine, p) for p in PROMPTS[:2]]

    async def go():
        await asyncio.gather(engine.generate(prompts[0], SamplingParams(greedy=True, max_tokens=2)),
                             engine.generate(prompts[1], SamplingParams(greedy=True, max_tokens=6)))

    asyncio.run(go())
    dropped = [i for i, (before, after, _, _) in enumerate(seen) if after < before]
    assert dropped
    i = dropped[0]
    assert all(k is None and v is None for k, v in seen[i][2])
    # the step after: the keys live in a new buffer again
    assert all(k is not None for k, _ in seen[i + 1][2])
    assert seen[i + 1][3] != seen[i][3]
