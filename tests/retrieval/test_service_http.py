"""The retriever Serve app over HTTP (the session's `services`): contract shapes, 4xx on every kind of
bad input, health, the client against it, and retrieval quality on real HotpotQA questions."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from s3ray.retrieval.client import RetrievalError, RetrieverClient

pytestmark = pytest.mark.ray


def dev_questions(data_dir, n: int) -> list[dict]:
    """The first dev questions: the small corpus holds the gold paragraphs of the first 40."""
    with open(data_dir / "hotpotqa" / "dev.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


@pytest.fixture(scope="module", params=["direct", "proxy"])
def url(services, request) -> str:
    """Each contract test runs on both routes: the replicas' direct port (the retriever's URL) and Serve's
    proxy."""
    if request.param == "direct":
        return services.retriever.url
    return services.serve.url(services.retriever.route_prefix)


def test_the_url_is_the_direct_port_whose_health_names_this_cluster(services):
    import ray

    from s3ray.retrieval.service import serve_app
    from s3ray.serving import check_direct_port

    r, host = services.retriever, services.serve.host
    assert r.url == f"http://{host}:{r.direct_port}{r.route_prefix}"
    assert httpx.get(f"{r.url}/health", timeout=10).json()["cluster"] == ray.get_runtime_context().gcs_address
    assert httpx.get(f"http://{host}:{r.direct_port}/v1/models", timeout=10).status_code == 404
    check_direct_port(serve_app(services))  # a redeploy: the port is held by this cluster's own replicas


def test_health(url):
    response = httpx.get(f"{url}/health", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert RetrieverClient(url).health() is True


def test_both_response_shapes(url):
    body = {"queries": ["Tinted Windows debut album band", "Who directed the film?"], "topk": 3}
    with_scores = httpx.post(url, json={**body, "return_scores": True}, timeout=30).json()["result"]
    assert len(with_scores) == 2 and all(len(hits) == 3 for hits in with_scores)
    hit = with_scores[0][0]
    # Search-R1's corpus row, each document once: the title line, then the text.
    assert set(hit) == {"document", "score"} and set(hit["document"]) == {"id", "contents"}
    assert hit["document"]["contents"].startswith('"') and '"\n' in hit["document"]["contents"]
    scores = [h["score"] for h in with_scores[0]]
    assert scores == sorted(scores, reverse=True)
    documents = httpx.post(url, json=body, timeout=30).json()["result"]  # return_scores defaults to false
    assert documents[0] == [h["document"] for h in with_scores[0]]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    ("{}", "'queries' must be a non-empty list"),
    ('{"queries": []}', "'queries' must be a non-empty list"),
    ('{"queries": ["ok", ""]}', "queries[1] must be a non-empty string"),
    ('{"queries": [3]}', "queries[0] must be a non-empty string"),
    ('{"queries": ["a"], "topk": 0}', "'topk' must be an integer in 1.."),
    ('{"queries": ["a"], "topk": 100000}', "'topk' must be an integer in 1.."),
    ('{"queries": ["a"], "return_scores": "yes"}', "'return_scores' must be true or false"),
])
def test_bad_input_is_a_4xx_with_a_message(url, content, message):
    response = httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_lone_surrogate_is_a_400_and_the_replica_stays_healthy(url):
    response = httpx.post(url, content='{"queries": ["ok", "\\ud800"]}',
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400 and "queries[1]" in response.json()["error"]["message"]
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert len(RetrieverClient(url).search(["Tinted Windows"], 2)[0]) == 2


def test_query_length_and_body_size_are_capped(url, services):
    r = services.retriever
    long_query = httpx.post(url, json={"queries": ["x" * (r.max_query_chars + 1)]}, timeout=30)
    assert long_query.status_code == 400
    assert f"the limit is {r.max_query_chars}" in long_query.json()["error"]["message"]
    huge = json.dumps({"queries": ["y" * (r.max_body_bytes + 1)]}).encode()
    declared = httpx.post(url, content=huge, headers={"content-type": "application/json"}, timeout=30)
    assert declared.status_code == 413 and str(r.max_body_bytes) in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(huge), 65536):
            yield huge[i:i + 65536]

    streamed = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert streamed.status_code == 413
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_too_many_queries_is_a_4xx(url, services):
    limit = services.retriever.max_queries
    response = httpx.post(url, json={"queries": ["q"] * (limit + 1)}, timeout=30)
    assert response.status_code == 400 and "too many queries" in response.json()["error"]["message"]
    with pytest.raises(RetrievalError, match="HTTP 400"):
        RetrieverClient(url, retries=3).search(["ok", ""], 3)


def test_client_sync_and_concurrent_async_agree(url, services, data_dir):
    client = RetrieverClient(url, timeout_s=services.retriever.timeout_s)
    questions = [q["question"] for q in dev_questions(data_dir, 12)]
    sync = [[d.id for d in docs] for docs in client.search(questions, 3)]

    async def one_by_one():  # concurrent single-query requests: batched together by the server
        return await asyncio.gather(*(client.asearch([q], 3) for q in questions))

    concurrent = [[d.id for d in docs] for [docs] in asyncio.run(one_by_one())]
    assert concurrent == sync


def test_recall_of_supporting_passages(services, data_dir):
    """For dev questions whose gold paragraphs are in the small corpus, one is usually in the top 5."""
    client = RetrieverClient.from_config(services)
    questions = dev_questions(data_dir, 20)
    results = client.search([q["question"] for q in questions], 5)
    hits = sum(bool({d.id for d in docs} & set(q["supporting_passage_ids"]))
               for q, docs in zip(questions, results, strict=True))
    assert hits >= 14, f"only {hits}/20 questions had a supporting passage in the top 5"
