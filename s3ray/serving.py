"""The Ray Serve layer under the retriever and generator apps: one HTTP proxy, one way to deploy an app
and wait for it, one way to run it from a terminal, one error body, one bounded request reader.

Each service module builds its own app and calls into this module; nothing here imports a service
(``s3ray.deploy`` is the stage that deploys both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from s3ray.config import S3Config, load_config
from s3ray.ports import port_is_listened_on, socket_for


class BadRequest(ValueError):
    """A request the client must fix; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def error_response(err: BadRequest):
    """The OpenAI-style error body every app answers with: ``{"error": {message, type, code}}``."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": str(err), "type": "invalid_request_error", "code": err.code}},
                        status_code=err.status)


def check_text(value: str, field: str) -> None:
    """A JSON string may carry a lone UTF-16 surrogate (``"\\ud800"``), which no encoder or JSON writer
    accepts: refuse it here, naming the field, instead of failing deep inside the replica."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRequest(f"{field} holds an invalid character at {err.start} (a lone UTF-16 surrogate); "
                         "send valid Unicode text") from None


async def read_json(request, max_bytes: int) -> Any:
    """The request's JSON body, read at most ``max_bytes`` far (413 beyond), 400 if it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(f"the body has {int(declared)} bytes; the limit is {max_bytes}", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(f"the body exceeds the limit of {max_bytes} bytes", status=413)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None


class AppHandle:
    """A Serve application's deployment handle, looked up on first use and once, whatever the number of
    concurrent first calls: in a driver not yet connected to Ray, ``serve.get_app_handle`` connects, and
    two threads connecting at once fail ("Perhaps you called ray.init twice"; the evaluate stage's
    concurrent files did). Not pickled: a copy for another process looks its own handle up."""

    def __init__(self, app_name: str):
        self.app_name = app_name
        self.handle = None
        self._lock = threading.Lock()

    def _lookup(self):
        from ray import serve

        with self._lock:
            if self.handle is None:
                self.handle = serve.get_app_handle(self.app_name)
            return self.handle

    async def get(self):
        """The handle; the lookup asks the Serve controller (a blocking call), so it runs off the event loop."""
        return self.handle or await asyncio.to_thread(self._lookup)


def app_builder(build_app: Callable[[S3Config], Any]) -> Callable[[dict], Any]:
    """The ``import_path`` entry of a ``serve run`` / ``serve deploy`` YAML: its ``args`` are an s3ray
    preset (``config``) and ``overrides``, as on the command line."""

    def builder(args: dict) -> Any:
        return build_app(load_config(args.get("config"), list(args.get("overrides") or [])))

    return builder


# app -> the import_path of its builder (above) in a Serve YAML
SERVE_APPS = {"retriever": "s3ray.retrieval.service:app_builder",
              "generator": "s3ray.generation.service:app_builder"}


def serve_yaml(config: str | None, overrides: list[str], apps: list[str]) -> str:
    """``s3ray serve-config``: a ``serve run`` YAML for ``apps`` that names the preset and the overrides
    instead of copying their settings, so the preset stays the one source of truth (the builder resolves
    them as the CLI does). Only the proxy address and each app's name and route, which Serve reads before
    any builder runs, are written out, from the same config."""
    cfg = load_config(config, overrides)
    if "generator" in apps and cfg.generator.backend == "openai":
        raise ValueError("generator backend 'openai' is an external endpoint: there is no Serve app to write")
    sections = {"retriever": cfg.retriever, "generator": cfg.generator}
    command = " ".join(["s3ray serve-config", *([f"--config {config}"] if config else []),
                        *(f"--app {app}" for app in apps), *overrides])
    header = (f"# Generated by `{command}`: edit the preset, not this file, and regenerate.\n"
              "#   serve run <this file>\n")
    body = {"proxy_location": "HeadOnly", "http_options": {"host": cfg.serve.host, "port": cfg.serve.port},
            "applications": [{"name": sections[app].app_name, "route_prefix": sections[app].route_prefix,
                              "import_path": SERVE_APPS[app],
                              "args": {"config": config, "overrides": list(overrides)}} for app in apps]}
    return header + yaml.safe_dump(body, sort_keys=False)


def ensure_serve(cfg: S3Config) -> None:
    """Start Serve's HTTP proxy on ``serve.host:serve.port`` unless it is already running."""
    from ray import serve

    from s3ray.cluster import init_ray

    init_ray(cfg)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})


def wait_healthy(url: str, timeout_s: float = 300.0) -> None:
    """Poll ``GET url`` until it answers 200."""
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=10)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.TransportError as err:
            last = str(err)
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s:.0f}s: {last}")


