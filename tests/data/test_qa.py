"""QA loaders: the three formats, stable ids that never collide across sources, clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s3ray.config import DatasetSpec
from s3ray.data.qa import load_datasets, load_questions


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_flashrag_rows_keep_extras_in_meta_and_prefix_ids(tmp_path):
    path = write_jsonl(tmp_path / "nq.jsonl", [
        {"id": "train_0", "question": "who wrote hamlet", "golden_answers": ["Shakespeare"], "type": "x"},
        {"id": "nq-7", "question": "capital of france", "golden_answers": "Paris"},
    ])
    qs = load_questions(DatasetSpec(name="nq", path=path))
    assert [q.id for q in qs] == ["nq-train_0", "nq-7"]  # an id already carrying the prefix is kept
    assert qs[0].golden_answers == ("Shakespeare",) and qs[0].meta == {"type": "x"}
    assert qs[1].golden_answers == ("Paris",) and qs[1].source == "nq"


def test_same_raw_ids_in_two_sources_get_distinct_ids(tmp_path):
    rows = [{"id": "train_0", "question": "q", "golden_answers": ["a"]}]
    specs = [DatasetSpec(name="nq", path=write_jsonl(tmp_path / "a.jsonl", rows)),
             DatasetSpec(name="hotpotqa", path=write_jsonl(tmp_path / "b.jsonl", rows))]
    assert [q.id for q in load_datasets(specs)] == ["nq-train_0", "hotpotqa-train_0"]


def test_duplicate_ids_across_specs_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "question": "q", "golden_answers": ["a"]}])
    with pytest.raises(ValueError, match="duplicate question ids"):
        load_datasets([DatasetSpec(name="nq", path=path), DatasetSpec(name="nq", path=path)])


def test_a_bad_row_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "1", "question": "q", "golden_answers": ["a"]}) + "\n"
                    + json.dumps({"id": "2", "question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_questions(DatasetSpec(name="x", path=path))
    path.write_text(json.dumps({"id": "1", "question": "q", "golden_answers": [""]}) + "\n")
    with pytest.raises(ValueError, match="golden answers missing or empty"):
        load_questions(DatasetSpec(name="x", path=path))


def test_missing_file_and_limit(tmp_path, data_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_questions(DatasetSpec(name="x", path=tmp_path / "nope.jsonl"))
    qs = load_questions(DatasetSpec(name="hotpotqa", path=data_dir / "hotpotqa" / "dev.jsonl", limit=7))
    assert len(qs) == 7 and all(q.id.startswith("hotpotqa-") for q in qs)
    assert len({q.id for q in qs}) == 7


def test_s3_parquet_reads_question_from_prompt_and_ids_per_source(tmp_path):
    s3_prompt = ("Template: <question>\n[example]\n</question> ... real:\n"
                 "<question>\nwho founded rome\n</question>")
    rows = [
        {"data_source": "nq", "prompt": [{"role": "user", "content": s3_prompt}],
         "reward_model": {"ground_truth": {"target": ["Romulus"]}}, "extra_info": {"split": "train", "index": 0}},
        {"data_source": "hotpotqa", "prompt": [{"role": "user", "content": "Question: what is x?\nAnswer:"}],
         "reward_model": {"ground_truth": {"target": ["y", "z"]}}, "extra_info": {"split": "train", "index": 0}},
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    qs = load_questions(DatasetSpec(name="s3", path=path, format="s3_parquet"))
    assert [q.question for q in qs] == ["who founded rome", "what is x?"]
    assert [q.source for q in qs] == ["nq", "hotpotqa"]
    assert qs[0].id != qs[1].id  # the seed's per-source index 0 collided here
    assert qs[1].golden_answers == ("y", "z")


def test_mirage_questions_carry_options_and_key_text_gold(tmp_path):
    bench = {"medqa": {"0001": {"question": "Which drug?", "options": {"A": "aspirin", "B": "heparin"},
                                "answer": "B"}}}
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(bench))
    [q] = load_questions(DatasetSpec(name="mirage", path=path, format="mirage"))
    assert q.golden_answers == ("B: heparin",) and q.source == "medqa"
    assert "Options:\nA: aspirin\nB: heparin" in q.question and q.meta["query"] == "Which drug?"
    bench["medqa"]["0001"]["answer"] = "C"
    path.write_text(json.dumps(bench))
    with pytest.raises(ValueError, match="medqa/0001"):
        load_questions(DatasetSpec(name="mirage", path=path, format="mirage"))


# --- s3's evaluation sampling ---------------------------------------------------------------------
def _numbered(tmp_path, n, name="nq"):
    return write_jsonl(tmp_path / f"{name}.jsonl",
                       [{"id": str(i), "question": f"question {i}", "golden_answers": ["a"]} for i in range(n)])


def test_sample_takes_the_rows_pandas_takes_with_the_same_seed(tmp_path):
    pd = pytest.importorskip("pandas")
    path = _numbered(tmp_path, 50)
    qs = load_questions(DatasetSpec(name="nq", path=path, sample=7, sample_seed=42))
    expected = pd.DataFrame({"id": [str(i) for i in range(50)]}).sample(n=7, random_state=42)["id"]
    assert sorted(q.id for q in qs) == sorted(f"nq-{i}" for i in expected)
    assert [q.id for q in qs] == sorted((q.id for q in qs), key=lambda i: int(i.split("-")[1]))  # file order


def test_sample_is_reproducible_and_keeps_small_sets_whole(tmp_path):
    path = _numbered(tmp_path, 50)
    ids = [[q.id for q in load_questions(DatasetSpec(name="nq", path=path, sample=7, sample_seed=s))]
           for s in (42, 42, 3)]
    assert ids[0] == ids[1] == [f"nq-{i}" for i in (13, 17, 26, 30, 39, 45, 48)] and ids[2] != ids[0]
    assert len(load_questions(DatasetSpec(name="nq", path=path, sample=50))) == 50


def test_dedup_questions_keeps_the_first_of_each_text_before_sampling(tmp_path):
    path = write_jsonl(tmp_path / "popqa.jsonl", [
        {"id": "0", "question": "Who is he", "golden_answers": ["a"]},
        {"id": "1", "question": " Who is he? ", "golden_answers": ["b"]},  # the same question for s3
        {"id": "2", "question": "Where is it?", "golden_answers": ["c"]},
    ])
    assert [q.id for q in load_questions(DatasetSpec(name="popqa", path=path, dedup_questions=True))] == \
        ["popqa-0", "popqa-2"]
    assert len(load_questions(DatasetSpec(name="popqa", path=path))) == 3


def test_mirage_subset_loads_one_dataset(tmp_path):
    path = tmp_path / "benchmark.json"
    item = {"question": "Which?", "options": {"A": "x", "B": "y"}, "answer": "B"}
    path.write_text(json.dumps({"medqa": {"0": item}, "mmlu": {"0": item, "1": item}}))
    qs = load_questions(DatasetSpec(name="mmlu", path=path, format="mirage", subset="mmlu"))
    assert [q.id for q in qs] == ["mmlu-0", "mmlu-1"] and {q.source for q in qs} == {"mmlu"}
    assert qs[0].meta["query"] == "Which?" and qs[0].golden_answers == ("B: y",)
    with pytest.raises(ValueError, match="subset 'bioasq' is not in"):
        load_questions(DatasetSpec(name="b", path=path, format="mirage", subset="bioasq"))
