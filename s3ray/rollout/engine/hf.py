"""The Hugging Face transformers engine: a causal LM with continuous batching (CPU default, also GPU)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3ray.rollout.engine.base import FinishReason, Generation, SamplingParams, hit_stop
from s3ray.rollout.engine.prefix_cache import PrefixCache


def cache_kwarg(model) -> str:
    """The name of a transformers causal LM's KV-cache argument and output: transformers renamed it from
    past_key_values to cache (5.2x), and both are within our supported range (>=5.0,<6). A PEFT (LoRA)
    model is read through its base model, whose ``forward`` names it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


# Tokens sorted for a nucleus before falling back to sorting the whole vocabulary.
NUCLEUS_TOPK = 256
# Free columns a cache layer keeps past its tokens: one copy of the past every SPARE_COLUMNS decode steps.
SPARE_COLUMNS = 128


@functools.cache
def spare_columns_layer_class():
    """transformers' ``DynamicLayer`` with free columns after its tokens (built on first use: importing
    this module imports no torch). ``DynamicLayer.update`` concatenates the past with each new token, a
    copy of the whole cache every decode step: 45 % of a SmolLM2 step at batch 16 and 800 past tokens
    on one CPU core. This layer writes the new columns in place and hands out a view of the filled
    ones. Whoever replaces ``keys`` and ``values`` (the engine's joins and row drops) calls
    :func:`release_spare_buffers`: the next update then copies into a fresh buffer, and the old one is
    freed at once instead of living on beside the new keys until then (measured: +2.9 GB held between a
    row drop and the next decode step, 15 rows of 4,300 columns of SmolLM2)."""
    from transformers.cache_utils import DynamicLayer

    class SpareColumnsLayer(DynamicLayer):
        _key_buffer = _value_buffer = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            filled = self.keys.shape[-2] if self.keys.numel() else 0
            need = filled + key_states.shape[-2]
            buffer = self._key_buffer
            if (buffer is None or buffer.shape[-2] < need or buffer.shape[:2] != key_states.shape[:2]
                    or (filled and self.keys.data_ptr() != buffer.data_ptr())):
                shape = (*key_states.shape[:2], need + SPARE_COLUMNS, key_states.shape[-1])
                self._key_buffer = key_states.new_empty(shape)
                self._value_buffer = value_states.new_empty(shape)
                if filled:
                    self._key_buffer[:, :, :filled] = self.keys
                    self._value_buffer[:, :, :filled] = self.values
            self._key_buffer[:, :, filled:need] = key_states
            self._value_buffer[:, :, filled:need] = value_states
            self.keys, self.values = self._key_buffer[:, :, :need], self._value_buffer[:, :, :need]
            return self.keys, self.values

    return SpareColumnsLayer


def release_spare_buffers(cache) -> None:
    """Drop the spare-column buffers of ``cache``'s layers after their keys and values were replaced (a
    view into a buffer keeps its storage alive by itself)."""
    for layer in cache.layers:
        layer._key_buffer = layer._value_buffer = None


def spare_columns_cache(filled=()):
    """A DynamicCache of :func:`spare_columns_layer_class` layers, holding ``filled`` (keys, values) per
    layer if given."""
    from transformers.cache_utils import DynamicCache

    layer_class = spare_columns_layer_class()
    cache = DynamicCache()
    cache.layer_class_to_replicate = layer_class
    for keys, values in filled:
        layer = layer_class()
        layer.update(keys, values)
        cache.layers.append(layer)
    return cache


