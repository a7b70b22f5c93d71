"""tools/bridge_queries.py: whom each gatherer's first query names, from its saved contexts."""

import importlib.util
import json
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bridge_queries", Path(__file__).resolve().parents[2] / "tools" / "bridge_queries.py")
tool = importlib.util.module_from_spec(_spec)
sys.modules["bridge_queries"] = tool
_spec.loader.exec_module(tool)


def turn(query: str) -> str:
    return ('<important_info>[1]</important_info>\n<search_complete>False</search_complete>\n'
            f'<query>{json.dumps({"query": query})}</query>')


def test_the_first_turns_query_is_counted_not_a_later_one(tmp_path):
    passages = {"c1": {"title": "Salarnd", "text": "Salarnd is a company founded by Bailenx, working with Vortair."},
                "f1": {"title": "Bailenx", "text": "Bailenx was born in the city of Trortrur."}}
    questions = {f"q{i}": {"supporting_passage_ids": ["c1", "f1"]} for i in range(4)}
    episodes = [turn("who is Bailenx"),
                turn("who is Vortair") + "\n\n<information>Doc 1 ...</information>\n\n" + turn("who is Bailenx"),
                "<important_info>[1]</important_info>\n<search_complete>True</search_complete>",
                turn("who is Nekath")]
    contexts = tmp_path / "bridge.jsonl"
    contexts.write_text("".join(json.dumps({"question_id": f"q{i}", "trace": {"episode_text": text}}) + "\n"
                                for i, text in enumerate(episodes)))
    counts = tool.count_targets(contexts, questions, passages)
    assert counts == {"founder": 1, "other fact": 1, "no search": 1, "elsewhere": 1}
