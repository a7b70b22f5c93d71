"""The paper_eval preset on small fixture sets: eleven datasets through the loaders, MIRAGE retrieved
without its options and judged with s3's "aligns" wording by the evaluation model, and the table in the
paper's layout (a column per set, then the general and medical averages)."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from s3ray.config import load_config
from s3ray.evaluation import evaluate as ev
from s3ray.inference.naive_rag import NaiveRagGatherer
from s3ray.inference.run import dev_questions, gather_dataset
from tests.inference.fakes import FakeRetriever

GENERAL = ["nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique"]
MEDICAL = ["medqa", "medmcqa", "pubmedqa", "bioasq", "mmlu"]
SPLITS = {"nq": "test", "triviaqa": "test", "popqa": "test", "hotpotqa": "dev", "2wikimultihopqa": "dev",
          "musique": "dev"}


@pytest.fixture
def data_dir(tmp_path):
    """Four questions per general set (PopQA repeats one) and two per MIRAGE set."""
    root = tmp_path / "data"
    for name, split in SPLITS.items():
        rows = [{"id": f"{split}_{i}", "question": f"{name} question {i}", "golden_answers": ["Tulsa"]}
                for i in range(4)]
        if name == "popqa":
            rows.append({"id": f"{split}_4", "question": "popqa question 0?", "golden_answers": ["Tulsa"]})
        path = root / "flashrag" / name / f"{split}.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    item = {"question": "Which drug?", "options": {"A": "Aspirin", "B": "Tulsa"}, "answer": "B"}
    (root / "mirage").mkdir()
    (root / "mirage" / "benchmark.json").write_text(json.dumps({d: {"0": item, "1": item} for d in MEDICAL}))
    return root


def test_the_preset_loads_eleven_sets_with_the_originals_sampling(data_dir, tmp_path):
    cfg = load_config("paper_eval", [f"paths.data_dir={data_dir}", f"paths.work_dir={tmp_path / 'run'}"])
    assert [s.name for s in cfg.data.dev] == GENERAL + MEDICAL
    assert {s.sample for s in cfg.data.dev[:6]} == {3000} and {s.sample_seed for s in cfg.data.dev} == {42}
    assert cfg.evaluation.generator.model == "claude-3-haiku-20240307" and cfg.generator.model != \
        cfg.evaluation.generator.model
    questions = dev_questions(cfg)
    assert [len(questions[n]) for n in GENERAL + MEDICAL] == [4] * 6 + [2] * 5  # PopQA's repeat dropped
    assert questions["mmlu"][0].question.startswith("Which drug?\nOptions:\nA: Aspirin")


def test_a_fixture_run_gives_the_papers_table(data_dir, tmp_path, monkeypatch):
    from s3ray.generation import client as client_module
    from s3ray.generation.prompts import JUDGE_TEMPLATES

    cfg = load_config("paper_eval", [f"paths.data_dir={data_dir}", f"paths.work_dir={tmp_path / 'run'}",
                                     "inference.gatherers=[naive_rag, s3]"])
    retriever = FakeRetriever()
    questions = dev_questions(cfg)
    # Contexts: naive RAG through the real gatherer (MIRAGE questions searched without options), and an
    # "s3" row whose docs hold the answer.
    for dataset, qs in questions.items():
        asyncio.run(gather_dataset(NaiveRagGatherer("naive_rag", retriever, 3), qs,
                                   ev.context_path(cfg, "naive_rag", dataset), batch_size=4))
        asyncio.run(gather_dataset(NaiveRagGatherer("s3", FakeRetriever(shared=("Tulsa",)), 3), qs,
                                   ev.context_path(cfg, "s3", dataset), batch_size=4))
    assert ["Which drug?"] in [c[0][:1] for c in retriever.calls]

    calls = []

    class Model:
        """The evaluation model: answers with the first doc's title; judges MIRAGE answers that name the
        golden option's text as aligned, anything else as not."""

        def __init__(self, model):
            self.model = model

        async def achat(self, messages, max_tokens=None, temperature=None, top_p=None):
            text = messages[-1]["content"]
            calls.append((self.model, text))
            if text.startswith(JUDGE_TEMPLATES["aligns"][:60]):
                return "yes" if "Answer: Tulsa" in text else "no"
            if text.startswith(JUDGE_TEMPLATES["s3"][:60]):
                return "no"
            assert len(messages) == 1 and "Important: You MUST directly answer" in text  # s3's Claude prompt
            return "Tulsa" if "(Title: T Tulsa)" in text else "Aspirin"

        async def achat_many(self, batch, max_tokens=None, temperature=None):
            return [await self.achat(m) for m in batch]

    monkeypatch.setattr(client_module.GeneratorClient, "from_config",
                        classmethod(lambda cls, gen: Model(gen.model)))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "unused")
    out = ev.evaluate(cfg)
    with open(out / "table.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["gatherer", *GENERAL, *MEDICAL, "general_avg", "medical_avg"]
    rows = {r[0]: r[1:] for r in table[1:]}
    assert rows["s3"] == ["100.0"] * 13
    # naive RAG's "Aspirin": wrong on the general sets (span and s3's judge say no); on MIRAGE
    # the span rule is not asked and the aligns judge says no.
    assert rows["naive_rag"] == ["0.0"] * 13
    assert {m for m, _ in calls} == {"claude-3-haiku-20240307"}  # answered and judged by the eval model
    mirage = ev.read_records(ev.result_path(cfg, "s3", "mmlu"))
    assert {r["decided_by"] for r in mirage.values()} == {"judge"}  # no span check on MIRAGE
