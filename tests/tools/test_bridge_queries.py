"""tools/bridge_queries.py: whom each gatherer's first query names, from its saved contexts."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bridge_queries", Path(__file__).resolve().parents[2] / "tools" / "bridge_queries.py")
tool = importlib.util.module_from_spec(_spec)
sys.modules["bridge_queries"] = tool
_spec.loader.exec_module(tool)


def test_each_gatherers_first_run_query_is_counted(tmp_path):
    passages = {"c1": {"title": "Salarnd", "text": "Salarnd is a company founded by Bailenx, working with Vortair."},
                "f1": {"title": "Bailenx", "text": "Bailenx was born in the city of Trortrur."}}
    questions = {f"q{i}": {"supporting_passage_ids": ["c1", "f1"]} for i in range(4)}
    # as S3Gatherer saves them: the queries the retriever ran, in order
    runs = [["who is Bailenx"], ["who is Vortair", "who is Bailenx"], [], ["who is Nekath"]]
    contexts = tmp_path / "bridge.jsonl"
    contexts.write_text("".join(json.dumps({"question_id": f"q{i}", "trace": {"turns": 2, "queries": queries}})
                                + "\n" for i, queries in enumerate(runs)))
    counts = tool.count_targets(contexts, questions, passages)
    assert counts == {"founder": 1, "other fact": 1, "no search": 1, "elsewhere": 1}


def test_a_context_without_queries_is_named(tmp_path):
    contexts = tmp_path / "bridge.jsonl"
    contexts.write_text(json.dumps({"question_id": "q0", "trace": {"episode_text": "..."}}) + "\n")
    with pytest.raises(ValueError, match="'q0' records no queries"):
        tool.count_targets(contexts, {"q0": {"supporting_passage_ids": ["c1", "f1"]}},
                           {"c1": {"title": "C", "text": ""}, "f1": {"title": "F", "text": ""}})
