"""``RetrieverClient``: how every stage retrieves, over HTTP, from the retriever app (or any server with
the Search-R1 ``/retrieve`` contract).

Failures never look like "no documents": connection errors, timeouts and 5xx answers are retried with
exponential backoff (:mod:`s3ray.http_retry`), then raise :class:`RetrievalError` naming the URL; a 4xx
answer (a bad request) raises at once with the server's message. ``asearch`` is safe from many
coroutines and from several event loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from s3ray.config import S3Config
from s3ray.http_retry import RetryingSession, server_message
from s3ray.retrieval.corpus import split_contents
from s3ray.types import Doc


class RetrievalError(RuntimeError):
    """The retriever could not answer; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _doc(hit: Any) -> Doc:
    document, score = (hit["document"], hit.get("score")) if "document" in hit else (hit, None)
    if "title" in document and "text" in document:
        title, text = document["title"], document["text"]
    else:  # a plain Search-R1 server returns only the corpus row
        title, text = split_contents(document.get("contents", ""))
    return Doc(id=str(document["id"]), title=title, text=text, score=None if score is None else float(score))


class RetrieverClient:
    MAX_IN_FLIGHT = 256  # concurrent requests per event loop; the server batches what arrives together

    def __init__(self, url: str, timeout_s: float = 30.0, retries: int = 3, *, max_queries: int = 1024,
                 backoff_s: float = 0.25, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_queries = max_queries
        self._transport = transport
        self._sync: httpx.Client | None = None
        self._http = RetryingSession(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                     max_in_flight=self.MAX_IN_FLIGHT, transport=transport)

    @classmethod
    def from_config(cls, cfg: S3Config) -> RetrieverClient:
        r = cfg.retriever
        return cls(r.url, timeout_s=r.timeout_s, retries=r.retries, max_queries=r.max_queries)

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Ray: HTTP clients hold sockets and are rebuilt lazily where the copy lands.
        return {**self.__dict__, "_sync": None}

    def __repr__(self) -> str:
        return f"RetrieverClient({self.url!r})"

    def _chunks(self, queries: Sequence[str]) -> list[list[str]]:
        queries = list(queries)
        return [queries[i:i + self.max_queries] for i in range(0, len(queries), self.max_queries)]

    def _documents(self, response: httpx.Response, n_queries: int) -> list[list[Doc]]:
        """The documents of an answer; raises on a 4xx (with the server's message) or a malformed body."""
        if response.status_code >= 400:
            raise RetrievalError(f"retriever at {self.url} rejected the request (HTTP {response.status_code}): "
                                 f"{server_message(response)}", status=response.status_code)
        try:
            result = response.json()["result"] if response.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            result = None
        if not isinstance(result, list) or len(result) != n_queries:
            raise RetrievalError(f"retriever at {self.url} answered {n_queries} queries with a malformed "
                                 f"response (HTTP {response.status_code}): {response.text[:200]!r}")
        return [[_doc(hit) for hit in hits] for hits in result]

    def _failed(self, attempts: int, last: str) -> RetrievalError:
        return RetrievalError(f"retriever at {self.url} failed after {attempts} attempts: {last}")

    # ---------------------------------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        """Blocking ``asearch``, for scripts and tests (not from inside an event loop)."""
        return self._http.run(lambda: self.asearch(queries, k))

    async def asearch(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        """Top-``k`` passages per query (scores filled), in query order; the chunks of a long query list
        are sent concurrently."""
        parts = await asyncio.gather(*(self._apost(chunk, k) for chunk in self._chunks(queries)))
        return [docs for part in parts for docs in part]

    async def _apost(self, queries: list[str], k: int) -> list[list[Doc]]:
        response = await self._http.post(self.url, {"queries": queries, "topk": k, "return_scores": True},
                                         self._failed)
        return self._documents(response, len(queries))

    def health(self) -> bool:
        """True when ``<url>/health`` answers 200; False when the service is down or unhealthy."""
        if self._sync is None:
            self._sync = httpx.Client(timeout=self.timeout_s, transport=self._transport)
        try:
            return self._sync.get(f"{self.url}/health").status_code == 200
        except httpx.TransportError:
            return False
