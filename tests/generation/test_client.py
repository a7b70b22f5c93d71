"""GeneratorClient against a real local HTTP server: retries, concurrency, clear failures."""

import asyncio
import threading
import time

import pytest
import uvicorn
from conftest import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from s3ray.config import GeneratorConfig
from s3ray.generation.client import GenerationError, GeneratorClient
from s3ray.generation.service import completion_body


class FlakyServer:
    """An OpenAI-style endpoint that fails the first ``fail_first`` requests with 503 and echoes the
    user message otherwise, after ``delay_s``."""

    def __init__(self):
        self.fail_first = 0
        self.delay_s = 0.0
        self.requests = 0
        self.bodies = []
        self.headers = []
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                                Route("/v1/completions", self.complete, methods=["POST"]),
                                Route("/v1/bad/chat/completions", self.bad, methods=["POST"])])
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def chat(self, request: Request):
        self.requests += 1
        self.headers.append(request.headers.get("authorization"))
        if self.requests <= self.fail_first:
            return JSONResponse({"error": "overloaded"}, status_code=503)
        body = await request.json()
        self.bodies.append(body)
        await asyncio.sleep(self.delay_s)
        return JSONResponse(completion_body(body["model"], "echo: " + body["messages"][-1]["content"]))

    async def complete(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        return JSONResponse({"choices": [{"index": 0, "text": " continued", "finish_reason": "length"}]})

    async def bad(self, request: Request):
        return JSONResponse({"error": "bad"}, status_code=400)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def server():
    with FlakyServer() as s:
        yield s


def client(port, **kwargs):
    return GeneratorClient(f"http://127.0.0.1:{port}/v1", "m", backoff_s=0.01, **kwargs)


def user(text):
    return [{"role": "user", "content": text}]


def test_retries_past_transient_errors(server):
    server.fail_first, server.requests = 2, 0
    assert client(server.port, retries=3).chat(user("hi"), max_tokens=5) == "echo: hi"
    assert server.requests == 3
    body = server.bodies[-1]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5 and body["model"] == "m"


def test_sends_the_configured_temperature_unless_a_call_names_its_own(server):
    """The reasoner's configured temperature reaches the server (it was always 0.0 before)."""
    cfg = GeneratorConfig(backend="openai", model="m", base_url=f"http://127.0.0.1:{server.port}/v1",
                          temperature=0.7)
    gen = GeneratorClient.from_config(cfg)
    assert gen.chat(user("hi")) == "echo: hi"
    assert server.bodies[-1]["temperature"] == 0.7 and "top_p" not in server.bodies[-1]
    asyncio.run(gen.achat(user("hi"), temperature=0.0, top_p=0.95))
    assert server.bodies[-1]["temperature"] == 0.0 and server.bodies[-1]["top_p"] == 0.95


def test_completions_continue_the_raw_prompt(server):
    out = asyncio.run(client(server.port).acomplete("<|im_start|>user\nq", max_tokens=500, temperature=0.0))
    assert out == " continued"
    body = server.bodies[-1]
    assert body == {"model": "m", "prompt": "<|im_start|>user\nq", "max_tokens": 500, "temperature": 0.0}


def test_gives_up_with_a_clear_error(server):
    server.fail_first, server.requests = 10, 0
    with pytest.raises(GenerationError, match="failed after 3 attempts.*HTTP 503"):
        client(server.port, retries=2).chat(user("hi"))
    assert server.requests == 3
    server.fail_first = 0


def test_client_error_is_not_retried(server):
    c = GeneratorClient(f"http://127.0.0.1:{server.port}/v1/bad", "m", backoff_s=0.01)
    with pytest.raises(GenerationError, match="rejected the request: HTTP 400"):
        c.chat(user("hi"))


def test_service_down_raises_not_empty_string():
    c = client(free_port(), retries=1)  # nothing listens there
    with pytest.raises(GenerationError, match="is the service up"):
        c.chat(user("hi"))


def test_requests_run_concurrently_and_bounded(server):
    server.fail_first, server.delay_s = 0, 0.3
    try:
        c = client(server.port, max_concurrency=4)
        start = time.monotonic()
        replies = c.chat_many([user(f"q{i}") for i in range(8)])
        elapsed = time.monotonic() - start
    finally:
        server.delay_s = 0.0
    assert replies == [f"echo: q{i}" for i in range(8)]  # input order
    assert 0.55 < elapsed < 1.5  # two waves of 4, not 8 sequential requests (2.4 s)


def test_from_config_reads_key_from_env_and_never_shows_it(server, monkeypatch):
    gen = GeneratorConfig(backend="openai", model="m", base_url=f"http://127.0.0.1:{server.port}/v1",
                          api_key_env="S3RAY_TEST_KEY")
    with pytest.raises(GenerationError, match="S3RAY_TEST_KEY"):
        GeneratorClient.from_config(gen)
    monkeypatch.setenv("S3RAY_TEST_KEY", "sk-secret")
    c = GeneratorClient.from_config(gen)
    assert "sk-secret" not in repr(c)
    c.chat(user("hi"))
    assert server.headers[-1] == "Bearer sk-secret"