def start_direct_http(handler: Callable[[Any], Any], host: str, port: int, route_prefix: str):
    """Answer HTTP on ``host:port`` from inside a replica, on its own event loop, beside Serve's proxy route.

    ``handler`` takes a Starlette request below ``route_prefix`` (the app's own handler) and returns a
    response. A lone request through Serve's proxy pays the proxy's parse and routing and an actor call to
    the replica (bench/bench_single_query.py times each hop); here it pays one uvicorn parse, as a
    single-process FastAPI server does. Every replica on the node binds the same port with SO_REUSEPORT,
    so the kernel spreads connections over them, as Serve's own direct ingress does with its proxies.
    Only the replicas on a node answer its port: an outside client must reach a node that holds one. A
    replica being stopped ends its direct requests with it (Serve drains only the proxy's).
    Returns the uvicorn server (``should_exit = True`` stops it); a port taken by another program raises.
    """
    import uvicorn
    from starlette.requests import Request

    sock = socket_for(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        # Listening now, not when uvicorn's task starts: a port taken by another program fails here, in the
        # replica's constructor (two SO_REUSEADDR sockets may both bind while neither listens).
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise RuntimeError(f"the direct port {host}:{port} cannot be bound ({err}); choose a free one") from err
    prefix = route_prefix.rstrip("/")

    async def app(scope, receive, send):
        path = scope["path"]
        if path == prefix or path.startswith(prefix + "/"):
            response = await handler(Request({**scope, "root_path": prefix}, receive))
        else:
            response = error_response(BadRequest(f"no route {path}; this port serves {prefix or '/'}", status=404))
        await response(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                                           log_config=None))
    # The replica's loop is not the process's main thread, and its signals belong to Ray: uvicorn must
    # not install handlers for them.
    server.capture_signals = contextlib.nullcontext
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    _direct_servers.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_direct_servers.discard)
    return server


_direct_servers: set[asyncio.Task] = set()


@dataclass(frozen=True)
class ServeApp:
    """A built Serve application (not started) and where it answers: what deploying it takes."""

    app: Any
    name: str
    route_prefix: str
    health_url: str
    # The port the app's replicas also answer on (start_direct_http), health_url's; None: the proxy only.
    direct: tuple[str, int] | None = None


def cluster_id() -> str:
    """This Ray cluster's GCS address: what a direct port's health answer names, so a deploy can tell its
    own replicas on the port from another program's (see check_direct_port)."""
    import ray

    return ray.get_runtime_context().gcs_address


def check_direct_port(app: ServeApp) -> None:
    """Refuse a direct port another program listens on. SO_REUSEPORT would not refuse it: a second s3ray
    cluster's replicas, or a Serve proxy, on the same port would silently take a share of the connections.
    The port may be held by this cluster's own replicas of the app (a redeploy): their health says so."""
    host, port = app.direct
    if not port_is_listened_on(host, port):
        return
    try:
        owner = httpx.get(app.health_url, timeout=5).json().get("cluster")
    except (httpx.HTTPError, ValueError, AttributeError):
        owner = None
    if owner != cluster_id():
        raise RuntimeError(f"{app.name}'s direct port {host}:{port} is in use by another program; "
                           f"set {app.name}.direct_port to a free port, or to null to serve through the proxy only")


def deploy_apps(cfg: S3Config, apps: Sequence[ServeApp]) -> None:
    """Run ``apps`` on the proxy at ``serve.host:serve.port`` and return once every health URL answers.

    One ``serve.run_many`` call: the apps' replicas start side by side (on 2 cores the generator's
    replica loads while the retriever's do, instead of after them)."""
    from ray import serve

    ensure_serve(cfg)
    for app in apps:
        if app.direct is not None:
            check_direct_port(app)
    serve.run_many([serve.RunTarget(target=a.app, name=a.name, route_prefix=a.route_prefix) for a in apps])
    for app in apps:
        wait_healthy(app.health_url)


def serve_forever(cfg: S3Config, name: str, deploy: Callable[[S3Config], str]) -> None:
    """Deploy, then keep the driver alive until Ctrl-C (SIGINT) or SIGTERM.

    On a cluster this process started, stopping it stops the app. On an existing cluster
    (``cluster.address`` / ``RAY_ADDRESS``) the app stays up there, and the message says how to remove it.
    """
    import ray

    url = deploy(cfg)
    print(f"{name}: {url} (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    stop.wait()
    started = time.monotonic()
    external = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    where = (f"leaving; the app stays up on {external} (`serve shutdown` removes it)" if external
             else "stopping the local cluster and the app with it")
    print(f"{name}: {signal.Signals(received[0]).name}: {where} ...", flush=True)
    # Handled here instead of as a KeyboardInterrupt at whatever line the driver was on: on a local
    # cluster, ray.shutdown() ends the Serve controller, proxy and replicas with it, in seconds
    # (tests/test_serve_cli.py holds it under 10 s).
    ray.shutdown()
    print(f"{name}: stopped in {time.monotonic() - started:.1f} s", flush=True)
