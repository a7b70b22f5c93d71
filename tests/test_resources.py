"""Automatic replicas and threads follow the cores they are given; configured values are kept; the
resolved choices reach the retriever app and `s3ray config`."""

from __future__ import annotations

import pytest

from s3ray.cli import main
from s3ray.config import load_config
from s3ray.resources import Choice, describe, resolve_resources, usable_cores


def cfg_for(*overrides):
    return load_config("demo_cpu", list(overrides))


@pytest.mark.parametrize("cores, overrides, replicas, threads", [
    (2, [], 2, 1),  # one 1-thread replica per core
    (1, [], 1, 1),
    (8, ["retriever.torch_threads=2"], 4, 2),
    (2, ["retriever.torch_threads=0"], 1, 2),  # one replica, its threads on every core
    (4, ["retriever.num_replicas=3", "retriever.torch_threads=0"], 3, 1),
    (4, ["retriever.num_gpus=1"], 1, 1),  # a GPU replica: one
])
def test_retriever_replicas_and_threads_follow_the_cores(cores, overrides, replicas, threads):
    resolved, choices = resolve_resources(cfg_for(*overrides), cores)
    assert (resolved.retriever.num_replicas, resolved.retriever.torch_threads) == (replicas, threads)
    why = {c.key: c.why for c in choices}
    configured = "retriever.num_replicas=3" in overrides
    assert why["retriever.num_replicas"].startswith("configured" if configured else "auto")


@pytest.mark.parametrize("cores, overrides, actors, threads", [
    (2, [], 2, 1),  # one 1-thread actor per core
    (6, [], 6, 1),
    (1, [], 1, 1),
    (6, ["index.embed_actors=2"], 2, 3),  # configured actors share the cores
    (8, ["index.embed_torch_threads=4"], 2, 4),  # configured threads: one actor per 4 cores
    (6, ["index.embed_num_gpus=1"], 1, 6),  # one actor for its GPU
])
def test_embed_actors_and_threads_follow_the_cores(cores, overrides, actors, threads):
    resolved, choices = resolve_resources(cfg_for(*overrides), cores)
    assert (resolved.index.embed_actors, resolved.index.embed_torch_threads) == (actors, threads)
    why = {c.key: c.why for c in choices}
    assert why["index.embed_actors"].startswith("configured" if "index.embed_actors=2" in overrides else "auto")


def test_usable_cores_are_at_most_what_ray_gives():
    assert usable_cores(1) == 1 and usable_cores(None) == usable_cores(10_000) >= 1


def test_cli_config_prints_the_choices_and_their_reasons(capsys):
    assert main(["config", "--config", "demo_cpu", "cluster.num_cpus=1"]) == 0
    out = capsys.readouterr().out
    assert "# resolved on 1 core(s)" in out and "retriever.num_replicas: 1  (auto: one 1-thread replica" in out
    assert "retriever:\n" in out and "  num_replicas: 1\n" in out


@pytest.mark.parametrize("cores, overrides, split", [
    (2, [], 8),  # four queries per replica, two replicas
    (8, ["retriever.torch_threads=2"], 16),
    (2, ["retriever.split_min_queries=3"], 3),  # configured: kept
])
def test_split_threshold_follows_the_replicas_unless_configured(cores, overrides, split):
    resolved, choices = resolve_resources(cfg_for(*overrides), cores)
    assert resolved.retriever.split_min_queries == split
    why = {c.key: c.why for c in choices}["retriever.split_min_queries"]
    assert why.startswith("configured" if overrides and "split" in overrides[0] else "auto")


def test_describe_names_one_sections_choices_with_their_reasons():
    choices = [Choice("retriever.num_replicas", 2, "auto: per core"), Choice("index.embed_actors", 2, "configured")]
    assert describe(choices, "retriever") == "retriever.num_replicas=2 (auto: per core)"
    assert describe(choices, "index") == "index.embed_actors=2 (configured)"
