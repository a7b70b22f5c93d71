"""Client for any OpenAI-compatible chat-completions endpoint (our Serve app, vLLM, a hosted API).

Requests are concurrent (``achat_many``), at most ``max_concurrency`` in flight; each one is retried with
exponential backoff on connection errors, timeouts, 429 and 5xx (:mod:`s3ray.http_retry`). When the
retries run out the client raises :class:`GenerationError`: a failed generation never turns into an
empty answer that scores as wrong.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import httpx

from s3ray.config import GeneratorConfig
from s3ray.http_retry import RetryingSession

Messages = list[dict[str, str]]


class GenerationError(RuntimeError):
    """The generator could not produce an answer (service down, bad request, malformed reply)."""


class GeneratorClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120,
                 retries: int = 3, max_concurrency: int = 32, backoff_s: float = 0.5, temperature: float = 0.0):
        if not base_url:
            raise ValueError("GeneratorClient needs a base_url (an OpenAI-compatible .../v1 URL)")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_concurrency = max_concurrency
        # Sent with every request that names no temperature of its own: the configured model's
        # (``generator.temperature``, ``inference.reasoner.temperature``), never a hidden 0.
        self.temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = RetryingSession(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                     max_in_flight=max_concurrency, headers=headers)

    @classmethod
    def from_config(cls, gen: GeneratorConfig) -> GeneratorClient:
        api_key = None
        if gen.api_key_env:
            api_key = os.environ.get(gen.api_key_env)
            if not api_key:
                raise GenerationError(f"generator.api_key_env names ${gen.api_key_env}, which is not set")
        return cls(gen.base_url, gen.served_model_name or gen.model, api_key=api_key,
                   timeout_s=gen.timeout_s, retries=gen.retries, max_concurrency=gen.max_concurrency,
                   temperature=gen.temperature)

    def __repr__(self) -> str:  # never shows the key
        return f"GeneratorClient({self.base_url!r}, model={self.model!r})"

    def _failed(self, attempts: int, last: str) -> GenerationError:
        return GenerationError(f"generator at {self.base_url} failed after {attempts} attempts "
                               f"(is the service up?): {last}")

    def _sampling(self, max_tokens: int | None, temperature: float | None, top_p: float | None) -> dict[str, Any]:
        return sampling_body(self.model, self.temperature if temperature is None else temperature, max_tokens,
                             top_p)

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        url = f"{self.base_url}/{path}"
        response = await self._http.post(url, body, self._failed)
        if response.status_code != 200:
            raise GenerationError(f"generator at {url} rejected the request: "
                                  f"HTTP {response.status_code}: {response.text[:500]}")
        return response

    async def achat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
                    top_p: float | None = None) -> str:
        """The assistant's reply text. Raises GenerationError after ``retries`` failed retries.

        ``temperature=None`` sends the client's configured temperature; ``top_p=None`` sends none (the
        server's default, 1.0 on vLLM and OpenAI)."""
        body = self._sampling(max_tokens, temperature, top_p) | {"messages": messages}
        response = await self._post("chat/completions", body)
        return _reply_text(response, f"{self.base_url}/chat/completions", ("message", "content"))

    async def acomplete(self, prompt: str, max_tokens: int | None = None, temperature: float | None = None,
                        top_p: float | None = None) -> str:
        """Raw text continuation of ``prompt`` over ``/completions`` (no chat template applied by the server):
        for models trained to continue one text, as Search-R1 was."""
        body = self._sampling(max_tokens, temperature, top_p) | {"prompt": prompt}
        response = await self._post("completions", body)
        return _reply_text(response, f"{self.base_url}/completions", ("text",))

    async def achat_many(self, batch: Sequence[Messages], max_tokens: int | None = None,
                         temperature: float | None = None) -> list[str]:
        """Replies in input order; the requests run concurrently (at most ``max_concurrency``)."""
        return list(await asyncio.gather(*(self.achat(m, max_tokens, temperature) for m in batch)))

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None) -> str:
        """Blocking ``achat``, for scripts and notebooks (not from inside an event loop)."""
        return self._http.run(lambda: self.achat(messages, max_tokens, temperature))

    def chat_many(self, batch: Sequence[Messages], max_tokens: int | None = None,
                  temperature: float | None = None) -> list[str]:
        return self._http.run(lambda: self.achat_many(batch, max_tokens, temperature))


def sampling_body(model: str, temperature: float, max_tokens: int | None, top_p: float | None) -> dict[str, Any]:
    """The model and sampling fields of an OpenAI request body (a field left as None is not sent)."""
    body: dict[str, Any] = {"model": model, "temperature": temperature}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if top_p is not None:
        body["top_p"] = top_p
    return body


def _reply_text(response: httpx.Response, url: str, keys: tuple[str, ...]) -> str:
    try:
        content = response.json()["choices"][0]
        for key in keys:
            content = content[key]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise GenerationError(f"generator at {url} sent a reply that is not a chat completion: "
                              f"{response.text[:300]}") from err
    if content is None:
        raise GenerationError(f"generator at {url} sent a completion without text: {response.text[:300]}")
    return content
