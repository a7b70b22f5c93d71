"""The retriever as a Ray Serve app, speaking the Search-R1 / s3 retrieval contract.

``POST /retrieve`` with ``{"queries": [...], "topk": 3, "return_scores": true}`` answers
``{"result": [[{"document": {id, contents}, "score": s}, ...], ...]}``, one list per query ordered by
score; with ``return_scores`` false (Search-R1's default) each hit is the bare document. ``contents``
is the wiki-18 corpus row (quoted title line, then the text), exactly what Search-R1 / s3 clients parse.
``GET /retrieve/health`` says the index is up.

Callers inside the cluster skip HTTP: :mod:`s3ray.retrieval.handle` calls the deployment's ``search``
method through a Serve handle and gets :class:`~s3ray.types.Doc` objects back.

One FastAPI ingress deployment holds the searcher. Every query of every request goes through one
``@serve.batch`` method, so concurrent requests (and multi-query requests) are encoded and searched
together: throughput grows with concurrency instead of queueing one request at a time. The batch runs
in the replica's one search thread, so the event loop keeps accepting requests (the next batch)
meanwhile, and searches never overlap.
"""

# No ``from __future__ import annotations``: FastAPI reads the route's annotations (``Request``) in the
# Serve replica, where string annotations of this cloudpickled class could not be resolved.
import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from s3ray.config import S3Config, config_from_dict, load_config
from s3ray.types import Doc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieveRequest:
    queries: list[str]
    topk: int
    return_scores: bool


