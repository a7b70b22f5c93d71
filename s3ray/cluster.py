"""Connecting to Ray: one place that decides between an existing cluster and a local one."""

from __future__ import annotations

import os

from s3ray.config import S3Config


def worker_env(cfg: S3Config) -> dict[str, str]:
    """What every Ray worker, replica and job driver needs in its environment: the same data folder as
    the driver, and no model-hub access where ``cluster.hub_offline`` says so."""
    env = {"S3RAY_DATA_DIR": str(cfg.paths.data_dir), "TOKENIZERS_PARALLELISM": "false"}
    if cfg.cluster.hub_offline:
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return env


def init_ray(cfg: S3Config, *, include_dashboard: bool | None = None) -> None:
    """Connect to ``cluster.address`` / ``RAY_ADDRESS`` if set, else start a local cluster.

    Idempotent: a process already connected keeps its connection (Ray Jobs and Train workers).
    """
    import ray

    if ray.is_initialized():
        return
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    # Workers and Serve replicas must find the same data and store as the driver.
    env_vars = worker_env(cfg)
    if address:
        # A Ray job's driver already carries its job's runtime env, and Ray refuses to merge the same
        # keys twice: pass only what this process lacks.
        missing = {k: v for k, v in env_vars.items() if os.environ.get(k) != v}
        ray.init(address=address, runtime_env={"env_vars": missing} if missing else None, log_to_driver=True)
        return
    kwargs = {}
    if cfg.cluster.object_store_mb:
        kwargs["object_store_memory"] = cfg.cluster.object_store_mb * 1024 * 1024
    # address="local": a new instance even when another cluster on this machine was started last
    # (plain ray.init() would attach to the one named in /tmp/ray/ray_current_cluster).
    ray.init(
        address="local",
        num_cpus=cfg.cluster.num_cpus,
        include_dashboard=include_dashboard if include_dashboard is not None else False,
        dashboard_host=cfg.cluster.dashboard_host,
        runtime_env={"env_vars": env_vars},
        _system_config={"worker_niceness": cfg.cluster.worker_niceness},
        **kwargs,
    )


def set_torch_threads(threads: int, sharers: int = 1) -> int:
    """Set this process's torch thread count and return it: ``threads``, or with 0 the node's cores
    divided among ``sharers`` processes doing the same work.

    Ray sets ``OMP_NUM_THREADS`` to an actor's whole CPUs, so an actor reserving 0.25 CPU would encode
    with one thread while the node has cores to spare; the reservation is for scheduling, not a cap.
    """
    import torch

    n = threads or max(1, len(os.sched_getaffinity(0)) // max(1, sharers))
    torch.set_num_threads(n)
    return n
