"""The generator's deployment-handle path: who is reached by handle (a reader / hf generator on this
cluster's proxy) and who over HTTP, and that the handle's answers and refusals are the HTTP route's."""

from __future__ import annotations

import pickle

import pytest

from s3ray.config import load_config
from s3ray.generation import prompts
from s3ray.generation.client import GenerationError, GeneratorClient
from s3ray.generation.handle import HandleGenerator, in_cluster_generator
from s3ray.types import Doc


def cfg_for(tmp_path, *overrides):
    return load_config("test", [f"paths.work_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("overrides, by_handle", [
    ([], True),  # the reader this cluster serves
    (["generator.backend=hf", "generator.model=/m"], True),
    (["generator.use_handle=false"], False),
    (["generator.base_url=http://10.0.0.5:8000/v1"], False),  # a generator outside the cluster
    (["generator.backend=vllm"], False),  # Ray Serve LLM's app has no `chat` entry
    (["generator={backend: openai, model: gpt, base_url: 'http://127.0.0.1:8000/v1'}"], False),
])
def test_the_handle_reaches_only_a_chat_server_on_this_proxy(tmp_path, overrides, by_handle):
    cfg = cfg_for(tmp_path, *overrides)
    client = in_cluster_generator(cfg.generator, cfg.serve)
    assert isinstance(client, HandleGenerator if by_handle else GeneratorClient)
    if by_handle:
        assert (client.app_name, client.temperature) == (cfg.generator.app_name, cfg.generator.temperature)
        copy = pickle.loads(pickle.dumps(client))  # travels to Ray actors without its handle
        assert (copy.app_name, copy.model, copy._app.handle) == (client.app_name, client.model, None)


DOCS = [Doc("1", "Eiffel Tower", "It was designed by Gustave Eiffel's company. The tower is 330 metres tall."),
        Doc("2", "Amazon River", "The Amazon River in South America is the largest river by discharge.")]


@pytest.mark.ray
def test_handle_answers_are_the_http_answers(services):
    questions = ["How tall is the Eiffel Tower?", "Where is the Amazon River?", "Who designed the tower?"] * 4
    batch = [prompts.answer_messages(q, DOCS) for q in questions]
    handle = in_cluster_generator(services.generator, services.serve)
    assert isinstance(handle, HandleGenerator)
    over_http = GeneratorClient.from_config(services.generator).chat_many(batch)
    assert handle.chat_many(batch) == over_http
    assert handle.chat(batch[1]) == over_http[1] and "South America" in over_http[1]
    with pytest.raises(GenerationError, match=r"messages\[0\]\.role"):  # checked as the HTTP route checks
        handle.chat([{"role": "wizard", "content": "x"}])
    with pytest.raises(GenerationError, match="no-such-app"):
        HandleGenerator("no-such-app", "m").chat(batch[0])


def test_concurrent_first_calls_look_the_handle_up_once(monkeypatch):
    """The evaluate stage scores its files concurrently from a driver not yet connected to Ray; two
    lookups at once would both connect (ray.init twice) and fail every request."""
    import asyncio
    import threading
    import time

    from ray import serve

    lookups, inside = [], threading.Semaphore(1)

    class FakeMethod:
        async def remote(self, bodies):
            return [b["messages"][-1]["content"] for b in bodies]

    class FakeHandle:
        chat = FakeMethod()

    def get_app_handle(name):
        if not inside.acquire(blocking=False):
            raise AssertionError("Perhaps you called ray.init twice by accident?")
        try:
            time.sleep(0.05)  # a controller round trip: time for the other calls to arrive
            lookups.append(name)
            return FakeHandle()
        finally:
            inside.release()

    monkeypatch.setattr(serve, "get_app_handle", get_app_handle)
    gen = HandleGenerator("generator", "reader")

    async def many():
        return await asyncio.gather(*(gen.achat([{"role": "user", "content": f"q{i}"}]) for i in range(8)))

    assert asyncio.run(many()) == [f"q{i}" for i in range(8)]
    assert lookups == ["generator"]
