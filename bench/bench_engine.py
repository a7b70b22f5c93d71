"""The rollout engine's overhead on the real searcher: SmolLM2-135M-Instruct (bundled) sampling a batch of
s3 searcher prompts in :class:`HFEngine` (continuous batching, stop strings, per-token log-probs) against
a bare transformers ``generate`` of the same model, dtype, prompts and batch, alternately, medians over
the rounds:

    engine.tokens_per_s.smollm2   generated tokens per second (baseline: bare ``generate``)

and what the engine's prefix cache saves on a GRPO group's episodes: one question's ``GROUP`` samples, each a
query turn, an observation of 3 docs and a second turn, as the rollout runs them:

    engine.episodes_per_s.smollm2.prefix_cache   (baseline: the same engine with rollout.prefix_cache_tokens=0)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

from common import figure

BATCH = 8
MAX_TOKENS = 32
ROUNDS = 3
GROUP = 8
DTYPE = "auto"  # the SmolLM2 presets' policy.dtype: bf16 only on a CPU that computes it natively


def hotpot(n_docs: int, n_questions: int):
    """The first docs of the bundled HotpotQA corpus and the first dev questions."""
    from s3ray.config import load_config
    from s3ray.types import Doc

    data = load_config(None).paths.data_dir / "hotpotqa"
    with open(data / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in islice(f, n_docs)]
    with open(data / "dev.jsonl", encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for line in islice(f, n_questions)]
    return [Doc(r["id"], r["contents"].split("\n", 1)[0], r["contents"].split("\n", 1)[-1]) for r in rows], questions


def searcher_prompts(tokenizer, n: int) -> list[list[int]]:
    from s3ray.agent.prompt import encode_prompt, searcher_messages
    from s3ray.config import AgentConfig

    docs, questions = hotpot(3 * n, n)
    return [encode_prompt(tokenizer, searcher_messages(q, docs[3 * i:3 * i + 3], AgentConfig()))
            for i, q in enumerate(questions)]


def engine_rate(engine, prompts: list[list[int]]) -> float:
    from s3ray.rollout.engine import SamplingParams

    sampling = SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS)

    async def run():
        return await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))

    t0 = time.perf_counter()
    out = asyncio.run(run())
    return sum(len(g.token_ids) for g in out) / (time.perf_counter() - t0)


def bare_rate(model, tokenizer, prompts: list[list[int]]) -> float:
    import torch

    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                             max_new_tokens=MAX_TOKENS, pad_token_id=pad)
    new = out[:, width:]
    # Rows that ended early are padded to the longest: count each row's tokens up to its EOS.
    eos = tokenizer.eos_token_id
    tokens = sum(int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else len(row) for row in new)
    return tokens / (time.perf_counter() - t0)


def group_rate(engine, prompt: list[int], observation: list[int]) -> float:
    """Episodes per second of GROUP two-turn episodes of one prompt, run concurrently."""
    from s3ray.rollout.engine import SamplingParams

    sampling = SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS)

    async def episode():
        first = await engine.generate(prompt, sampling)
        await engine.generate(prompt + first.token_ids + observation, sampling)

    async def run():
        await asyncio.gather(*(episode() for _ in range(GROUP)))

    t0 = time.perf_counter()
    asyncio.run(run())
    return GROUP / (time.perf_counter() - t0)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s3ray.bundled_models import ensure_bundled_model
    from s3ray.precision import compute_dtype
    from s3ray.rollout.engine import HFEngine

    with tempfile.TemporaryDirectory(prefix="s3ray-bench-engine-") as tmp:
        model_dir = ensure_bundled_model("bundled:smollm2-135m-instruct", Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        prompts = searcher_prompts(tokenizer, BATCH)
        engine = HFEngine(model_dir, max_batch=BATCH, dtype=DTYPE)
        bare = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=compute_dtype(DTYPE, "cpu")).eval()
        ours, theirs = [], []
        for _ in range(ROUNDS):  # alternately: the machine's load drifts
            ours.append(engine_rate(engine, prompts))
            theirs.append(bare_rate(bare, tokenizer, prompts))
        # The group: the first prompt's question; its observation, 3 docs no prompt holds.
        from s3ray.agent.observation import render_information

        observation = tokenizer.encode(render_information(hotpot(3 * BATCH + 3, 0)[0][-3:]),
                                       add_special_tokens=False)
        cached = HFEngine(model_dir, max_batch=GROUP, dtype=DTYPE, prefix_cache_tokens=16384)
        uncached = HFEngine(model_dir, max_batch=GROUP, dtype=DTYPE, prefix_cache_tokens=0)
        with_cache, without = [], []
        for _ in range(ROUNDS):
            with_cache.append(group_rate(cached, prompts[0], observation))
            without.append(group_rate(uncached, prompts[0], observation))
    figure("engine.tokens_per_s.smollm2", statistics.median(ours), "tokens/s", statistics.median(theirs))
    figure("engine.episodes_per_s.smollm2.prefix_cache", statistics.median(with_cache), "episodes/s",
           statistics.median(without))


if __name__ == "__main__":
    main()
