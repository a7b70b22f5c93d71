"""``HandleRetriever``: how callers inside the cluster (rollout actors, the precompute, the reward)
retrieve: through a Serve deployment handle on the retriever app, without the HTTP proxy and JSON.

Each caller coalesces its own concurrent searches: while one handle call is in flight, the queries of
every ``asearch`` that comes in meanwhile wait and then go out together as the next call. A rollout
actor's episodes that search in the same turn thus make one call between them, and the replica's
``@serve.batch`` merges the calls of different callers into one encoder pass.

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
    def __init__(self, app_name: str, max_queries: int = 1024):
        self.app_name = app_name
        self.url = f"serve:{app_name}"  # names the retriever in records and logs, as a client's URL does
        self.max_queries = max_queries
        self._app = AppHandle(app_name)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Ray: the handle and the queues are rebuilt where the copy lands.
        return {"app_name": self.app_name, "max_queries": self.max_queries}

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
                results = await self._call([q for w in batch for q in w.queries], max(w.k for w in batch))
            except Exception as err:  # every search of the call sees the failure
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(err)
                continue
            for w, docs in zip(batch, split_results(batch, results), strict=True):
                if not w.future.done():
                    w.future.set_result(docs)

    async def _call(self, queries: list[str], k: int) -> list[list[Doc]]:
        try:
            return await (await self._app.get()).search.remote(queries, k)
        except Exception as err:
            raise RetrievalError(f"retriever app {self.app_name!r} failed on {len(queries)} queries: "
                                 f"{type(err).__name__}: {err}") from err


def in_cluster_retriever(cfg: S3Config) -> HandleRetriever | RetrieverClient:
    """The retriever for callers running inside the Ray cluster: the Serve app's handle, or HTTP at
    ``retriever.url`` when ``retriever.use_handle`` is off (a retriever outside the cluster)."""
    if cfg.retriever.use_handle:
        return HandleRetriever(cfg.retriever.app_name, max_queries=cfg.retriever.max_queries)
    return RetrieverClient.from_config(cfg)
