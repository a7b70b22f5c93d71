"""Answering and scoring gathered contexts: the prompt per answer mode, resume, identity tags."""

from __future__ import annotations

import asyncio
import logging

from s3ray.config import load_config
from s3ray.evaluation import evaluate as ev
from s3ray.inference.base import GatheredContext
from s3ray.inference.store import append_records, read_records
from s3ray.types import Doc, Question


class RecordingGenerator:
    """The frozen generator, scripted: a tagged CoT answer to a CoT prompt, 'Tulsa' if the prompt holds
    it (a doc), else 'unknown'."""

    def __init__(self, cot_prompts):
        self.cot_prompts = cot_prompts
        self.prompts: list[list[dict[str, str]]] = []

    def reply(self, messages) -> str:
        if messages in self.cot_prompts:
            return "Let me think step by step. <answer>Tulsa</answer>"
        return "Tulsa" if "Tulsa" in str(messages) else "unknown"

    async def achat_many(self, batch, max_tokens=None):
        self.prompts += batch
        return [self.reply(m) for m in batch]


def ctx(i, mode, docs=()):
    q = Question(id=f"q{i}", question=f"Where did band {i} first play?", golden_answers=("Tulsa",),
                 source="hotpotqa")
    return GatheredContext.of(q, list(docs), answer_mode=mode)


def test_each_answer_mode_gets_its_prompt_and_results_resume(tmp_path, caplog):
    from s3ray.generation import prompts
    from s3ray.scoring.genacc import GenAccScorer  # the real span-only scorer

    gold = Doc("d1", "Tinted Windows", "The band first played in Tulsa, Oklahoma.")
    rag, zero, cot = ctx(2, "rag", [gold]), ctx(1, "zero_shot"), ctx(3, "cot")
    contexts = tmp_path / "contexts.jsonl"
    append_records(contexts, [c.to_dict() for c in (rag, zero, cot)])
    results = tmp_path / "results.jsonl"
    generator = RecordingGenerator([prompts.cot_messages(cot.question)])
    scorer = GenAccScorer(None)
    with caplog.at_level(logging.INFO, logger="s3ray.evaluation.evaluate"):
        n = asyncio.run(ev.evaluate_file(contexts, results, generator, scorer, "g", "hotpotqa", batch_size=2))
    assert n == 3
    assert [r.getMessage().split(" | ")[0] for r in caplog.records] == [
        "evaluate g/hotpotqa: 2/3 questions", "evaluate g/hotpotqa: 3/3 questions"]  # a progress line a batch
    # Sorted by question id: q1 zero-shot, q2 with its doc, q3 CoT.
    assert generator.prompts == [prompts.zero_shot_messages(zero.question),
                                 prompts.answer_messages(rag.question, [gold]),
                                 prompts.cot_messages(cot.question)]
    rows = read_records(results)
    assert list(rows) == ["q1", "q2", "q3"]
    assert rows["q3"]["prediction"].strip() == "Tulsa" and rows["q3"]["genacc"] == 1.0  # from <answer>
    assert rows["q2"]["num_docs"] == 1 and rows["q2"]["context_words"] == 2 + 7
    assert rows["q2"]["genacc"] == 1.0 and rows["q2"]["decided_by"] == "span"
    assert rows["q1"]["genacc"] == 0.0 and rows["q1"]["decided_by"] == "none"
    # A re-run scores nothing again; a new context is scored alone.
    append_records(contexts, [ctx(4, "rag", [gold]).to_dict()])
    n = asyncio.run(ev.evaluate_file(contexts, results, generator, scorer, "g", "hotpotqa", batch_size=2))
    assert n == 1 and len(generator.prompts) == 4 and len(read_records(results)) == 4


def test_identity_tags_name_generator_judge_and_retriever(tmp_path):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    tags = ev.identity_tags(cfg)
    assert tags["s3ray.judge"].startswith("none") and tags["s3ray.generator"].startswith("reader:")
    assert cfg.encoder.model in tags["s3ray.retriever"]
    judged = load_config("test", [f"paths.work_dir={tmp_path}", "judge.enabled=true", "generator.model=m1"])
    assert ev.identity_tags(judged)["s3ray.judge"] == "reader:m1"


def test_evaluate_reports_scored_results_to_files_and_mlflow_without_rescoring(tmp_path, capsys):
    import mlflow

    cfg = load_config("test", [f"paths.work_dir={tmp_path}", "inference.gatherers=[naive_rag, s3, ircot]"])
    for gatherer, correct in (("naive_rag", [1, 0]), ("s3", [1, 1])):
        contexts = [ctx(i, "rag") for i in range(2)]
        append_records(ev.context_path(cfg, gatherer, "hotpotqa"), [c.to_dict() for c in contexts])
        append_records(ev.result_path(cfg, gatherer, "hotpotqa"), [
            {"question_id": c.question_id, "gatherer": gatherer, "dataset": "hotpotqa", "genacc": ok,
             "em": 0.0, "f1": 0.5, "decided_by": "span" if ok else "none", "num_docs": 0, "context_words": 0,
             "context_digest": ev.context_digest(c)}
            for c, ok in zip(contexts, correct, strict=True)])
    out = ev.evaluate(cfg)  # every context is scored already: no generator or scorer is needed
    assert out == cfg.evaluation.dir
    assert "| naive_rag | 50.0 | 50.0 |" in (out / "table.md").read_text()
    assert "| s3 | 100.0 | 100.0 |" in capsys.readouterr().out  # ircot has no contexts: not a row
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    [run] = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    assert run.data.tags["s3ray.stage"] == "evaluate" and run.data.tags["s3ray.judge"].startswith("none")
    assert run.data.metrics["genacc.s3.average"] == 1.0 and run.data.metrics["genacc.naive_rag.hotpotqa"] == 0.5
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "report")}
    assert {"report/table.md", "report/table.csv", "report/genacc.png"} <= artifacts


def test_a_context_gathered_again_since_its_score_is_scored_again(tmp_path):
    from s3ray.scoring.genacc import GenAccScorer

    gold = Doc("d1", "Tinted Windows", "The band first played in Tulsa, Oklahoma.")
    contexts, results = tmp_path / "contexts.jsonl", tmp_path / "results.jsonl"
    append_records(contexts, [ctx(1, "rag").to_dict(), ctx(2, "rag").to_dict()])
    generator, scorer = RecordingGenerator([]), GenAccScorer(None)
    asyncio.run(ev.evaluate_file(contexts, results, generator, scorer, "g", "hotpotqa", batch_size=2))
    assert [r["genacc"] for r in read_records(results).values()] == [0.0, 0.0]
    # q2 gathered again (a searcher trained further found the doc): only q2 is scored again.
    append_records(contexts, [ctx(2, "rag", [gold]).to_dict()])
    n = asyncio.run(ev.evaluate_file(contexts, results, generator, scorer, "g", "hotpotqa", batch_size=2))
    assert n == 1 and len(generator.prompts) == 3
    assert {q: r["genacc"] for q, r in read_records(results).items()} == {"q1": 0.0, "q2": 1.0}
