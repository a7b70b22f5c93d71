"""Per-rank GPU memory of the trainer, planned from the model's config on the meta device (no weights).

Printed before training; a run whose plan exceeds ``train.gpu_memory_gb`` is refused with the numbers.
Lines (bytes per rank, GB = 1e9 B):

- actor / critic states: fp32 weights + fp32 grads + AdamW's two fp32 moments, 16 B per parameter, split
  over the ranks by FSDP (whole under DDP); 0 on the GPU with ``train.fsdp_cpu_offload`` (FSDP's
  ``CPUOffload``: shards, grads and the optimizer step live in host memory).
- reference: frozen weights in ``policy.dtype`` on every rank (not sharded); none when ``train.kl_coef`` is 0.
- unsharded units: FSDP gathers one unit at a time in the compute dtype; the root unit (embeddings,
  lm_head, final norm) stays gathered through a forward and backward with its gradient, and the next
  decoder layer is prefetched; the root's gradient is cast to fp32 for its reduce-scatter.
- activations: micro_batch_size x agent.max_total_tokens tokens. With gradient checkpointing each layer
  keeps its input (hidden) and one layer is recomputed at a time; without, every layer keeps its own.
  A layer's saved tensors are about 6 hidden + 2 kv + 4 intermediate values per token (norm inputs, q, k,
  v, attention and projection outputs, residuals; gate, up, activation, product) in the compute dtype.
- logit chunk: ``train.logprob_chunk_tokens`` positions x vocabulary, once in the compute dtype and three
  times in fp32 (logits, log_softmax, the entropy's probabilities).
- transfer buffers: vLLM's packed NCCL weight transfer, DEFAULT_PACKED_NUM_BUFFERS (2) x
  DEFAULT_PACKED_BUFFER_SIZE_BYTES (1 GiB) on rank 0 (vllm/distributed/weight_transfer/packed_tensor.py).
- CUDA context, and 10% of the sum for the caching allocator's fragmentation.

These are estimates of the dominant terms, not an allocator trace; `make gpu-check` is where they get
compared with a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from s3ray.config import S3Config

GB = 1e9
STATE_BYTES = 16  # fp32 weight + fp32 grad + AdamW exp_avg + exp_avg_sq
TRANSFER_BUFFERS = 2 * 1024**3  # vLLM 0.29.0 packed_tensor.py: 2 buffers of 1 GiB
CUDA_CONTEXT = 1.0 * GB
FRAGMENTATION = 0.10
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: bf16 on the GPUs planned for


@dataclass(frozen=True)
class ModelShape:
    params: int  # with lm_head (policy) or without (critic backbone)
    layer_params: int  # one decoder layer: an FSDP unit
    layers: int
    hidden: int
    kv_dim: int
    intermediate: int
    vocab: int

    @property
    def root_params(self) -> int:
        """What FSDP's root unit holds: everything outside the decoder layers."""
        return self.params - self.layers * self.layer_params


