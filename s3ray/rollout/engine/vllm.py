"""vLLM's async engine (GPU only; vllm is imported on first use)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from s3ray.rollout.engine.base import EngineDied, Generation, SamplingParams

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
