"""The generator as a Ray Serve app behind an OpenAI-compatible API.

Backends (``generator.backend``):

- ``reader``: :class:`~s3ray.generation.reader.ExtractiveReader` (the CPU default);
- ``hf``: a local transformers causal LM folder, chat template, greedy at temperature 0;
- ``vllm``: Ray Serve LLM (``ray.serve.llm.build_openai_app``) on GPUs; needs the ``gpu`` extra;
- ``openai``: an external endpoint; nothing to deploy, clients talk to ``generator.base_url``.

The reader and hf backends share :class:`ChatServer`: ``POST /v1/chat/completions``,
``GET /v1/models`` and ``GET /health``. Concurrent requests are gathered by ``@serve.batch`` and answered
in one forward pass. The app is mounted at route prefix "/" (the retriever app owns "/retrieve" on the
same proxy).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3ray import serving
from s3ray.bundled_models import ensure_bundled_model, is_bundled
from s3ray.config import GeneratorConfig, S3Config
from s3ray.serving import BadRequest

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


def parse_chat_request(body: Any, model_name: str | None = None) -> ChatRequest:
    """Validate an OpenAI chat-completions body; BadRequest with the reason if it is malformed.

    ``stream: true`` is refused (this server answers whole completions only). A well-formed request for
    a ``model`` other than ``model_name`` (when given) is a 404, as on OpenAI's API.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("stream", False) is not False:
        raise BadRequest("'stream' is not supported by this server: send \"stream\": false (or leave it out)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    texts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise BadRequest("each message needs a string 'role' and a 'content' (a string or a list of text parts)")
        if m["role"] not in ROLES:
            raise BadRequest(f"messages[{i}].role is {m['role']!r:.40}; expected one of {', '.join(ROLES)}")
        texts.append(message_text(m["content"], f"messages[{i}].content"))
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise BadRequest("'max_tokens' must be a positive integer")
    temperature = body.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise BadRequest("'temperature' must be a number >= 0")
    model = body.get("model")
    if model_name is not None and model is not None and model != model_name:
        raise BadRequest(f"the model {model!r:.80} does not exist; this server serves {model_name!r}",
                         status=404, code="model_not_found")
    return ChatRequest([{"role": m["role"], "content": text} for m, text in zip(messages, texts, strict=True)],
                       max_tokens, float(temperature))


def message_text(content: Any, where: str) -> str:
    """A message's text: its ``content`` string, or its content parts' texts joined by newlines (as vLLM's
    OpenAI server joins them). OpenAI's clients send parts (``[{"type": "text", "text": ...}]``) for some
    calls; only text parts can be read by these backends, so any other part (an image, audio, a file) is a
    400 that names it rather than being silently dropped."""
    if isinstance(content, str):
        parts = [content]
    elif isinstance(content, list) and content:
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise BadRequest(f"{where}[{j}] is a {kind!r:.40} part; this server reads only text parts "
                                 '({"type": "text", "text": ...})')
            if not isinstance(part.get("text"), str):
                raise BadRequest(f"{where}[{j}].text must be a string")
            parts.append(part["text"])
    else:
        raise BadRequest(f"{where} must be a string or a non-empty list of text parts")
    for j, text in enumerate(parts):
        serving.check_text(text, where if isinstance(content, str) else f"{where}[{j}].text")
    return "\n".join(parts)


def completion_body(model: str, text: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class ReaderBackend:
    """Answers ``answer_messages`` prompts by extraction (see reader.py); temperature is irrelevant.

    The reader has no language-model tokenizer: its ``usage`` counts whitespace-separated words.
    """

    def __init__(self, gen: GeneratorConfig):
        from s3ray.generation.reader import ExtractiveReader

        self.reader = ExtractiveReader.from_config(gen)

    @staticmethod
    def check(request: ChatRequest) -> None:
        from s3ray.generation.prompts import parse_answer_messages

        try:
            parse_answer_messages(request.messages)
        except ValueError as err:
            raise BadRequest(str(err)) from None

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        from s3ray.generation.prompts import parse_answer_messages

        answers = self.reader.answer_many([parse_answer_messages(r.messages) for r in requests])
        return [Completion(text, sum(len(m["content"].split()) for m in r.messages), len(text.split()))
                for r, text in zip(requests, answers, strict=True)]


class HFBackend:
    """A transformers causal LM: chat template, left-padded batches, greedy at temperature 0."""

    def __init__(self, gen: GeneratorConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.default_max_tokens = gen.max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(gen.model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if gen.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        dtype = "auto" if gen.dtype == "auto" else getattr(torch, gen.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(gen.model, dtype=dtype).to(device).eval()

    def check(self, request: ChatRequest) -> None:
        """The model's chat template must accept the messages (some templates refuse, e.g., two system
        messages): a template error is the client's to fix, not a 500."""
        try:
            self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # jinja2 raises its own TemplateError, or whatever the template raises
            raise BadRequest(f"the model's chat template refused the messages: {err}") from None

    def _generate_group(self, requests: list[ChatRequest], temperature: float) -> list[Completion]:
        prompts = [self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
                   for r in requests]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.model.device)
        limits = [r.max_tokens or self.default_max_tokens for r in requests]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self.torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=max(limits), pad_token_id=self.tokenizer.pad_token_id,
                                      **sampling)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        pad = self.tokenizer.pad_token_id
        return [Completion(self.tokenizer.decode(tokens[:limit], skip_special_tokens=True).strip(), n_prompt,
                           int((tokens[:limit] != pad).sum()))
                for tokens, limit, n_prompt in zip(new_tokens, limits, prompt_tokens, strict=True)]

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        replies: list[Completion | None] = [None] * len(requests)
        for temperature in sorted({r.temperature for r in requests}):
            idx = [i for i, r in enumerate(requests) if r.temperature == temperature]
            for i, text in zip(idx, self._generate_group([requests[i] for i in idx], temperature), strict=True):
                replies[i] = text
        return replies


_BACKENDS = {"reader": ReaderBackend, "hf": HFBackend}


def _chat_server_class():
    """The Serve deployment class (built lazily so importing this module does not import Ray Serve)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    defaults = GeneratorConfig.model_fields  # the batch settings below are replaced from the config at start

    @serve.deployment
    class ChatServer:
        def __init__(self, gen: GeneratorConfig):
            from s3ray.cluster import set_torch_threads

            set_torch_threads(gen.torch_threads)
            self.model_name = gen.served_model_name or gen.model
            self.max_body_bytes = gen.max_body_bytes
            self.backend = _BACKENDS[gen.backend](gen)
            self.generate_batch.set_max_batch_size(gen.max_batch_size)
            self.generate_batch.set_batch_wait_timeout_s(gen.batch_wait_s)

        @serve.batch(max_batch_size=defaults["max_batch_size"].default,
                     batch_wait_timeout_s=defaults["batch_wait_s"].default)
        async def generate_batch(self, requests: list[ChatRequest]) -> list[Completion]:
            # In a thread: the replica keeps accepting requests (the next batch) while this one runs.
            return await asyncio.to_thread(self.backend.generate, requests)

        def _parse(self, body: Any) -> ChatRequest:
            """An OpenAI chat body as a request this backend can answer; BadRequest otherwise."""
            chat = parse_chat_request(body, self.model_name)
            self.backend.check(chat)
            return chat

        async def chat(self, bodies: list[dict[str, Any]]) -> list[str]:
            """The deployment-handle entry (:mod:`s3ray.generation.handle`): OpenAI chat bodies, checked as
            over HTTP, answered through the same ``@serve.batch`` (merged with every other caller's); the
            reply texts in order. A malformed body raises BadRequest (the caller sees it in the error)."""
            chats = [self._parse(body) for body in bodies]
            return [reply.text for reply in await asyncio.gather(*(self.generate_batch(c) for c in chats))]

        async def __call__(self, request: Request):
            path = request.url.path.rstrip("/")
            if request.method == "GET" and path in ("/health", "/v1/health"):
                return JSONResponse({"status": "ok", "model": self.model_name})
            if request.method == "GET" and path == "/v1/models":
                return JSONResponse({"object": "list", "data": [{"id": self.model_name, "object": "model",
                                                                 "owned_by": "s3ray"}]})
            if request.method == "POST" and path == "/v1/chat/completions":
                try:
                    chat = self._parse(await serving.read_json(request, self.max_body_bytes))
                except BadRequest as err:
                    return serving.error_response(err)
                reply = await self.generate_batch(chat)
                return JSONResponse(completion_body(self.model_name, reply.text, reply.prompt_tokens,
                                                    reply.completion_tokens))
            return serving.error_response(BadRequest(f"no route {request.method} {path}", status=404))

    return ChatServer


def _vllm_app(gen: GeneratorConfig):
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as err:
        raise ImportError("generator backend 'vllm' needs vLLM: pip install 's3ray[gpu]'") from err
    llm = LLMConfig(
        model_loading_config={"model_id": gen.served_model_name or gen.model, "model_source": gen.model},
        engine_kwargs={"tensor_parallel_size": gen.tensor_parallel_size, "max_model_len": gen.max_model_len,
                       "gpu_memory_utilization": gen.gpu_memory_utilization},
        deployment_config={"num_replicas": gen.num_replicas, "max_ongoing_requests": gen.max_ongoing_requests},
    )
    return build_openai_app({"llm_configs": [llm]})


def _local_model(gen: GeneratorConfig, work_dir: Path) -> GeneratorConfig:
    """``gen`` with a ``bundled:<name>`` model replaced by its converted folder (converted here, once),
    still served under the name the config gave it."""
    if not is_bundled(gen.model):
        return gen
    return gen.model_copy(update={"model": str(ensure_bundled_model(gen.model, work_dir)),
                                  "served_model_name": gen.served_model_name or gen.model})


def build_app(cfg: S3Config):
    """The Serve application of ``cfg.generator.backend`` (not started)."""
    gen = cfg.generator
    if gen.backend == "openai":
        raise ValueError("generator backend 'openai' is an external endpoint: there is nothing to deploy")
    gen = _local_model(gen, cfg.paths.work_dir)
    if gen.backend == "vllm":
        return _vllm_app(gen)
    server = _chat_server_class().options(
        name=f"{gen.app_name}_{gen.backend}", num_replicas=gen.num_replicas,
        max_ongoing_requests=gen.max_ongoing_requests,
        ray_actor_options={"num_cpus": gen.num_cpus, "num_gpus": gen.num_gpus},
        logging_config={"enable_access_log": False})  # as the retriever's: errors still log
    return server.bind(gen)  # Serve pickles the config object to each replica


app_builder = serving.app_builder(build_app)


def serve_app(cfg: S3Config) -> serving.ServeApp:
    """The generator app (not started), its name, route and health URL."""
    gen = cfg.generator
    return serving.ServeApp(build_app(cfg), gen.app_name, gen.route_prefix, f"{gen.base_url.rstrip('/')}/models")


def deploy(cfg: S3Config) -> str:
    """Deploy the generator app (if there is one to deploy) and return its ``/v1`` base URL once healthy."""
    gen = cfg.generator
    if gen.backend == "openai":
        log.info("generator: external endpoint %s, nothing to deploy", gen.base_url)
        return gen.base_url
    serving.deploy_apps(cfg, [serve_app(cfg)])
    log.info("generator %s (%s) ready at %s", gen.app_name, gen.backend, gen.base_url)
    return gen.base_url


def serve_forever(cfg: S3Config) -> None:
    """``s3ray serve-generator``: deploy, then run until Ctrl-C."""
    serving.serve_forever(cfg, "generator", deploy)
