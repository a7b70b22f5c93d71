"""policy.dtype resolved on the device that runs it: auto is bf16 only where the hardware computes it."""

import logging

import pytest
import torch

from s3ray import precision
from s3ray.precision import compute_dtype


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Make the CPU report native bf16 (True) or not (False), whatever this machine has."""
    def set_native(native: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        precision._warn_emulated_bf16.cache_clear()
    return set_native


@pytest.mark.parametrize("native,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_is_bf16_only_on_a_cpu_that_computes_it(cpu_bf16, native, expected):
    cpu_bf16(native)
    assert compute_dtype("auto", "cpu") == expected
    assert compute_dtype("auto", torch.device("cpu")) == expected


def test_amx_counts_as_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert compute_dtype("auto", "cpu") == torch.bfloat16


def test_an_explicit_dtype_is_kept_and_emulated_bf16_is_named_once(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger="s3ray.precision"):
        assert compute_dtype("float32", "cpu") == torch.float32
        assert not caplog.records
        assert compute_dtype("bfloat16", "cpu") == torch.bfloat16
        assert compute_dtype("bfloat16", "cpu") == torch.bfloat16
    [warning] = caplog.records
    assert "policy.dtype=auto" in warning.getMessage()


def test_native_bf16_cpu_gives_no_warning(cpu_bf16, caplog):
    cpu_bf16(True)
    with caplog.at_level(logging.WARNING, logger="s3ray.precision"):
        assert compute_dtype("bfloat16", "cpu") == torch.bfloat16
    assert not caplog.records

