"""The searcher (actor), its critic and the frozen reference policy; log-probs; Hugging Face export."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from s3ray.precision import compute_dtype
from s3ray.rollout.engine.hf import cache_kwarg
from s3ray.train.batch import Experience
from s3ray.train.losses import entropy_from_logits

if TYPE_CHECKING:  # annotations only: an update needs no config tree
    from s3ray.config import PolicyConfig

log = logging.getLogger(__name__)


def _apply_lora(model: nn.Module, policy_cfg: PolicyConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    lora = policy_cfg.lora
    peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                              target_modules=list(lora.target_modules), bias="none")
    model = get_peft_model(model, peft_cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d on %s: %d of %d parameters trainable", lora.r, lora.target_modules, trainable, total)
    return model


def autocast(policy_cfg: PolicyConfig, device: torch.device, enabled: bool = True):
    """The compute-precision context of a trained model's passes: fp32 weights, ``policy_cfg.dtype``
    compute (``enabled=False`` where FSDP's MixedPrecision already casts)."""
    dtype = compute_dtype(policy_cfg.dtype, device)
    if not enabled or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def freeze_below_top_layers(model: nn.Module, top: int) -> None:
    """Leave only the top ``top`` decoder layers and the final norm trainable (with LoRA: their
    adapters). Tied input/output embeddings stay frozen with the rest."""
    decoder = model.get_decoder()
    layers = decoder.layers
    if top > len(layers):
        raise ValueError(f"policy.trainable_layers={top}, but the model has {len(layers)} decoder layers")
    trainable = {id(p) for module in (*layers[len(layers) - top:], decoder.norm) for p in module.parameters()}
    for p in model.parameters():
        if id(p) not in trainable:
            p.requires_grad_(False)


def load_policy(model_dir: Path, policy_cfg: PolicyConfig) -> nn.Module:
    """The trainable searcher in fp32 (the master weights; passes compute in ``policy_cfg.dtype`` under
    :func:`autocast` or FSDP's MixedPrecision), optionally with LoRA adapters, only its top layers
    trained, and gradient checkpointing."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if policy_cfg.gradient_checkpointing:
        _enable_checkpointing(model)
        model.config.use_cache = False
    if policy_cfg.lora.enabled:
        model = _apply_lora(model, policy_cfg)
    if policy_cfg.trainable_layers is not None:
        freeze_below_top_layers(model, policy_cfg.trainable_layers)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("training the top %d decoder layers: %d of %d parameters", policy_cfg.trainable_layers, trained,
                 sum(p.numel() for p in model.parameters()))
    return model


def _enable_checkpointing(model: nn.Module) -> None:
    # Non-reentrant: works under FSDP and with inputs that need no grad (frozen embeddings under LoRA).
    # Transformers checkpoints only while the module is in train() mode.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_reference(model_dir: Path, policy_cfg: PolicyConfig, device: torch.device) -> nn.Module:
    """The frozen reference policy for the KL penalty: the searcher's initial weights, in eval mode, in
    the compute dtype of the device it will run on."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=compute_dtype(policy_cfg.dtype, device))
    model.requires_grad_(False)
    return model.eval()


class Critic(nn.Module):
    """The searcher's backbone with a scalar value head, initialised from the policy's weights.

    ``forward`` returns values at the predicting positions (``[B, L-1]``): the value at ``t`` is the
    expected return before the token at ``t + 1`` is chosen, aligned with the action mask.
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, init: str = "zeros", init_std: float = 0.02):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.value_head.bias)
        if init == "zeros":  # start from V = 0: no opinion about a reward whose scale (GBR) is centred near 0
            nn.init.zeros_(self.value_head.weight)
        elif init == "normal":  # the head transformers gives verl's critic (train.value_head_init)
            nn.init.normal_(self.value_head.weight, mean=0.0, std=init_std)
        else:
            raise ValueError(f"unknown value head init {init!r}; known: zeros, normal")

    @classmethod
    def from_pretrained(cls, model_dir: Path, policy_cfg: PolicyConfig, init: str = "zeros") -> Critic:
        from transformers import AutoModel

        # fp32 master weights, as the actor's (load_policy)
        backbone = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)
        if policy_cfg.gradient_checkpointing:
            _enable_checkpointing(backbone)
        if policy_cfg.lora.enabled:
            backbone = _apply_lora(backbone, policy_cfg)
        return cls(backbone, backbone.config.hidden_size, init,
                   getattr(backbone.config, "initializer_range", None) or 0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.value_head(hidden[:, :-1]).squeeze(-1).float()


class _TakenTokenHead(nn.Module):
    """Stands in for the LM head during one forward: hidden states ``[B, T+1, H]`` -> ``[B, T, 1 or 2]``
    (the log-prob of each scored target token under ``logits / temperature``, and the entropy if asked;
    0 at the positions not scored).

    Only the positions in ``scored`` (the searcher's own tokens) go through the head: in an s3 episode
    most response tokens are retrieved text, which the loss never reads, and the vocabulary projection
    is most of a small model's compute. Their logits exist ``chunk`` positions at a time, in fp32, and
    under autograd each chunk is recomputed in backward (checkpointed), so neither pass holds
    ``[positions, vocab]``: at a 152k vocabulary that is tens of GB per copy for long episodes.
    """

    def __init__(self, head: nn.Module, targets: torch.Tensor, scored: torch.Tensor, temperature: torch.Tensor,
                 with_entropy: bool, chunk: int):
        super().__init__()
        self.head = head
        self.targets, self.scored, self.temperature = targets, scored, temperature
        self.with_entropy, self.chunk = with_entropy, chunk

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        rows, cols = self.scored.nonzero(as_tuple=True)
        picked, targets, temps = hidden[rows, cols], self.targets[rows, cols], self.temperature[rows]
        parts = []
        for s in range(0, len(rows), self.chunk):
            args = (picked[s:s + self.chunk], targets[s:s + self.chunk], temps[s:s + self.chunk])
            parts.append(checkpoint(self._score, *args, use_reentrant=False) if torch.is_grad_enabled()
                         else self._score(*args))
        width = 2 if self.with_entropy else 1
        scores = torch.cat(parts) if parts else hidden.new_zeros(0, width, dtype=torch.float32)
        out = hidden.new_zeros(*self.scored.shape, width, dtype=torch.float32)
        return out.index_put((rows, cols), scores)

    def _score(self, hidden: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float() / temperature[:, None]
        log_z = torch.logsumexp(logits, dim=-1)
        taken = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - log_z
        if not self.with_entropy:
            return taken.unsqueeze(-1)
        return torch.stack([taken, entropy_from_logits(logits)], dim=-1)


def token_logprobs(model: nn.Module, batch: Experience, temperature: torch.Tensor | float = 1.0,
                   with_entropy: bool = False,
                   chunk_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the taken tokens, ``log_softmax(logits / T)``, at the predicting positions ``[B, L-1]``.

    This is the rollout engines' convention (the log-prob of a sampled token before top-p; T = 1 for
    greedy), so the rollout's and the trainer's numbers are comparable. Only the positions that predict
    a searcher token (``batch.action_mask``) are scored, ``chunk_tokens`` of them at a time (None: all
    at once): the model's LM head is swapped for :class:`_TakenTokenHead` during the forward, so the
    call goes through the model's (and its DDP / FSDP wrapper's) own ``forward``. The leading tokens all
    rows share (:func:`shared_prefix_length`) run once, as a KV cache the rows' own tokens attend to.
    Returns (logprobs, entropy or None); both are 0 wherever ``action_mask`` is 0.
    """
    rows, length = batch.input_ids.shape
    scored = batch.action_mask > 0
    first = int(scored.float().argmax(dim=1).min().item()) if scored.any() else length - 1
    keep = length - first  # hidden states for positions first .. length-1; the last one predicts nothing
    temp = torch.as_tensor(temperature, dtype=torch.float32, device=batch.input_ids.device).expand(rows)
    chunk = chunk_tokens or max(1, int(scored.sum().item()))
    inner = unwrap(model)
    prefix = shared_prefix_length(batch.input_ids, batch.attention_mask, first) if _can_share_prefix(model) else 0
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if prefix:
        cache_arg = cache_kwarg(inner)
        inputs = {**inputs, "input_ids": batch.input_ids[:, prefix:], "use_cache": True,
                  cache_arg: _prefix_cache(model, batch.input_ids[:1, :prefix], rows, cache_arg)}
    lm_head = inner.get_output_embeddings()
    inner.set_output_embeddings(_TakenTokenHead(lm_head, batch.input_ids[:, first + 1:], scored[:, first:], temp,
                                                with_entropy, chunk))
    try:
        scores = model(**inputs, logits_to_keep=keep).logits
    finally:
        inner.set_output_embeddings(lm_head)
    logp = torch.zeros(rows, length - 1, device=scores.device)
    logp[:, first:] = scores[..., 0]
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(logp)
        entropy[:, first:] = scores[..., 1]
    return logp, entropy


# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 32


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, limit: int) -> int:
    """How many leading tokens every row has in common (unpadded), at most ``limit``; 0 if under
    :data:`MIN_SHARED_PREFIX` or for a single row.

    Every s3 episode opens with the same chat template and instructions (hundreds of tokens, most of a
    small world's episode), and a GRPO group shares its whole question and turn-0 docs: those columns are
    computed once for the batch instead of once per row."""
    if input_ids.shape[0] < 2:
        return 0
    same = ((input_ids == input_ids[:1]) & (attention_mask > 0)).all(dim=0)[:limit]
    prefix = int(same.long().cumprod(0).sum().item())
    return prefix if prefix >= MIN_SHARED_PREFIX else 0


def _can_share_prefix(model: nn.Module) -> bool:
    """Whether a forward may split off a shared prefix. Not under FSDP (its unit hooks expect one forward
    per backward), and not under transformers' gradient checkpointing when training (its layers drop a
    passed KV cache, and the replay in backward would extend it a second time)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(model, FullyShardedDataParallel):
        return False
    return not (torch.is_grad_enabled() and any(getattr(m, "gradient_checkpointing", False)
                                                for m in unwrap(model).modules()))


def _prefix_cache(model: nn.Module, prefix_ids: torch.Tensor, rows: int, cache_arg: str):
    """The KV cache of one row's shared prefix, repeated for ``rows`` rows. Built with autograd on when it is
    on, so the loss's gradient reaches the prefix's keys and values as in one full-width forward."""
    out = model(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True, logits_to_keep=1)
    cache = getattr(out, cache_arg)
    cache.batch_repeat_interleave(rows)
    return cache


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / FSDP wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


_LORA_KEY = re.compile(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\.")


def hf_name(key: str) -> str | None:
    """The base model's name of a (LoRA-injected) model's state key; None for the adapters' own tensors."""
    return None if _LORA_KEY.search(key) else key.replace(".base_layer.", ".")


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The policy's weights under the base model's Hugging Face names, on CPU, LoRA merged in.

    This is what ``save_pretrained`` writes (the rollout engines get the same names, streamed:
    :mod:`s3ray.train.weight_stream`).
    """
    model = unwrap(model)
    if not hasattr(model, "merge_adapter"):
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    model.merge_adapter()
    try:
        base = model.get_base_model().state_dict()
        return {hf_name(k): v.detach().to("cpu", copy=True) for k, v in base.items() if hf_name(k)}
    finally:
        model.unmerge_adapter()


def export_pretrained(state: dict[str, torch.Tensor], base_model_dir: Path, out_dir: Path) -> Path:
    """Write Hugging Face-named weights (:func:`hf_state_dict`) as a plain model folder, with the base
    model's config and tokenizer: loadable by transformers and vLLM. Written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    model.load_state_dict(state)
    model.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(base_model_dir)).save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
