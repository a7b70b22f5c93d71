"""GPU FAISS: fp16 clones (half of fp32's memory), sharding on request, and an error, never a silent CPU
index, when FAISS sees no GPU."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from s3ray.config import IndexConfig
from s3ray.retrieval.indexing import build_faiss, gpu_index


def test_no_visible_gpu_is_an_error_not_a_cpu_index():
    pytest.importorskip("faiss")
    import faiss

    if hasattr(faiss, "GpuMultipleClonerOptions") and faiss.get_num_gpus() > 0:
        pytest.skip("FAISS sees a GPU here")
    index = build_faiss(np.eye(4, dtype=np.float32), IndexConfig())
    with pytest.raises(RuntimeError, match="use_gpu_faiss is set but FAISS sees no GPU"):
        gpu_index(index, IndexConfig(use_gpu_faiss=True))


@pytest.fixture
def gpu_faiss(monkeypatch):
    """A faiss module as faiss-gpu presents it, recording the cloner options it was given."""
    fake = types.ModuleType("faiss")
    fake.GpuMultipleClonerOptions = types.SimpleNamespace
    fake.get_num_gpus = lambda: 2
    fake.calls = []
    fake.index_cpu_to_all_gpus = lambda index, co=None, ngpu=-1: fake.calls.append((index, co)) or "gpu index"
    monkeypatch.setitem(sys.modules, "faiss", fake)
    return fake


@pytest.mark.parametrize("shard", [False, True])
def test_gpu_clone_is_fp16_and_shards_on_request(gpu_faiss, shard):
    assert gpu_index("cpu index", IndexConfig(use_gpu_faiss=True, gpu_shard=shard)) == "gpu index"
    [(index, options)] = gpu_faiss.calls
    assert index == "cpu index" and options.useFloat16 is True and options.shard is shard


def test_hnsw_has_no_gpu_index(gpu_faiss):
    with pytest.raises(ValueError, match="no GPU HNSW"):
        gpu_index("cpu index", IndexConfig(kind="hnsw", use_gpu_faiss=True))
