"""How the trainer's new weights reach the rollout engines: one seam, two strategies.

The trainer builds one sync and calls it on rank 0 after each update::

    sync = weight_sync_for(cfg, pool)
    sync.publish(weights, version)   # weights: metadata() then the tensors, in the rollout dtype

``weights`` (:class:`Weights`; the trainer's is :class:`s3ray.train.weight_stream.PolicyWeights`) gathers
one FSDP unit at a time while it is iterated, a collective in which the other ranks iterate it too; the
sync iterates it exactly once.

- :class:`ObjectStoreSync` (``rollout.backend=hf``, CPU or GPU): rank 0 collects the tensors (on CPU)
  into one state, puts it in the object store once (dropping its own copy) and hands the pool the ref
  *inside a list*. Ray resolves only top-level ``ObjectRef`` arguments, so the pool forwards the ref without deserialising the weights; each actor gets it as a
  top-level argument and reads it from the object store itself (one copy per actor, none in the pool).
  The pool keeps the ref and gives it again to an actor that restarts.
- :class:`NcclSync` (``rollout.backend=vllm``): vLLM's native weight transfer (vLLM 0.29.0,
  ``vllm/distributed/weight_transfer/nccl_engine.py``). Trainer rank 0 is rank 0 of an NCCL group
  whose other members are the vLLM engines' workers; vLLM's ``NCCLTrainerWeightTransferEngine`` streams
  the tensors in packed buckets (``packed_tensor.py``: fixed-size buffers, double-buffered) while each
  engine receives them through ``AsyncLLM.start_weight_update`` / ``update_weights`` /
  ``finish_weight_update`` and loads them with the model's own ``load_weights`` (layerwise reload).
  Each tensor is moved to the GPU as it is sent; nothing travels through the object store, and the
  group's source is dropped after the send, so no weights stay behind. The control calls go through
  :class:`PoolWeightSyncClient`, our implementation of vLLM's ``VLLMWeightSyncClient`` protocol: it fans
  out through the pool to every rollout actor, giving each engine its own ``rank_offset`` (vLLM's own
  Ray client sends every handle the same offset, which suits one data-parallel engine but not our
  independent engines, each of which numbers its workers from 0).

An actor restart changes the group's membership: the next ``publish`` sees the new member list and
forms a fresh group (new port); until then the restarted actor holds the model folder's weights and
takes no work (the pool asks the trainer to publish again when that stops a batch:
:class:`s3ray.rollout.pool.WeightsNeeded`). Re-forming destroys the old communicator (trainer side).

Every control call (membership, init, start, update, finish) waits at most
``rollout.transfer_timeout_s`` and then fails naming the step. The trainer's broadcast itself is an NCCL
collective inside vLLM (``send_weights`` runs the engines' ``update`` call in a thread beside it) with no
timeout of its own: a member that dies *during* the broadcast still leaves it waiting in NCCL, and the
``update`` call's timeout surfaces only once the broadcast returns (docs/cluster.md lists this).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from s3ray.ports import free_ports

log = logging.getLogger(__name__)

SyncStrategy = Literal["object_store", "nccl"]
TransferStep = Literal["init", "start", "update", "finish"]
WORKERS_PER_ENGINE = 1  # VLLMEngine runs one worker (no tensor parallelism): NCCL ranks per engine


class Weights(Protocol):
    def metadata(self) -> list[tuple[str, Any, tuple[int, ...]]]:
        """(name, dtype, shape) of every tensor, in iteration order, without gathering anything."""
        ...

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """(Hugging Face name, tensor in the rollout dtype), one at a time."""
        ...


class WeightSync(Protocol):
    def publish(self, weights: Weights, version: int) -> None:
        """Rank 0 calls it; it iterates ``weights`` once."""
        ...


def strategy_for(backend: str) -> SyncStrategy:
    return "nccl" if backend == "vllm" else "object_store"


def weight_sync_for(cfg, pool) -> WeightSync:
    """The strategy of ``cfg.rollout.backend`` (see the module docstring)."""
    if strategy_for(cfg.rollout.backend) == "nccl":
        return NcclSync(pool, timeout_s=cfg.rollout.transfer_timeout_s)
    return ObjectStoreSync(pool)


class ObjectStoreSync:
    def __init__(self, pool):
        self.pool = pool

    def publish(self, weights: Weights, version: int) -> None:
        import ray

        ref = ray.put({name: tensor.to("cpu") for name, tensor in weights})
        ray.get(self.pool.update_weights.remote([ref], version))


def bounded_get(ref, timeout_s: float | None, what: str):
    """``ray.get(ref)`` that waits at most ``timeout_s`` and then raises a ``TimeoutError`` naming ``what``
    (the pending call is cancelled: nothing keeps waiting on it)."""
    import ray
    from ray.exceptions import GetTimeoutError

    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError as err:
        ray.cancel(ref)
        raise TimeoutError(f"weight transfer: {what} did not finish within {timeout_s} s "
                           "(rollout.transfer_timeout_s)") from err


class PoolWeightSyncClient:
    """vLLM's ``VLLMWeightSyncClient`` protocol (``vllm/distributed/weight_transfer/base.py``: four
    synchronous methods taking plain dicts) over the rollout pool's ``weight_transfer`` fan-out.

    ``version`` is set before each transfer: vLLM's trainer engine calls ``finish_weight_update()``
    without one, and the actors record it as the weights they now hold."""

    def __init__(self, pool, timeout_s: float | None = None):
        self.pool = pool
        self.timeout_s = timeout_s
        self.version: int | None = None

    def _call(self, step: TransferStep, payload: Any = None) -> None:
        bounded_get(self.pool.weight_transfer.remote(step, payload), self.timeout_s,
                    f"the rollout engines' weight-transfer step {step!r}")

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._call("init", init_info)

    def start_weight_update(self) -> None:
        self._call("start")

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> None:
        self._call("update", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._call("finish", self.version)


class StreamedWeights:
    """:class:`Weights` as the two abstract methods of vLLM's ``WeightSource`` (metadata first, then the
    tensors in the same order), each tensor moved to ``device`` as it is sent: only the buckets in flight
    are on the GPU. :func:`weight_source` makes it a ``WeightSource``."""

    def __init__(self, weights: Weights | None, device):
        self.weights = weights
        self.device = device

    def metadata(self) -> list:
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [ParamMeta(name, dtype, shape) for name, dtype, shape in self.weights.metadata()]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name, tensor in self.weights:
            yield name, tensor.to(self.device, non_blocking=True)


def weight_source(weights: Weights | None, device):
    """:class:`StreamedWeights` as a subclass of vLLM 0.29.0's ``WeightSource`` ABC
    (``vllm/distributed/weight_transfer/base.py``), so the group API that other transfer backends call
    (``held_names``, ``groups``, ``iter_groups``: every name held, one gather group per decoder layer,
    checked against ``metadata()`` order) is vLLM's own. Built here because vllm is imported only where
    weights are transferred (not on CPU machines)."""
    from vllm.distributed.weight_transfer.base import WeightSource

    return type("WeightStreamSource", (StreamedWeights, WeightSource), {})(weights, device)


class NcclSync:
    """vLLM's NCCL weight transfer, re-forming the group whenever the pool's actors changed."""

    def __init__(self, pool, packed: bool = True, device=None, timeout_s: float | None = None):
        self.pool = pool
        self.packed = packed
        self.device = device  # where tensors go before NCCL sends them; None: this rank's current GPU
        self.timeout_s = timeout_s
        self.client = PoolWeightSyncClient(pool, timeout_s)
        self.engine = None  # vLLM's NCCLTrainerWeightTransferEngine
        self.members: list | None = None  # the actors (index, pid) that joined the current group

    def _connect(self, members: list) -> None:
        import ray
        from vllm.distributed.weight_transfer.nccl_engine import (
            NCCLTrainerInitInfo,
            NCCLTrainerWeightTransferEngine,
        )

        init_info = NCCLTrainerInitInfo(master_address=ray.util.get_node_ip_address(),
                                        master_port=free_ports(1, host="")[0],
                                        world_size=1 + WORKERS_PER_ENGINE * len(members), packed=self.packed,
                                        rank=0)
        if self.engine is not None:
            # vLLM's shutdown() only drops its reference to the communicator (nccl_engine.py); destroy it
            # first (PyNcclCommunicator.destroy aborts the NCCL comm) so re-forming leaks nothing.
            group = getattr(self.engine, "model_update_group", None)
            if group is not None and hasattr(group, "destroy"):
                group.destroy()
            self.engine.shutdown()
        # The engines join (through the client) while rank 0 opens its endpoint: vLLM runs both sides.
        self.engine = NCCLTrainerWeightTransferEngine.trainer_init(
            init_info, client=self.client, source=weight_source(None, None))
        self.members = members
        log.info("weight transfer group formed: trainer + %d rollout engines", len(members))

    def _live_members(self) -> list:
        return bounded_get(self.pool.transfer_members.remote(), self.timeout_s, "the rollout pool's member list")

    def publish(self, weights: Weights, version: int) -> None:
        import torch

        from s3ray.rollout.pool import actor_lost_errors

        members = self._live_members()
        if members != self.members:
            try:
                self._connect(members)
            except (*actor_lost_errors(), TimeoutError) as err:
                # An actor died between the member list and the group's init: the group never formed.
                # Once more with the actors alive now (a restarted one has a new pid and joins afresh).
                log.warning("weight transfer group did not form (%s); re-forming with the live actors", err)
                self.members = None
                self._connect(self._live_members())
        self.client.version = version
        device = self.device or torch.device("cuda", torch.cuda.current_device())
        self.engine.source = weight_source(weights, device)
        try:
            self.engine.send_weights()
        finally:
            self.engine.source = weight_source(None, None)  # keeps no reference to this publish's weights
