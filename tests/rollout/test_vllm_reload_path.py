"""VLLMEngine.load_state_dict on CPU, against a fake AsyncLLM that behaves as vLLM 0.29.0's
``GPUModelRunner.reload_weights(weights_path=...)`` does: it keeps the path as ``model_config.model``
and a later ``reload_weights()`` reads from there. The folder must outlive the call and hold the latest
weights; shutdown removes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from safetensors.torch import load_file

from s3ray.rollout.engine import VLLMEngine


class FakeAsyncLLM:
    def __init__(self):
        self.model_path: str | None = None  # vLLM's model_config.model after a reload from a path
        self.shut = False

    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        assert method == "reload_weights"
        self.model_path = kwargs["weights_path"]
        return self.reload_from_model_path()

    def reload_from_model_path(self) -> dict[str, torch.Tensor]:
        """What ``reload_weights()`` without a path would load: the *.safetensors of model_config.model."""
        files = sorted(Path(self.model_path).glob("*.safetensors"))
        assert files, f"{self.model_path} holds no weights"
        return {k: v for f in files for k, v in load_file(f).items()}

    async def reset_prefix_cache(self):
        return True

    def shutdown(self):
        self.shut = True


def engine_with_fake_llm() -> VLLMEngine:
    engine = VLLMEngine.__new__(VLLMEngine)  # no vllm on CPU: the attributes __init__ sets, with the fake
    engine.llm, engine.version, engine._requests, engine._weights_dir = FakeAsyncLLM(), 0, 0, None
    return engine


def test_the_weights_path_outlives_the_load_and_holds_the_latest_weights():
    engine = engine_with_fake_llm()
    first, second = {"w": torch.zeros(2, 3)}, {"w": torch.ones(2, 3)}
    asyncio.run(engine.load_state_dict(first, 1))
    asyncio.run(engine.load_state_dict(second, 2))
    assert engine.version == 2
    later = engine.llm.reload_from_model_path()  # a path-less reload after the calls returned
    assert torch.equal(later["w"], second["w"])
    assert [p.name for p in Path(engine.llm.model_path).iterdir()] == ["model.safetensors"]
    engine.shutdown()
    assert engine.llm.shut and not Path(engine.llm.model_path).exists()
