"""A many-query request cut into one chunk per retriever replica, and the chunks' results put back.

A replica encodes with one thread (:mod:`s3ray.resources` says why), so a 32-query request that lands on
one replica keeps one core busy while the others idle; the single-process servers s3ray replaces encode
it with every core. Cut into contiguous chunks, one per replica, the chunks are encoded side by side and
their results, concatenated in chunk order, are in query order: the same lists the unsplit request gets.
Both the deployment (a request arriving over HTTP) and the in-cluster handle client cut this way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

Query = TypeVar("Query")
Result = TypeVar("Result")


def chunks(queries: Sequence[Query], replicas: int, min_queries: int) -> list[list[Query]]:
    """``queries`` cut into ``replicas`` contiguous chunks of near-equal size (the first ones longer by
    one) when there are at least two replicas and ``min_queries`` queries; otherwise one chunk."""
    parts = min(replicas, len(queries))
    if parts < 2 or len(queries) < min_queries:
        return [list(queries)]
    size, longer = divmod(len(queries), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < longer)
        out.append(list(queries[start:end]))
        start = end
    return out


async def search_chunks(parts: list[list[Query]],
                        search: Callable[[int, list[Query]], Awaitable[list[Result]]],
                        timeout_s: float | None = None,
                        fallback: Callable[[list[Query]], Awaitable[list[Result]]] | None = None) -> list[Result]:
    """``search(i, chunk)`` for every chunk at once; their results, one per query, in query order. A
    failed chunk fails the whole search, as the unsplit request would have failed.

    With ``timeout_s``, a chunk after the first (the one another replica searches) that has not answered
    in time is searched by ``fallback(chunk)`` instead: a chunk lost on its way slows its request down
    instead of hanging it (a 32-query direct-port request once waited out its client's 120 s)."""
    if timeout_s is not None and fallback is None:
        raise ValueError("a chunk timeout needs a fallback search")

    async def one(i: int, chunk: list[Query]) -> list[Result]:
        if timeout_s is None or i == 0:
            return await search(i, chunk)
        try:
            return await asyncio.wait_for(search(i, chunk), timeout_s)
        except TimeoutError:
            log.warning("a chunk of %d queries sent to another replica had no answer after %.0f s: "
                        "searching it here", len(chunk), timeout_s)
            return await fallback(chunk)

    results = await asyncio.gather(*(one(i, chunk) for i, chunk in enumerate(parts)))
    return [result for chunk_results in results for result in chunk_results]
