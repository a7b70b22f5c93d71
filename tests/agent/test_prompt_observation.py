import re

from s3ray.agent.observation import NUDGE, render_information
from s3ray.agent.parser import parse_turn
from s3ray.agent.prompt import SENTINEL, build_searcher_prompt, searcher_messages
from s3ray.config import AgentConfig
from s3ray.types import Doc
from tests.agent.fakes import WordTokenizer

DOCS = [Doc("1", "Jaws (film)", "Jaws is a 1975 film\ndirected by Steven Spielberg."),
        Doc("2", "Amity", "A fictional island " + "word " * 200)]


def test_prompt_ends_with_sentinel_question_and_turn0_docs():
    prompt = build_searcher_prompt("Who directed Jaws?", DOCS, AgentConfig(select_cap=3))
    head, _, tail = prompt.partition(SENTINEL + "\n")
    assert tail.startswith("<question>\nWho directed Jaws?\n</question>\n<information>\n")
    assert "Doc 1 (Title: Jaws (film)) Jaws is a 1975 film directed by Steven Spielberg." in tail
    assert "Doc 2 (Title: Amity) A fictional island" in tail
    assert tail.endswith("</information>")
    assert "up to 3" in head and '{"query":' in head and "<search_complete>True</search_complete>" in head


def test_prompt_states_the_configured_cap():
    assert "up to 5" in build_searcher_prompt("q?", DOCS, AgentConfig(select_cap=5))
    assert "as many as needed" in build_searcher_prompt("q?", DOCS, AgentConfig(select_cap=None))


def test_messages_are_one_user_message():
    messages = searcher_messages("q?", DOCS, AgentConfig())
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"] == build_searcher_prompt("q?", DOCS, AgentConfig())


def test_truncation_is_per_document_and_keeps_the_closing_tag():
    block = render_information(DOCS, max_doc_tokens=10, tokenizer=WordTokenizer())
    assert block.strip().startswith("<information>") and block.strip().endswith("</information>")
    lines = block.strip().splitlines()[1:-1]
    assert len(lines) == 2
    assert lines[0] == "Doc 1 (Title: Jaws (film)) Jaws is a 1975 film directed by Steven Spielberg."
    assert lines[1].startswith("Doc 2 (Title: Amity) A fictional island") and lines[1].endswith(" ...")
    assert len(re.sub(r"^Doc 2 \(Title: Amity\) ", "", lines[1]).split()) == 11  # 10 tokens + "..."


def test_numbering_starts_where_asked():
    block = render_information(DOCS, start_index=4)
    assert "Doc 4 (Title: Jaws (film))" in block and "Doc 5 (Title: Amity)" in block


def test_nudge_is_itself_no_action_and_opens_a_query():
    action = parse_turn(NUDGE)
    assert (action.kind, action.query, action.important_info) == ("invalid", None, None)
    assert NUDGE.rstrip().endswith("<query>") and "<information>" not in NUDGE
    # What the searcher writes after it completes the opened query.
    assert parse_turn('{"query": "Jaws director"}</query>').query == "Jaws director"
