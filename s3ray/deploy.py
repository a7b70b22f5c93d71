"""The ``deploy`` stage: the retriever and (unless it is an external endpoint) the generator Serve apps."""

from __future__ import annotations

from s3ray.config import S3Config
from s3ray.generation import service as generator_service
from s3ray.retrieval import service as retriever_service


def deploy_services(cfg: S3Config) -> None:
    """Deploy both apps, print their URLs, then return.

    Serve apps outlive the driver that deployed them, so a Ray job running this leaves both services
    up for the stages that follow.
    """
    print(f"retriever: {retriever_service.deploy(cfg)}", flush=True)
    if cfg.generator.backend != "openai":
        print(f"generator: {generator_service.deploy(cfg)}", flush=True)
