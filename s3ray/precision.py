"""The compute dtype a config names (``policy.dtype``), on the device that runs it.

``auto`` is bf16 where the device computes it natively (a CUDA GPU with bf16, a CPU with AVX-512-BF16 or
AMX) and fp32 elsewhere. On a CPU without them torch emulates bf16 matrix products: measured on a 2-core
AVX2 AMD EPYC, a bf16 matmul ran at 0.9 GFLOP/s against 32.5 in fp32, where on an AVX-512-BF16 Xeon a bf16
forward + backward took half the fp32 time. A default that halves the step on one CPU must not make it
thirty times slower on the next: the trainer, the rollout engines and the warm start each resolve it on
their own device.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(getattr(cpu, probe, lambda: False)()
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def compute_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """The torch dtype of ``name`` (``auto``, ``float32``, ``bfloat16``, ``float16``) on ``device``."""
    device = torch.device(device)
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    dtype = getattr(torch, name)
    if dtype == torch.bfloat16 and device.type == "cpu" and not native_bf16(device):
        _warn_emulated_bf16()
    return dtype


@functools.cache
def _warn_emulated_bf16() -> None:
    log.warning("policy.dtype=bfloat16 on a CPU without AVX-512-BF16 or AMX (%s): torch emulates bf16 here, "
                "tens of times slower than float32; set policy.dtype=auto (bf16 only where it is native)",
                torch.backends.cpu.get_cpu_capability())
