"""``HandleGenerator``: how callers inside the cluster (the reward in rollout actors, the precompute, the
evaluate stage) reach a reader / hf generator this cluster serves: through a Serve deployment handle on
the generator app's ``chat`` method, without the HTTP proxy and JSON.

The replica checks each request as its HTTP route does and answers it through the same ``@serve.batch``,
so the answers are the HTTP answers, and concurrent calls of every caller share one forward pass.
``achat_many`` sends its whole list as one call. Same interface as
:class:`~s3ray.generation.client.GeneratorClient` for chat (``achat``, ``achat_many``, ``chat``,
``chat_many``); failures raise :class:`~s3ray.generation.client.GenerationError`, never an empty answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from s3ray.config import GeneratorConfig, ServeConfig
from s3ray.generation.client import GenerationError, GeneratorClient, Messages, sampling_body
from s3ray.serving import AppHandle

HANDLE_BACKENDS = ("reader", "hf")  # the backends served by s3ray's ChatServer, which has the `chat` entry


class HandleGenerator:
    def __init__(self, app_name: str, model: str, temperature: float = 0.0):
        self.app_name = app_name
        self.model = model
        self.temperature = temperature  # sent with every request that names none, as the HTTP client does
        self.url = f"serve:{app_name}"  # names the generator in logs, as a client's URL does
        self._app = AppHandle(app_name)

    @classmethod
    def from_config(cls, gen: GeneratorConfig) -> HandleGenerator:
        return cls(gen.app_name, gen.served_model_name or gen.model, gen.temperature)

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for Ray: the handle is rebuilt where the copy lands.
        return {"app_name": self.app_name, "model": self.model, "temperature": self.temperature}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"HandleGenerator({self.app_name!r}, model={self.model!r})"

    def _body(self, messages: Messages, max_tokens: int | None, temperature: float | None,
              top_p: float | None = None) -> dict[str, Any]:
        return sampling_body(self.model, self.temperature if temperature is None else temperature, max_tokens,
                             top_p) | {"messages": messages}

    async def achat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
                    top_p: float | None = None) -> str:
        """The assistant's reply text (``GeneratorClient.achat``'s arguments and defaults)."""
        [reply] = await self._call([self._body(messages, max_tokens, temperature, top_p)])
        return reply

    async def achat_many(self, batch: Sequence[Messages], max_tokens: int | None = None,
                         temperature: float | None = None) -> list[str]:
        """Replies in input order, from one handle call."""
        if not batch:
            return []
        return await self._call([self._body(m, max_tokens, temperature) for m in batch])

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None) -> str:
        """Blocking ``achat``, for scripts (not from inside an event loop)."""
        return asyncio.run(self.achat(messages, max_tokens, temperature))

    def chat_many(self, batch: Sequence[Messages], max_tokens: int | None = None,
                  temperature: float | None = None) -> list[str]:
        return asyncio.run(self.achat_many(batch, max_tokens, temperature))

    async def _call(self, bodies: list[dict[str, Any]]) -> list[str]:
        try:
            return await (await self._app.get()).chat.remote(bodies)
        except Exception as err:
            raise GenerationError(f"generator app {self.app_name!r} failed on {len(bodies)} requests: "
                                  f"{type(err).__name__}: {err}") from err


def served_here(gen: GeneratorConfig, serve: ServeConfig) -> bool:
    """Whether ``gen`` is a reader / hf generator on this cluster's Serve proxy (its base_url is the proxy's)
    that its config lets in-cluster callers reach by handle."""
    return (gen.use_handle and gen.backend in HANDLE_BACKENDS
            and (gen.base_url or "").rstrip("/") == serve.url(gen.route_prefix) + "/v1")


def in_cluster_generator(gen: GeneratorConfig, serve: ServeConfig) -> HandleGenerator | GeneratorClient:
    """The generator client for callers running inside the Ray cluster: the Serve app's handle when this
    cluster serves ``gen`` (:func:`served_here`), else HTTP at ``gen.base_url`` (an endpoint elsewhere)."""
    if served_here(gen, serve):
        return HandleGenerator.from_config(gen)
    return GeneratorClient.from_config(gen)
