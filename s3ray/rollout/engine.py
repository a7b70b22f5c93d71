"""Rollout engines: token ids in, sampled token ids and their logprobs out.

Every engine speaks token ids so that an episode's record is exactly what the policy saw and wrote
(nothing is re-encoded from text). ``Generation.logprobs[i]`` is ``log_softmax(logits / T)[token_i]``
over the full vocabulary, with T the sampling temperature (1 when greedy): the quantity the trainer
recomputes (``Episode.temperature``). Top-p only narrows which tokens can be drawn; the recorded logprob
stays the full-distribution one, so rollout and trainer logprobs agree on the same weights. One
documented exception: with top_p < 1, vLLM reports the nucleus-renormalised logprob, higher by at most
-log(top_p) (see the vLLM section).

- :class:`HFEngine`: a transformers causal LM with continuous batching (CPU default, also GPU).
- :class:`VLLMEngine`: vLLM's async engine (GPU only; vllm is imported on first use).
- :class:`HeuristicEngine`: the rule-based searcher of the warm start, behind the same interface.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

FinishReason = Literal["eos", "stop", "length"]  # eos token / stop string / max_tokens


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 500
    stop: tuple[str, ...] = ()  # a sequence ends once its decoded text contains one; its tokens are kept
    greedy: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0; use greedy=True for argmax decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def logprob_temperature(self) -> float:
        """The T of the recorded logprobs: log_softmax(logits / T)."""
        return 1.0 if self.greedy else self.temperature


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason


class EngineDied(RuntimeError):
    """The engine's own process is gone (vLLM's engine core): no call on this engine can succeed again,
    so the rollout actor holding it ends and is restarted (:mod:`s3ray.rollout.actor`)."""


class RolloutEngine(Protocol):
    version: int  # the policy version of the loaded weights

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation: ...

    async def load_state_dict(self, state: dict[str, Any], version: int) -> None: ...


def stop_window(stop: tuple[str, ...]) -> int:
    """Tokens to decode to see a stop string that the newest token completed: every token is at least
    one byte, so a stop string spans at most its byte length in tokens (plus one partial token)."""
    return max((len(s.encode()) for s in stop), default=0) + 1


def hit_stop(tokenizer, token_ids: list[int], stop: tuple[str, ...]) -> bool:
    """Does the decoded tail of ``token_ids`` contain a stop string? Called after every new token,
    so a stop string is found at the token that completes it."""
    if not stop:
        return False
    tail = tokenizer.decode(token_ids[-stop_window(stop):], skip_special_tokens=False)
    return any(s in tail for s in stop)


# --------------------------------------------------------------------------------------------
# Hugging Face transformers
# --------------------------------------------------------------------------------------------
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

        return all(type(layer) is DynamicLayer for layer in self.cache.layers)


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
                 dtype: str = "float32", batch_wait_s: float = 0.01, max_wait_s: float = 0.1):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        # transformers renamed the KV-cache argument and output from past_key_values to cache (5.2x);
        # both spellings are within our supported range (>=5.0,<6).
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"
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
        import torch

        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for i, r in enumerate(requests):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Left padding: positions count real tokens only, so each row sees what it would alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        tokens = self._sample_rows(out.logits[:, -1, :], requests)
        return _Batch(list(requests), getattr(out, self._cache_arg), mask, positions[:, -1:] + 1, tokens)

    def _sample_rows(self, logits, requests: list[_Request]) -> list[int]:
        tokens, logprobs = self._sample(logits.float(), [r.sampling for r in requests])
        for r, token, logprob in zip(requests, tokens, logprobs, strict=True):
            self._accept(r, token, logprob)
        return tokens

    @staticmethod
    def _concat(a: _Batch, b: _Batch) -> _Batch:
        """One batch of both: the shorter one's cache and mask are left-padded (masked) to the same width."""
        import torch
        import torch.nn.functional as F

        width = max(a.mask.shape[1], b.mask.shape[1])

        def pad(t, dim_from_end: int):  # zeros on the left of the sequence dimension
            missing = width - t.shape[-dim_from_end]
            return t if missing == 0 else F.pad(t, (0, 0) * (dim_from_end - 1) + (missing, 0))

        for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
            la.keys = torch.cat([pad(la.keys, 2), pad(lb.keys, 2)])
            la.values = torch.cat([pad(la.values, 2), pad(lb.values, 2)])
        return _Batch(a.requests + b.requests, a.cache, torch.cat([pad(a.mask, 1), pad(b.mask, 1)]),
                      torch.cat([a.next_pos, b.next_pos]), a.tokens + b.tokens)

    def _drop_finished(self, batch: _Batch) -> _Batch | None:
        """Finished rows leave the batch (no compute is spent on them); so do columns no row attends to."""
        import torch

        keep = [i for i, r in enumerate(batch.requests) if r.finish is None]
        if not keep:
            return None
        if len(keep) < len(batch.requests):
            index = torch.tensor(keep, device=self.device)
            batch.cache.batch_select_indices(index)
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

        temperature = torch.tensor([p.logprob_temperature for p in params], device=logits.device)
        top_p = torch.tensor([1.0 if p.greedy else p.top_p for p in params], device=logits.device)
        logp = torch.log_softmax(logits / temperature[:, None], dim=-1)
        # Nucleus per row: the most likely tokens whose mass reaches top_p (the one crossing it included).
        sorted_probs, order = torch.sort(logp.exp(), dim=-1, descending=True)
        sorted_probs[sorted_probs.cumsum(-1) - sorted_probs >= top_p[:, None]] = 0.0
        sampled = torch.gather(order, 1, torch.multinomial(sorted_probs, 1, generator=self.rng))[:, 0]
        greedy = torch.tensor([p.greedy for p in params], device=logits.device)
        tokens = torch.where(greedy, logp.argmax(-1), sampled)
        return tokens.tolist(), logp.gather(1, tokens[:, None])[:, 0].tolist()

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


