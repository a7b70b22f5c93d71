"""What the cores call for: the retriever's replicas, threads and split size, and the embedders' actors
and threads, that a config's automatic settings (0) resolve to on the cores Ray gives, each with its
reason. The retriever's deployment, its in-cluster handle and the index's embed actors use them;
``s3ray config`` prints them.

Why one 1-thread retriever replica per core by default: on an idle 2-core machine one 1-thread replica
leaves a core idle, and a 2-thread team collapses when the machine is busy (its threads wait at every
OpenMP barrier for a preempted teammate: c8 fell from 40 to 6 queries/s). Replicas of one thread each
use every idle core and have no teammate to wait for.

Why one 1-thread embed actor per core by default (the index stage): measured idle on 2 cores, the
same trade-off as the retriever's. One 2-thread actor starts sooner (its imports and model load are paid
once: ready 8.4 s after the pipeline started, two actors 11-12 s) and built the bench's 1,000-passage
index in 18.5 s against 31 s; but it encodes at 1.85x one thread where two actors reach 2x, and in the
demo's index job, with the dashboard and job processes beside it, its team stalled: 3,600 passages
embedded in 62.8 s against 56.0 s with two 1-thread actors. The demo's corpus and larger ones, and a busy
machine, favour one thread per actor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from s3ray.config import S3Config, config_from_dict

# The smallest chunk worth a handle call to another replica: one thread encodes a short query in ~6 ms
# (MiniLM, 2-core machine under load; 4 queries 35 ms, 8 queries 62 ms) and a handle call costs ~3.4 ms
# (bench/bench_single_query.py), so a chunk of one or two queries would save about what its call costs.
SPLIT_QUERIES_PER_REPLICA = 4


@dataclass(frozen=True)
class Choice:
    key: str  # dotted config key
    value: int
    why: str


def describe(choices: list[Choice], section: str) -> str:
    """One log line of the choices for a config section (``"retriever"``, ``"index"``), each with its reason."""
    return "; ".join(f"{c.key}={c.value} ({c.why})" for c in choices if c.key.startswith(section + "."))


def usable_cores(ray_cpus: float | None = None) -> int:
    """The cores this process may run on (its CPU affinity), fewer when Ray's cluster has fewer logical
    CPUs (``ray_cpus``); logical CPUs beyond the cores (a cluster started with more) add no compute."""
    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, int(ray_cpus))) if ray_cpus else cores


def ray_cores() -> int:
    """:func:`usable_cores` as the connected Ray cluster sees them (this machine's alone without Ray)."""
    import ray

    return usable_cores(ray.cluster_resources().get("CPU") if ray.is_initialized() else None)


def resource_choices(cfg: S3Config, cores: int) -> list[Choice]:
    """The retriever's and embedders' replicas / threads on ``cores`` cores: a configured value is kept,
    an automatic one (0) is chosen here."""
    r, index = cfg.retriever, cfg.index
    if r.num_replicas:
        replicas = Choice("retriever.num_replicas", r.num_replicas, "configured")
    elif r.num_gpus > 0:
        replicas = Choice("retriever.num_replicas", 1, "auto: one replica for its GPU")
    elif r.torch_threads == 0:
        replicas = Choice("retriever.num_replicas", 1, "auto: one replica, its threads on every core")
    else:
        n = max(1, cores // r.torch_threads)
        per = "core" if r.torch_threads == 1 else f"{r.torch_threads} cores"
        replicas = Choice("retriever.num_replicas", n,
                          f"auto: one {r.torch_threads}-thread replica per {per} of {cores}: every idle core "
                          "used, no thread team to stall when the machine is busy")
    if r.torch_threads:
        threads = Choice("retriever.torch_threads", r.torch_threads, "configured")
    else:
        threads = Choice("retriever.torch_threads", max(1, cores // replicas.value),
                         f"auto: {cores} cores shared among {replicas.value} replica(s)")
    if index.embed_actors:
        actors = Choice("index.embed_actors", index.embed_actors, "configured")
    elif index.embed_num_gpus > 0:
        actors = Choice("index.embed_actors", 1, "auto: one actor for its GPU")
    else:
        per = index.embed_torch_threads or 1
        actors = Choice("index.embed_actors", max(1, cores // per),
                        f"auto: one {per}-thread actor per {'core' if per == 1 else f'{per} cores'} of {cores}: "
                        "no thread team to stall beside the driver and Ray's processes")
    if index.embed_torch_threads:
        embed = Choice("index.embed_torch_threads", index.embed_torch_threads, "configured")
    else:
        embed = Choice("index.embed_torch_threads", max(1, cores // actors.value),
                       f"auto: {cores} cores shared among {actors.value} embed actor(s)")
    if r.split_min_queries:
        split = Choice("retriever.split_min_queries", r.split_min_queries, "configured")
    else:
        split = Choice("retriever.split_min_queries", SPLIT_QUERIES_PER_REPLICA * replicas.value,
                       f"auto: {SPLIT_QUERIES_PER_REPLICA} queries per replica"
                       + (", so a chunk's encode saves more than its handle call costs" if replicas.value > 1
                          else " (one replica: never split)"))
    return [replicas, threads, actors, embed, split]


def resolve_resources(cfg: S3Config, cores: int) -> tuple[S3Config, list[Choice]]:
    """``cfg`` with every automatic choice of :func:`resource_choices` filled in, and the choices."""
    choices = resource_choices(cfg, cores)
    data = cfg.model_dump(mode="json")
    for choice in choices:
        section, key = choice.key.split(".")
        data[section][key] = choice.value
    return config_from_dict(data), choices