def parse_retrieve_request(body: Any, *, max_topk: int, max_queries: int, default_topk: int) -> RetrieveRequest:
    """Validate a ``/retrieve`` body; ValueError with a message fit for the client if it is malformed."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object like {\"queries\": [\"...\"], \"topk\": 3}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not queries:
        raise ValueError("'queries' must be a non-empty list of strings")
    if len(queries) > max_queries:
        raise ValueError(f"too many queries: {len(queries)} > {max_queries} per request (split the list)")
    for i, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"queries[{i}] must be a non-empty string, got {query!r:.80}")
    topk = body.get("topk")
    if topk is None:
        topk = default_topk
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= max_topk:
        raise ValueError(f"'topk' must be an integer in 1..{max_topk}, got {topk!r:.40}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise ValueError("'return_scores' must be true or false")
    return RetrieveRequest(queries, topk, return_scores)


def document(doc: Doc) -> dict[str, str]:
    return {"id": doc.id, "contents": doc.contents}


def response_body(results: list[list[Doc]], return_scores: bool) -> dict[str, Any]:
    if return_scores:
        return {"result": [[{"document": document(d), "score": d.score} for d in docs] for docs in results]}
    return {"result": [[document(d) for d in docs] for docs in results]}


def _json(body: dict[str, Any]):
    """The body serialised once by ``json`` (FastAPI's generic encoder walks every nested field first)."""
    from starlette.responses import Response

    return Response(json.dumps(body, ensure_ascii=False).encode(), media_type="application/json")


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


class _PrefixRoot:
    """ASGI middleware: route ``POST /retrieve`` (the app's bare prefix) to "/" instead of a 307.

    Serve mounts the app under its route prefix, so the contract's URL reaches FastAPI with an empty
    path, which FastAPI would answer with a redirect to ``/retrieve/`` that clients don't follow.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            root, path = scope.get("root_path", ""), scope["path"]
            if (path[len(root):] if path.startswith(root) else path) == "":
                scope = {**scope, "path": path + "/", "raw_path": (path + "/").encode()}
        await self.app(scope, receive, send)


def _retriever_class():
    """The Serve deployment class (built lazily so importing this module does not import Ray Serve)."""
    from fastapi import FastAPI, Request
    from ray import serve

    from s3ray.retrieval.searchers import load_searcher

    api = FastAPI(title="s3ray retriever")
    api.add_middleware(_PrefixRoot)

    @serve.deployment
    @serve.ingress(api)
    class Retriever:
        def __init__(self, cfg_dict: dict):
            from s3ray.cluster import set_torch_threads

            cfg = config_from_dict(cfg_dict)
            set_torch_threads(cfg.retriever.torch_threads)
            self.retriever = cfg.retriever
            self.searcher = load_searcher(cfg)
            # One search thread: torch (OpenMP) keeps one warm thread team instead of one per calling
            # thread, and searches never overlap (a GPU FAISS index must not be searched concurrently).
            self.search_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
            self.search_batch.set_max_batch_size(cfg.retriever.encoder_max_batch_size)
            self.search_batch.set_batch_wait_timeout_s(cfg.retriever.encoder_batch_wait_s)

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
        async def search_batch(self, items: list[tuple[str, int]]) -> list[list[Doc]]:
            # One encoder pass and one index search for every query waiting, at the largest k asked.
            k = max(k for _, k in items)
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.search_thread, self.searcher.search,
                                                 [q for q, _ in items], k)
            return [docs[:k] for docs, (_, k) in zip(results, items, strict=True)]

        async def search(self, queries: list[str], k: int) -> list[list[Doc]]:
            """The deployment-handle entry (:mod:`s3ray.retrieval.handle`): the queries join the batch."""
            return list(await asyncio.gather(*(self.search_batch((q, k)) for q in queries)))

        @api.get("/health")
        async def health(self) -> dict[str, Any]:
            return {"status": "ok", "backend": self.retriever.backend, "rows": self.searcher.rows}

        @api.post("/")
        async def retrieve(self, request: Request):
            try:
                body = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                return _error(400, f"the body is not valid JSON: {err}")
            try:
                req = parse_retrieve_request(body, max_topk=self.retriever.max_topk,
                                             max_queries=self.retriever.max_queries,
                                             default_topk=self.retriever.default_topk)
            except ValueError as err:
                return _error(400, str(err))
            return _json(response_body(await self.search(req.queries, req.topk), req.return_scores))

    return Retriever


def build_app(cfg: S3Config):
    """The retriever Serve application (not started)."""
    r = cfg.retriever
    server = _retriever_class().options(
        num_replicas=r.num_replicas, max_ongoing_requests=r.max_ongoing_requests,
        ray_actor_options={"num_cpus": r.num_cpus, "num_gpus": r.num_gpus},
        # A log line per request costs the replica CPU at every query of every rollout; errors still log.
        logging_config={"enable_access_log": False})
    return server.bind(cfg.model_dump(mode="json"))


def app_builder(args: dict) -> Any:
    """Entry for ``serve run serve_configs/retriever.yaml``: args ``config`` (preset) and ``overrides``."""
    return build_app(load_config(args.get("config"), list(args.get("overrides") or [])))


def wait_healthy(url: str, timeout_s: float = 300.0) -> None:
    """Poll ``<url>/health`` until the retriever answers."""
    from s3ray.retrieval.client import RetrieverClient

    client, deadline = RetrieverClient(url, timeout_s=10.0, retries=0), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.health():
            return
        time.sleep(0.5)
    raise TimeoutError(f"retriever at {url} not healthy after {timeout_s:.0f}s")


def deploy(cfg: S3Config) -> str:
    """Deploy the retriever app on the Serve proxy at ``serve.host:serve.port``; return its URL once healthy."""
    from ray import serve

    from s3ray.serving import ensure_serve

    ensure_serve(cfg)
    serve.run(build_app(cfg), name=cfg.retriever.app_name, route_prefix=cfg.retriever.route_prefix,
              blocking=False)
    wait_healthy(cfg.retriever.url)
    log.info("retriever %s (%s) ready at %s", cfg.retriever.app_name, cfg.retriever.backend, cfg.retriever.url)
    return cfg.retriever.url


def serve_forever(cfg: S3Config) -> None:
    """Deploy, then keep the driver alive (Ctrl-C to stop; the app stays up in a Ray cluster)."""
    url = deploy(cfg)
    print(f"retriever: {url}", flush=True)
    while True:
        time.sleep(3600)
