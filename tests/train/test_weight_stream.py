"""Publishing one FSDP unit at a time (gloo, 2 ranks on CPU): the stream holds exactly the full gather's
tensors (Hugging Face names, LoRA merged, the rollout dtype, its metadata's order), and rank 0's peak
extra memory while a sender consumes it stays far below one fp32 copy of the model."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train.distributed import hf_full_state
from s3ray.train.update import build_learner
from s3ray.train.weight_stream import PolicyWeights

from .conftest import run_ranks

CPU = torch.device("cpu")
LAYERS = 16
TRAIN = TrainConfig(strategy="fsdp", num_workers=2, algorithm="grpo", kl_coef=0.0)


def _stream_vs_full_gather(rank: int, world: int, model_dir: str, out: str, lora: bool) -> None:
    policy_cfg = PolicyConfig(lora={"enabled": lora, "r": 4, "alpha": 8, "dropout": 0.0})
    learner = build_learner(Path(model_dir), policy_cfg, TRAIN, CPU)
    if lora:  # adapters that change the merged weights
        with torch.no_grad():
            for name, p in learner.actor.named_parameters():
                if "lora_B" in name:
                    p.normal_()
    stream = PolicyWeights(learner.actor, torch.bfloat16)
    streamed = list(stream)  # every rank iterates: the gathers are collectives
    full = hf_full_state(learner.actor)
    if rank == 0:
        torch.save({"meta": stream.metadata(), "streamed": streamed, "full": full}, out)
    else:
        assert streamed == []


@pytest.mark.parametrize("lora", [False, True])
def test_the_stream_is_the_full_gather_in_the_rollout_dtype(random_lm_dir, tmp_path, lora):
    out = tmp_path / "stream.pt"
    run_ranks(_stream_vs_full_gather, 2, str(random_lm_dir), str(out), lora)
    result = torch.load(out, weights_only=False)
    streamed, full = result["streamed"], result["full"]
    assert [name for name, _ in streamed] == list(full)  # the state dict's names and order (tied head too)
    assert result["meta"] == [(name, torch.bfloat16, tuple(t.shape)) for name, t in full.items()]
    for name, tensor in streamed:
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, full[name].to(torch.bfloat16)), name


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The highest resident set size of this process while the block runs, sampled every millisecond."""

    def __enter__(self):
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def _publish_peak(rank: int, world: int, model_dir: str, out: str) -> None:
    """Rank 0's peak extra RSS while a sender consumes each tensor (a checksum, keeping none): the stream
    first, then the whole-model gather it replaced (second: memory the first freed may be reused
    unseen, which can only make the gather look smaller)."""
    learner = build_learner(Path(model_dir), PolicyConfig(), TRAIN, CPU)
    sent = []
    with PeakRss() as streamed:
        for _, tensor in PolicyWeights(learner.actor, torch.bfloat16):
            sent.append(float(tensor.float().sum()))
    with PeakRss() as gathered:
        state = hf_full_state(learner.actor)
        for tensor in (state or {}).values():
            float(tensor.to(torch.bfloat16).float().sum())
        del state
    if rank == 0:
        fp32 = sum(4 * p.numel() for p in learner.actor.parameters()) * world  # the shards of every rank
        torch.save({"streamed": streamed.extra, "gathered": gathered.extra, "fp32": fp32, "sent": len(sent)},
                   out)


@pytest.fixture(scope="module")
def layered_lm_dir(tmp_path_factory) -> Path:
    """Decoder layers of 2.2M parameters and a 4.2M-parameter (tied) embedding: units small beside the model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=8192, hidden_size=512, intermediate_size=1024, num_hidden_layers=LAYERS,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    out = tmp_path_factory.mktemp("layered_lm")
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def test_publish_peak_memory_is_far_below_a_full_fp32_copy(layered_lm_dir, tmp_path, monkeypatch):
    # A real model's units (hundreds of MB) are above glibc's largest dynamic mmap threshold (32 MB), so
    # each is mmapped and returned on free. These small ones would be carved from the heap, where freed
    # memory stays resident; the fixed threshold gives the ranks (fresh processes) the large-model behaviour.
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(256 * 1024))
    out = tmp_path / "peak.pt"
    run_ranks(_publish_peak, 2, str(layered_lm_dir), str(out))
    result = torch.load(out, weights_only=False)
    mb = 1 << 20
    print(f"\npublish on rank 0, peak extra RSS: streamed {result['streamed'] / mb:.1f} MB, whole-model gather "
          f"{result['gathered'] / mb:.1f} MB; the fp32 model is {result['fp32'] / mb:.1f} MB; "
          f"{result['sent']} tensors sent")
    assert result["sent"] > LAYERS * 9  # every layer's tensors were sent
    assert result["streamed"] < result["fp32"] / 2
    assert result["streamed"] < result["gathered"] / 3
