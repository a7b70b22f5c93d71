"""naive RAG, IRCoT and s3 (the tiny untrained searcher) on 8 dev questions through the real retriever
and generator services, then the evaluation's table, plot and MLflow run; re-running resumes."""

from __future__ import annotations

import csv

import mlflow
import pytest

from s3ray.config import config_from_dict
from s3ray.evaluation import evaluate as ev
from s3ray.evaluation.evaluate import evaluate
from s3ray.inference.ircot import IrcotGatherer
from s3ray.inference.naive_rag import NaiveRagGatherer
from s3ray.inference.run import gather_contexts
from s3ray.inference.s3 import S3Gatherer
from s3ray.inference.store import read_records

GATHERERS = ["naive_rag", "ircot", "s3"]


def _refuse(*args, **kwargs):
    raise AssertionError("a finished question was recomputed")


@pytest.mark.ray
@pytest.mark.slow
def test_contexts_table_plot_and_resume(services, tiny_model_dir, tmp_path, monkeypatch):
    data = services.to_dict()
    data["inference"] |= {"gatherers": GATHERERS, "limit": 8, "batch_size": 3, "ircot_max_steps": 2,
                          "searcher_checkpoint": str(tiny_model_dir), "dir": str(tmp_path / "contexts")}
    data["evaluation"] |= {"dir": str(tmp_path / "eval"), "batch_size": 5}
    data["tracking"] |= {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cfg = config_from_dict(data)

    contexts = gather_contexts(cfg)
    for name in GATHERERS:
        rows = read_records(contexts / name / "hotpotqa.jsonl")
        assert len(rows) == 8, name
    naive = read_records(contexts / "naive_rag" / "hotpotqa.jsonl")
    assert all(len(r["docs"]) == cfg.inference.baseline_k for r in naive.values())
    ircot = read_records(contexts / "ircot" / "hotpotqa.jsonl")
    assert all(1 <= r["trace"]["turns"] <= 2 and len(r["docs"]) >= 1 for r in ircot.values())
    s3_rows = read_records(contexts / "s3" / "hotpotqa.jsonl")
    assert all(r["trace"]["checkpoint"] == str(tiny_model_dir) for r in s3_rows.values())
    assert all(len(r["trace"]["queries"]) <= r["trace"]["turns"] for r in s3_rows.values())

    report_dir = evaluate(cfg)
    with open(report_dir / "table.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["gatherer", "hotpotqa", "average"] and [r[0] for r in table[1:]] == GATHERERS
    assert all(0.0 <= float(r[1]) <= 100.0 and r[1] == r[2] for r in table[1:])
    assert (report_dir / "genacc.png").stat().st_size > 5000
    results = read_records(ev.result_path(cfg, "naive_rag", "hotpotqa"))
    assert len(results) == 8 and {r["decided_by"] for r in results.values()} <= {"span", "none"}
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    run = runs[runs["tags.s3ray.stage"] == "evaluate"].iloc[0]
    assert run["tags.s3ray.generator"].startswith("reader:") and "metrics.genacc.s3.average" in run

    # Re-running both stages recomputes nothing: every gatherer and the scorer refuse to be called.
    before = {name: (contexts / name / "hotpotqa.jsonl").read_bytes() for name in GATHERERS}
    monkeypatch.setattr(NaiveRagGatherer, "gather", _refuse)
    monkeypatch.setattr(IrcotGatherer, "gather_one", _refuse)
    monkeypatch.setattr(S3Gatherer, "gather", _refuse)
    monkeypatch.setattr(S3Gatherer, "_ensure_pool", _refuse)  # not even a rollout pool is started
    monkeypatch.setattr(ev, "score_contexts", _refuse)
    gather_contexts(cfg)
    evaluate(cfg)
    assert before == {name: (contexts / name / "hotpotqa.jsonl").read_bytes() for name in GATHERERS}
