"""``HandleRetriever``: how callers inside the cluster (rollout actors, the precompute, the reward)
retrieve: through a Serve deployment handle on the retriever app, without the HTTP proxy and JSON.

Each caller coalesces its own concurrent searches: while one handle call is in flight, the queries of
every ``asearch`` that comes in meanwhile wait and then go out together as the next call. A rollout
actor's episodes that search in the same turn thus make one call between them, and the replica's
``@serve.batch`` merges the calls of different callers into one encoder pass. A call of
``split_min_queries`` queries or more goes out as one chunk per replica (:mod:`s3ray.retrieval.split`),
each to a replica's ``search_here``: the chunks are encoded side by side, one hop away, instead of
reaching the other replicas through the first.

Same interface as :class:`~s3ray.retrieval.client.RetrieverClient` (``asearch``, ``search``); failures
raise :class:`~s3ray.retrieval.client.RetrievalError`, never an empty result.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from s3ray.config import S3Config
from s3ray.retrieval.client import RetrievalError, RetrieverClient
from s3ray.retrieval.split import chunks, search_chunks
from s3ray.serving import AppHandle
from s3ray.types import Doc


@dataclass
class _Waiting:
    queries: list[str]
    k: int
    future: asyncio.Future


@dataclass
class _LoopState:
    """One event loop's queue of searches and whether a handle call is being made for it."""

    waiting: list[_Waiting] = field(default_factory=list)
    sender: asyncio.Task | None = None


def split_results(batch: list[_Waiting], results: list[list[Doc]]) -> list[list[list[Doc]]]:
    """Hand each waiting search its own queries' results, cut to its own k (the call used the largest)."""
    out, start = [], 0
    for w in batch:
        out.append([docs[:w.k] for docs in results[start:start + len(w.queries)]])
        start += len(w.queries)
    return out


class HandleRetriever:
    def __init__(self, app_name: str, max_queries: int = 1024, replicas: int = 1, split_min_queries: int = 0):
        self.app_name = app_name
        self.url = f"serve:{app_name}"  # names the retriever in records and logs, as a client's URL does
        self.max_queries = max_queries
        self.replicas = replicas
        self.split_min_queries = split_min_queries
        self._app = AppHandle(app_name)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Ray: the handle and the queues are rebuilt where the copy lands.
        return {"app_name": self.app_name, "max_queries": self.max_queries, "replicas": self.replicas,
                "split_min_queries": self.split_min_queries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"HandleRetriever({self.app_name!r})"

    async def asearch(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        """Top-``k`` passages per query (scores filled), in query order."""
        if not queries:
            return []
        loop = asyncio.get_running_loop()
        state = self._loops.setdefault(loop, _LoopState())
        waiting = _Waiting(list(queries), k, loop.create_future())
        state.waiting.append(waiting)
        if state.sender is None or state.sender.done():
            state.sender = loop.create_task(self._send(state))
        return await waiting.future

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        """Blocking ``asearch``, for scripts and tests (not from inside an event loop)."""
        return asyncio.run(self.asearch(queries, k))

    async def _send(self, state: _LoopState) -> None:
        while state.waiting:
            batch, total = [], 0
            while state.waiting and (not batch or total + len(state.waiting[0].queries) <= self.max_queries):
                batch.append(state.waiting.pop(0))
                total += len(batch[-1].queries)
            try:
                results = await self._search([q for w in batch for q in w.queries], max(w.k for w in batch))
            except Exception as err:  # every search of the call sees the failure
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(err)
                continue
            for w, docs in zip(batch, split_results(batch, results), strict=True):
                if not w.future.done():
                    w.future.set_result(docs)

    async def _search(self, queries: list[str], k: int) -> list[list[Doc]]:
        """One call, or one per chunk to replicas' ``search_here``, their results in query order."""
        parts = chunks(queries, self.replicas, self.split_min_queries)
        if len(parts) == 1:
            return await self._call("search", queries, k)
        return await search_chunks(parts, lambda _, chunk: self._call("search_here", chunk, k))

    async def _call(self, method: str, queries: list[str], k: int) -> list[list[Doc]]:
        try:
            return await getattr(await self._app.get(), method).remote(queries, k)
        except Exception as err:
            raise RetrievalError(f"retriever app {self.app_name!r} failed on {len(queries)} queries: "
                                 f"{type(err).__name__}: {err}") from err


def in_cluster_retriever(cfg: S3Config) -> HandleRetriever | RetrieverClient:
    """The retriever for callers running inside the Ray cluster: the Serve app's handle, or HTTP at
    ``retriever.url`` when ``retriever.use_handle`` is off (a retriever outside the cluster)."""
    if cfg.retriever.use_handle:
        from s3ray.resources import ray_cores, resolve_resources

        r = resolve_resources(cfg, ray_cores())[0].retriever  # the replicas the app was deployed with
        return HandleRetriever(r.app_name, max_queries=r.max_queries, replicas=r.num_replicas,
                               split_min_queries=r.split_min_queries)
    return RetrieverClient.from_config(cfg)
