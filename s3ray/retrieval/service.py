"""The retriever as a Ray Serve app, speaking the Search-R1 / s3 retrieval contract.

``POST /retrieve`` with ``{"queries": [...], "topk": 3, "return_scores": true}`` answers
``{"result": [[{"document": {id, contents}, "score": s}, ...], ...]}``, one list per query ordered by
score; with ``return_scores`` false (Search-R1's default) each hit is the bare document. ``contents``
is the wiki-18 corpus row (quoted title line, then the text), exactly what Search-R1 / s3 clients parse.
``GET /retrieve/health`` says the index is up.

Callers inside the cluster skip HTTP: :mod:`s3ray.retrieval.handle` calls the deployment's ``search``
method through a Serve handle and gets :class:`~s3ray.types.Doc` objects back.

One deployment holds the searcher and answers HTTP itself (a plain ASGI handler). Every query of every request goes through one
``@serve.batch`` method, so concurrent requests (and multi-query requests) are encoded and searched
together: throughput grows with concurrency instead of queueing one request at a time. The batch runs
in the replica's one search thread, so the event loop keeps accepting requests (the next batch)
meanwhile, and searches never overlap.

A request of ``retriever.split_min_queries`` queries or more that reaches an otherwise idle replica is
cut into one chunk per replica (:mod:`s3ray.retrieval.split`): the replica searches the first chunk
itself and sends the others through a handle on its own deployment to ``search_here``, which never
splits. A busy replica does not split: the others are busy too, and the extra calls only cost (4 clients
x 32 queries under two busy loops fell to 0.76x the peer when every request split). Why this cannot
deadlock (every replica's slots held by requests waiting on chunks that wait for a slot): a chunk waits
on nothing but its own replica's search, and only a request that found its replica idle waits on chunks,
so at most one per replica; with two slots or more (else no replica splits) every replica keeps a slot
whose requests finish on their own, and each queued chunk gets one.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from s3ray import serving
from s3ray.config import RetrieverConfig, S3Config
from s3ray.retrieval import split
from s3ray.serving import BadRequest
from s3ray.types import Doc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieveRequest:
    queries: list[str]
    topk: int
    return_scores: bool


def parse_retrieve_request(body: Any, *, max_topk: int, max_queries: int, default_topk: int,
                           max_query_chars: int | None = None) -> RetrieveRequest:
    """Validate a ``/retrieve`` body; BadRequest with a message fit for the client if it is malformed."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object like {\"queries\": [\"...\"], \"topk\": 3}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not queries:
        raise BadRequest("'queries' must be a non-empty list of strings")
    if len(queries) > max_queries:
        raise BadRequest(f"too many queries: {len(queries)} > {max_queries} per request (split the list)")
    for i, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise BadRequest(f"queries[{i}] must be a non-empty string, got {query!r:.80}")
        if max_query_chars is not None and len(query) > max_query_chars:
            raise BadRequest(f"queries[{i}] has {len(query)} characters; the limit is {max_query_chars}")
        serving.check_text(query, f"queries[{i}]")
    topk = body.get("topk")
    if topk is None:
        topk = default_topk
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= max_topk:
        raise BadRequest(f"'topk' must be an integer in 1..{max_topk}, got {topk!r:.40}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest("'return_scores' must be true or false")
    return RetrieveRequest(queries, topk, return_scores)


def document(doc: Doc) -> dict[str, str]:
    return {"id": doc.id, "contents": doc.contents}


def response_body(results: list[list[Doc]], return_scores: bool) -> dict[str, Any]:
    if return_scores:
        return {"result": [[{"document": document(d), "score": d.score} for d in docs] for docs in results]}
    return {"result": [[document(d) for d in docs] for docs in results]}


def _retriever_class():
    """The Serve deployment class (built lazily so importing this module does not import Ray Serve)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from s3ray.retrieval.searchers import load_searcher

    defaults = RetrieverConfig.model_fields  # the batch settings below are replaced from the config at start

    @serve.deployment
    class Retriever:
        def __init__(self, cfg: S3Config):
            from s3ray.cluster import set_torch_threads

            set_torch_threads(cfg.retriever.torch_threads)
            self.retriever = cfg.retriever
            self.searcher = load_searcher(cfg)
            # Requests in search / search_here now (a request splits only on an idle replica), and the
            # deployment's handle for the chunks (none: never split; the module's docstring says why).
            self.in_flight = 0
            self.peers = None
            if cfg.retriever.num_replicas > 1 and cfg.retriever.max_ongoing_requests > 1:
                here = serve.get_replica_context()
                self.peers = serve.get_deployment_handle(here.deployment, here.app_name)
            # One search thread: torch (OpenMP) keeps one warm thread team instead of one per calling
            # thread, and searches never overlap (a GPU FAISS index must not be searched concurrently).
            self.search_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
            self.search_batch.set_max_batch_size(cfg.retriever.encoder_max_batch_size)
            self.search_batch.set_batch_wait_timeout_s(cfg.retriever.encoder_batch_wait_s)
            self.cluster = serving.cluster_id()  # the health answer's: a deploy tells its own direct port by it
            if cfg.retriever.direct_port is not None:
                serving.start_direct_http(self.direct_request, cfg.serve.host, cfg.retriever.direct_port,
                                          cfg.retriever.route_prefix)

        @serve.batch(max_batch_size=defaults["encoder_max_batch_size"].default,
                     batch_wait_timeout_s=defaults["encoder_batch_wait_s"].default)
        async def search_batch(self, items: list[tuple[str, int]]) -> list[list[Doc]]:
            # One encoder pass and one index search for every query waiting, at the largest k asked.
            k = max(k for _, k in items)
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.search_thread, self.searcher.search,
                                                 [q for q, _ in items], k)
            return [docs[:k] for docs, (_, k) in zip(results, items, strict=True)]

        async def search(self, queries: list[str], k: int) -> list[list[Doc]]:
            """The deployment-handle entry (:mod:`s3ray.retrieval.handle`) and the HTTP route's: a
            many-query request is cut into one chunk per replica, this replica searching the first."""
            r = self.retriever
            parts = [queries]
            if self.peers is not None and self.in_flight == 0:
                parts = split.chunks(queries, r.num_replicas, r.split_min_queries)
            self.in_flight += 1
            try:
                if len(parts) == 1:
                    return await self.search_here(queries, k)
                return await split.search_chunks(
                    parts, lambda i, chunk: self.search_here(chunk, k) if i == 0
                    else self.peers.search_here.remote(chunk, k),
                    timeout_s=r.chunk_timeout_s, fallback=lambda chunk: self.search_here(chunk, k))
            finally:
                self.in_flight -= 1

        async def search_here(self, queries: list[str], k: int) -> list[list[Doc]]:
            """This replica's search, never split (a chunk of a split request): the queries join the batch."""
            self.in_flight += 1
            try:
                return list(await asyncio.gather(*(self.search_batch((q, k)) for q in queries)))
            finally:
                self.in_flight -= 1

        async def search_direct(self, queries: list[str], k: int) -> list[list[Doc]]:
            """A direct-port request's search. The kernel chose this replica by connection, blind to its load
            (four clients' connections can all land on one replica), so a request of several queries that
            finds this replica busy goes through the deployment's handle: Serve's router sends it to the
            less loaded replica. So does a request large enough to be split, even on an idle replica: the
            router then counts it where it runs, and sends its chunk to the other replica. Searched here
            directly, the router could not see this replica busy and sent the chunk back to it in 54 of 95
            32-query requests, so the two halves ran one after the other (2 in 120 through the handle).
            A lone query stays: it joins this replica's next batch, which costs less than the hop
            (bench/bench_retrieval.py, 8 and 32 clients against the peer: 1.47x and 1.49x idle, 1.19x and
            1.07x busy; with lone queries routed too, 1.21x, 1.32x, 0.90x and 0.95x)."""
            if self.peers is not None and len(queries) > 1 and (
                    self.in_flight > 0 or len(queries) >= self.retriever.split_min_queries):
                return await self.peers.search.remote(queries, k)
            return await self.search(queries, k)

        async def __call__(self, request: Request):
            """The proxy route's requests."""
            return await self.answer(request, self.search)

        async def direct_request(self, request: Request):
            """The direct port's requests (serving.start_direct_http)."""
            return await self.answer(request, self.search_direct)

        async def answer(self, request: Request, search):
            # A plain ASGI handler, not a FastAPI app: two routes need no router, and a lone query's
            # latency is mostly such per-request layers (bench/bench_single_query.py).
            route = app_route(request.scope)
            if request.method == "GET" and route == "/health":
                return JSONResponse({"status": "ok", "backend": self.retriever.backend, "rows": self.searcher.rows,
                                     "cluster": self.cluster})
            if request.method != "POST" or route != "":
                return serving.error_response(BadRequest(f"no route {request.method} {route or '/'}", status=404))
            try:
                r = self.retriever
                req = parse_retrieve_request(await serving.read_json(request, r.max_body_bytes),
                                             max_topk=r.max_topk, max_queries=r.max_queries,
                                             default_topk=r.default_topk, max_query_chars=r.max_query_chars)
            except BadRequest as err:
                return serving.error_response(err)
            return JSONResponse(response_body(await search(req.queries, req.topk), req.return_scores))

    return Retriever


def app_route(scope: dict[str, Any]) -> str:
    """The request's path below the app's route prefix, without a trailing slash: "" for ``/retrieve``
    itself, "/health" for ``/retrieve/health`` (whether or not the server put the prefix in the path)."""
    root, path = scope.get("root_path", ""), scope["path"]
    return (path[len(root):] if root and path.startswith(root) else path).rstrip("/")


def build_app(cfg: S3Config):
    """The retriever Serve application (not started), its automatic replicas / threads resolved on the
    cores Ray gives (:mod:`s3ray.resources`)."""
    from s3ray.resources import describe, ray_cores, resolve_resources

    cfg, choices = resolve_resources(cfg, ray_cores())
    log.info("retriever resources: %s", describe(choices, "retriever"))
    r = cfg.retriever
    server = _retriever_class().options(
        num_replicas=r.num_replicas, max_ongoing_requests=r.max_ongoing_requests,
        ray_actor_options={"num_cpus": r.num_cpus, "num_gpus": r.num_gpus,
                           # The handler on the replica's own event loop: Serve's default runs user code
                           # on a second loop in another thread, one more hand-over per request (its
                           # searches run in the search thread either way).
                           "runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}},
        # A log line per request costs the replica CPU at every query of every rollout; errors still log.
        logging_config={"enable_access_log": False})
    return server.bind(cfg)  # Serve pickles the config object to each replica


app_builder = serving.app_builder(build_app)


def serve_app(cfg: S3Config) -> serving.ServeApp:
    """The retriever app (not started), its name, route and health URL."""
    r = cfg.retriever
    direct = None if r.direct_port is None else (cfg.serve.host, r.direct_port)
    return serving.ServeApp(build_app(cfg), r.app_name, r.route_prefix, f"{r.url}/health", direct)


def deploy(cfg: S3Config) -> str:
    """Deploy the retriever app on the Serve proxy at ``serve.host:serve.port``; return its URL once healthy."""
    r = cfg.retriever
    serving.deploy_apps(cfg, [serve_app(cfg)])
    log.info("retriever %s (%s) ready at %s", r.app_name, r.backend, r.url)
    return r.url


def serve_forever(cfg: S3Config) -> None:
    """``s3ray serve-retriever``: deploy, then run until Ctrl-C."""
    serving.serve_forever(cfg, "retriever", deploy)
