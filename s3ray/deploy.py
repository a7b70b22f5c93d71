"""The ``deploy`` stage: the retriever and (unless it is an external endpoint) the generator Serve apps."""

from __future__ import annotations

from s3ray import serving
from s3ray.config import S3Config
from s3ray.generation import service as generator_service
from s3ray.retrieval import service as retriever_service


def deploy_services(cfg: S3Config) -> None:
    """Deploy both apps together, print their URLs, then return.

    Serve apps outlive the driver that deployed them, so a Ray job running this leaves both services
    up for the stages that follow.
    """
    apps = [retriever_service.serve_app(cfg)]
    if cfg.generator.backend != "openai":  # else an external endpoint: nothing to deploy
        apps.append(generator_service.serve_app(cfg))
    serving.deploy_apps(cfg, apps)
    r = cfg.retriever
    proxied = "" if r.direct_port is None else f" (its replicas' port; Serve's proxy: {cfg.serve.url(r.route_prefix)})"
    print(f"retriever: {r.url}{proxied}", flush=True)
    print(f"generator: {cfg.generator.base_url}", flush=True)
