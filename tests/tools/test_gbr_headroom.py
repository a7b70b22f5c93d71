"""tools/gbr_headroom.py: the contexts a perfect searcher could give, scored by the real reader."""

import importlib.util
from pathlib import Path

import pytest

from s3ray.config import load_config
from s3ray.generation.reader import ExtractiveReader
from s3ray.types import Doc, Question

_spec = importlib.util.spec_from_file_location(
    "gbr_headroom", Path(__file__).resolve().parents[2] / "tools" / "gbr_headroom.py")
headroom_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(headroom_tool)

DOCS = {
    "tower": Doc("tower", "Eiffel Tower", "The Eiffel Tower was designed by the company of Gustave Eiffel."),
    "eiffel": Doc("eiffel", "Gustave Eiffel", "Gustave Eiffel was a French engineer. He was born in Dijon."),
    "river": Doc("river", "Amazon River", "The Amazon River is the largest river by discharge volume."),
    "alps": Doc("alps", "Alps", "The Alps are the highest mountain range in Europe."),
}


class FixedSearcher:
    """Answers every query with the same docs (the naive-RAG top-k)."""

    def __init__(self, docs):
        self.docs = docs

    def search(self, queries, k):
        return [list(self.docs[:k]) for _ in queries]


def question(qid, text, answer, gold):
    return Question(qid, text, (answer,), "t", meta={"supporting_passage_ids": gold})


def test_headroom_scores_naive_gold_and_both():
    cfg = load_config("test", ["agent.initial_k=2", "rag_cache.topk=2", "agent.search_k=3"])
    reader = ExtractiveReader(max_span_words=24, answer_spans=3)
    questions = [question("q1", "Where was the engineer who designed the Eiffel Tower born?", "Dijon",
                          ["tower", "eiffel"]),
                 question("q2", "Which river has the largest discharge?", "Amazon River", ["river"]),
                 question("q3", "Is the Alps a mountain range?", "yes", ["alps"])]
    searcher = FixedSearcher([DOCS["river"], DOCS["alps"], DOCS["eiffel"]])  # naive RAG: the first 2
    result = headroom_tool.headroom(cfg, questions, searcher, reader, DOCS)
    assert result["questions"] == 3
    assert result["naive_failed"] == 1  # q1; q2 naive answers, q3 is yes/no (the training filter drops it)
    assert result["genacc"]["naive"] == pytest.approx(100 / 3, abs=0.1)
    on_failed = result["genacc_on_naive_failed"]
    assert on_failed["naive"] == 0.0 and on_failed["gold"] == 100.0
    # naive+gold is the reader's answer with naive RAG's docs first, then the gold ones
    both = reader.answer(questions[0].question, [DOCS["river"], DOCS["alps"], DOCS["tower"], DOCS["eiffel"]])
    assert on_failed["naive+gold"] == (100.0 if "Dijon" in both else 0.0)
    # The answer's text: not in naive RAG's 2 docs, in the search's 3rd hit and in the gold passages
    present = result["answer_in_context_on_naive_failed"]
    assert present == {"naive": 0.0, "searched": 100.0, "gold": 100.0, "naive+gold": 100.0}
    assert result["answer_in_context"]["naive"] == pytest.approx(100 / 3, abs=0.1)  # q2's "Amazon River"
    table = headroom_tool.markdown({"train": result})
    assert "| train | 3 | 1 |" in table and "| train | 0.0 | 100.0 | 100.0 | 100.0 |" in table


def test_naive_plus_gold_keeps_a_doc_naive_rag_already_found_once():
    naive, gold = [[DOCS["river"], DOCS["alps"]]], [[DOCS["river"], DOCS["eiffel"]]]
    contexts = headroom_tool.perfect_contexts(naive, gold)
    assert [d.id for d in contexts["naive+gold"][0]] == ["river", "alps", "eiffel"]
    assert contexts["gold"] == gold and contexts["naive"] == naive


def test_gold_passages_are_required():
    with pytest.raises(ValueError, match="supporting_passage_ids"):
        headroom_tool.gold_ids(Question("q", "Q?", ("a",), "t"))