def model_shapes(model_dir: str | Path) -> tuple[ModelShape, ModelShape]:
    """(policy, critic backbone) shapes of the model at ``model_dir``, built on the meta device from its
    config.json alone. The critic's value head (hidden + 1 parameters) is added to its count."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from s3ray.train.distributed import decoder_layer_classes

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        policy, backbone = AutoModelForCausalLM.from_config(config), AutoModel.from_config(config)
    classes = tuple(decoder_layer_classes(policy))
    layer = next(m for m in policy.modules() if isinstance(m, classes))
    layer_params = sum(p.numel() for p in layer.parameters())
    heads = config.num_attention_heads
    kv_dim = getattr(config, "num_key_value_heads", heads) * (getattr(config, "head_dim", None)
                                                              or config.hidden_size // heads)

    def shape(params: int) -> ModelShape:
        return ModelShape(params, layer_params, config.num_hidden_layers, config.hidden_size, kv_dim,
                          config.intermediate_size, config.vocab_size)

    return (shape(sum(p.numel() for p in policy.parameters())),
            shape(sum(p.numel() for p in backbone.parameters()) + config.hidden_size + 1))


@dataclass(frozen=True)
class MemoryPlan:
    lines: dict[str, float]  # bytes per rank, in table order
    budget: float | None  # bytes per GPU, None when undeclared

    @property
    def total(self) -> float:
        return sum(self.lines.values())

    @property
    def fits(self) -> bool:
        return self.budget is None or self.total <= self.budget

    def table(self) -> str:
        width = max(len(name) for name in self.lines)
        rows = [f"{name:<{width}}  {value / GB:7.2f} GB" for name, value in self.lines.items()]
        rows.append(f"{'total per rank':<{width}}  {self.total / GB:7.2f} GB")
        if self.budget is not None:
            rows.append(f"{'GPU memory':<{width}}  {self.budget / GB:7.2f} GB  "
                        f"({'fits' if self.fits else 'DOES NOT FIT'})")
        return "\n".join(rows)


def plan(cfg: S3Config, policy: ModelShape, critic: ModelShape) -> MemoryPlan:
    """The per-rank plan of ``cfg`` (GPU training) for models of these shapes."""
    tc = cfg.train
    world = max(tc.num_workers, 1)
    cb = DTYPE_BYTES[cfg.policy.dtype]
    shards = world if tc.strategy == "fsdp" else 1
    on_gpu = 0 if tc.fsdp_cpu_offload else 1
    from s3ray.train.algorithms import algorithm_for

    with_critic = algorithm_for(tc).uses_critic
    lines = {"actor states (fp32 w+g+adam)": on_gpu * STATE_BYTES * policy.params / shards}
    if with_critic:
        lines["critic states (fp32 w+g+adam)"] = on_gpu * STATE_BYTES * critic.params / shards
    lines["reference weights"] = cb * policy.params if tc.kl_coef else 0.0  # no KL term: not loaded
    root = max(policy.root_params, critic.root_params if with_critic else 0)
    lines["unsharded FSDP units"] = (cb * (root + 2 * policy.layer_params) + cb * root + 4 * root
                                     if tc.strategy == "fsdp" else 0.0)
    tokens = tc.micro_batch_size * cfg.agent.max_total_tokens
    layer_acts = tokens * cb * (6 * policy.hidden + 2 * policy.kv_dim + 4 * policy.intermediate)
    if cfg.policy.gradient_checkpointing:
        lines["activations"] = policy.layers * tokens * policy.hidden * cb + layer_acts
    else:
        lines["activations"] = policy.layers * layer_acts
    lines["logit chunk"] = tc.logprob_chunk_tokens * policy.vocab * (cb + 3 * 4)
    lines["weight-transfer buffers (rank 0)"] = TRANSFER_BUFFERS if cfg.rollout.backend == "vllm" else 0.0
    lines["CUDA context"] = CUDA_CONTEXT
    lines["allocator fragmentation (10%)"] = FRAGMENTATION * sum(lines.values())
    budget = tc.gpu_memory_gb * GB if tc.gpu_memory_gb is not None else None
    return MemoryPlan(lines, budget)


def check_memory_plan(cfg: S3Config, model_dir: str | Path) -> MemoryPlan | None:
    """Print the plan of a GPU run and refuse one that cannot fit; None for CPU or LoRA runs (the plan
    models full fine-tuning on GPUs)."""
    import logging

    if not cfg.train.use_gpu or cfg.policy.lora.enabled:
        return None
    result = plan(cfg, *model_shapes(model_dir))
    logging.getLogger(__name__).info("trainer memory plan per rank (%s x %d ranks, %s):\n%s",
                                     cfg.train.strategy, max(cfg.train.num_workers, 1), model_dir, result.table())
    if not result.fits:
        raise ValueError(f"the trainer cannot fit train.gpu_memory_gb={cfg.train.gpu_memory_gb}: plan per rank\n"
                         f"{result.table()}\nraise train.num_workers, set train.fsdp_cpu_offload=true, or lower "
                         "train.micro_batch_size / train.logprob_chunk_tokens")
    return result


def print_memory_plan(cfg: S3Config) -> int:
    """`s3ray memory-plan`: the plan of the configured policy model, whatever train.use_gpu says."""
    result = plan(cfg, *model_shapes(cfg.policy_model_dir))
    print(result.table())
    return 0 if result.fits else 1
