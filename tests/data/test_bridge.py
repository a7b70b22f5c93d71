"""The learning check's generated world: reproducible, and a bridge by construction."""

from __future__ import annotations

import json

import pytest

from s3ray.config import DatasetSpec
from s3ray.data.bridge import make_world, query_target, write_world
from s3ray.data.qa import load_questions
from s3ray.retrieval.corpus import split_contents


def passages(world) -> dict[str, tuple[str, str]]:
    return {row["id"]: split_contents(row["contents"]) for row in world.corpus}


def test_same_seed_same_world_and_another_seed_another():
    assert make_world(num_companies=20, extra_people=10, seed=3) == make_world(num_companies=20, extra_people=10, seed=3)
    assert make_world(num_companies=20, extra_people=10, seed=3) != make_world(num_companies=20, extra_people=10, seed=4)


def test_only_the_founders_passage_answers_and_only_the_companys_names_the_founder():
    world = make_world(num_companies=40, extra_people=40, seed=1)
    docs = passages(world)
    assert len(docs) == len(world.corpus) == 40 + 40 + 40  # ids are unique
    for q in world.questions:
        company_id, founder_id = q["supporting_passage_ids"]
        company, company_text = docs[company_id]
        founder, founder_text = docs[founder_id]
        city = q["golden_answers"][0]
        assert company in q["question"] and founder not in q["question"]
        assert f"founded by {founder}" in company_text and city not in company_text
        assert city in founder_text and company not in founder_text
        naming = [pid for pid, (_, text) in docs.items() if f"founded by {founder}" in text]
        assert naming == [company_id]


def test_written_files_load_as_questions_and_dev_names_no_training_company(tmp_path):
    paths = [tmp_path / "corpus.jsonl", tmp_path / "train.jsonl", tmp_path / "dev.jsonl"]
    world = write_world(*paths, dev_fraction=0.25, num_companies=40, extra_people=8, seed=0)
    assert sum(1 for _ in open(paths[0])) == len(world.corpus)
    train = load_questions(DatasetSpec(name="bridge", path=paths[1]))
    dev = load_questions(DatasetSpec(name="bridge", path=paths[2]))
    assert len(dev) == 10 and len(train) == 30
    assert not {q.question for q in train} & {q.question for q in dev}
    first = json.loads(paths[2].read_text().splitlines()[0])
    assert first["supporting_passage_ids"] and first["type"] == "bridge"


def test_shared_founders_found_several_companies_and_facts_can_be_fewer():
    world = make_world(num_companies=40, extra_people=10, num_founders=8, company_facts=2, seed=2)
    docs = passages(world)
    assert len(docs) == 40 + 8 + 10
    founders = {q["supporting_passage_ids"][1] for q in world.questions}
    assert len(founders) == 8  # every founder founds 5 companies
    for q in world.questions:
        company, text = docs[q["supporting_passage_ids"][0]]
        founder, founder_text = docs[q["supporting_passage_ids"][1]]
        assert f"founded by {founder}" in text and "headquartered in" in text and "working with" not in text
        assert q["golden_answers"][0] in founder_text and q["golden_answers"][0] not in text
    with pytest.raises(ValueError, match="company_facts"):
        make_world(num_companies=40, company_facts=5)


def test_query_target_names_whom_a_query_asks_about():
    passage = "Salarnd is a company working with Vortair, headquartered in Drozibrenn, founded by Bailenx."
    target = lambda q: query_target(q, "Salarnd", "Bailenx", passage)  # noqa: E731
    assert target("who is Bailenx") == "founder"
    assert target("who is bailenx, founder of Salarnd") == "founder"  # the founder wins over the company
    assert target("founder of Salarnd") == "company"
    assert target("who is Vortair") == "other fact" and target("Drozibrenn") == "other fact"
    assert target("who is Bailen") == "elsewhere"  # a look-alike is not the founder
    assert target("who is Nekath") == "elsewhere"
    assert target(None) == "no search" and target("  ") == "no search"
