"""Rollout engines, one module each, behind one interface (:mod:`.base`): token ids in, sampled token
ids and their logprobs out.

- :mod:`.base`: ``SamplingParams``, ``Generation``, the ``RolloutEngine`` protocol, ``EngineDied``, ``hit_stop``.
- :mod:`.hf`: ``HFEngine``, a transformers causal LM with continuous batching (CPU default, also GPU).
- :mod:`.prefix_cache`: ``PrefixCache``, the KV of sequences ``HFEngine`` ran, for prompts that extend them.
- :mod:`.vllm`: ``VLLMEngine``, vLLM's async engine (GPU only; vllm is imported on first use).

The names are re-exported here: callers import them from ``s3ray.rollout.engine``. Importing this
package imports neither torch nor vllm (each engine imports its library when built).
"""

from s3ray.rollout.engine.base import (
    EngineDied,
    FinishReason,
    Generation,
    RolloutEngine,
    SamplingParams,
    hit_stop,
)
from s3ray.rollout.engine.hf import HFEngine
from s3ray.rollout.engine.vllm import VLLMEngine

__all__ = ["EngineDied", "FinishReason", "Generation", "HFEngine", "RolloutEngine",
           "SamplingParams", "VLLMEngine", "hit_stop"]