# --------------------------------------------------------------------------------------------
# vLLM (GPU)
# --------------------------------------------------------------------------------------------
# Every vLLM call below was checked against vLLM 0.29.0's own source (the PyPI wheel
# vllm-0.29.0-cp38-abi3-manylinux_2_28_x86_64.whl); `make check-vllm-api` re-checks the signatures.
# - AsyncEngineArgs(model, seed, dtype, gpu_memory_utilization, max_model_len, logprobs_mode,
#   enable_prefix_caching, weight_transfer_config): vllm/engine/arg_utils.py (EngineArgs fields);
#   WeightTransferConfig(backend="nccl"): vllm/config/weight_transfer.py.
# - AsyncLLM.from_engine_args(args), .generate(prompt, sampling_params, request_id) (an async
#   generator of RequestOutput), .collective_rpc(method, timeout, args, kwargs), .reset_prefix_cache(),
#   .init_weight_transfer_engine(WeightTransferInitRequest), .start_weight_update(),
#   .update_weights(WeightTransferUpdateRequest), .finish_weight_update(weight_version), .shutdown():
#   vllm/v1/engine/async_llm.py. When the engine-core process dies, generate raises EngineDeadError
#   (vllm/v1/engine/exceptions.py: "Unrecoverable"; async_llm.py re-raises it unwrapped, while other
#   failures become the recoverable EngineGenerateError). The weight-transfer calls reach the GPU worker's methods of the same
#   names (vllm/v1/worker/gpu_worker.py) and its NCCLWeightTransferEngine.
# - collective_rpc is called with a method *name* only. A Python function would be cloudpickled,
#   which the engine-core channel refuses unless VLLM_ALLOW_INSECURE_SERIALIZATION=1
#   (vllm/v1/serial_utils.py: MsgpackEncoder.enc_hook), and untyped tensor arguments would not come
#   back as tensors. The worker's own reload_weights(weights_path=...) (gpu_worker.py ->
#   GPUModelRunner.reload_weights) reads a safetensors folder through the model's loader, inside
#   vLLM's layerwise-reload lifecycle, so only a path string crosses the channel.
# - SamplingParams(temperature, top_p, max_tokens, stop, include_stop_str_in_output, logprobs,
#   skip_special_tokens): vllm/sampling_params.py; TokensPrompt(prompt_token_ids): vllm/inputs.
#   CompletionOutput.token_ids / .logprobs (one {token id: Logprob} per position, list or FlatLogprobs)
#   / .finish_reason / .stop_reason: vllm/outputs.py, vllm/logprobs.py.
# - logprobs_mode="processed_logprobs" (vllm/config/model.py LogprobsMode; the sampler in
#   vllm/v1/sample/sampler.py and ops/topk_topp_sampler.py): log_softmax of the logits after the
#   temperature *and* the top-k/top-p mask. The other modes are before temperature ("raw_*") or are
#   unnormalised logits, and a single token's raw logprob cannot be rescaled to temperature T (that needs
#   the whole vocabulary's, logprobs=-1, 152k floats per token). So vLLM's logprob is the nucleus-
#   renormalised one: it exceeds the full-distribution log_softmax(logits / T) by -log(nucleus mass),
#   between 0 and -log(top_p) (0.051 at top_p 0.95), and equals it at top_p 1 and when greedy. The
#   trainer recomputes logp_old itself, so this bias reaches only the logprob_gap metric, as a floor.
#   tests/rollout/test_vllm_engine.py pins both cases against transformers.
VLLM_LOGPROBS_MODE = "processed_logprobs"


