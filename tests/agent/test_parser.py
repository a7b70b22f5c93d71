import pytest

from s3ray.agent.parser import parse_bool, parse_query_body, parse_turn


@pytest.mark.parametrize("value,expected", [
    ("True", True), ("true", True), ("TRUE", True), (" yes ", True), ("Y", True), ("1", True),
    ("False", False), ("no", False), ("N", False), ("0", False), ("maybe", None), ("", None),
])
def test_search_complete_values(value, expected):
    assert parse_bool(value) is expected


def test_complete_wins_over_query():
    action = parse_turn('<search_complete>yes</search_complete>\n<query>{"query": "x"}</query>')
    assert action.kind == "complete" and action.search_complete is True


def test_complete_false_with_query_is_search():
    action = parse_turn('<important_info>[2, 3]</important_info><search_complete>False</search_complete>'
                        '<query>{"query": "who directed Jaws"}</query>')
    assert action.kind == "search"
    assert action.query == "who directed Jaws"
    assert action.important_info == [2, 3]
    assert action.search_complete is False


def test_text_after_first_query_close_is_dropped():
    action = parse_turn('<query>{"query": "a"}</query> then <search_complete>True</search_complete>'
                        '<important_info>[1]</important_info><query>{"query": "b"}</query>')
    assert action.kind == "search" and action.query == "a"
    assert action.important_info is None and action.search_complete is None
    assert action.text.endswith("</query>") and "b" not in action.text


@pytest.mark.parametrize("body,query", [
    ('{"query": "capital of France"}', "capital of France"),
    ('{"query": ["first one", "second"]}', "first one"),
    ('{"q": "no query key"}', '{"q": "no query key"}'),
    ("plain text query", "plain text query"),
    ('{"query": "broken json"', '{"query": "broken json"'),
    ('  {"query": "  padded  "}  ', "padded"),
    ('["a list"]', '["a list"]'),
])
def test_query_body_fallbacks(body, query):
    assert parse_query_body(body) == query
    assert parse_turn(f"<query>{body}</query>").query == query


def test_query_without_opening_tag_takes_text_after_last_closing_tag():
    action = parse_turn('<important_info>[1]</important_info>\n{"query": "x y"}</query>')
    assert action.kind == "search" and action.query == "x y" and action.important_info == [1]


@pytest.mark.parametrize("text", [
    "", "I do not know", "<query>unterminated", "<query>  </query>", '<query>{"query": ""}</query>',
    "<search_complete>maybe</search_complete>", "<search_complete>False</search_complete>",
])
def test_invalid_turns(text):
    assert parse_turn(text).kind == "invalid"


def test_important_info_takes_all_integers_of_the_first_tag_deduplicated():
    action = parse_turn("<important_info>Doc 3, and [1, 3, 7]</important_info>"
                        "<important_info>[5]</important_info><search_complete>True</search_complete>")
    assert action.important_info == [3, 1, 7]


def test_think_and_case_insensitive_tags():
    action = parse_turn("<THINK> need more </THINK><Search_Complete>True</Search_Complete>")
    assert action.kind == "complete" and action.think == "need more"


def test_multiline_query_json():
    action = parse_turn('<query>\n{\n  "query": "multi line"\n}\n</query>')
    assert action.query == "multi line"


@pytest.mark.parametrize("body", ["[]", "none of them", ""])
def test_an_empty_or_unparsable_selection_is_not_a_missing_one(body):
    empty = parse_turn(f"<important_info>{body}</important_info><search_complete>True</search_complete>")
    missing = parse_turn("<search_complete>True</search_complete>")
    assert empty.important_info == [] and missing.important_info is None
