"""The warm-start teachers: which entities they query, what they select, when they stop."""

from __future__ import annotations

import pytest

from s3ray.agent.heuristic import candidate_entities, heuristic_turn
from s3ray.agent.parser import parse_turn
from s3ray.agent.trace import Trace, Turn
from s3ray.config import AgentConfig
from s3ray.types import Doc

QUESTION = "What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?"
FILM = Doc("1", "Kiss and Tell (1945 film)", "Kiss and Tell is a 1945 American comedy film starring "
           "Shirley Temple as Corliss Archer. In the film, two teenage girls cause their parents much "
           "concern when they start to become interested in boys.")
OTHER = Doc("2", "Meet Corliss Archer", "Meet Corliss Archer is an American radio series. Born in "
            "1943, it was created by F. Hugh Herbert.")
TEMPLE = Doc("7", "Shirley Temple", "Shirley Temple Black was an American actress and diplomat. She "
             "served as Chief of Protocol of the United States.")
CFG = AgentConfig(initial_k=2, search_k=3, select_cap=2, max_turns=2)


def episode(queries: list[str], blocks: list[list[Doc]]) -> Trace:
    """The trace of an episode whose searches for ``queries`` returned ``blocks[1:]``."""
    turns = [Turn(text="", action="search", query=query, results=block)
             for query, block in zip(queries, blocks[1:], strict=True)]
    return Trace(initial_docs=blocks[0], turns=turns)


def test_candidates_are_entities_the_question_does_not_name_in_rank_order():
    found = candidate_entities([FILM, OTHER], QUESTION)
    assert found[0] == "Shirley Temple"  # the bridge entity of the top doc comes first
    assert "Corliss Archer" not in found and "Kiss and Tell" not in found  # the question names them
    assert "Meet Corliss Archer" not in found  # a doc's own title: already retrieved
    assert "Born" not in found and "Hugh Herbert" in found  # a lone sentence opener is no name


def test_bridge_teacher_searches_the_question_then_the_bridge_entity():
    first = parse_turn(heuristic_turn(QUESTION, episode([], [[FILM, OTHER]]), CFG))
    assert first.kind == "search" and first.query == QUESTION and first.important_info is None
    cut_off = Doc("5", "Corliss Archer (film)", "A 1949 film about Corliss Archer.")
    after = episode([QUESTION], [[FILM, OTHER], [FILM, OTHER, cut_off]])
    second = parse_turn(heuristic_turn(QUESTION, after, CFG))
    assert second.important_info == [3]  # the doc naive RAG's k cut off, not its own docs again
    assert second.kind == "search" and second.query == "who is Shirley Temple"


def test_bridge_teacher_selects_the_entitys_passage_and_stops_when_its_searches_are_spent():
    turns = [QUESTION, "who is Shirley Temple"]
    last = parse_turn(heuristic_turn(QUESTION, episode(turns, [[FILM, OTHER], [FILM], [FILM, TEMPLE, OTHER]]), CFG))
    assert last.kind == "complete" and last.important_info == [2]  # Temple's passage
    nothing_new = parse_turn(heuristic_turn(QUESTION, episode(turns, [[FILM, OTHER], [FILM], [OTHER]]), CFG))
    assert nothing_new.kind == "complete"
    assert nothing_new.important_info == []  # claimed, so the unhelpful block adds no doc


def test_format_teacher_names_each_entity_once_over_its_draws_and_searches_once():
    cfg = CFG.model_copy(update={"max_turns": 3})
    start = episode([], [[FILM, OTHER]])
    entities = candidate_entities([FILM], QUESTION)
    assert len(entities) >= 2
    turns = [parse_turn(heuristic_turn(QUESTION, start, cfg, teacher="format", draw=d)) for d in range(len(entities))]
    assert all(t.kind == "search" and t.important_info == [1] for t in turns)  # keeps the top turn-0 doc
    assert sorted(t.query.removeprefix("who is ") for t in turns) == sorted(entities)
    assert heuristic_turn(QUESTION, start, cfg, teacher="format", draw=len(entities)) == \
        heuristic_turn(QUESTION, start, cfg, teacher="format")
    first = turns[0]
    after = episode([first.query], [[FILM, OTHER], [TEMPLE]])
    done = parse_turn(heuristic_turn(QUESTION, after, cfg, teacher="format"))
    assert done.kind == "complete" and done.important_info == [1]


def test_no_entity_to_name_means_no_search_and_unknown_teachers_are_refused():
    plain = Doc("1", "Kiss and Tell", "a film.")
    start = episode([], [[plain]])
    assert parse_turn(heuristic_turn(QUESTION, start, CFG, teacher="format")).kind == "complete"
    with pytest.raises(ValueError, match="teacher"):
        heuristic_turn(QUESTION, start, CFG, teacher="oracle")


def test_the_teacher_reads_the_docs_as_the_searcher_read_them():
    """One line per doc, as the observation shows it, and a title with parentheses whole."""
    spread = Doc("1", "Kiss and Tell\n(1945 film)", "Kiss and Tell stars Shirley\nTemple as Corliss Archer.")
    first = parse_turn(heuristic_turn(QUESTION, episode([], [[spread]]), CFG, teacher="format"))
    assert first.query == "who is Shirley Temple"
    turns = [QUESTION]
    paren = Doc("7", "Shirley Temple (actress)", "An American actress.")
    last = parse_turn(heuristic_turn(QUESTION, episode(turns, [[FILM], [paren]]), CFG))
    assert last.important_info == [1]