def _contiguous_copies(state: dict[str, Any]) -> dict[str, Any]:
    """CPU tensors that safetensors can write: tied weights (one storage, two names) become copies."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


class VLLMEngine:
    """vLLM's async engine with token-id prompts. Weights arrive by vLLM's NCCL weight transfer
    (:meth:`weight_transfer`, driven by :class:`s3ray.rollout.weight_sync.NcclSync`) or, for a state dict
    in hand (:meth:`load_state_dict`), through a safetensors folder the worker reloads from.

    One ``VLLMEngine`` per process, used from one event loop: ``AsyncLLM``'s output handler is a task
    on the loop that first used it.
    """

    def __init__(self, model_dir: str | Path, seed: int = 0, gpu_memory_utilization: float = 0.5,
                 max_model_len: int | None = None, dtype: str = "auto"):
        try:
            from vllm import AsyncEngineArgs
            from vllm.config import WeightTransferConfig
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ImportError("rollout.backend=vllm needs the vllm package (GPU machines: pip install "
                              "'s3ray[gpu]'); use rollout.backend=hf on CPU") from exc
        args = AsyncEngineArgs(model=str(model_dir), seed=seed, dtype=dtype,
                               gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                               logprobs_mode=VLLM_LOGPROBS_MODE, enable_prefix_caching=True,
                               weight_transfer_config=WeightTransferConfig(backend="nccl"))
        self.llm = AsyncLLM.from_engine_args(args)
        self.version = 0
        self._requests = 0
        self._weights_dir: Path | None = None  # where load_state_dict's weights live (vLLM keeps the path)

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        params = VSamplingParams(
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_tokens, stop=list(sampling.stop), include_stop_str_in_output=True,
            logprobs=0, skip_special_tokens=False)
        self._requests += 1
        final = None
        try:
            async for output in self.llm.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params,
                                                  request_id=f"s3ray-{self._requests}"):
                final = output  # the last output holds the whole sequence
        except EngineDeadError as exc:  # vLLM's "unrecoverable": the engine-core process died
            raise EngineDied(f"vLLM's engine core died: {exc}") from exc
        out = final.outputs[0]
        token_ids = list(out.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(out.logprobs, token_ids, strict=True)]
        if out.finish_reason == "length":
            finish = "length"
        else:  # vLLM's "stop" covers EOS (stop_reason None) and stop strings (stop_reason the string)
            finish = "stop" if isinstance(out.stop_reason, str) else "eos"
        return Generation(token_ids, logprobs, finish)

    async def load_state_dict(self, state: dict[str, Any], version: int) -> None:
        """Hugging Face-named weights in hand: written as one safetensors file, which every worker
        reloads through the model's loader.

        The folder lives as long as the engine (removed by :meth:`shutdown`) and always holds the
        latest weights: vLLM 0.29.0's ``GPUModelRunner.reload_weights(weights_path=...)`` sets
        ``model_config.model`` to the path for good, so a folder deleted after the call would leave the
        engine pointing at nothing (a later ``reload_weights()`` reloads from ``model_config.model``)."""
        import tempfile

        from safetensors.torch import save_file

        if self._weights_dir is None:
            self._weights_dir = Path(tempfile.mkdtemp(prefix="s3ray-weights-"))
        partial, final = self._weights_dir / "model.safetensors.partial", self._weights_dir / "model.safetensors"
        await asyncio.to_thread(save_file, _contiguous_copies(state), str(partial))
        os.replace(partial, final)  # the loader globs *.safetensors: it never sees a half-written file
        await self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self._weights_dir)})
        await self._new_weights(version)

    async def _new_weights(self, version: int) -> None:
        # Cached prefixes were computed by the old weights. The reset fails (returns False) while
        # requests run; weights only change between batches, so that would be a bug, not a race.
        if not await self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache: requests are still running")
        self.version = version

    async def weight_transfer(self, step: str, payload: Any = None) -> None:
        """One step of vLLM's NCCL weight transfer; ``payload``: the init info dict (``init``), the
        update info (``update``) or the new version (``finish``)."""
        from vllm.distributed.weight_transfer.base import (
            WeightTransferInitRequest,
            WeightTransferUpdateRequest,
        )

        if step == "init":
            await self.llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info=payload))
        elif step == "start":
            await self.llm.start_weight_update()
        elif step == "update":  # returns once this engine's workers received every bucket
            await self.llm.update_weights(WeightTransferUpdateRequest(update_info=payload))
        elif step == "finish":
            await self.llm.finish_weight_update(weight_version=str(payload))
            await self._new_weights(payload)
        else:
            raise ValueError(f"unknown weight transfer step {step!r}; known: init, start, update, finish")

    def shutdown(self) -> None:
        self.llm.shutdown()
        if self._weights_dir is not None:
            shutil.rmtree(self._weights_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The rule-based warm-start searcher
# --------------------------------------------------------------------------------------------
class HeuristicEngine:
    """:func:`s3ray.agent.heuristic.heuristic_turn` behind the engine interface.

    It decodes what it is fed (prompt and episode so far), writes the heuristic's next turn and returns
    that text's token ids with logprob 0. A completing turn ends with the EOS token, as a model's would,
    so the warm-started model learns to stop there; a query turn ends at ``</query>``.

    The n-th episode this engine starts from the same prompt gets draw n (the ``format`` teacher's
    entity, chosen at the first turn): several samples of a question name different entities, as
    samples of a model would.
    """

    def __init__(self, tokenizer, agent_cfg, teacher: str = "bridge"):
        self.tokenizer = tokenizer
        self.agent_cfg = agent_cfg
        self.teacher = teacher
        self.version = 0
        self._draws: dict[str, int] = {}  # question and turn-0 results -> episodes started from them

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        from s3ray.agent.heuristic import heuristic_turn
        from s3ray.agent.prompt import SENTINEL

        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        start, _, turns = text.partition(SENTINEL)[2].partition("</information>")
        draw = 0
        if not any(tag in turns for tag in ("<query>", "<important_info>", "<search_complete>")):
            draw = self._draws[start] = self._draws.get(start, -1) + 1  # an episode's first turn
        text = heuristic_turn(text, self.agent_cfg, self.teacher, draw=draw)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        finish: FinishReason = "stop" if any(s in text for s in sampling.stop) else "eos"
        if finish == "eos" and self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[:sampling.max_tokens], "length"
        return Generation(ids, [0.0] * len(ids), finish)

    async def load_state_dict(self, state: dict[str, Any], version: int) -> None:
        raise TypeError("the heuristic searcher has no weights")