def sample_tokens(logits, temperature, top_p, greedy, generator):
    """One token per row of ``logits`` [rows, vocab] and its log-prob under ``log_softmax(logits / T)``
    (the engines' convention: before top-p). A greedy row takes its argmax; any other row samples from
    its nucleus (the most likely tokens whose mass reaches its ``top_p``, the one crossing it included),
    or from the whole distribution when ``top_p >= 1``.

    Sampling is by inverse CDF, one uniform draw per row against the cumulative probabilities. Nothing is
    sorted without a nucleus to cut, a nucleus is cut from the top tokens when they hold it, and no
    ``torch.multinomial`` runs: for SmolLM2's 49k vocabulary at batch 8 on 2 cores, a full sort and
    multinomial took ~40 ms a decode step."""
    import torch

    logp = torch.log_softmax(logits / temperature[:, None], dim=-1)
    probs, order = logp.exp(), None
    nucleus = (top_p < 1.0) & ~greedy
    if bool(nucleus.any()):
        # A nucleus lies within the top NUCLEUS_TOPK tokens when their mass reaches top_p: only those
        # are sorted then. A greedy row's candidates do not matter (it takes its argmax).
        top, top_ids = probs.topk(min(NUCLEUS_TOPK, probs.shape[-1]), dim=-1)
        if bool((nucleus | greedy).all() and (top.sum(-1) >= top_p)[nucleus].all()):
            probs, order = top, top_ids
        else:
            probs, order = torch.sort(probs, dim=-1, descending=True)
        cut = torch.where(nucleus, top_p, torch.full_like(top_p, float("inf")))
        probs[probs.cumsum(-1) - probs >= cut[:, None]] = 0.0
    cdf = probs.double().cumsum(-1)  # float64: 49k fp32 terms would blur the tail tokens' share
    draw = torch.rand(len(cdf), 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    # The first token whose cumulative probability exceeds the draw: never one of zero probability (its
    # predecessor's sum is the same), except past the end, where a draw rounding onto the total falls.
    pick = torch.searchsorted(cdf, draw, right=True)
    past = pick >= probs.shape[-1]
    if bool(past.any()):
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1, keepdim=True)
        pick = torch.where(past, last, pick)
    sampled = (pick if order is None else order.gather(1, pick))[:, 0]
    tokens = torch.where(greedy, logp.argmax(-1), sampled)
    return tokens, logp.gather(1, tokens[:, None])[:, 0]


@dataclass
class _Request:
    prompt_ids: list[int]
    sampling: SamplingParams
    future: asyncio.Future
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: FinishReason | None = None


@dataclass
class _Batch:
    """The rows being decoded: their requests, KV cache, attention mask [rows, width], next positions
    [rows, 1] and the token each row feeds next."""

    requests: list[_Request]
    cache: Any
    mask: Any
    next_pos: Any
    tokens: list[int]

    @property
    def joinable(self) -> bool:
        """Rows can join (and unused columns be cut) when every layer keeps its whole past (no sliding
        window); otherwise newcomers wait for the batch to drain."""
        from transformers.cache_utils import DynamicLayer

        return all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in self.cache.layers)


