"""Parse one searcher turn into an action (s3 §2.3).

- Text after the first ``</query>`` is dropped: the engine stops there, and anything a model writes
  beyond it (``<important_info>``, ``<search_complete>``) belongs to no action.
- ``<search_complete>`` parsing as true wins, even when a query is present.
- Otherwise a ``<query>`` makes the turn a search. Its body is JSON ``{"query": ...}`` (a list value
  gives its first element); invalid JSON or a missing key falls back to the raw body. An empty
  query is no search: the turn is invalid.
- Otherwise the turn is invalid; the environment answers with the nudge.
- ``<important_info>`` ids are all integers in the first tag's body, de-duplicated in order. A tag with
  no integers (``[]``, or a body that does not parse) is an empty selection, not a missing one: it
  claims its block, which then gives the generator nothing (s3's rule, :mod:`s3ray.agent.selection`).
  ``important_info`` is None only when the turn has no tag.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

ActionKind = Literal["search", "complete", "invalid"]

QUERY_CLOSE = "</query>"
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _tag(name: str) -> re.Pattern:
    return re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL | re.IGNORECASE)


_QUERY = _tag("query")
_IMPORTANT = _tag("important_info")
_COMPLETE = _tag("search_complete")
_THINK = _tag("think")
_LAST_CLOSING_TAG = re.compile(r".*</(?:think|important_info|search_complete|information)>", re.DOTALL)
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class TurnAction:
    kind: ActionKind
    query: str | None = None  # the search query (kind == "search")
    important_info: list[int] | None = None  # doc ids named in <important_info>; None: no tag
    search_complete: bool | None = None  # None: no parsable <search_complete> tag
    think: str | None = None
    text: str = ""  # the turn's text up to and including the first </query>


def parse_bool(text: str) -> bool | None:
    """s3's ``search_complete`` values: True/False, yes/no, y/n, 1/0, any case; None otherwise."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def parse_query_body(body: str) -> str:
    """``{"query": "..."}`` -> the query; a list value -> its first element; else the raw body."""
    raw = body.strip()
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(data, dict) and "query" in data:
        value = data["query"]
        if isinstance(value, list):
            value = value[0] if value else ""
        return str(value).strip()
    return raw


def parse_ids(body: str) -> list[int]:
    """Every integer in the body, de-duplicated in order (ids outside a block are dropped later)."""
    return list(dict.fromkeys(int(m) for m in _INT.findall(body)))


def _query_body(text: str) -> str | None:
    close = text.lower().find(QUERY_CLOSE)
    if close < 0:
        return None
    match = _QUERY.search(text)
    if match is not None:
        return match.group(1)
    # "</query>" with no opening tag (a model continuing an opened query): the body starts after the
    # last closing tag of another element, as if "<query>" had been written there.
    head = text[:close]
    previous = _LAST_CLOSING_TAG.match(head)
    return head[previous.end():] if previous else head


def parse_turn(text: str) -> TurnAction:
    close = text.lower().find(QUERY_CLOSE)
    if close >= 0:
        text = text[:close + len(QUERY_CLOSE)]
    important = _IMPORTANT.search(text)
    complete_tag = _COMPLETE.search(text)
    think = _THINK.search(text)
    complete = parse_bool(complete_tag.group(1)) if complete_tag else None
    common = dict(
        important_info=parse_ids(important.group(1)) if important else None,
        search_complete=complete,
        think=think.group(1).strip() if think else None,
        text=text,
    )
    if complete:
        return TurnAction("complete", **common)
    body = _query_body(text)
    if body is not None:
        query = parse_query_body(body)
        if query:
            return TurnAction("search", query=query, **common)
    return TurnAction("invalid", **common)
