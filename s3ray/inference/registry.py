"""Gatherer names -> factories ``(cfg) -> ContextGatherer``, and the clients they are built with."""

from __future__ import annotations

from collections.abc import Callable

from s3ray.config import GeneratorConfig, S3Config
from s3ray.inference.base import ContextGatherer


class GathererUnavailable(RuntimeError):
    """The gatherer cannot run with this config (e.g. no Search-R1 checkpoint); its row is skipped."""


def retriever_client(cfg: S3Config):
    from s3ray.retrieval.client import RetrieverClient

    return RetrieverClient.from_config(cfg)


def bm25_retriever_client(cfg: S3Config):
    if cfg.inference.bm25_retriever_url:
        from s3ray.retrieval.client import RetrieverClient

        return RetrieverClient(cfg.inference.bm25_retriever_url, timeout_s=cfg.retriever.timeout_s,
                               retries=cfg.retriever.retries)
    if cfg.retriever.backend == "bm25":
        return retriever_client(cfg)
    raise GathererUnavailable("BM25 rows need a retriever serving BM25: set inference.bm25_retriever_url "
                              "(a second retriever app with retriever.backend=bm25) or retriever.backend=bm25")


def reasoner_client(cfg: S3Config):
    from s3ray.generation.client import GeneratorClient

    return GeneratorClient.from_config(cfg.inference.reasoner or cfg.generator)


def search_r1_client(cfg: S3Config):
    inf = cfg.inference
    if not inf.search_r1_model:
        raise GathererUnavailable("search_r1 needs a Search-R1 checkpoint: set inference.search_r1_model "
                                  "and inference.search_r1_base_url (an endpoint serving it)")
    if not inf.search_r1_base_url:
        raise GathererUnavailable(f"search_r1: inference.search_r1_base_url is not set; serve "
                                  f"{inf.search_r1_model} behind an OpenAI-compatible endpoint "
                                  "(generator backend hf or vllm) and give its /v1 URL")
    from s3ray.generation.client import GeneratorClient

    base = cfg.inference.reasoner or cfg.generator
    gen_cfg = GeneratorConfig(**(base.model_dump() | {"backend": "openai", "model": inf.search_r1_model,
                                                      "served_model_name": None,
                                                      "base_url": inf.search_r1_base_url}))
    return GeneratorClient.from_config(gen_cfg)


def _naive_rag(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.naive_rag import NaiveRagGatherer

    return NaiveRagGatherer("naive_rag", retriever_client(cfg), cfg.inference.baseline_k,
                            cfg.inference.query_without_options)


def _naive_rag_bm25(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.naive_rag import NaiveRagGatherer

    return NaiveRagGatherer("naive_rag_bm25", bm25_retriever_client(cfg), cfg.inference.baseline_k,
                            cfg.inference.query_without_options)


def _direct(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.direct import direct_gatherer

    return direct_gatherer()


def _cot(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.cot import cot_gatherer

    return cot_gatherer()


def _ircot(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.ircot import IrcotGatherer

    inf = cfg.inference
    return IrcotGatherer(retriever_client(cfg), reasoner_client(cfg), inf.baseline_k, inf.ircot_max_steps,
                         inf.ircot_sampling, inf.ircot_style, inf.ircot_dedup)


def _search_o1(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.search_o1 import SearchO1Gatherer

    inf = cfg.inference
    return SearchO1Gatherer(retriever_client(cfg), reasoner_client(cfg), inf.baseline_k,
                            inf.search_o1_max_searches, inf.search_o1_sampling, inf.search_o1_context)


def _search_r1(cfg: S3Config) -> ContextGatherer:
    from s3ray.inference.search_r1 import SearchR1Gatherer

    inf = cfg.inference
    model = search_r1_client(cfg)  # first: an unconfigured checkpoint skips the row before anything starts
    return SearchR1Gatherer(retriever_client(cfg), model, inf.baseline_k, inf.search_r1_max_turns,
                            inf.search_r1_sampling, inf.search_r1_api, inf.search_r1_template,
                            inf.search_r1_final_turn)


def _deepretrieval(cfg: S3Config) -> ContextGatherer:
    from s3ray.generation.client import GeneratorClient
    from s3ray.inference.deepretrieval import DeepRetrievalGatherer

    inf = cfg.inference
    rewriter = GeneratorClient.from_config(inf.deepretrieval_rewriter) if inf.deepretrieval_rewriter \
        else reasoner_client(cfg)
    return DeepRetrievalGatherer(bm25_retriever_client(cfg), rewriter, inf.baseline_k, inf.deepretrieval_sampling,
                                 inf.deepretrieval_query, inf.deepretrieval_candidates,
                                 inf.deepretrieval_on_failed_rewrite)


def _s3_variant(name: str) -> Callable[[S3Config], ContextGatherer]:
    def factory(cfg: S3Config) -> ContextGatherer:
        from s3ray.inference.s3 import S3Gatherer

        return S3Gatherer(cfg, name)

    return factory


GATHERERS: dict[str, Callable[[S3Config], ContextGatherer]] = {
    "direct": _direct,
    "cot": _cot,
    "naive_rag": _naive_rag,
    "naive_rag_bm25": _naive_rag_bm25,
    "ircot": _ircot,
    "search_o1": _search_o1,
    "search_r1": _search_r1,
    "deepretrieval": _deepretrieval,
    **{name: _s3_variant(name) for name in ("s3", "s3_no_select", "s3_no_init", "s3_no_both", "s3_teacher")},
}


def build_gatherer(name: str, cfg: S3Config) -> ContextGatherer:
    if name not in GATHERERS:
        raise ValueError(f"unknown gatherer {name!r}; known: {sorted(GATHERERS)}")
    return GATHERERS[name](cfg)
