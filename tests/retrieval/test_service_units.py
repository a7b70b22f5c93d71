"""The /retrieve contract as pure functions: request validation and both response shapes."""

from __future__ import annotations

import pytest

from s3ray.retrieval.service import app_route, parse_retrieve_request, response_body
from s3ray.types import Doc

LIMITS = {"max_topk": 10, "max_queries": 3, "default_topk": 3}


def test_valid_request_and_defaults():
    req = parse_retrieve_request({"queries": ["a", "b"]}, **LIMITS)
    assert (req.queries, req.topk, req.return_scores) == (["a", "b"], 3, False)
    req = parse_retrieve_request({"queries": ["a"], "topk": 10, "return_scores": True}, **LIMITS)
    assert (req.topk, req.return_scores) == (10, True)


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({}, "'queries' must be a non-empty list"),
    ({"queries": []}, "'queries' must be a non-empty list"),
    ({"queries": "a string"}, "'queries' must be a non-empty list"),
    ({"queries": ["ok", ""]}, "queries[1] must be a non-empty string"),
    ({"queries": ["ok", "   "]}, "queries[1] must be a non-empty string"),
    ({"queries": [None]}, "queries[0] must be a non-empty string"),
    ({"queries": ["a", "b", "c", "d"]}, "too many queries: 4 > 3"),
    ({"queries": ["a"], "topk": 0}, "'topk' must be an integer in 1..10"),
    ({"queries": ["a"], "topk": 11}, "'topk' must be an integer in 1..10"),
    ({"queries": ["a"], "topk": "3"}, "'topk' must be an integer"),
    ({"queries": ["a"], "topk": True}, "'topk' must be an integer"),
    ({"queries": ["a"], "return_scores": "yes"}, "'return_scores' must be true or false"),
])
def test_invalid_requests_say_why(body, message):
    with pytest.raises(ValueError) as err:
        parse_retrieve_request(body, **LIMITS)
    assert message in str(err.value)


def test_response_shapes_match_search_r1():
    docs = [[Doc("d1", "Title", "Text.", 0.5)]]
    document = {"id": "d1", "contents": '"Title"\nText.'}
    assert response_body(docs, True) == {"result": [[{"document": document, "score": 0.5}]]}
    assert response_body(docs, False) == {"result": [[document]]}


@pytest.mark.parametrize("path, route", [("/retrieve", ""), ("/retrieve/", ""), ("/retrieve/health", "/health"),
                                         ("/health", "/health"), ("", ""), ("/retrieve/nope/", "/nope")])
def test_app_route_is_the_path_below_the_prefix(path, route):
    assert app_route({"root_path": "/retrieve", "path": path}) == route
    assert app_route({"path": "/health/"}) == "/health"
