"""A stand-in for vLLM 0.29.0's trainer side of the NCCL weight transfer, for machines without vLLM:
the same classes and calls, in the order ``NCCLTrainerWeightTransferEngine.trainer_init`` /
``send_weights`` make them (vllm/distributed/weight_transfer/nccl_engine.py), with the broadcast replaced
by recording what the source yields. The rollout side's calls go through the real pool unchanged."""

from __future__ import annotations

import abc
import sys
import types
from dataclasses import dataclass

import torch


@dataclass
class FakeInitInfo:
    master_address: str
    master_port: int
    world_size: int
    packed: bool = True
    rank: int = 0


@dataclass(frozen=True)
class FakeParamMeta:
    name: str
    dtype: torch.dtype
    shape: tuple


class FakeWeightSource(abc.ABC):
    """vLLM 0.29.0's ``WeightSource`` contract (weight_transfer/base.py): two abstract methods, and the group
    API's defaults built on them (every name held; groups in metadata order, iteration checked against it).
    One group per name here; vLLM groups per decoder layer."""

    @abc.abstractmethod
    def metadata(self): ...

    @abc.abstractmethod
    def __iter__(self): ...

    def held_names(self):
        return None

    def groups(self):
        return [[m.name] for m in self.metadata()]

    def iter_groups(self):
        it = iter(self)
        for group in self.groups():
            names, tensors = [], []
            for expected in group:
                name, tensor = next(it)
                if name != expected:
                    raise RuntimeError(f"yielded {name!r}, expected {expected!r}")
                names.append(name)
                tensors.append(tensor)
            yield names, tensors


class FakeCommunicator:
    """vLLM's PyNcclCommunicator: ``destroy()`` aborts the NCCL communicator."""

    def __init__(self):
        self.destroyed = False

    def destroy(self):
        self.destroyed = True


class FakeTrainerEngine:
    made: list = []

    @classmethod
    def trainer_init(cls, init_info, *, client, source=None):
        engine = cls()
        engine.init_info, engine.client, engine.source, engine.sent, engine.closed = init_info, client, source, [], False
        engine.model_update_group = FakeCommunicator()
        client.init_weight_transfer_engine({"master_address": init_info.master_address, "rank_offset": 1,
                                            "master_port": init_info.master_port,
                                            "world_size": init_info.world_size})
        cls.made.append(engine)
        return engine

    def send_weights(self):
        meta = self.source.metadata()
        self.client.start_weight_update()
        self.client.update_weights({"names": [m.name for m in meta], "dtype_names": [str(m.dtype) for m in meta],
                                    "shapes": [list(m.shape) for m in meta]})
        self.sent.append([(name, t.dtype, tuple(t.shape)) for name, t in self.source])
        self.client.finish_weight_update()

    def shutdown(self):
        self.closed = True


def fake_trainer_side(monkeypatch) -> type[FakeTrainerEngine]:
    """Install the fake as the ``vllm`` modules that :class:`s3ray.rollout.weight_sync.NcclSync` imports."""
    names = ["vllm", "vllm.distributed", "vllm.distributed.weight_transfer",
             "vllm.distributed.weight_transfer.nccl_engine", "vllm.distributed.weight_transfer.base"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["vllm.distributed.weight_transfer.nccl_engine"].NCCLTrainerInitInfo = FakeInitInfo
    sys.modules["vllm.distributed.weight_transfer.nccl_engine"].NCCLTrainerWeightTransferEngine = FakeTrainerEngine
    sys.modules["vllm.distributed.weight_transfer.base"].ParamMeta = FakeParamMeta
    sys.modules["vllm.distributed.weight_transfer.base"].WeightSource = FakeWeightSource
    FakeTrainerEngine.made = []
    return FakeTrainerEngine
