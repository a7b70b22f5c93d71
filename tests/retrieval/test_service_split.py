"""A many-query request split across the retriever's replicas (s3ray.retrieval.split) answers exactly
what the same queries answer one request at a time, in both response shapes and at any topk; and many
concurrent split requests on replicas of two slots each all finish (no replica waits forever on chunks
queued behind requests that themselves wait on chunks)."""

from __future__ import annotations

import httpx
import pytest

from s3ray.config import load_config
from tests.retrieval.test_service_http import dev_questions

pytestmark = pytest.mark.ray

APP = "retriever_split"


@pytest.fixture(scope="module")
def split_cfg(services):
    """Its own app: two replicas of two slots each, and every request of two queries or more split."""
    from ray import serve

    from s3ray.retrieval.service import deploy

    cfg = load_config("test", [f"paths.work_dir={services.paths.work_dir}", f"corpus.path={services.corpus.path}",
                               f"serve.port={services.serve.port}", f"retriever.app_name={APP}",
                               "retriever.route_prefix=/retrieve_split", "retriever.num_replicas=2",
                               "retriever.split_min_queries=2", "retriever.max_ongoing_requests=2"])
    deploy(cfg)
    yield cfg
    serve.delete(APP)


def retrieve(url: str, queries: list[str], topk: int, return_scores: bool) -> list:
    response = httpx.post(url, json={"queries": queries, "topk": topk, "return_scores": return_scores}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["result"]


@pytest.mark.parametrize("topk, return_scores", [(4, True), (2, False)])
def test_a_split_request_answers_what_the_queries_answer_one_by_one(split_cfg, data_dir, topk, return_scores):
    url = split_cfg.retriever.url
    questions = [q["question"] for q in dev_questions(data_dir, 9)]  # chunks of 5 and 4
    split = retrieve(url, questions, topk, return_scores)
    alone = [retrieve(url, [q], topk, return_scores)[0] for q in questions]  # one query: never split
    assert len(split) == len(questions) and all(len(hits) == topk for hits in split)
    if not return_scores:
        assert split == alone
        return
    assert [[h["document"] for h in hits] for hits in split] == [[h["document"] for h in hits] for hits in alone]
    for hits, hits_alone in zip(split, alone, strict=True):  # the same vectors up to the encoder's padding
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in hits_alone], abs=1e-4)


def test_concurrent_split_requests_on_full_replicas_all_finish(split_cfg, data_dir):
    from ray import serve

    questions = [q["question"] for q in dev_questions(data_dir, 16)]
    handle = serve.get_app_handle(APP)
    expected = [docs[0].id for docs in handle.search_here.remote(questions, 1).result(timeout_s=60)]
    # 16 requests of 4 queries at once on 2 replicas x 2 slots: every slot could hold a request waiting
    # on a chunk that waits for a slot.
    requests = [questions[i:i + 4] for i in range(0, 16, 4)] * 4
    responses = [handle.search.remote(queries, 1) for queries in requests]
    answers = [[docs[0].id for docs in response.result(timeout_s=60)] for response in responses]
    assert [a for answer in answers[:4] for a in answer] == expected
    assert answers == answers[:4] * 4


def test_the_handle_client_splits_a_large_call_and_gets_what_one_replica_answers(split_cfg, data_dir):
    from ray import serve

    from s3ray.retrieval.handle import in_cluster_retriever

    questions = [q["question"] for q in dev_questions(data_dir, 7)]
    retriever = in_cluster_retriever(split_cfg)
    assert (retriever.replicas, retriever.split_min_queries) == (2, 2)  # chunks of 4 and 3
    unsplit = serve.get_app_handle(APP).search_here.remote(questions, 3).result(timeout_s=60)
    assert [[d.id for d in docs] for docs in retriever.search(questions, 3)] == \
        [[d.id for d in docs] for docs in unsplit]
