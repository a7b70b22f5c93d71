"""One factory for the reward's services: who answers, who judges, which cache, all from one config."""

from __future__ import annotations

import pytest

from s3ray.config import load_config
from s3ray.generation.handle import HandleGenerator
from s3ray.reward.cache import RagCache
from s3ray.reward.record import CacheIdentity
from s3ray.reward.services import Services

JUDGE = "judge.generator={backend: openai, model: judge-m, base_url: 'http://127.0.0.1:9/v1'}"


def cfg_for(tmp_path, *overrides):
    return load_config("test", [f"paths.work_dir={tmp_path}", *overrides])


def test_services_follow_the_config(tmp_path):
    cfg = cfg_for(tmp_path, "judge.enabled=true", JUDGE)
    services = Services(cfg)
    assert isinstance(services.generator, HandleGenerator)  # the reader this cluster serves
    assert services.generator.app_name == cfg.generator.app_name
    assert services.scorer.judge_client.model == "judge-m" and services.scorer.judge_style == "contains"
    assert services.identity == CacheIdentity.from_config(cfg) and services.identity.judge == "openai:judge-m:contains"
    assert isinstance(services.rag_cache, RagCache) and len(services.rag_cache) == 0
    aligns = services.genacc_scorer(style="aligns", span_check=False)
    assert aligns.judge_style == "aligns" and not aligns.span_check
    reward = services.reward_scorer()
    assert (reward.generator, reward.scorer, reward.rag_k) == (services.generator, services.scorer,
                                                              cfg.rag_cache.topk)


def test_the_evaluations_generator_and_judge_replace_the_trainings(tmp_path):
    cfg = cfg_for(tmp_path, "judge.enabled=true", JUDGE)
    other = cfg.generator.model_copy(update={"model": "eval-m", "backend": "openai"})
    services = Services(cfg, generator=other, judge=other)
    assert services.generator.model == "eval-m" and services.scorer.judge_client.model == "eval-m"


def test_a_service_is_built_only_when_used(tmp_path):
    services = Services(cfg_for(tmp_path, "judge.enabled=true"))  # the reader cannot judge
    assert services.generator.model  # answering needs no judge
    with pytest.raises(ValueError, match="needs an LLM judge"):
        _ = services.scorer