class HFEngine:
    """A causal LM whose concurrent ``generate`` calls are decoded together, with continuous batching.

    Episodes call ``generate`` from many coroutines. One batch is decoded token by token with the KV
    cache; between two decode steps, requests that arrived meanwhile join it (up to ``max_batch`` rows):
    their prompts run forward together, left-padded, and their cache rows are appended to the batch's.
    A row leaves the batch (and its cache rows) when it stops on EOS, its ``max_tokens`` or a stop
    string, and its caller gets its result at once. Each step runs in a thread: the event loop stays
    free for retrieval calls and for new requests. An idle engine waits ``batch_wait_s`` (up to
    ``max_wait_s``) for its first batch to fill: episodes come back from a search within milliseconds
    of each other. A weight load waits for the batch to drain (no sequence mixes two policy versions);
    meanwhile no request joins.
    """

    def __init__(self, model_dir: str | Path, max_batch: int = 16, seed: int = 0, device: str = "cpu",
                 dtype: str = "float32", batch_wait_s: float = 0.01, max_wait_s: float = 0.1,
                 prefix_cache_tokens: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.cache_utils import DynamicCache, DynamicLayer

        from s3ray.precision import compute_dtype

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=compute_dtype(dtype, device))
        self._cache_arg = cache_kwarg(self.model)
        self.model.to(device).eval()
        self.device = torch.device(device)
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = frozenset(eos + ([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None
                                        else []))
        if not self.eos_ids:
            raise ValueError(f"{model_dir}: neither the generation config nor the tokenizer names an EOS token")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.max_wait_s = max_wait_s
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        # A sliding-window layer keeps only part of its past, so a cached prefix could not stand in for it.
        # Such a model also keeps the default cache (no spare columns: it would keep the whole past).
        self._full_past = all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers)
        self.prefix_cache = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens and self._full_past else None
        self.prefill_tokens = 0  # prompt tokens run forward (not taken from the prefix cache)
        self.version = 0
        # (rows joining, rows already decoding) at each admission: batching is observable in tests.
        self.admissions: list[tuple[int, int]] = []
        self._waiting: list[_Request] = []
        self._loads: list[tuple[dict[str, Any], int, asyncio.Future]] = []
        self._driver: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        if not prompt_ids:
            raise ValueError("generate needs a non-empty prompt")
        request = _Request(list(prompt_ids), sampling, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._wake()
        await request.future
        return Generation(request.token_ids, request.logprobs, request.finish)

    async def load_state_dict(self, state: dict[str, Any], version: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self._loads.append((state, version, done))
        self._wake()
        await done

    def _wake(self) -> None:
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        """The scheduler: admit waiting requests, run one step, hand out finished rows; repeat."""
        batch: _Batch | None = None
        while self._waiting or self._loads or batch is not None:
            if batch is None and self._loads:
                state, version, done = self._loads.pop(0)
                try:
                    await asyncio.to_thread(self._load, state, version)
                    done.set_result(None)
                except Exception as exc:
                    done.set_exception(exc)
                continue
            if batch is None:
                await self._gather_first()
            if self._loads or (batch is not None and not batch.joinable):
                room = 0
            else:
                room = self.max_batch - (len(batch.requests) if batch else 0)
            joining = [r for r in self._waiting[:room] if not r.future.done()]  # cancelled callers drop out
            del self._waiting[:room]
            if batch is None and not joining:
                continue
            rows = (batch.requests if batch else []) + joining
            try:
                batch = await asyncio.to_thread(self._step, batch, joining)
            except Exception as exc:  # every caller in the batch sees the failure
                for r in rows:
                    if not r.future.done():
                        r.future.set_exception(exc)
                batch = None
                continue
            for r in rows:
                if r.finish is not None and not r.future.done():
                    r.future.set_result(None)

    async def _gather_first(self) -> None:
        """Wait while requests keep arriving, up to ``max_wait_s``: a step costs more than that wait."""
        waited = 0.0
        while waited < self.max_wait_s and len(self._waiting) < self.max_batch:
            seen = len(self._waiting)
            await asyncio.sleep(self.batch_wait_s)
            waited += self.batch_wait_s
            if len(self._waiting) == seen:
                break  # quiet for batch_wait_s: nobody else is about to ask

    def _step(self, batch: _Batch | None, joining: list[_Request]) -> _Batch | None:
        """One decode step of ``batch``, then the prefill of ``joining`` appended to it; finished rows
        leave. Returns the batch that goes on (None when every row finished)."""
        import torch

        with torch.inference_mode():
            if batch is not None:
                step = torch.tensor(batch.tokens, dtype=torch.long, device=self.device)[:, None]
                batch.mask = torch.cat([batch.mask, torch.ones_like(step)], dim=1)
                out = self.model(input_ids=step, attention_mask=batch.mask, position_ids=batch.next_pos,
                                 use_cache=True, **{self._cache_arg: batch.cache})
                batch.next_pos = batch.next_pos + 1
                batch.tokens = self._sample_rows(out.logits[:, -1, :], batch.requests)
            if joining:
                self.admissions.append((len(joining), len(batch.requests) if batch else 0))
                new = self._prefill(joining)
                batch = new if batch is None else self._concat(batch, new)
            return self._drop_finished(batch)

    def _prefill(self, requests: list[_Request]) -> _Batch:
        """The joining requests' prompts run forward, then one token is sampled for each, in arrival order.

        Rows whose prompt the prefix cache does not start and rows it does run as two forwards: in one,
        every row spans the longest cached prefix plus the longest uncached rest, and a missed prompt's
        rest is all of it, so a single miss among extended episodes doubled every row's width (15 rows of
        ~1,900 cached and ~470 new tokens beside one 2,400-token miss: 4,300 columns each, 3.0 GB of KV
        instead of ~1.7 GB). Joined afterwards, the two are only left-padded to the longer one."""
        import torch

        if self.prefix_cache is not None:
            self._prefill_shared(requests)
        matches = [self._match(r.prompt_ids) for r in requests]
        groups = [g for g in ([i for i, (_, n) in enumerate(matches) if n],
                              [i for i, (_, n) in enumerate(matches) if not n]) if g]
        batches, logits = [], [None] * len(requests)
        for group in groups:
            rows = [requests[i] for i in group]
            cache, mask, positions, group_logits = self._forward_prompts([r.prompt_ids for r in rows],
                                                                         [matches[i] for i in group])
            batches.append(_Batch(rows, cache, mask, positions[:, -1:] + 1, []))
            for i, row_logits in zip(group, group_logits, strict=True):
                logits[i] = row_logits
        # Rows in arrival order: every step draws its samples row by row.
        batch = batches[0] if len(batches) == 1 else self._concat(*batches, at=groups[0] + groups[1])
        batch.tokens = self._sample_rows(torch.stack(logits), requests)
        return batch

    def _prefill_shared(self, requests: list[_Request]) -> None:
        """A prompt that several joining requests share, and that the cache does not already hold, runs
        forward once first (all but its last token, which each row runs to sample from); the rows then
        start from its cached KV."""
        counts = Counter(tuple(r.prompt_ids) for r in requests)
        shared = [list(ids[:-1]) for ids, n in counts.items()
                  if n > 1 and len(ids) > 1 and self.prefix_cache.match(ids, len(ids) - 1)[1] < len(ids) - 1]
        if shared:
            cache, mask, _, _ = self._forward_prompts(shared, [self._match(ids) for ids in shared])
            for row, ids in enumerate(shared):
                self.prefix_cache.add(ids, self._row_kv(cache, mask, row))

    def _match(self, ids: list[int]) -> tuple[Any, int]:
        """The prefix cache's KV for the longest cached start of ``ids`` and its length (``(None, 0)``
        without one); the last token always runs, to sample from."""
        return self.prefix_cache.match(ids, len(ids) - 1) if self.prefix_cache is not None else (None, 0)

    def _forward_prompts(self, prompts: list[list[int]], matches: list[tuple[Any, int]]):
        """Run the prompts forward from their cached prefixes (``matches``, from :meth:`_match`): each
        row's cached KV right-aligned in the first columns, its uncached tokens left-padded in the last.
        Returns the cache, the attention mask over all columns, the positions of the last columns and the
        logits of each row's last token."""
        import torch

        past = max(n for _, n in matches)
        width = max(len(ids) - n for ids, (_, n) in zip(prompts, matches, strict=True))
        rows = len(prompts)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, past + width), dtype=torch.long)
        for i, (prompt, (_, n)) in enumerate(zip(prompts, matches, strict=True)):
            rest = prompt[n:]
            ids[i, width - len(rest):] = torch.tensor(rest)
            mask[i, past - n:past] = 1
            mask[i, past + width - len(rest):] = 1
        self.prefill_tokens += sum(len(p) - n for p, (_, n) in zip(prompts, matches, strict=True))
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Positions count real tokens only, so each row sees what it would alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        if past:
            cached = {self._cache_arg: self._past_cache(matches, past)}
        else:
            cached = {self._cache_arg: spare_columns_cache()} if self._full_past else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **cached)
        return getattr(out, self._cache_arg), mask, positions, out.logits[:, -1, :]

    def _past_cache(self, matches: list[tuple[Any, int]], past: int):
        """A cache of ``past`` columns holding each row's matched KV right-aligned (zeros before it, masked)."""
        kv = next(kv for kv, n in matches if n)
        layers = []
        for layer, (key, value) in enumerate(kv):
            keys = key.new_zeros((len(matches), key.shape[1], past, key.shape[3]))
            values = value.new_zeros((len(matches), value.shape[1], past, value.shape[3]))
            for row, (row_kv, n) in enumerate(matches):
                if n:
                    keys[row, :, past - n:] = row_kv[layer][0][0, :, :n]
                    values[row, :, past - n:] = row_kv[layer][1][0, :, :n]
            layers.append((keys, values))
        return spare_columns_cache(layers)

    @staticmethod
    def _row_kv(cache, mask, row: int) -> list[tuple[Any, Any]]:
        """One row's keys and values [1, heads, tokens, dim] per layer, its padding columns left out."""
        columns = mask[row].nonzero().squeeze(-1)  # index_select: 2.6x faster than indexing with it on CPU
        return [(layer.keys[row:row + 1].index_select(2, columns),
                 layer.values[row:row + 1].index_select(2, columns)) for layer in cache.layers]

    def _sample_rows(self, logits, requests: list[_Request]) -> list[int]:
        tokens, logprobs = self._sample(logits.float(), [r.sampling for r in requests])
        for r, token, logprob in zip(requests, tokens, logprobs, strict=True):
            self._accept(r, token, logprob)
        return tokens

    @staticmethod
    def _concat(a: _Batch, b: _Batch, at: list[int] | None = None) -> _Batch:
        """One batch of both, the i-th of a's rows then b's at row ``at[i]`` (default: a's, then b's).
        Each layer's keys and values are written once into zeros of the wider width, right-aligned (the
        columns left of the narrower batch's are masked): padding, joining and reordering in one copy."""
        import torch

        width, total = max(a.mask.shape[1], b.mask.shape[1]), len(a.requests) + len(b.requests)
        if at is None:
            rows_a, rows_b = slice(0, len(a.requests)), slice(len(a.requests), total)
            order = list(range(total))
        else:
            rows_a = torch.tensor(at[:len(a.requests)], device=a.mask.device)
            rows_b = torch.tensor(at[len(a.requests):], device=a.mask.device)
            order = sorted(range(total), key=at.__getitem__)  # which of a's then b's rows lands at each row

        def place(ta, tb, dim: int):  # ``dim``: the column dimension
            out = ta.new_zeros((total, *ta.shape[1:dim], width, *ta.shape[dim + 1:]))
            out.narrow(dim, width - ta.shape[dim], ta.shape[dim])[rows_a] = ta
            out.narrow(dim, width - tb.shape[dim], tb.shape[dim])[rows_b] = tb
            return out

        for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
            la.keys, la.values = place(la.keys, lb.keys, 2), place(la.values, lb.values, 2)
        release_spare_buffers(a.cache)
        next_pos = torch.cat([a.next_pos, b.next_pos])[torch.tensor(order, device=a.next_pos.device)]
        requests, tokens = a.requests + b.requests, a.tokens + b.tokens
        return _Batch([requests[i] for i in order], a.cache, place(a.mask, b.mask, 1), next_pos,
                      [tokens[i] for i in order] if tokens else [])

    def _drop_finished(self, batch: _Batch) -> _Batch | None:
        """Finished rows leave the batch (no compute is spent on them); so do columns no row attends to."""
        import torch

        keep = [i for i, r in enumerate(batch.requests) if r.finish is None]
        if self.prefix_cache is not None:  # finished rows leave the KV of their prompt and sampled tokens
            for i, r in enumerate(batch.requests):
                if r.finish is not None:
                    ran, kv = r.prompt_ids + r.token_ids[:-1], self._row_kv(batch.cache, batch.mask, i)
                    if kv[0][0].shape[2] != len(ran):
                        raise RuntimeError(f"a finished row holds KV of {kv[0][0].shape[2]} tokens, "
                                           f"but ran {len(ran)}: the batch's cache and mask disagree")
                    self.prefix_cache.add(ran, kv)
        if not keep:
            return None
        if len(keep) < len(batch.requests):
            index = torch.tensor(keep, device=self.device)
            batch.cache.batch_select_indices(index)
            release_spare_buffers(batch.cache)
            batch.mask, batch.next_pos = batch.mask[index], batch.next_pos[index]
            batch.requests, batch.tokens = [batch.requests[i] for i in keep], [batch.tokens[i] for i in keep]
            first = int(batch.mask.any(0).int().argmax())  # the first column some row attends to
            if first and batch.joinable:
                for layer in batch.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
                batch.mask = batch.mask[:, first:]
        return batch

    def _sample(self, logits, params: list[SamplingParams]) -> tuple[list[int], list[float]]:
        """One token per row of ``logits`` [rows, vocab], all rows at once, and its logprob at the row's T."""
        import torch

        def column(values, dtype=None):
            return torch.tensor(values, dtype=dtype, device=logits.device)

        tokens, logp = sample_tokens(logits, column([p.logprob_temperature for p in params]),
                                     column([p.top_p for p in params]),
                                     column([p.greedy for p in params], torch.bool), self.rng)
        return tokens.tolist(), logp.tolist()

    def _accept(self, r: _Request, token: int, logprob: float) -> None:
        r.token_ids.append(token)
        r.logprobs.append(logprob)
        if token in self.eos_ids:
            r.finish = "eos"
        elif hit_stop(self.tokenizer, r.token_ids, r.sampling.stop):
            r.finish = "stop"
        elif len(r.token_ids) >= r.sampling.max_tokens:
            r.finish = "length"

    def _load(self, state: dict[str, Any], version: int) -> None:
        self.model.load_state_dict(state, strict=True)
        self.version = version
        if self.prefix_cache is not None:  # the cached KV came from the old weights
            self.prefix_cache.clear()
