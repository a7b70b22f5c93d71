"""HTTP for the service clients (retriever, generator): one ``httpx.AsyncClient`` per event loop, a bound
on requests in flight, and retries with exponential backoff.

Connection errors, timeouts, 408, 429 and 5xx answers are retried; any other answer goes back to the
caller, which judges it (a 4xx is the client's own mistake and is never retried). When the retries run
out, the caller's error type is raised with the last failure. An ``AsyncClient`` must not outlive, or be
shared across, event loops, so each loop gets its own; the session pickles without them (Ray).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 8.0


def server_message(response: httpx.Response) -> str:
    """The error text of an answer: OpenAI's / FastAPI's ``error.message`` / ``detail``, else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error", body.get("detail", body)) if isinstance(body, dict) else body
    return str(error.get("message", error) if isinstance(error, dict) else error)[:500]


def is_retryable(response: httpx.Response) -> bool:
    return response.status_code in RETRYABLE_STATUS or response.status_code >= 500


def backoff_delay(backoff_s: float, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from ``backoff_s``, capped."""
    return min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


class RetryingSession:
    def __init__(self, *, timeout_s: float, retries: int, backoff_s: float, max_in_flight: int,
                 headers: dict[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None):
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_in_flight = max_in_flight
        self._headers = headers or {}
        self._transport = transport  # tests inject httpx.MockTransport
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                  tuple[httpx.AsyncClient, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_per_loop": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _per_loop=weakref.WeakKeyDictionary())

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        session = self._per_loop.get(loop)
        if session is None:
            limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
            # pool=None: waiting for a free connection is queueing, not a failure.
            client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, pool=None), limits=limits,
                                       headers=self._headers, transport=self._transport)
            session = self._per_loop[loop] = (client, asyncio.Semaphore(self.max_in_flight))
        return session

    async def post(self, url: str, payload: Any, fail: Callable[[int, str], Exception]) -> httpx.Response:
        """POST ``payload`` as JSON: the first answer that is not retryable; when every attempt failed,
        raises ``fail(attempts, last failure)``."""
        client, in_flight = self._session()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(backoff_delay(self.backoff_s, attempt))
            try:
                async with in_flight:
                    response = await client.post(url, json=payload)
            except httpx.TransportError as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {err}"
                continue
            if not is_retryable(response):
                return response
            last = f"HTTP {response.status_code}: {server_message(response)}"
        raise fail(self.retries + 1, last)

    def run(self, coro_fn: Callable[[], Any]) -> Any:
        """``asyncio.run(coro_fn())`` for blocking callers, closing the client opened for that loop."""

        async def once():
            try:
                return await coro_fn()
            finally:
                session = self._per_loop.pop(asyncio.get_running_loop(), None)
                if session is not None:
                    await session[0].aclose()

        return asyncio.run(once())
