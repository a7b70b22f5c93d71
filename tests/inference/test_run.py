"""The infer stage's batching and resume: every question once, deterministic files, crash-safe."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

from s3ray.config import load_config
from s3ray.inference import registry, run
from s3ray.inference.base import ContextGatherer, GatheredContext
from s3ray.inference.store import read_records
from s3ray.types import Doc

from .fakes import question


class CountingGatherer(ContextGatherer):
    """One doc per question; records batch sizes; can be told to fail on a given batch."""

    name = "counting"

    def __init__(self, fail_on_batch: int | None = None):
        self.batches: list[list[str]] = []
        self.fail_on_batch = fail_on_batch
        self.closed = False

    async def gather(self, questions):
        if len(self.batches) == self.fail_on_batch:
            raise RuntimeError("boom")
        self.batches.append([q.id for q in questions])
        return [GatheredContext.of(q, [Doc(f"d-{q.id}", "t", "x")]) for q in questions]

    def close(self):
        self.closed = True


def shuffled_questions(n: int):
    return [question(i) for i in reversed(range(n))]  # file order is not id order


def test_every_question_once_in_batches_and_sorted(tmp_path):
    path = tmp_path / "g" / "ds.jsonl"
    gatherer = CountingGatherer()
    assert asyncio.run(run.gather_dataset(gatherer, shuffled_questions(7), path, batch_size=3)) == 7
    assert [len(b) for b in gatherer.batches] == [3, 3, 1]  # the short last batch is not dropped
    ids = [json.loads(line)["question_id"] for line in path.read_text().splitlines()]
    assert ids == sorted(ids) and len(ids) == 7


def test_each_batch_logs_a_progress_line_with_eta(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="s3ray.inference.run"):
        asyncio.run(run.gather_dataset(CountingGatherer(), shuffled_questions(7), tmp_path / "ds.jsonl",
                                       batch_size=3, label="counting/ds"))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" | ")[0] for line in lines] == [f"infer counting/ds: {n}/7 questions" for n in (3, 6, 7)]
    assert all(re.search(r" \| [\d.]+(question/s|s/question) \| elapsed \d\d:\d\d \| ETA \d\d:\d\d$", line)
               for line in lines), lines


def test_rerun_skips_finished_questions_and_a_crash_loses_only_the_batch_in_flight(tmp_path):
    path = tmp_path / "ds.jsonl"
    crashing = CountingGatherer(fail_on_batch=2)
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(run.gather_dataset(crashing, shuffled_questions(10), path, batch_size=3))
    assert len(read_records(path)) == 6
    resumed = CountingGatherer()
    assert asyncio.run(run.gather_dataset(resumed, shuffled_questions(10), path, batch_size=3)) == 4
    assert sorted(sum(resumed.batches, [])) == sorted(set(f"q{i:03d}" for i in range(10))
                                                      - set(sum(crashing.batches, [])))
    first = path.read_bytes()
    again = CountingGatherer()
    assert asyncio.run(run.gather_dataset(again, shuffled_questions(10), path, batch_size=3)) == 0
    assert again.batches == [] and path.read_bytes() == first


class MakerGatherer(CountingGatherer):
    """A gatherer whose contexts come from a named maker (a searcher checkpoint, say)."""

    def __init__(self, maker: str):
        super().__init__()
        self.maker = maker

    @property
    def made_by(self) -> str:
        return self.maker


def test_contexts_of_another_maker_are_gathered_again_and_the_rest_kept(tmp_path, caplog):
    path = tmp_path / "ds.jsonl"
    asyncio.run(run.gather_dataset(MakerGatherer("step 60"), shuffled_questions(4), path, batch_size=3))
    assert {r["made_by"] for r in read_records(path).values()} == {"step 60"}
    same = MakerGatherer("step 60")
    assert asyncio.run(run.gather_dataset(same, shuffled_questions(4), path, batch_size=3)) == 0
    newer = MakerGatherer("step 120")
    assert asyncio.run(run.gather_dataset(newer, shuffled_questions(4), path, batch_size=3)) == 4
    assert {r["made_by"] for r in read_records(path).values()} == {"step 120"}
    assert len(path.read_text().splitlines()) == 4 and "made by 'step 60', not by 'step 120'" in caplog.text


def test_the_s3_gatherer_is_made_by_its_checkpoint_as_written_last(tmp_path):
    from s3ray.inference.s3 import S3Gatherer

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"step 60")
    cfg = load_config("test", [f"paths.work_dir={tmp_path}", f"inference.searcher_checkpoint={export}"])
    searcher, teacher = S3Gatherer(cfg, "s3"), S3Gatherer(cfg, "s3_teacher")
    before = searcher.made_by
    assert str(export) in before and before == S3Gatherer(cfg, "s3").made_by
    (export / "model.safetensors").write_bytes(b"step 120")  # the export written again
    assert searcher.made_by != before
    assert teacher.made_by == f"s3_teacher teacher:{cfg.train.warm_start.teacher}"  # no checkpoint: the config


def test_a_torn_last_line_is_redone(tmp_path, caplog):
    path = tmp_path / "ds.jsonl"
    asyncio.run(run.gather_dataset(CountingGatherer(), shuffled_questions(3), path, batch_size=3))
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])  # a crash mid-write
    redo = CountingGatherer()
    assert asyncio.run(run.gather_dataset(redo, shuffled_questions(3), path, batch_size=3)) == 1
    assert redo.batches == [["q002"]] and "unreadable" in caplog.text
    assert len(path.read_text().splitlines()) == 3


def test_gather_contexts_runs_each_gatherer_on_each_dataset_and_skips_unavailable(tmp_path, monkeypatch):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}", "inference.gatherers=[counting, search_r1]",
                               "inference.batch_size=2"])
    made: list[CountingGatherer] = []

    def factory(cfg):
        made.append(CountingGatherer())
        return made[-1]

    monkeypatch.setitem(registry.GATHERERS, "counting", factory)
    monkeypatch.setattr(run, "dev_questions", lambda cfg: {"a": shuffled_questions(3), "b": shuffled_questions(2)})
    out = run.gather_contexts(cfg)  # search_r1 has no checkpoint configured: skipped with a message
    assert out == cfg.inference.dir and made[0].closed
    assert [len(b) for b in made[0].batches] == [2, 1, 2]
    assert len(read_records(out / "counting" / "a.jsonl")) == 3 and not (out / "search_r1").exists()


def test_unknown_gatherer_is_an_error_before_any_work(tmp_path):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}", "inference.gatherers=[naive_rag, oracle]"])
    with pytest.raises(ValueError, match="oracle"):
        run.gather_contexts(cfg)


@pytest.mark.parametrize("name, setting", [("naive_rag_bm25", "bm25_retriever_url"),
                                           ("deepretrieval", "bm25_retriever_url"),
                                           ("search_r1", "search_r1_model")])
def test_a_gatherer_missing_its_service_is_unavailable_and_names_the_setting(tmp_path, name, setting):
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    with pytest.raises(registry.GathererUnavailable, match=setting):
        registry.build_gatherer(name, cfg)
    cfg = load_config("test", [f"paths.work_dir={tmp_path}", "inference.search_r1_model=some/ckpt"])
    with pytest.raises(registry.GathererUnavailable, match="search_r1_base_url"):
        registry.build_gatherer("search_r1", cfg)
